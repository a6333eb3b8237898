//! Sync quorum and failover: writes without their quorum fail and leave nothing;
//! acknowledged writes survive kill -9 of the primary; an ex-primary holding entries
//! the new primary never saw rejoins, quarantines them and converges.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;
use reqwest::{Client, StatusCode};
use serde_json::json;
use studio_crds::node_api;

async fn put(http: &Client, url: &str, path: &str, n: u64) -> reqwest::Response {
    http.put(format!("{url}/api/v1/content{path}"))
        .bearer_auth(editor())
        .json(&json!({"type": "doc", "properties": {"n": n, "text": "x".repeat(512)}}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap()
}

/// Writes `{prefix}0` … `{prefix}{n-1}` to `url`, each acknowledged.
async fn put_many(http: &Client, url: &str, prefix: &str, n: u64) {
    for i in 0..n {
        let status = put(http, url, &format!("{prefix}{i}"), i).await.status();
        assert!(status.is_success(), "{prefix}{i}: {status}");
    }
}

/// Status of GET `path` served by `url` itself.
async fn local_status(http: &Client, url: &str, path: &str) -> StatusCode {
    http.get(format!("{url}/api/v1/content{path}"))
        .bearer_auth(editor())
        .header(node_api::HEADER_DIRECT, "true")
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_quorum_refuses_without_replicas_and_keeps_acknowledged_writes_through_failover() {
    let dir = tempfile::tempdir().unwrap();
    let sync = [
        "--replication-mode",
        "sync",
        "--sync-replicas",
        "1",
        "--sync-timeout",
        "3s",
    ];
    let mut primary = Node::standalone(&dir.path().join("p"), &sync);
    let mut r1 = replica(&dir.path().join("r1"), &primary, "r1", &[]);
    let mut r2 = replica(&dir.path().join("r2"), &primary, "r2", &[]);
    let http = Client::new();
    wait_for(
        "both replicas connected",
        Duration::from_secs(30),
        || async { (connected_peers(&http, &primary.url).await? == 2).then_some(()) },
    )
    .await;
    assert!(
        put(&http, &primary.url, "/a/first", 1)
            .await
            .status()
            .is_success()
    );

    // Both replicas down: writes fail clearly and leave nothing behind.
    r1.kill9();
    r2.kill9();
    wait_for(
        "the primary to see its replicas gone",
        Duration::from_secs(30),
        || async { (connected_peers(&http, &primary.url).await? == 0).then_some(()) },
    )
    .await;
    for i in 0..3 {
        let r = put(&http, &primary.url, &format!("/a/refused{i}"), i).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let code = assert_json_error(&r.text().await.unwrap(), "write without quorum");
        assert_eq!(code, "sync_quorum_unavailable");
    }
    tokio::task::block_in_place(|| {
        r1.restart();
        r2.restart();
    });
    wait_converged(
        &http,
        &primary.url,
        &[&r1.url, &r2.url],
        Duration::from_secs(60),
    )
    .await;
    for n in [&primary, &r1, &r2] {
        assert_eq!(
            local_status(&http, &n.url, "/a/first").await,
            StatusCode::OK
        );
        for i in 0..3 {
            assert_eq!(
                local_status(&http, &n.url, &format!("/a/refused{i}")).await,
                StatusCode::NOT_FOUND,
                "a refused write is present on {}",
                n.url
            );
        }
    }

    // One replica up (r1): every acknowledged write survives kill -9 of the primary.
    r2.kill9();
    wait_for("one connected replica", Duration::from_secs(30), || async {
        (connected_peers(&http, &primary.url).await? == 1).then_some(())
    })
    .await;
    let (acked, writers) = acked_writers(&http, &primary.url, "/s", 8);
    wait_for(
        "300 acknowledged writes",
        Duration::from_secs(120),
        || async { (acked.lock().unwrap().values().sum::<u64>() >= 300).then_some(()) },
    )
    .await;
    primary.kill9();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let (st, body) = admin_post(&http, &r1.url, node_api::ADMIN_PROMOTE, json!({"term": 2})).await;
    assert_eq!(st, StatusCode::OK, "promote: {body}");
    assert_eq!(body["role"], "primary");
    // A stale term is refused.
    let (st, _) = admin_post(&http, &r1.url, node_api::ADMIN_PROMOTE, json!({"term": 1})).await;
    assert_eq!(st, StatusCode::CONFLICT);
    let lost = lost_writes(&http, &r1.url, &acked).await;
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    // The new primary takes writes.
    assert!(
        put(&http, &r1.url, "/after/failover", 1)
            .await
            .status()
            .is_success()
    );
    let s = status(&http, &r1.url).await.unwrap();
    assert_eq!(s["role"], "primary");
    assert_eq!(s["term"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn divergent_ex_primary_quarantines_its_unseen_entries_and_converges() {
    let dir = tempfile::tempdir().unwrap();
    let p_dir = dir.path().join("p");
    let mut p = Node::standalone(&p_dir, &[]);
    let mut r = replica(&dir.path().join("r"), &p, "r", &[]);
    let http = Client::new();
    put_many(&http, &p.url, "/common/c", 50).await;
    wait_converged(&http, &p.url, &[&r.url], Duration::from_secs(60)).await;

    // The replica goes away; the primary acknowledges 20 more writes (async) and dies.
    r.kill9();
    put_many(&http, &p.url, "/lost/l", 20).await;
    p.kill9();

    // The replica comes back, is promoted and takes new writes.
    tokio::task::block_in_place(|| r.restart());
    let (st, body) = admin_post(&http, &r.url, node_api::ADMIN_PROMOTE, json!({"term": 2})).await;
    assert_eq!(st, StatusCode::OK, "promote: {body}");
    put_many(&http, &r.url, "/new/n", 10).await;

    // The ex-primary rejoins as a replica of the new primary.
    drop(p);
    let p = Node::start(&p_dir, &["--follow", &r.url, "--node-id", "p"]);
    wait_converged(&http, &r.url, &[&p.url], Duration::from_secs(60)).await;
    let q = quarantine(&http, &p.url).await;
    assert_eq!(q.len(), 20, "quarantine: {q:?}");
    let mut paths: Vec<String> = q
        .iter()
        .map(|e| e["entry"]["op"]["path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("/lost/l{i}")).collect();
    want.sort();
    assert_eq!(paths, want);
    assert!(q.iter().all(|e| e["entry"]["term"] == 1));
    assert_eq!(
        local_status(&http, &p.url, "/lost/l0").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(local_status(&http, &p.url, "/new/n9").await, StatusCode::OK);
    let s = status(&http, &p.url).await.unwrap();
    assert_eq!(s["quarantined"], 20);
    assert_eq!(s["role"], "replica");
    // It keeps following: a later write reaches it.
    assert!(
        put(&http, &r.url, "/new/later", 1)
            .await
            .status()
            .is_success()
    );
    wait_converged(&http, &r.url, &[&p.url], Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_behind_the_retention_window_clones() {
    let dir = tempfile::tempdir().unwrap();
    let p = Node::standalone(&dir.path().join("p"), &["--journal-retention", "50"]);
    let mut r = replica(&dir.path().join("r"), &p, "r", &[]);
    let http = Client::new();
    put_many(&http, &p.url, "/early/e", 20).await;
    wait_converged(&http, &p.url, &[&r.url], Duration::from_secs(60)).await;
    r.kill9();
    put_many(&http, &p.url, "/late/l", 200).await;
    let r_seq = 20;
    wait_for(
        "the primary to compact past the replica",
        Duration::from_secs(60),
        || async {
            let s = status(&http, &p.url).await?;
            (s["oldestSeq"].as_u64()? > r_seq + 1).then_some(())
        },
    )
    .await;
    tokio::task::block_in_place(|| r.restart());
    wait_converged(&http, &p.url, &[&r.url], Duration::from_secs(60)).await;
    assert!(
        r.log_text().contains("clone complete"),
        "the replica did not clone"
    );
    assert!(quarantine(&http, &r.url).await.is_empty());
    assert_eq!(
        local_status(&http, &r.url, "/late/l199").await,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_write_times_out_clearly_when_the_replica_stalls() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let dir = tempfile::tempdir().unwrap();
    let sync = [
        "--replication-mode",
        "sync",
        "--sync-replicas",
        "1",
        "--sync-timeout",
        "1s",
    ];
    let p = Node::standalone(&dir.path().join("p"), &sync);
    let r = replica(&dir.path().join("r"), &p, "r", &[]);
    let http = Client::new();
    wait_for("the replica connected", Duration::from_secs(30), || async {
        (connected_peers(&http, &p.url).await? == 1).then_some(())
    })
    .await;
    assert!(put(&http, &p.url, "/s/ok", 1).await.status().is_success());
    // A hung replica (SIGSTOP): still connected, never acknowledges.
    let pid = Pid::from_raw(r.child.as_ref().unwrap().id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let started = std::time::Instant::now();
    let resp = put(&http, &p.url, "/s/late", 1).await;
    let waited = started.elapsed();
    kill(pid, Signal::SIGCONT).unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let code = assert_json_error(&resp.text().await.unwrap(), "stalled quorum");
    assert_eq!(code, "sync_timeout");
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}"
    );
    // The replica resumes and the cluster converges (the timed-out write was not
    // acknowledged, but it is in the primary's journal and replicates).
    wait_converged(&http, &p.url, &[&r.url], Duration::from_secs(30)).await;
    assert!(
        put(&http, &p.url, "/s/after", 1)
            .await
            .status()
            .is_success()
    );
}
