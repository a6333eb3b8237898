//! kill -9 of a node in the middle of concurrent writes: every acknowledged write is
//! there after restart, nothing is half-applied, the journal has no gap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use studio_node::storage::{Store, Workspace};
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut node = Node::standalone(&data, &[]);
    let http = Client::new();
    let tok = editor();
    // path -> highest acknowledged version
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let enough = Arc::new(Notify::new());
    let mut writers = Vec::new();
    for w in 0..6 {
        let (http, tok, acked, enough, url) = (
            http.clone(),
            tok.clone(),
            acked.clone(),
            enough.clone(),
            node.url.clone(),
        );
        writers.push(tokio::spawn(async move {
            for j in 0u64.. {
                // Every third write updates an earlier item (new version).
                let path = if j % 3 == 2 {
                    format!("/w{w}/n{}", j / 3)
                } else {
                    format!("/w{w}/n{j}")
                };
                let body = json!({"type": "doc", "properties": {"text": "x".repeat(1024), "j": j}});
                let resp = http
                    .put(format!("{url}/api/v1/content{path}"))
                    .bearer_auth(&tok)
                    .json(&body)
                    .send()
                    .await;
                let Ok(resp) = resp else { return };
                if !resp.status().is_success() {
                    return;
                }
                let Ok(item) = resp.json::<Value>().await else {
                    return;
                };
                let version = item["version"].as_u64().unwrap();
                let mut a = acked.lock().unwrap();
                let e = a.entry(path).or_insert(0);
                *e = (*e).max(version);
                if a.len() >= 300 {
                    enough.notify_one();
                }
            }
        }));
    }
    enough.notified().await;
    node.kill9();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300);

    // Inspect the files the killed process left behind.
    {
        let store = Store::open(&data).unwrap();
        assert_eq!(store.check_consistency().unwrap(), Vec::<String>::new());
        for (path, version) in &acked {
            let item = store
                .get_item(Workspace::Authoring, path)
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged write {path} lost"));
            assert!(
                item.version >= *version,
                "{path}: version {} < acknowledged {version}",
                item.version
            );
        }
        let entries = store.entries_after(0, 1_000_000).unwrap();
        assert_eq!(entries.len() as u64, store.position().seq);
        assert!(
            entries
                .iter()
                .enumerate()
                .all(|(i, e)| e.seq == i as u64 + 1)
        );
    }

    // The restarted node serves all of it and keeps writing.
    node.restart();
    for (path, version) in acked.iter().take(50) {
        let r = http
            .get(format!("{}/api/v1/content{path}", node.url))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.json::<Value>().await.unwrap()["version"]
                .as_u64()
                .unwrap()
                >= *version
        );
    }
    let r = http
        .put(format!("{}/api/v1/content/after/restart", node.url))
        .bearer_auth(&tok)
        .json(&json!({"type": "doc"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}
