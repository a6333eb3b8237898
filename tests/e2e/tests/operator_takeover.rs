//! The operator's decisions survive a change of operator leader: the switchover in
//! progress lives in `status.switchover`, not in the leader's memory. The leader is
//! killed the moment it has recorded a switchover (a user's `switchover-to` request,
//! then the one a scale-down needs because the primary's pod goes away); the
//! standby that takes over must finish the job and record the change of primary as a
//! switchover, not a failover, while a client keeps writing and loses nothing.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use studio_e2e::name;
use studio_harness::{TestEnv, wait_for};

use common::*;

/// Polls `status.switchover` until it names `to` (as soon as the leader recorded it).
async fn recorded_switchover(env: &TestEnv, cluster: &str) -> anyhow::Result<Value> {
    let api = studio_api(env);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(90) {
        let obj = api.get(cluster).await?;
        let rec = &obj.data["status"]["switchover"];
        if rec.is_object() {
            return Ok(rec.clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no switchover recorded in status within 90 s")
}

/// Waits until the primary is `to`, `status.lastFailover` records the change to it as a
/// switchover and `status.switchover` is gone.
async fn wait_switchover_recorded(
    env: &TestEnv,
    cluster: &str,
    to_one_of: &[String],
) -> anyhow::Result<Value> {
    wait_for(
        &format!("the change of primary to one of {to_one_of:?} recorded as a switchover"),
        Duration::from_secs(120),
        || async {
            let obj = studio_api(env).get(cluster).await?;
            let st = &obj.data["status"];
            let last = &st["lastFailover"];
            let to = last["to"].as_str().unwrap_or_default().to_string();
            ensure!(
                to_one_of.contains(&to)
                    && st["currentPrimary"].as_str() == Some(to.as_str())
                    && st["switchover"].is_null(),
                "lastFailover {last}, primary {}, switchover {}",
                st["currentPrimary"],
                st["switchover"]
            );
            Ok(last.clone())
        },
    )
    .await
}

#[tokio::test]
async fn a_new_operator_leader_finishes_switchovers_and_records_them_right() -> anyhow::Result<()> {
    operator().await?;
    let _exclusive = OPERATOR_GATE.write().await;
    let env = TestEnv::new("op-takeover").await?;
    let cluster = "handover";
    apply(
        &env,
        "handover.json",
        &cluster_manifest(
            cluster,
            json!({"nodes": 3, "arbiter": {"enabled": false}, "replication": {"mode": "async", "syncReplicas": null}}),
        ),
    )?;
    let s = wait_ready(&env, cluster, 3, START).await?;
    let primary = s.current_primary.context("no primary")?;
    let content = Content::new(&env, cluster).await?;
    let load = Load::start(&env, cluster, content.clone(), "takeover");

    // 1. A user's switchover to the highest ordinal the primary is not on.
    let target = if primary == format!("{cluster}-2") {
        format!("{cluster}-1")
    } else {
        format!("{cluster}-2")
    };
    annotate(
        &env,
        cluster,
        &format!("studio.cms.io/switchover-to={target}"),
    )?;
    let rec = recorded_switchover(&env, cluster).await?;
    let t0 = Instant::now();
    let killed = kill_operator_leader(&env).await?;
    eprintln!("[takeover] leader {killed} killed right after it recorded {rec}");
    ensure!(
        rec["to"] == target.as_str() && rec["reason"] == "requested",
        "recorded {rec}, expected a requested switchover to {target}"
    );
    let new_leader = wait_new_operator_leader(&env, &killed).await?;
    wait_operator_pods_ready(&env).await?;
    let last = wait_switchover_recorded(&env, cluster, std::slice::from_ref(&target)).await?;
    ensure!(
        last["kind"] == "switchover",
        "the requested switchover was recorded as {last}"
    );
    let obj = studio_api(&env).get(cluster).await?;
    ensure!(
        obj.metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key("studio.cms.io/switchover-to")),
        "the switchover-to request was not cleared"
    );
    eprintln!(
        "[takeover] TIMING requested switchover to {target} finished by {new_leader} {:.1}s after the kill: {last}",
        t0.elapsed().as_secs_f64()
    );

    // 2. Scale down below the primary's ordinal: the primary must be switched over to a
    //    remaining member before its pod goes.
    let ordinal: i64 = target
        .rsplit('-')
        .next()
        .and_then(|o| o.parse().ok())
        .context("target ordinal")?;
    patch_spec(&env, cluster, json!({"nodes": ordinal}))?;
    let rec = recorded_switchover(&env, cluster).await?;
    let t1 = Instant::now();
    let killed = kill_operator_leader(&env).await?;
    eprintln!("[takeover] leader {killed} killed right after it recorded {rec}");
    ensure!(
        rec["reason"] == "scale-down" && rec["from"] == target.as_str(),
        "recorded {rec}, expected a scale-down switchover from {target}"
    );
    let new_leader = wait_new_operator_leader(&env, &killed).await?;
    wait_operator_pods_ready(&env).await?;
    let remaining: Vec<String> = (0..ordinal).map(|o| format!("{cluster}-{o}")).collect();
    let last = wait_switchover_recorded(&env, cluster, &remaining).await?;
    ensure!(
        last["kind"] == "switchover" && last["from"] == target.as_str(),
        "the scale-down switchover was recorded as {last}"
    );
    wait_ready(&env, cluster, ordinal, START).await?;
    // The removed pod may still be in its termination grace period (a real kubelet
    // takes its time to report it gone).
    wait_for(
        "only the remaining pods after the scale-down",
        Duration::from_secs(60),
        || async {
            let pods: Vec<String> = cluster_pods(&env, cluster)
                .await?
                .iter()
                .map(name)
                .collect();
            ensure!(pods == remaining, "pods: {pods:?}");
            Ok(())
        },
    )
    .await?;
    eprintln!(
        "[takeover] TIMING scale-down switchover finished by {new_leader} {:.1}s after the kill: {last}",
        t1.elapsed().as_secs_f64()
    );

    let (acked, errors) = load.stop().await;
    ensure!(
        !acked.is_empty(),
        "no write acknowledged ({} errors)",
        errors.len()
    );
    verify_acked(&env, cluster, &content, &acked).await?;
    eprintln!(
        "[takeover] {} writes acknowledged, all read back; {} failed attempts",
        acked.len(),
        errors.len()
    );
    remove_scratch(&env);
    env.pass().await
}
