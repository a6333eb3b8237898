//! Helpers for multi-node tests: replicas, admin calls, waiting on conditions.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::Value;
use studio_crds::node_api;

use super::{CLUSTER_TOKEN, Node};

/// Starts a replica of `primary` with node id `id`.
pub fn replica(data_dir: &Path, primary: &Node, id: &str, extra: &[&str]) -> Node {
    let mut args = vec!["--follow", primary.url.as_str(), "--node-id", id];
    args.extend_from_slice(extra);
    Node::start(data_dir, &args)
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn internal_get(http: &Client, url: &str, path: &str) -> Option<Value> {
    let r = http
        .get(format!("{url}{path}"))
        .bearer_auth(CLUSTER_TOKEN)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

pub async fn admin_post(http: &Client, url: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let r = http
        .post(format!("{url}{path}"))
        .bearer_auth(CLUSTER_TOKEN)
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// (digest, seq) of a node.
pub async fn digest(http: &Client, url: &str) -> Option<(String, u64)> {
    let v = internal_get(http, url, node_api::ADMIN_DIGEST).await?;
    Some((v["digest"].as_str()?.to_string(), v["seq"].as_u64()?))
}

pub async fn status(http: &Client, url: &str) -> Option<Value> {
    let r = http
        .get(format!("{url}{}", node_api::CLUSTER_STATUS))
        .bearer_auth(CLUSTER_TOKEN)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// Connected peers in a primary's status.
pub async fn connected_peers(http: &Client, url: &str) -> Option<usize> {
    let s = status(http, url).await?;
    Some(
        s["peers"]
            .as_array()?
            .iter()
            .filter(|p| p["connected"] == Value::Bool(true))
            .count(),
    )
}

/// Waits until every node in `others` has the same digest and seq as `primary`;
/// returns the digest.
pub async fn wait_converged(
    http: &Client,
    primary: &str,
    others: &[&str],
    timeout: Duration,
) -> String {
    wait_for("replicas to converge", timeout, || async {
        let (d, seq) = digest(http, primary).await?;
        for o in others {
            let (od, oseq) = digest(http, o).await?;
            if od != d || oseq != seq {
                return None;
            }
        }
        Some(d)
    })
    .await
}

/// Quarantined entries of a node.
pub async fn quarantine(http: &Client, url: &str) -> Vec<Value> {
    internal_get(http, url, node_api::ADMIN_QUARANTINE)
        .await
        .and_then(|v| v["entries"].as_array().cloned())
        .unwrap_or_default()
}

/// Path → highest version a client was acknowledged.
pub type Acked = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>;

/// `n` writers each rewriting 25–30 items under `prefix` on `url` until a write fails;
/// every acknowledged version is recorded.
pub fn acked_writers(
    http: &Client,
    url: &str,
    prefix: &str,
    n: usize,
) -> (Acked, Vec<tokio::task::JoinHandle<()>>) {
    let acked: Acked = Default::default();
    let writers = (0..n)
        .map(|w| {
            let (http, url, acked) = (http.clone(), url.to_string(), acked.clone());
            let prefix = prefix.to_string();
            tokio::spawn(async move {
                for j in 0u64.. {
                    let path = format!("{prefix}/w{w}/n{}", j % 25);
                    let Ok(r) = http
                        .put(format!("{url}/api/v1/content{path}"))
                        .bearer_auth(super::editor())
                        .json(&serde_json::json!({"type": "doc", "properties": {"j": j}}))
                        .send()
                        .await
                    else {
                        return;
                    };
                    if !r.status().is_success() {
                        return;
                    }
                    let Ok(v) = r.json::<Value>().await else {
                        return;
                    };
                    let version = v["version"].as_u64().unwrap();
                    let mut a = acked.lock().unwrap();
                    let e = a.entry(path).or_insert(0);
                    *e = (*e).max(version);
                }
            })
        })
        .collect();
    (acked, writers)
}

/// Acknowledged writes `url` does not hold at their acknowledged version.
pub async fn lost_writes(
    http: &Client,
    url: &str,
    acked: &std::collections::HashMap<String, u64>,
) -> Vec<String> {
    let mut lost = Vec::new();
    for (path, version) in acked {
        let r = http
            .get(format!("{url}/api/v1/content{path}"))
            .bearer_auth(super::editor())
            .send()
            .await
            .unwrap();
        let have = if r.status().is_success() {
            r.json::<Value>().await.unwrap()["version"]
                .as_u64()
                .unwrap()
        } else {
            0
        };
        if have < *version {
            lost.push(format!("{path}: acknowledged v{version}, have v{have}"));
        }
    }
    lost
}
