//! Studio as it ships, on the local cluster's real node (`real-1`: the upstream kubelet
//! with containerd and runc, pods on CNI addresses, Services through kube-proxy): the
//! studio-node image built by `make images` and pulled from the local registry by
//! digest, run by the operator's pod spec (uid 65532, read-only root filesystem,
//! `fsGroup`), written to through the `-primary` Service's ClusterIP, killed through
//! the container runtime.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use studio_e2e::history::{digests, digests_agree};
use studio_e2e::real_node::*;
use studio_e2e::{is_ready, name, pod_ip, restart_count};
use studio_harness::{TestEnv, wait_for};

use common::*;

/// A StudioCluster whose pods all run on the real node from `image`.
fn real_node_cluster(name: &str, image: &str, nodes: u32) -> String {
    cluster_manifest(name, real_node_spec(image, nodes))
}

/// Writes `n` items under `prefix` through `ip`; all must be acknowledged.
async fn write_items(
    content: &Content,
    ip: Ipv4Addr,
    prefix: &str,
    n: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut acked = Vec::with_capacity(n);
    for i in 0..n {
        let (path, value) = (format!("{prefix}/item-{i}"), format!("v{i}"));
        content.put(ip, &path, &value).await?;
        acked.push((path, value));
    }
    Ok(acked)
}

/// Every member's digest is the same.
async fn members_agree(env: &TestEnv, cluster: &str) -> anyhow::Result<()> {
    let access = node_access(env, cluster).await?;
    wait_for(
        "every member at the same content",
        Duration::from_secs(60),
        || async {
            let members: Vec<(String, Ipv4Addr)> = cluster_pods(env, cluster)
                .await?
                .iter()
                .filter(|p| !is_arbiter(cluster, &name(p)))
                .filter_map(|p| pod_ip(p).map(|ip| (name(p), ip)))
                .collect();
            let d = digests(&access, &members, Duration::from_secs(20)).await?;
            if digests_agree(&d) {
                Ok(())
            } else {
                bail!("digests differ: {d:?}")
            }
        },
    )
    .await
}

