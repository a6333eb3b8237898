//! A minimal kubelet HTTPS endpoint (port 10250 on the host IP) so that
//! `kubectl logs [-f] [--tail N] [-c C]` works through the API server, which proxies
//! `pods/log` to `https://<node InternalIP>:<daemonEndpoints.kubeletEndpoint.port>`.
//!
//! Serves `GET /containerLogs/{namespace}/{pod}/{container}` (query `tailLines`,
//! `limitBytes`, `follow`) from the log files and `GET /healthz`. The serving
//! certificate is self-signed (made with `openssl` once, under `<state-dir>/pki`); the
//! API server does not verify kubelet certificates unless told to. There is no
//! authentication: the port is only on our bridge address. `previous` and
//! `timestamps` are not supported (logs are one appended file per container).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_rustls::TlsAcceptor;

pub const KUBELET_PORT: u16 = 10250;

#[derive(Clone)]
struct AppState {
    pods_dir: PathBuf,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
    follow: Option<bool>,
}

/// The newest pod directory of `<namespace>_<pod>_<uid>` (pods are re-created with
/// the same name and a new uid).
pub fn find_pod_dir(pods_dir: &Path, ns: &str, pod: &str) -> Option<PathBuf> {
    let prefix = format!("{ns}_{pod}_");
    std::fs::read_dir(pods_dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|e| {
            // The uid part must not contain '_' (so "web" does not match "web_x_...").
            let name = e.file_name().to_string_lossy().to_string();
            !name[prefix.len()..].contains('_')
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

/// The last `n` lines of `text` (all if `n` is larger).
pub fn tail(text: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &text[text.len()..];
    }
    let mut seen = 0;
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &text[i + 1..];
            }
        }
    }
    text
}

async fn container_logs(
    State(st): State<Arc<AppState>>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let safe = |s: &str| !s.is_empty() && !s.contains('/') && s != "." && s != "..";
    if !safe(&ns) || !safe(&pod) || !safe(&container) {
        return (StatusCode::BAD_REQUEST, "bad name").into_response();
    }
    let Some(dir) = find_pod_dir(&st.pods_dir, &ns, &pod) else {
        return (
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} has no logs on this node"),
        )
            .into_response();
    };
    let path = dir.join(format!("{container}.log"));
    let data = match tokio::fs::read(&path).await {
        Ok(d) => d,
        Err(e) => {
            return (
                StatusCode::NOT_FOUND,
                format!("container {container} of {ns}/{pod}: {e}"),
            )
                .into_response();
        }
    };
    let mut start = data.len()
        - q.tail_lines
            .map(|n| tail(&data, n).len())
            .unwrap_or(data.len());
    if let Some(limit) = q.limit_bytes {
        start = start.max(data.len().saturating_sub(limit));
    }
    let head = data[start..].to_vec();
    if !q.follow.unwrap_or(false) {
        return ([(header::CONTENT_TYPE, "text/plain")], head).into_response();
    }
    // Follow: the current content, then whatever is appended, polled every 200 ms,
    // until the client goes away.
    let offset = data.len() as u64;
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(head) });
    let rest = futures::stream::unfold((path, offset), |(path, mut offset)| async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Ok(mut f) = tokio::fs::File::open(&path).await else {
                return None;
            };
            let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
            if len < offset {
                offset = 0;
            }
            if len > offset {
                let mut buf = Vec::new();
                if f.seek(std::io::SeekFrom::Start(offset)).await.is_err()
                    || f.read_to_end(&mut buf).await.is_err()
                {
                    return None;
                }
                offset += buf.len() as u64;
                return Some((Ok(buf), (path, offset)));
            }
        }
    });
    let stream = futures::StreamExt::chain(first, rest);
    (
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The router (without TLS), for tests and the server.
pub fn router(pods_dir: PathBuf) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .with_state(Arc::new(AppState { pods_dir }))
}

