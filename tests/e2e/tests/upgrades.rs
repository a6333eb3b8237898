//! Upgrades across storage schema revisions, with real version skew: besides the
//! studio-node image (schema revision 1), `make images` builds and pushes
//! `studio-node-next` (revision 2, additive: still replicates with 1) and
//! `studio-node-next-incompatible` (revision 2, replicates only with 2) from the same
//! sources with the node's `schema-next` cargo features. Each test rolls one onto a running
//! cluster under writes and checks what a user would: writes continue (compatible) or
//! stop for a bounded, reported time (incompatible), no acknowledged write is lost, the
//! incompatible case never has a writable primary beside a member of the other
//! revision, and a downgrade below the data is refused before any pod is touched.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use serde_json::{Value, json};
use studio_e2e::history::NodeAccess;
use studio_e2e::{is_ready, name, pod_ip};
use studio_harness::{TestEnv, wait_for};

use common::*;

/// Schema revision 2, compatible with 1 (`make images` pushes it).
fn next() -> anyhow::Result<String> {
    images()?
        .node_next
        .clone()
        .ok_or_else(|| anyhow!("images.env has no STUDIO_NODE_NEXT_IMAGE (run `make images`)"))
}
/// Schema revision 2, incompatible with 1.
fn next_incompatible() -> anyhow::Result<String> {
    images()?.node_next_incompatible.clone().ok_or_else(|| {
        anyhow!("images.env has no STUDIO_NODE_NEXT_INCOMPATIBLE_IMAGE (run `make images`)")
    })
}

/// What a member says about itself.
#[derive(Debug, Clone)]
struct Sample {
    /// member → (schema revision, writable primary)
    members: BTreeMap<String, (u64, bool)>,
}

/// Polls every member's `/api/v1/cluster/status` every 200 ms.
struct RevisionRecorder {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl RevisionRecorder {
    fn start(env: &TestEnv, cluster: &str, access: NodeAccess) -> RevisionRecorder {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, pods, cluster) = (stop.clone(), env.api(), cluster.to_string());
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            while !s.load(Ordering::SeqCst) {
                let list: Result<_, _> = pods
                    .list(&kube::api::ListParams::default().labels(&format!("{CLUSTER}={cluster}")))
                    .await;
                let mut members = BTreeMap::new();
                if let Ok(list) = list {
                    // A pod in its shutdown grace period is no longer a member.
                    for p in list
                        .items
                        .iter()
                        .filter(|p: &&k8s_openapi::api::core::v1::Pod| {
                            p.metadata.deletion_timestamp.is_none()
                        })
                    {
                        let Some(ip) = pod_ip(p) else { continue };
                        if let Ok(v) = node_status(&access, ip).await {
                            let writable = v["role"] == "primary" && v["readOnly"] == false;
                            let rev = v["schemaRevision"].as_u64().unwrap_or(0).max(1);
                            members.insert(name(p), (rev, writable));
                        }
                    }
                }
                samples.push(Sample { members });
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            samples
        });
        RevisionRecorder { stop, task }
    }

    async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap_or_default()
    }
}