#[tokio::test]
async fn the_shipped_image_runs_non_root_read_only_behind_a_cluster_ip() -> anyhow::Result<()> {
    let env = OpEnv::new("real-node").await?;
    let c = studio_harness::cluster()?;
    let runtime = real_node_ready(&env).await?;
    let image = Images::load(c)?.node;
    eprintln!("[real-node] Node {REAL_NODE} runs {runtime}; image {image}");
    apply(&env, "r.yaml", &real_node_cluster("r", &image, 3))?;
    wait_ready(&env, "r", 3, Duration::from_secs(300)).await?;

    // Every pod: on the real node, from the registry by digest, as 65532, read-only root.
    let digest = image
        .split_once('@')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    for pod in cluster_pods(&env, "r").await? {
        let pod_name = name(&pod);
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        ensure!(
            node.as_deref() == Some(REAL_NODE),
            "{pod_name} runs on {node:?}"
        );
        let image_id = container_status(&pod, "studio")
            .map(|c| c.image_id.clone())
            .unwrap_or_default();
        ensure!(
            image_id.ends_with(&digest) && image_id.contains('/'),
            "{pod_name}: imageID {image_id:?} is not the pushed digest {digest}"
        );
        let pid = container_pid(c, &pod)?;
        let (uid, read_only) = uid_and_read_only_root(pid)?;
        ensure!(uid == IMAGE_UID, "{pod_name} runs as uid {uid}");
        ensure!(read_only, "{pod_name}'s root filesystem is writable");
    }

    // Writes through the -primary Service's ClusterIP (kube-proxy on the host).
    let content = Content::new(&env, "r").await?;
    let vip = cluster_ip(&env, "r-primary").await?;
    // kube-proxy programs the ClusterIP once it sees the Service's ready endpoint (until
    // then its rules refuse the connection).
    let ready_at = Instant::now();
    wait_for(
        "a write through the ClusterIP",
        Duration::from_secs(60),
        || async { content.put(vip, "first", "x").await },
    )
    .await?;
    eprintln!(
        "[real-node] ClusterIP {vip} took writes {:.1} s after the cluster was Ready",
        ready_at.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    content.put(vip, "docs", "folder").await?;
    let mut acked = write_items(&content, vip, "docs", 1_000).await?;
    acked.push(("docs".to_string(), "folder".to_string()));
    eprintln!(
        "[real-node] 1,000 writes through ClusterIP {vip} in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // One large transaction: moving the whole folder rewrites 1,000 items and their
    // journal entry in one commit (SQLite spills its statement journal to a temp file;
    // the root filesystem is read-only, /tmp is the pod's emptyDir).
    let moved = content
        .http
        .post(format!(
            "{}://{vip}:{NODE_PORT}/api/v1/move",
            content.scheme
        ))
        .bearer_auth(&content.token)
        .json(&json!({"from": "/docs", "to": "/archive/docs"}))
        .send()
        .await
        .context("POST /api/v1/move")?;
    let status = moved.status();
    let count = moved
        .headers()
        .get("x-studio-moved")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let text = moved.text().await.unwrap_or_default();
    ensure!(status.is_success(), "move: HTTP {status}: {text}");
    ensure!(
        count.is_some_and(|n| n >= 1_000),
        "move reported {count:?} items moved"
    );
    for (path, _) in acked.iter_mut() {
        *path = format!("archive/{path}");
    }
    acked.push(("first".to_string(), "x".to_string()));

    // A new member clones the primary: a consistent snapshot (VACUUM INTO) on the
    // primary, the copy streamed and opened on the new member, all with read-only roots.
    patch_spec(&env, "r", json!({"nodes": 4}))?;
    wait_ready(&env, "r", 4, Duration::from_secs(240)).await?;
    let log = env.kubectl(["logs", "r-3", "-c", "studio"])?;
    ensure!(
        log.contains("cloning"),
        "r-3 did not clone (kubectl logs r-3):\n{log}"
    );
    members_agree(&env, "r").await?;

    // The data volumes: group 65532 from fsGroup, files written by uid 65532.
    for pod in ["r-0", "r-1", "r-2", "r-3"] {
        let dir = data_dir(&env, pod).await?;
        let files = owned_by_the_image_user(&dir)?;
        eprintln!(
            "[real-node] {} ({files} entries) owned by 65532",
            dir.display()
        );
    }

    // kill -9 of the primary's container (its PID from containerd): the real kubelet
    // restarts it, another member takes over, writes through the ClusterIP resume.
    let old = primary(&env, "r").await?;
    let old_pod = env.api::<Pod>().get(&old).await?;
    let restarts_before = restart_count(&old_pod);
    let pid = container_pid(c, &old_pod)?;
    nix_kill9(pid)?;
    let killed = Instant::now();
    wait_for(
        "a write through the ClusterIP",
        Duration::from_secs(90),
        || async { content.put(vip, "after-kill/first", "x").await },
    )
    .await?;
    let outage = killed.elapsed();
    acked.push(("after-kill/first".to_string(), "x".to_string()));
    eprintln!(
        "[real-node] kill -9 of {old} (pid {pid}): writes through {vip} back after {:.1} s",
        outage.as_secs_f64()
    );
    wait_for(
        "the killed container restarted",
        Duration::from_secs(90),
        || async {
            let p = env.api::<Pod>().get(&old).await?;
            if restart_count(&p) > restarts_before && is_ready(&p) {
                Ok(())
            } else {
                bail!(
                    "{old}: restarts {}, ready {}",
                    restart_count(&p),
                    is_ready(&p)
                )
            }
        },
    )
    .await?;
    verify_acked(&env, "r", &content, &acked).await?;
    members_agree(&env, "r").await?;
    env.pass().await
}

/// The primary pod's name.
async fn primary(env: &TestEnv, cluster: &str) -> anyhow::Result<String> {
    wait_for("a Ready primary", Duration::from_secs(60), || async {
        cluster_pods(env, cluster)
            .await?
            .iter()
            .find(|p| role_of(p) == "primary" && is_ready(p))
            .map(name)
            .ok_or_else(|| anyhow!("no Ready primary"))
    })
    .await
}

fn nix_kill9(pid: i32) -> anyhow::Result<()> {
    let out = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .output()?;
    ensure!(
        out.status.success(),
        "kill -9 {pid}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}
