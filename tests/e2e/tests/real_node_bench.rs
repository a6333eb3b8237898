//! Failover numbers on the real node (not part of `cargo test`; `make bench-real-node`,
//! results in BENCHMARKS.md): a StudioCluster of the pushed studio-node image on
//! `real-1` (3 data nodes + arbiter, sync K = 2, TLS), one client writing sequentially
//! through the `-primary` Service's ClusterIP (kube-proxy), and `BENCH_RUNS` (default
//! 20) of each fault: kill -9 of the primary container (its PID from containerd), delete
//! of the primary's pod, switchover (the operator's annotation). A killed pod is deleted
//! after its run (the kubelet's restart back-off would otherwise grow from run to run).
//! Each run reports the time from the fault to the acknowledgement of the first write
//! the client sent after it (as the process-kubelet numbers in BENCHMARKS.md). Prints
//! `REAL-NODE-BENCH` lines.

mod common;

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use studio_e2e::real_node::*;
use studio_e2e::{is_ready, name, percentiles};
use studio_harness::{TestEnv, wait_for};

use common::*;

const CLUSTER: &str = "fb";

/// Acknowledged writes as (sent, acknowledged), appended by the writer in order.
type Acks = Arc<std::sync::Mutex<Vec<(Instant, Instant)>>>;

fn start_writer(content: Content, vip: Ipv4Addr, stop: Arc<AtomicBool>, acks: Acks) {
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let sent = Instant::now();
            match content.put(vip, &format!("bench/w-{i}"), "x").await {
                Ok(()) => lock(&acks).push((sent, Instant::now())),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
}

/// Every pod Ready, one primary, and writes flowing (an ack newer than `after`).
async fn settled(env: &TestEnv, acks: &Acks, after: Instant) -> anyhow::Result<String> {
    wait_for("the cluster settled", Duration::from_secs(180), || async {
        let pods = cluster_pods(env, CLUSTER).await?;
        ensure!(
            pods.len() == 4
                && pods
                    .iter()
                    .all(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none()),
            "pods not all Ready"
        );
        let primaries: Vec<String> = pods
            .iter()
            .filter(|p| role_of(p) == "primary")
            .map(name)
            .collect();
        ensure!(primaries.len() == 1, "primaries {primaries:?}");
        let last = lock(acks).last().map(|(_, acked)| *acked);
        ensure!(
            last.is_some_and(|t| t > after + Duration::from_secs(1)),
            "no write acknowledged lately"
        );
        Ok(primaries[0].clone())
    })
    .await
}

/// Time from the fault at `at` to the acknowledgement of the first write *sent* after
/// it (a write the old primary answered just before dying may reach the client after
/// `at`: it does not count).
async fn gap_after(acks: &Acks, at: Instant) -> anyhow::Result<f64> {
    let first_after = wait_for(
        "a write sent after the fault acknowledged",
        Duration::from_secs(120),
        || async {
            lock(acks)
                .iter()
                .find(|(sent, _)| *sent > at)
                .map(|(_, acked)| *acked)
                .ok_or_else(|| anyhow!("none yet"))
        },
    )
    .await?;
    Ok((first_after - at).as_secs_f64())
}

fn report(kind: &str, gaps: &mut [f64]) {
    let (p50, p99, max) = percentiles(gaps);
    eprintln!(
        "REAL-NODE-BENCH {kind} → first acknowledged write sent after it, through the ClusterIP: n={} p50={p50:.3}s p99={p99:.3}s max={max:.3}s",
        gaps.len()
    );
}

#[tokio::test]
async fn failover_on_the_real_node() -> anyhow::Result<()> {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let env = OpEnv::new("real-node-bench").await?;
    let c = studio_harness::cluster()?;
    real_node_ready(&env).await?;
    let image = Images::load(c)?.node;
    apply(
        &env,
        "fb.yaml",
        &cluster_manifest(CLUSTER, real_node_spec(&image, 3)),
    )?;
    wait_ready(&env, CLUSTER, 3, Duration::from_secs(300)).await?;
    let content = Content::new(&env, CLUSTER).await?;
    let vip = cluster_ip(&env, &format!("{CLUSTER}-primary")).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Arc::default();
    start_writer(content, vip, stop.clone(), acks.clone());

    let mut kill9 = Vec::new();
    for run in 0..runs {
        let primary = settled(&env, &acks, Instant::now()).await?;
        let pod = env.api::<Pod>().get(&primary).await?;
        let pid = container_pid(c, &pod)?;
        let at = Instant::now();
        let out = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .output()?;
        ensure!(out.status.success(), "kill -9 {pid}");
        let gap = gap_after(&acks, at).await?;
        eprintln!("[bench] kill -9 #{run} of {primary}: {gap:.3} s");
        kill9.push(gap);
        // The kubelet restarts a container that died again with a growing back-off
        // (10 s, 20 s, ... per pod): a fresh pod instead keeps every run alike.
        env.api::<Pod>()
            .delete(&primary, &DeleteParams::default())
            .await?;
    }
    let mut delete = Vec::new();
    for run in 0..runs {
        let primary = settled(&env, &acks, Instant::now()).await?;
        let at = Instant::now();
        env.api::<Pod>()
            .delete(&primary, &DeleteParams::default())
            .await?;
        let gap = gap_after(&acks, at).await?;
        eprintln!("[bench] delete #{run} of {primary}: {gap:.3} s");
        delete.push(gap);
    }
    let mut switchover = Vec::new();
    for run in 0..runs {
        let primary = settled(&env, &acks, Instant::now()).await?;
        let target = cluster_pods(&env, CLUSTER)
            .await?
            .iter()
            .map(name)
            .find(|n| *n != primary && !is_arbiter(CLUSTER, n))
            .ok_or_else(|| anyhow!("no replica to switch over to"))?;
        let at = Instant::now();
        annotate(
            &env,
            CLUSTER,
            &format!("studio.cms.io/switchover-to={target}"),
        )?;
        let gap = gap_after(&acks, at).await?;
        wait_for("the switchover done", Duration::from_secs(60), || async {
            let now = cluster_pods(&env, CLUSTER)
                .await?
                .iter()
                .find(|p| role_of(p) == "primary")
                .map(name);
            if now.as_deref() == Some(target.as_str()) {
                Ok(())
            } else {
                bail!("primary {now:?}, want {target}")
            }
        })
        .await?;
        eprintln!("[bench] switchover #{run} {primary} → {target}: {gap:.3} s");
        switchover.push(gap);
    }
    stop.store(true, Ordering::SeqCst);
    report("kill -9 of the primary container", &mut kill9);
    report("delete of the primary's pod", &mut delete);
    report("switchover", &mut switchover);
    env.pass().await
}