async fn node_status(access: &NodeAccess, ip: Ipv4Addr) -> anyhow::Result<Value> {
    let path = "/api/v1/cluster/status";
    Ok(access
        .as_user(reqwest::Method::GET, ip, path, Duration::from_secs(1))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Samples in which a writable primary answered beside a (not terminating) member of
/// another revision.
fn mixed_with_a_writable_primary(samples: &[Sample]) -> Vec<String> {
    samples
        .iter()
        .filter_map(|s| {
            let (p, (rev, _)) = s.members.iter().find(|(_, (_, w))| *w)?;
            let other: Vec<String> = s
                .members
                .iter()
                .filter(|(_, (r, _))| r != rev)
                .map(|(m, (r, _))| format!("{m} at revision {r}"))
                .collect();
            (!other.is_empty()).then(|| format!("{p} writable at revision {rev} beside {other:?}"))
        })
        .collect()
}

/// `status.upgrade` of the cluster.
async fn upgrade_status(env: &TestEnv, cluster: &str) -> anyhow::Result<Value> {
    let obj = studio_api(env).get(cluster).await?;
    Ok(obj.data["status"]["upgrade"].clone())
}

/// Every pod on `image` and ready, the cluster Ready, every member reporting `revision`.
async fn wait_upgraded(
    env: &TestEnv,
    cluster: &str,
    image: &str,
    revision: u64,
) -> anyhow::Result<()> {
    let access = node_access(env, cluster).await?;
    wait_for(
        &format!("every pod on {image} at schema revision {revision}, Ready"),
        Duration::from_secs(300),
        || async {
            let st = status(env, cluster).await?;
            ensure!(st.ready_now() && st.ready_nodes == 3, "{}", st.summary());
            let pods = cluster_pods(env, cluster).await?;
            let mut behind = Vec::new();
            for p in &pods {
                let rev = match pod_ip(p) {
                    Some(ip) => node_status(&access, ip).await.ok(),
                    None => None,
                }
                .and_then(|v| v["schemaRevision"].as_u64());
                if image_of(p) != image || !is_ready(p) || rev != Some(revision) {
                    behind.push(format!("{} ({}, revision {rev:?})", name(p), image_of(p)));
                }
            }
            ensure!(pods.len() == 4 && behind.is_empty(), "not yet: {behind:?}");
            Ok(())
        },
    )
    .await?;
    Ok(())
}

/// Starts a 3 + arbiter sync cluster and a writer.
async fn cluster_under_load(env: &OpEnv, cluster: &str) -> anyhow::Result<(Content, Load)> {
    apply(
        env,
        &format!("{cluster}.json"),
        &cluster_manifest(cluster, json!({})),
    )?;
    wait_ready(env, cluster, 3, START).await?;
    wait_for("roles to agree", Duration::from_secs(30), || {
        roles_agree(env, cluster, 3)
    })
    .await?;
    let content = Content::new(env, cluster).await?;
    let load = Load::start(env, cluster, content.clone(), "load");
    wait_for("writes acknowledged", Duration::from_secs(30), || async {
        ensure!(
            load.acked_count() >= 20,
            "{} acknowledged",
            load.acked_count()
        );
        Ok(())
    })
    .await?;
    Ok((content, load))
}

/// The longest time the number of acknowledged writes did not grow, sampled every
/// 100 ms until `stop`.
fn longest_stall(
    acked: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        let count = || acked.lock().map(|a| a.len()).unwrap_or(0);
        let (mut last, mut since, mut worst) = (count(), Instant::now(), Duration::ZERO);
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let n = count();
            if n != last {
                worst = worst.max(since.elapsed());
                (last, since) = (n, Instant::now());
            }
        }
        worst.max(since.elapsed())
    })
}

fn error_span(errors: &[(Instant, String)]) -> Duration {
    match (errors.first(), errors.last()) {
        (Some((a, _)), Some((b, _))) => b.saturating_duration_since(*a),
        _ => Duration::ZERO,
    }
}

/// A compatible revision rolls online (replicas first, the primary by switchover) with
/// writes continuing; setting the old image back afterwards is refused: the data is at
/// revision 2 and the old build cannot open it.
#[tokio::test]
async fn a_compatible_revision_rolls_online_and_a_downgrade_is_refused() -> anyhow::Result<()> {
    let env = OpEnv::new("up-compatible").await?;
    let cluster = "skew";
    let (content, load) = cluster_under_load(&env, cluster).await?;
    let t0 = Instant::now();
    let next = next()?;
    patch_spec(&env, cluster, json!({"image": next}))?;
    wait_upgraded(&env, cluster, &next, 2).await?;
    let took = t0.elapsed();
    let (acked, errors) = load.stop().await;
    verify_acked(&env, cluster, &content, &acked).await?;
    let up = upgrade_status(&env, cluster).await?;
    ensure!(
        up["kind"] == "Compatible" && up["schemaRevision"] == 2 && up["fromRevision"] == 1,
        "status.upgrade: {up}"
    );
    eprintln!(
        "[upgrades] TIMING compatible 1 → 2: every pod upgraded and Ready {:.1}s; {} writes acknowledged, {} errors spanning {:.1}s",
        took.as_secs_f64(),
        acked.len(),
        errors.len(),
        error_span(&errors).as_secs_f64()
    );
    // Writes continue: errors only around the one switchover (a few seconds), not an
    // outage of the whole rollout.
    ensure!(
        error_span(&errors) <= Duration::from_secs(30),
        "write errors over {:.1}s: {errors:?}",
        error_span(&errors).as_secs_f64()
    );

    // Downgrade: refused before any pod is touched.
    let before: BTreeMap<String, String> = cluster_pods(&env, cluster)
        .await?
        .iter()
        .map(|p| (name(p), p.metadata.uid.clone().unwrap_or_default()))
        .collect();
    patch_spec(&env, cluster, json!({"image": node_image()}))?;
    let refused = wait_for(
        "the downgrade refused",
        Duration::from_secs(120),
        || async {
            let up = upgrade_status(&env, cluster).await?;
            ensure!(up["kind"] == "Refused", "status.upgrade: {up}");
            Ok(up)
        },
    )
    .await?;
    let msg = refused["message"].as_str().unwrap_or_default().to_string();
    ensure!(
        msg.contains("downgrade refused") && msg.contains("revision 2"),
        "unclear refusal: {msg}"
    );
    let st = status(&env, cluster).await?;
    ensure!(
        st.message.contains("downgrade refused"),
        "status.message does not say it: {}",
        st.summary()
    );
    let sts = env
        .api::<StatefulSet>()
        .get(cluster)
        .await
        .context("the data StatefulSet")?;
    let template_image = sts
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.first().and_then(|c| c.image.clone()))
        .unwrap_or_default();
    ensure!(
        template_image == next,
        "the StatefulSet template was changed to {template_image}"
    );
    let after: BTreeMap<String, String> = cluster_pods(&env, cluster)
        .await?
        .iter()
        .map(|p| (name(p), p.metadata.uid.clone().unwrap_or_default()))
        .collect();
    ensure!(before == after, "pods were touched: {before:?} → {after:?}");
    wait_for(
        "an UpgradeRefused Event",
        Duration::from_secs(30),
        || async {
            let ev = cluster_events(&env, cluster).await?;
            ensure!(
                ev.iter()
                    .any(|(r, m)| r == "UpgradeRefused" && m.contains("downgrade")),
                "{ev:?}"
            );
            Ok(())
        },
    )
    .await?;
    env.pass().await
}