/// Makes (once) a self-signed serving certificate for `ip`.
async fn ensure_cert(dir: &Path, ip: std::net::Ipv4Addr) -> Result<(PathBuf, PathBuf), String> {
    let crt = dir.join("kubelet.crt");
    let key = dir.join("kubelet.key");
    if crt.is_file() && key.is_file() {
        return Ok((crt, key));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let out = tokio::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            "/CN=studio-kubelet",
        ])
        .arg("-addext")
        .arg(format!("subjectAltName=IP:{ip}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .await
        .map_err(|e| format!("running openssl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok((crt, key))
}

struct TlsListener {
    tcp: tokio::net::TcpListener,
    tls: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.tcp.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "kubelet server accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match tokio::time::timeout(Duration::from_secs(5), self.tls.accept(tcp)).await {
                Ok(Ok(s)) => return (s, addr),
                Ok(Err(e)) => tracing::debug!(error = %e, "kubelet server TLS handshake"),
                Err(_) => tracing::debug!("kubelet server TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn serve(state_dir: PathBuf, ip: std::net::Ipv4Addr, port: u16) -> Result<(), String> {
    let (crt, key) = ensure_cert(&state_dir.join("pki"), ip).await?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&crt)
        .map_err(|e| format!("reading {}: {e}", crt.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading {}: {e}", crt.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key)
        .map_err(|e| format!("reading {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS config: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS config: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpListener::bind((ip, port))
        .await
        .map_err(|e| format!("binding {ip}:{port}: {e}"))?;
    tracing::info!(addr = %format!("{ip}:{port}"), "kubelet log server listening");
    let listener = TlsListener {
        tcp,
        tls: TlsAcceptor::from(Arc::new(cfg)),
    };
    axum::serve(listener, router(state_dir.join("pods")))
        .await
        .map_err(|e| format!("serving: {e}"))
}

/// Runs the log server forever (retrying, e.g. while the bridge address is missing).
pub async fn run(state_dir: PathBuf, ip: std::net::Ipv4Addr, port: u16) {
    loop {
        if let Err(e) = serve(state_dir.clone(), ip, port).await {
            tracing::warn!(error = %e, "kubelet log server unavailable; retrying in 10s (kubectl logs will not work)");
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::body::to_bytes;
    use axum::http::Request;
    use tower::ServiceExt;

    #[test]
    fn tails() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail(b"a\nb\n", 0), b"");
        assert_eq!(tail(b"", 3), b"");
    }

    #[tokio::test]
    async fn serves_logs_of_the_newest_pod_instance() {
        let d = tempfile::tempdir().unwrap();
        let old = d.path().join("ns_web-0_uid1");
        let new = d.path().join("ns_web-0_uid2");
        let other = d.path().join("ns_web-0_x_uid3");
        for p in [&old, &other] {
            std::fs::create_dir_all(p).unwrap();
            std::fs::write(p.join("app.log"), "old\n").unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(new.join("app.log"), "one\ntwo\nthree\n").unwrap();
        assert_eq!(find_pod_dir(d.path(), "ns", "web-0").unwrap(), new);

        let app = router(d.path().to_path_buf());
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        let r = app
            .clone()
            .oneshot(get("/containerLogs/ns/web-0/app"))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            to_bytes(r.into_body(), 1 << 20).await.unwrap(),
            "one\ntwo\nthree\n"
        );
        let r = app
            .clone()
            .oneshot(get("/containerLogs/ns/web-0/app?tailLines=1"))
            .await
            .unwrap();
        assert_eq!(to_bytes(r.into_body(), 1 << 20).await.unwrap(), "three\n");
        let r = app
            .clone()
            .oneshot(get("/containerLogs/ns/web-0/app?limitBytes=4"))
            .await
            .unwrap();
        assert_eq!(to_bytes(r.into_body(), 1 << 20).await.unwrap(), "ree\n");
        let r = app
            .clone()
            .oneshot(get("/containerLogs/ns/web-0/nope"))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = app
            .clone()
            .oneshot(get("/containerLogs/ns/absent/app"))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = app.oneshot(get("/containerLogs/ns/../app")).await.unwrap();
        assert_ne!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn tls_endpoint_answers_like_a_kubelet() {
        let d = tempfile::tempdir().unwrap();
        let pod = d.path().join("pods/ns_p_u1");
        std::fs::create_dir_all(&pod).unwrap();
        std::fs::write(pod.join("c.log"), "hello\n").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = tokio::spawn(serve(
            d.path().to_path_buf(),
            std::net::Ipv4Addr::LOCALHOST,
            port,
        ));
        let client = reqwest::Client::builder()
            .no_proxy()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let url = format!("https://127.0.0.1:{port}/containerLogs/ns/p/c");
        let mut body = None;
        for _ in 0..100 {
            if let Ok(r) = client.get(&url).send().await {
                body = Some(r.text().await.unwrap());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(body.as_deref(), Some("hello\n"));
        assert!(d.path().join("pki/kubelet.crt").is_file());
        server.abort();
    }
}
