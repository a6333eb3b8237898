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
