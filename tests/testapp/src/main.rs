//! `studio-testapp`: a tiny HTTP program that the foundation tests run as pods.
//!
//! Listens on `0.0.0.0:$PORT` (default 8080):
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 unless made not ready, by `POST /readyz/fail` (until
//!   `POST /readyz/ok` or a restart) or by the file `$NOT_READY_FILE` existing.
//! - `GET /`: the value of `$POD_NAME`.
//! - `GET /data`: the content of `$DATA_DIR/data.txt` (404 when absent);
//!   `PUT /data`: replaces it with the request body (written durably).
//! - `GET /list-pods`: lists the pods of `$POD_NAMESPACE` with the credentials of
//!   `$KUBECONFIG` (or the in-cluster config) and answers, with HTTP 200, a JSON object
//!   `{"status": <HTTP status the API server gave>, "message": ...}`.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};
use serde_json::json;

#[derive(Clone)]
struct App {
    pod_name: String,
    namespace: String,
    data_dir: PathBuf,
    not_ready_file: Option<PathBuf>,
    failing_readiness: Arc<AtomicBool>,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("studio-testapp: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse().map_err(|e| format!("PORT={p:?}: {e}"))?,
        Err(_) => 8080,
    };
    let app = App {
        pod_name: std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".to_string()),
        namespace: std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".to_string()),
        data_dir: std::env::var_os("DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/data")),
        not_ready_file: std::env::var_os("NOT_READY_FILE").map(PathBuf::from),
        failing_readiness: Arc::new(AtomicBool::new(false)),
    };
    let router = Router::new()
        .route("/", get(name))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/readyz/fail", post(readyz_fail))
        .route("/readyz/ok", post(readyz_ok))
        .route("/data", get(read_data).put(write_data))
        .route("/list-pods", get(list_pods))
        .with_state(app.clone());
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("listen on {addr}: {e}"))?;
    eprintln!(
        "studio-testapp: pod {} in {} listening on {addr}, data dir {}",
        app.pod_name,
        app.namespace,
        app.data_dir.display()
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown())
        .await?;
    eprintln!("studio-testapp: stopped");
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => eprintln!("studio-testapp: SIGTERM"),
                _ = tokio::signal::ctrl_c() => eprintln!("studio-testapp: SIGINT"),
            }
        }
        Err(e) => {
            eprintln!("studio-testapp: cannot handle SIGTERM: {e}");
            std::future::pending::<()>().await;
        }
    }
}

async fn name(State(app): State<App>) -> String {
    app.pod_name
}

async fn readyz(State(app): State<App>) -> (StatusCode, &'static str) {
    let file_says_no = app.not_ready_file.as_ref().is_some_and(|f| f.exists());
    if file_says_no || app.failing_readiness.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    } else {
        (StatusCode::OK, "ready")
    }
}

async fn readyz_fail(State(app): State<App>) -> &'static str {
    app.failing_readiness.store(true, Ordering::SeqCst);
    "readiness now fails"
}

async fn readyz_ok(State(app): State<App>) -> &'static str {
    app.failing_readiness.store(false, Ordering::SeqCst);
    "readiness now passes"
}

async fn read_data(State(app): State<App>) -> impl IntoResponse {
    let path = app.data_dir.join("data.txt");
    match tokio::fs::read_to_string(&path).await {
        Ok(s) => (StatusCode::OK, s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            StatusCode::NOT_FOUND,
            format!("{} does not exist", path.display()),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("read {}: {e}", path.display()),
        ),
    }
}

async fn write_data(State(app): State<App>, body: String) -> impl IntoResponse {
    let path = app.data_dir.join("data.txt");
    match write_durably(&path, body.as_bytes()).await {
        Ok(()) => (StatusCode::OK, format!("wrote {}", path.display())),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("write {}: {e}", path.display()),
        ),
    }
}

async fn write_durably(path: &std::path::Path, content: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let tmp = path.with_extension("tmp");
    let mut f = tokio::fs::File::create(&tmp).await?;
    f.write_all(content).await?;
    f.sync_all().await?;
    drop(f);
    tokio::fs::rename(&tmp, path).await
}

async fn list_pods(State(app): State<App>) -> Json<serde_json::Value> {
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => return Json(json!({"status": 0, "message": format!("no client: {e}")})),
    };
    let pods: Api<Pod> = Api::namespaced(client, &app.namespace);
    match pods.list(&ListParams::default()).await {
        Ok(list) => Json(json!({"status": 200, "message": format!("{} pods", list.items.len())})),
        Err(kube::Error::Api(status)) => {
            Json(json!({"status": status.code, "message": status.message}))
        }
        Err(e) => Json(json!({"status": 0, "message": e.to_string()})),
    }
}