/// An incompatible revision upgrades offline: every member restarts together, the write
/// outage is bounded and reported, no acknowledged write is lost, and no writable
/// primary ever answers beside a member of the other revision.
#[tokio::test]
async fn an_incompatible_revision_upgrades_offline_with_a_bounded_outage() -> anyhow::Result<()> {
    let env = OpEnv::new("up-offline").await?;
    let cluster = "skew-off";
    let (content, load) = cluster_under_load(&env, cluster).await?;
    let revisions = RevisionRecorder::start(&env, cluster, node_access(&env, cluster).await?);
    let stall_stop = Arc::new(AtomicBool::new(false));
    let stall = longest_stall(load.acked.clone(), stall_stop.clone());
    let t0 = Instant::now();
    let next = next_incompatible()?;
    patch_spec(&env, cluster, json!({"image": next}))?;
    wait_upgraded(&env, cluster, &next, 2).await?;
    // A write on the new revision after the upgrade ends the outage.
    let after = load.acked_count();
    wait_for(
        "a write on the new revision",
        Duration::from_secs(60),
        || async {
            ensure!(load.acked_count() > after, "none yet");
            Ok(())
        },
    )
    .await?;
    let took = t0.elapsed();
    stall_stop.store(true, Ordering::SeqCst);
    let outage = stall.await.unwrap_or_default();
    let samples = revisions.stop().await;
    let (acked, errors) = load.stop().await;
    verify_acked(&env, cluster, &content, &acked).await?;
    let up = upgrade_status(&env, cluster).await?;
    ensure!(
        up["kind"] == "Offline" && up["schemaRevision"] == 2 && up["minCompatibleRevision"] == 2,
        "status.upgrade: {up}"
    );
    eprintln!(
        "[upgrades] TIMING offline 1 → 2 (incompatible): every pod upgraded and Ready {:.1}s; write outage (longest time without an acknowledged write) {:.1}s; {} writes acknowledged, {} errors; {} revision samples",
        took.as_secs_f64(),
        outage.as_secs_f64(),
        acked.len(),
        errors.len(),
        samples.len()
    );
    let mixed = mixed_with_a_writable_primary(&samples);
    ensure!(
        mixed.is_empty(),
        "mixed revisions: {:?}",
        &mixed[..mixed.len().min(5)]
    );
    ensure!(
        samples
            .iter()
            .any(|s| s.members.values().any(|(r, _)| *r == 1))
            && samples
                .iter()
                .any(|s| s.members.values().any(|(r, _)| *r == 2)),
        "the recorder saw only one revision: it proves nothing"
    );
    ensure!(
        outage <= Duration::from_secs(90),
        "write outage {:.1}s (bound 90 s)",
        outage.as_secs_f64()
    );
    wait_for(
        "UpgradeOffline and OfflineUpgrade Events",
        Duration::from_secs(30),
        || async {
            let ev = cluster_events(&env, cluster).await?;
            ensure!(
                ev.iter().any(|(r, _)| r == "UpgradeOffline")
                    && ev.iter().any(|(r, _)| r == "OfflineUpgrade"),
                "{ev:?}"
            );
            Ok(())
        },
    )
    .await?;
    ensure!(
        outage >= Duration::from_millis(500),
        "no write outage measured ({outage:?}): an offline upgrade stops writes, so the writer did not write through it"
    );
    env.pass().await
}
