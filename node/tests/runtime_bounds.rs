//! Bounds the node keeps at runtime: calls to peers end after their timeout, and a
//! background task that dies takes the process down (the kubelet restarts it)
//! instead of leaving it running without, say, its fencing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{admin_post, status};
use common::{Node, editor, free_port};
use serde_json::json;
use studio_crds::node_api;

/// A peer that accepts connections and never answers (a hung process, a half-open
/// connection): every request to it would wait forever without a timeout.
fn silent_peer() -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        // Hold a few connections open, read what arrives, answer nothing.
        for conn in listener.incoming().take(4).flatten() {
            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 4096];
            let mut c = conn;
            let _ = c.read(&mut buf);
            let _ = c.flush();
            held.push(c);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    (url, handle)
}

/// A replica "ghost" that acknowledged everything on `primary` and then hung (a
/// switchover to it waits on a peer that never answers).
async fn hung_replica(http: &reqwest::Client, primary: &Node) -> std::thread::JoinHandle<()> {
    let (ghost_url, ghost) = silent_peer();
    let s = status(http, &primary.url).await.unwrap();
    let (seq, term) = (s["seq"].as_u64().unwrap(), s["lastTerm"].as_u64().unwrap());
    let (code, _) = admin_post(
        http,
        &primary.url,
        node_api::REPLICATION_ACK,
        json!({"node_id": "ghost", "seq": seq, "term": term, "role": "replica", "address": ghost_url}),
    )
    .await;
    assert!(code.is_success(), "{code}");
    ghost
}

#[tokio::test]
async fn a_switchover_whose_promote_call_hangs_fails_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Node::standalone(&dir.path().join("p"), &[]);
    let http = reqwest::Client::new();
    let _ghost = hung_replica(&http, &primary).await;
    let started = Instant::now();
    let (code, body) = admin_post(
        &http,
        &primary.url,
        node_api::ADMIN_SWITCHOVER,
        json!({"target": "ghost", "timeout_ms": 2000}),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(code.as_u16(), 502, "{body}");
    assert_eq!(body["error"], "switchover_failed", "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("timed out"),
        "{body}"
    );
    // The promote call's own timeout (5 s), not the client's (30 s), ended it.
    assert!(took < Duration::from_secs(12), "took {took:?}");
    // Writes resumed on the primary.
    let r = http
        .put(format!("{}/api/v1/content/after-switchover", primary.url))
        .bearer_auth(editor())
        .json(&json!({"type": "doc", "properties": {}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// The caller of a switchover goes away half-way (the operator leader killed mid-request,
/// so its HTTP connection closes): the hand-over still runs to its end and the primary
/// takes writes again; before, the dropped request left it fenced read-only for good.
#[tokio::test]
async fn a_switchover_whose_caller_goes_away_still_ends_and_writes_resume() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Node::standalone(&dir.path().join("p"), &[]);
    let http = reqwest::Client::new();
    let _ghost = hung_replica(&http, &primary).await;
    // The caller gives up after 300 ms, while the node waits on the hung target.
    let dropped = http
        .post(format!("{}{}", primary.url, node_api::ADMIN_SWITCHOVER))
        .bearer_auth(common::CLUSTER_TOKEN)
        .json(&json!({"target": "ghost", "timeout_ms": 2000}))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(
        dropped.is_err(),
        "the switchover answered within 300 ms: {dropped:?}"
    );
    // The hand-over fails on its own timeouts and the primary is writable again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http
            .put(format!(
                "{}/api/v1/content/after-dropped-switchover",
                primary.url
            ))
            .bearer_auth(editor())
            .json(&json!({"type": "doc", "properties": {}}))
            .send()
            .await
            .unwrap();
        if r.status().is_success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the primary still refuses writes 20 s after a dropped switchover: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn a_background_task_that_dies_stops_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_studio-node"))
        .args(["--standalone", "--insecure-no-auth", "--log-format", "text"])
        .args(["--data-dir", &dir.path().join("d").display().to_string()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--fail-task", "compaction"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("studio-node kept running with a dead background task");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(!status.success(), "{status}: {log}");
    assert!(
        log.contains("background task compaction stopped: panicked"),
        "{log}"
    );
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_refused_not_queued() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::standalone(&dir.path().join("n"), &["--max-concurrent-requests", "1"]);
    let http = reqwest::Client::new();
    let get = || {
        http.get(format!("{}/api/v1/content/anything", node.url))
            .bearer_auth(editor())
            .timeout(Duration::from_secs(5))
            .send()
    };
    let head = format!(
        "POST /api/v1/binaries HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\nabc",
        editor()
    );
    // One upload whose body never finishes holds the only slot. It may itself be
    // refused when it races a probe for the slot: then it gets an answer at once, and
    // a new one is started.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (refused, _slow) = loop {
        assert!(Instant::now() < deadline, "no request was ever refused");
        let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", node.port))
            .await
            .unwrap();
        slow.write_all(head.as_bytes()).await.unwrap();
        let mut held = None;
        for _ in 0..20 {
            let r = get().await.unwrap();
            if r.status().as_u16() == 503 {
                held = Some(r);
                break;
            }
            let mut buf = [0u8; 64];
            // An answer on the upload's connection means it was refused, not held.
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(50), slow.read(&mut buf)).await
                && n > 0
            {
                break;
            }
        }
        if let Some(r) = held {
            break (r, slow);
        }
    };
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "overloaded", "{body}");
    // Health and internal routes are not limited.
    assert!(status(&http, &node.url).await.is_some());
    // When the slot frees, requests are served again.
    drop(_slow);
    common::cluster::wait_for("requests served again", Duration::from_secs(10), || async {
        let r = get().await.ok()?;
        (r.status().as_u16() == 404).then_some(())
    })
    .await;
}
