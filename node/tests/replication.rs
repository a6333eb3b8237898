//! 1 primary + 2 replicas under 10,000 mixed writes: one replica is killed -9
//! mid-stream and restarted (resumes, no gap, no duplicate), the other is wiped and
//! re-clones while writes continue; both end with the primary's exact content and
//! journal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use studio_node::storage::Store;

const TOTAL_WRITES: usize = 10_000;
const WORKERS: usize = 16;

/// One worker's share of the mixed workload, in its own subtree. Returns the number
/// of requests that changed content.
async fn worker(http: Client, url: String, w: usize, n: usize, done: Arc<AtomicUsize>) -> usize {
    let tok = editor();
    let mut changed = 0;
    let mut blob: Option<String> = None;
    for j in 0..n {
        let item = |k: usize| format!("/w{w}/i{}", k % 40);
        let req = match j % 10 {
            0..=3 => http
                .put(format!("{url}/api/v1/content{}", item(j)))
                .json(&json!({"type": "page", "properties": {"title": format!("t{w}-{j}"), "n": j, "body": "lorem ipsum ".repeat(j % 7)}})),
            4 => {
                let props = match &blob {
                    Some(sha) => json!({"file": {"$binary": sha}, "n": j}),
                    None => json!({"n": j}),
                };
                http.put(format!("{url}/api/v1/content/w{w}/assets/a{}", j % 13))
                    .json(&json!({"type": "asset", "properties": props}))
            }
            5 => http
                .delete(format!("{url}/api/v1/content{}", item(j + 17))),
            6 => http
                .post(format!("{url}/api/v1/move"))
                .json(&json!({"from": item(j + 5), "to": format!("/w{w}/moved/m{j}")})),
            7 => http
                .post(format!("{url}/api/v1/publish/w{w}?recursive=true")),
            8 => {
                // Mostly new binaries, some duplicates (deduplicated, no entry).
                let seed = if j % 3 == 0 { 0 } else { j };
                let data: Vec<u8> = (0..(1024 + (j % 5) * 700))
                    .map(|i| ((i * 31 + seed * 7 + w) % 251) as u8)
                    .collect();
                http.post(format!("{url}/api/v1/binaries")).body(data)
            }
            _ => http
                .post(format!("{url}/api/v1/unpublish/w{w}/i{}", j % 40)),
        };
        let resp = req.bearer_auth(&tok).send().await.unwrap();
        let status = resp.status();
        if j % 10 == 8 && status.is_success() {
            let v: Value = resp.json().await.unwrap();
            blob = v["sha256"].as_str().map(str::to_string);
        }
        assert!(
            status.is_success()
                || status == StatusCode::NOT_FOUND
                || status == StatusCode::CONFLICT,
            "write {j} of worker {w} failed with {status}"
        );
        if status.is_success() {
            changed += 1;
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    changed
}

async fn wait_count(done: &AtomicUsize, n: usize) {
    wait_for(
        "the workload to progress",
        Duration::from_secs(300),
        || async { (done.load(Ordering::Relaxed) >= n).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_converge_through_crash_and_wipe_under_mixed_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut primary = Node::standalone(&dir.path().join("p"), &[]);
    let mut r1 = replica(&dir.path().join("r1"), &primary, "r1", &[]);
    let mut r2 = replica(&dir.path().join("r2"), &primary, "r2", &[]);
    let http = Client::new();
    wait_for(
        "both replicas connected",
        Duration::from_secs(30),
        || async { (connected_peers(&http, &primary.url).await? == 2).then_some(()) },
    )
    .await;

    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        workers.push(tokio::spawn(worker(
            http.clone(),
            primary.url.clone(),
            w,
            TOTAL_WRITES / WORKERS,
            done.clone(),
        )));
    }

    // r1: kill -9 in the middle of the stream, restart while writes go on.
    wait_count(&done, 2500).await;
    r1.kill9();
    wait_count(&done, 3500).await;
    tokio::task::block_in_place(|| r1.restart());

    // r2: wipe its data dir; it must clone while writes continue.
    wait_count(&done, 5000).await;
    r2.kill9();
    std::fs::remove_dir_all(&r2.data_dir).unwrap();
    tokio::task::block_in_place(|| r2.restart());

    let mut changed = 0;
    for w in workers {
        changed += w.await.unwrap();
    }
    let write_secs = started.elapsed().as_secs_f64();
    assert!(
        changed > TOTAL_WRITES / 2,
        "only {changed} writes changed content"
    );

    let d = wait_converged(
        &http,
        &primary.url,
        &[&r1.url, &r2.url],
        Duration::from_secs(120),
    )
    .await;
    eprintln!(
        "{TOTAL_WRITES} requests ({changed} changes) in {write_secs:.1}s; converged after {:.1}s total, digest {d}",
        started.elapsed().as_secs_f64()
    );
    // The restarted replica resumed from its position; the wiped one cloned.
    assert!(
        !r1.log_text().contains("clone complete"),
        "r1 cloned instead of resuming"
    );
    assert!(r2.log_text().contains("clone complete"), "r2 did not clone");
    for r in [&r1, &r2] {
        assert!(
            quarantine(&http, &r.url).await.is_empty(),
            "unexpected quarantine"
        );
    }
    // Readers see the same content on a replica as on the primary.
    let path = "/api/v1/content/w3/i3";
    let a = http
        .get(format!("{}{path}", primary.url))
        .bearer_auth(editor())
        .send()
        .await
        .unwrap();
    let b = http
        .get(format!("{}{path}", r1.url))
        .bearer_auth(editor())
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), b.status());
    assert_eq!(a.text().await.unwrap(), b.text().await.unwrap());

    // Journals: identical, gapless, no duplicate.
    primary.kill9();
    r1.kill9();
    r2.kill9();
    let journal = |p: &std::path::Path| {
        let s = Store::open(p).unwrap();
        assert!(
            s.check_consistency().unwrap().is_empty(),
            "{}: inconsistent",
            p.display()
        );
        s.entries_after(0, usize::MAX >> 1).unwrap()
    };
    let pj = journal(&primary.data_dir);
    assert_eq!(pj.len() as u64, pj.last().unwrap().seq);
    assert_eq!(journal(&r1.data_dir), pj, "r1 journal differs");
    assert_eq!(journal(&r2.data_dir), pj, "r2 journal differs");
}
