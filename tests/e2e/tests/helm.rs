//! Helm as users upgrade: a cluster at the previous chart version (0.1.0, commit
//! e4e0b68, packaged in tests/helm: CRD from `crds/`, no upgrade hook) is upgraded with `helm upgrade` to this
//! chart, and the CRD in the cluster changes with it (the chart's pre-upgrade hook runs
//! `studio-operator --apply-crds`). Exclusive: it moves the shared operator install.

mod common;

use std::time::Duration;

use anyhow::ensure;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::PostParams;
use studio_harness::{TestEnv, wait_for};

use common::*;

/// The previous chart release (chart version 0.1.0, commit e4e0b68), packaged.
const PREVIOUS_CHART: &str = "tests/helm/studio-operator-0.1.0.tgz";
const CRD: &str = "studioclusters.studio.cms.io";

/// The printer columns of the CRD in the cluster.
async fn columns(env: &TestEnv) -> anyhow::Result<Vec<String>> {
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let crd = crds.get(CRD).await?;
    Ok(crd
        .spec
        .versions
        .first()
        .and_then(|v| v.additional_printer_columns.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.name)
        .collect())
}

#[tokio::test]
async fn helm_upgrade_from_the_previous_chart_upgrades_the_crd() -> anyhow::Result<()> {
    operator().await?;
    let env = TestEnv::new_exclusive("helm-upgrade").await?;
    let repo = env.cluster.repo.clone();
    let scratch = env.cluster.dir.join("scratch").join(&env.ns);
    std::fs::create_dir_all(&scratch)?;
    // The previous chart as released (`helm package` of commit e4e0b68, kept in the
    // repository so that a shallow clone can run this test).
    let previous = repo.join(PREVIOUS_CHART);
    let untar = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&previous)
        .arg("-C")
        .arg(&scratch)
        .status()?;
    ensure!(untar.success(), "tar -xzf {}", previous.display());
    let chart_yaml = std::fs::read_to_string(scratch.join("studio-operator/Chart.yaml"))?;
    ensure!(
        chart_yaml.contains("version: 0.1.0"),
        "not the 0.1.0 chart: {chart_yaml}"
    );

    // A cluster at the previous release: its chart, and the CRD its crds/ installed.
    helm_upgrade_operator(env.cluster, &previous)?;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let mut prev_crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(
        scratch.join("studio-operator/crds/studiocluster.yaml"),
    )?)?;
    prev_crd.metadata.resource_version = crds.get(CRD).await?.metadata.resource_version;
    crds.replace(CRD, &PostParams::default(), &prev_crd).await?;
    let old = columns(&env).await?;
    ensure!(
        !old.iter().any(|c| c == "Members"),
        "the previous CRD already has the Members column: {old:?}"
    );

    // The upgrade users run.
    let out = helm_upgrade_operator(env.cluster, &repo.join("charts/studio-operator"))?;
    eprintln!(
        "[helm] {}",
        out.lines().take(3).collect::<Vec<_>>().join(" | ")
    );
    let new = wait_for("the upgraded CRD", Duration::from_secs(30), || async {
        let c = columns(&env).await?;
        ensure!(c.iter().any(|c| c == "Members"), "columns: {c:?}");
        Ok(c)
    })
    .await?;
    eprintln!("[helm] CRD printer columns {old:?} → {new:?}");
    let list = helm(
        env.cluster,
        ["list", "--namespace", OPERATOR_NS, "--output", "json"],
    )?;
    ensure!(list.contains("studio-operator-0.2.0"), "helm list: {list}");
    let _ = std::fs::remove_dir_all(&scratch);
    env.pass().await
}
