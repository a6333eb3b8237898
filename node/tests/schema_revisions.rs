//! Schema revisions on the wire: `--version --json`, the primary refusing a replica
//! of an incompatible revision (409 `incompatible_schema`), and a replica refusing a
//! primary (stream header, 409 answer, snapshot header) while staying not ready.
//!
//! An incompatible *node* needs a second build (`--features schema-next-incompatible`),
//! too slow to make inside this test; the incompatible side is therefore played by
//! what such a node sends: stream requests with its revisions (against a real
//! primary) and stream/snapshot answers with its headers (a small fake primary
//! serving a real replica).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode as AxStatus};
use axum::response::{IntoResponse, Response};
use common::cluster::*;
use common::*;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use studio_crds::node_api::{
    self, HEADER_MIN_COMPATIBLE_REVISION, HEADER_SCHEMA_REVISION, REPLICATION_STREAM, SNAPSHOT,
};
use studio_node::storage::schema::{MIN_COMPATIBLE_REVISION, SCHEMA_REVISION};

/// A revision this build cannot replicate with (a future incompatible change).
const FUTURE: u32 = SCHEMA_REVISION + 1;

fn run_version(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_studio-node"))
        .args(args)
        .env_clear()
        .output()
        .expect("run studio-node");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

#[test]
fn version_json_needs_nothing_else() {
    for args in [["--version", "--json"], ["--json", "--version"]] {
        let (ok, out) = run_version(&args);
        assert!(ok, "{args:?}: {out}");
        let v: Value = serde_json::from_str(out.trim()).expect("JSON");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["schemaRevision"], SCHEMA_REVISION);
        assert_eq!(v["minCompatibleRevision"], MIN_COMPATIBLE_REVISION);
    }
    let (ok, out) = run_version(&["--version"]);
    assert!(ok);
    assert_eq!(
        out.trim(),
        format!("studio-node {}", env!("CARGO_PKG_VERSION"))
    );
}

async fn open_stream(
    http: &Client,
    url: &str,
    node_id: &str,
    query: &[(&str, String)],
) -> reqwest::Response {
    let mut q: Vec<(&str, String)> = vec![
        ("node_id", node_id.into()),
        ("after_seq", "0".into()),
        ("after_term", "0".into()),
    ];
    q.extend_from_slice(query);
    http.get(format!("{url}{REPLICATION_STREAM}"))
        .query(&q)
        .bearer_auth(CLUSTER_TOKEN)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap()
}

fn header_u32(resp: &reqwest::Response, name: &str) -> Option<u32> {
    resp.headers().get(name)?.to_str().ok()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_refuses_a_replica_of_an_incompatible_revision() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Node::standalone(&dir.path().join("p"), &[]);
    let http = Client::new();

    // A replica from before revisions announces nothing: revision 1.
    let old = open_stream(&http, &primary.url, "old", &[]).await;
    assert_eq!(old.status(), StatusCode::OK);
    assert_eq!(
        header_u32(&old, HEADER_SCHEMA_REVISION),
        Some(SCHEMA_REVISION)
    );
    assert_eq!(
        header_u32(&old, HEADER_MIN_COMPATIBLE_REVISION),
        Some(MIN_COMPATIBLE_REVISION)
    );
    drop(old);

    // A newer replica that still applies this revision's journal is served.
    let newer_ok = open_stream(
        &http,
        &primary.url,
        "newer",
        &[
            ("schema_revision", FUTURE.to_string()),
            ("min_compatible_revision", SCHEMA_REVISION.to_string()),
        ],
    )
    .await;
    assert_eq!(newer_ok.status(), StatusCode::OK);
    drop(newer_ok);

    // A newer replica that no longer does is refused, naming both revisions.
    let refused = open_stream(
        &http,
        &primary.url,
        "future",
        &[
            ("schema_revision", FUTURE.to_string()),
            ("min_compatible_revision", FUTURE.to_string()),
        ],
    )
    .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let body = refused.text().await.unwrap();
    assert_eq!(
        assert_json_error(&body, "refused stream"),
        "incompatible_schema"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("schema revision {FUTURE}"))
            && msg.contains(&format!("schema revision {SCHEMA_REVISION}")),
        "{msg}"
    );

    // The primary itself is unaffected and counts the refusal.
    let s = status(&http, &primary.url).await.unwrap();
    assert_eq!(s["schemaRevision"], SCHEMA_REVISION);
    assert_eq!(s["minCompatibleRevision"], MIN_COMPATIBLE_REVISION);
    assert!(s.get("replicationRefused").is_none(), "{s}");
    let ready = http
        .get(format!("{}{}", primary.url, node_api::READYZ))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let metrics = http
        .get(format!("{}{}", primary.url, node_api::METRICS))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("studio_replication_schema_refused_total 1"),
        "{metrics}"
    );
}

