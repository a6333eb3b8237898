//! Health as GitOps tools read it. One cluster goes through create → ready → scale →
//! member lost → recovered → bad image → fixed, and at each step the object is judged
//! by the real kstatus library (what Flux and cli-utils use) and by the Argo CD health
//! check shipped in `deploy/argocd/studiocluster-health.lua`, run in gopher-lua as Argo
//! CD runs it (`tests/health`, built with the control plane as `studio-health`).

mod common;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use studio_e2e::name;
use studio_harness::{TestEnv, pod_pids, wait_for};
use tokio::io::AsyncWriteExt;

use common::*;

/// What kstatus and Argo CD say about the object.
#[derive(Debug, Clone, PartialEq)]
struct Health {
    kstatus: String,
    argo: String,
    message: String,
}

async fn judge(env: &TestEnv, cluster: &str) -> anyhow::Result<Health> {
    let obj = studio_api(env).get(cluster).await?;
    let json = serde_json::to_vec(&obj)?;
    let script = env
        .cluster
        .repo
        .join("deploy/argocd/studiocluster-health.lua");
    let mut child = tokio::process::Command::new(env.cluster.cp_bin.join("studio-health"))
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running studio-health (built by scripts/build-controlplane.sh)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&json).await?;
    }
    let out = child.wait_with_output().await?;
    ensure!(
        out.status.success(),
        "studio-health failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    Ok(Health {
        kstatus: s("kstatus"),
        argo: s("argo"),
        message: format!(
            "kstatus: {}; argo: {}",
            s("kstatusMessage"),
            s("argoMessage")
        ),
    })
}

/// Waits until kstatus and Argo CD give `kstatus` and `argo`; returns the message.
async fn expect(
    env: &TestEnv,
    cluster: &str,
    step: &str,
    kstatus: &str,
    argo: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let h = wait_for(
        &format!("{step}: kstatus {kstatus}, Argo CD {argo}"),
        timeout,
        || async {
            let h = judge(env, cluster).await?;
            ensure!(h.kstatus == kstatus && h.argo == argo, "{h:?}");
            Ok(h)
        },
    )
    .await?;
    eprintln!(
        "[health] {step}: kstatus {kstatus}, Argo CD {argo} ({})",
        h.message
    );
    Ok(h.message)
}

#[tokio::test]
async fn kstatus_and_argo_cd_health_follow_the_lifecycle() -> anyhow::Result<()> {
    let env = OpEnv::new("health").await?;
    let cluster = "gitops";
    apply(
        &env,
        "gitops.json",
        &cluster_manifest(cluster, json!({"nodes": 2})),
    )?;
    expect(
        &env,
        cluster,
        "created",
        "InProgress",
        "Progressing",
        Duration::from_secs(60),
    )
    .await?;
    wait_ready(&env, cluster, 2, START).await?;
    expect(
        &env,
        cluster,
        "ready",
        "Current",
        "Healthy",
        Duration::from_secs(30),
    )
    .await?;

    patch_spec(&env, cluster, json!({"nodes": 3}))?;
    expect(
        &env,
        cluster,
        "scaling 2 → 3",
        "InProgress",
        "Progressing",
        Duration::from_secs(60),
    )
    .await?;
    wait_ready(&env, cluster, 3, START).await?;
    expect(
        &env,
        cluster,
        "scaled",
        "Current",
        "Healthy",
        Duration::from_secs(30),
    )
    .await?;

    // A member lost: a replica's processes frozen until both tools see it.
    let (primary, _) = wait_for("roles to agree", Duration::from_secs(30), || {
        roles_agree(&env, cluster, 3)
    })
    .await?;
    let pods = cluster_pods(&env, cluster).await?;
    let replica = pods
        .iter()
        .find(|p| name(p) != primary && !name(p).contains("arbiter"))
        .context("no replica pod")?;
    {
        let _frozen = Stopped::new(pod_pids(replica)?)?;
        let msg = expect(
            &env,
            cluster,
            &format!("member {} lost", name(replica)),
            "InProgress",
            "Degraded",
            Duration::from_secs(60),
        )
        .await?;
        ensure!(
            msg.contains(&name(replica)),
            "the message does not name the lost member: {msg}"
        );
    }
    expect(
        &env,
        cluster,
        "member recovered",
        "Current",
        "Healthy",
        Duration::from_secs(90),
    )
    .await?;

    // An image that cannot be pulled: nothing is rolled, the cluster is Stalled.
    patch_spec(
        &env,
        cluster,
        json!({"image": "local/studio-node-missing:v9"}),
    )?;
    let msg = expect(
        &env,
        cluster,
        "bad image",
        "Failed",
        "Degraded",
        Duration::from_secs(90),
    )
    .await?;
    ensure!(
        msg.contains("studio-node-missing"),
        "the message does not name the image: {msg}"
    );
    let images: Vec<String> = cluster_pods(&env, cluster)
        .await?
        .iter()
        .map(image_of)
        .collect();
    ensure!(
        images.iter().all(|i| i == node_image()),
        "pods were moved to the bad image: {images:?}"
    );
    ensure!(
        status(&env, cluster).await?.ready,
        "the cluster stopped serving over a bad image"
    );

    // Fixed: back to the running image.
    patch_spec(&env, cluster, json!({"image": node_image()}))?;
    expect(
        &env,
        cluster,
        "image fixed",
        "Current",
        "Healthy",
        Duration::from_secs(60),
    )
    .await?;
    env.pass().await
}