/// How the fake primary behaves.
#[derive(Clone, Copy)]
enum Fake {
    /// Streams, announcing an incompatible revision (until made compatible).
    StreamHeader,
    /// Answers the stream with 409 `incompatible_schema` (a newer primary refusing).
    Refuses,
    /// A compatible stream that asks for a clone; the snapshot is incompatible.
    Snapshot,
}

struct FakePrimary {
    url: String,
    compatible: Arc<AtomicBool>,
}

fn heartbeats() -> Body {
    let frames = futures::stream::unfold(true, |first| async move {
        if !first {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let line = json!({"frame": "heartbeat", "primary": {"seq": 0, "term": 0}, "time": 0});
        Some((
            Ok::<_, std::convert::Infallible>(format!("{line}\n")),
            false,
        ))
    });
    Body::from_stream(frames)
}

fn with_revision(mut resp: Response, revision: u32) -> Response {
    let h = resp.headers_mut();
    h.insert(HEADER_SCHEMA_REVISION, HeaderValue::from(revision));
    h.insert(HEADER_MIN_COMPATIBLE_REVISION, HeaderValue::from(revision));
    resp
}

async fn fake_primary(mode: Fake) -> FakePrimary {
    let compatible = Arc::new(AtomicBool::new(false));
    let c = Arc::clone(&compatible);
    let stream = move || {
        let c = Arc::clone(&c);
        async move {
            match mode {
                Fake::StreamHeader => {
                    let rev = if c.load(Ordering::SeqCst) {
                        SCHEMA_REVISION
                    } else {
                        FUTURE
                    };
                    with_revision(Response::new(heartbeats()), rev)
                }
                Fake::Refuses => (
                    AxStatus::CONFLICT,
                    axum::Json(json!({
                        "error": "incompatible_schema",
                        "message": format!("incompatible schema: replica r has schema revision {SCHEMA_REVISION}, this node has schema revision {FUTURE}"),
                    })),
                )
                    .into_response(),
                Fake::Snapshot => {
                    let line = json!({"frame": "clone_required", "oldest_seq": 1});
                    with_revision(Response::new(Body::from(format!("{line}\n"))), SCHEMA_REVISION)
                }
            }
        }
    };
    let snapshot = || async { with_revision(Response::new(Body::from("not a database")), FUTURE) };
    let app = axum::Router::new()
        .route(REPLICATION_STREAM, axum::routing::get(stream))
        .route(SNAPSHOT, axum::routing::get(snapshot));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FakePrimary { url, compatible }
}

async fn ready(http: &Client, url: &str) -> StatusCode {
    http.get(format!("{url}{}", node_api::READYZ))
        .send()
        .await
        .unwrap()
        .status()
}

/// Waits until the replica reports a refusal; returns it.
async fn refused(http: &Client, node: &Node) -> String {
    wait_for("the replica to refuse", Duration::from_secs(20), || async {
        let s = status(http, &node.url).await?;
        s["replicationRefused"].as_str().map(str::to_string)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refuses_a_primary_of_an_incompatible_revision_and_stays_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let http = Client::new();
    let mut cases = Vec::new();
    for (name, mode) in [
        ("header", Fake::StreamHeader),
        ("refuses", Fake::Refuses),
        ("snapshot", Fake::Snapshot),
    ] {
        let fake = fake_primary(mode).await;
        let node = Node::start(
            &dir.path().join(name),
            &["--follow", fake.url.as_str(), "--node-id", name],
        );
        cases.push((name, fake, node));
    }
    for (name, fake, node) in &cases {
        let why = refused(&http, node).await;
        assert!(why.contains("incompatible schema"), "{name}: {why}");
        assert!(
            why.contains(&format!("schema revision {FUTURE}")),
            "{name}: {why}"
        );
        assert!(
            why.contains(&fake.url) || *name == "refuses",
            "{name}: {why}"
        );
        assert_eq!(
            ready(&http, &node.url).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "{name}"
        );
        let s = status(&http, &node.url).await.unwrap();
        assert_eq!(s["schemaRevision"], SCHEMA_REVISION, "{name}");
        assert!(
            node.log_text()
                .contains("refusing to replicate: incompatible schema revision"),
            "{name}: {}",
            node.log_text()
        );
        // Still not ready a while later (retries keep refusing).
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            ready(&http, &node.url).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "{name}"
        );
    }
    // The snapshot was refused before anything was swapped in.
    let (_, _, snap_node) = &cases[2];
    assert!(
        !snap_node.log_text().contains("clone complete"),
        "{}",
        snap_node.log_text()
    );
    // Once the primary runs a compatible revision, the replica follows it and is ready.
    let (_, fake, node) = &cases[0];
    fake.compatible.store(true, Ordering::SeqCst);
    wait_for(
        "the replica to become ready",
        Duration::from_secs(20),
        || async { (ready(&http, &node.url).await == StatusCode::OK).then_some(()) },
    )
    .await;
    let s = status(&http, &node.url).await.unwrap();
    assert!(s.get("replicationRefused").is_none(), "{s}");
}
