//! Monitoring as users run it. A real Prometheus (built from the Go module proxy by
//! `scripts/build-prometheus.sh`) finds the nodes and the operator through Kubernetes
//! service discovery, configured from the chart's own PodMonitor and ServiceMonitor
//! (translated as the Prometheus Operator translates them, `studio_e2e::prometheus`),
//! and evaluates the chart's alert rules file unchanged. The test cuts a replica off
//! its primary while clients write: `StudioMemberNotStreaming` must fire for that
//! replica (and only for it), and clear once the cut heals.

mod common;
#[path = "support/jepsen.rs"]
mod jepsen;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::Value;
use studio_e2e::prometheus::{Prometheus, scrape_configs};
use studio_harness::wait_for;

use common::*;
use jepsen::{Expect, Jepsen, seed};

/// Scrape and rule-evaluation interval of the test's Prometheus.
const INTERVAL: Duration = Duration::from_secs(5);
const ALERT: &str = "StudioMemberNotStreaming";

/// The chart rendered with its monitoring kit on, for the installed release.
fn rendered_monitors(j: &Jepsen) -> anyhow::Result<String> {
    let chart = j.env.cluster.repo.join("charts/studio-operator");
    helm(
        j.env.cluster,
        [
            "template".as_ref(),
            RELEASE.as_ref(),
            chart.as_os_str(),
            "--namespace".as_ref(),
            OPERATOR_NS.as_ref(),
            "--set".as_ref(),
            "monitoring.podMonitor.enabled=true".as_ref(),
            "--set".as_ref(),
            "monitoring.serviceMonitor.enabled=true".as_ref(),
        ],
    )
}

/// The alerts named [`ALERT`] for this test's namespace: (pod, state).
async fn not_streaming(prom: &Prometheus, ns: &str) -> anyhow::Result<Vec<(String, String)>> {
    Ok(prom
        .alerts()
        .await?
        .iter()
        .filter(|a| a["labels"]["alertname"] == ALERT && a["labels"]["namespace"] == ns)
        .map(|a| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (s(&a["labels"]["pod"]), s(&a["state"]))
        })
        .collect())
}

async fn count(prom: &Prometheus, expr: &str) -> anyhow::Result<f64> {
    Ok(prom.query(expr).await?.first().map_or(0.0, |(_, v)| *v))
}

#[tokio::test]
async fn a_replica_cut_from_its_primary_fires_member_not_streaming() -> anyhow::Result<()> {
    let mut j = Jepsen::start("monitoring", "mon", false, false, seed()).await?;
    let ns = j.env.ns.clone();
    let r = async {
        let configs = scrape_configs(&rendered_monitors(&j)?, &j.env.cluster.kubeconfig)?;
        let rules: Vec<PathBuf> = vec![
            j.env
                .cluster
                .repo
                .join("charts/studio-operator/files/studio-alerts.yaml"),
        ];
        let prom = Prometheus::start(
            &j.env.cluster.cp_bin.join("prometheus"),
            configs,
            &rules,
            INTERVAL,
        )
        .await?;
        eprintln!(
            "[monitoring] Prometheus at {} (log {})",
            prom.url,
            prom.log.display()
        );

        // Discovery: every member and an operator replica, with the labels the rules use.
        let members = j.members().await?.len();
        let up = format!(
            r#"count(up{{job="studio-node", namespace="{ns}", studio_cluster="mon"}} == 1)"#
        );
        let discovered = wait_for(
            &format!("Prometheus to scrape the {members} members and the operator"),
            Duration::from_secs(90),
            || async {
                let nodes = count(&prom, &up).await?;
                let operator = count(&prom, r#"count(up{job="studio-operator"} == 1)"#).await?;
                let primary = count(
                    &prom,
                    &format!(
                        r#"count(studio_journal_seq{{namespace="{ns}", studio_role="primary"}})"#
                    ),
                )
                .await?;
                ensure!(
                    nodes as usize == members && operator >= 1.0 && primary == 1.0,
                    "{nodes} members, {operator} operator replicas, {primary} primary scraped"
                );
                Ok(())
            },
        )
        .await;
        if let Err(e) = discovered {
            let targets = prom.targets().await.unwrap_or_default();
            return Err(e.context(format!("targets: {targets:#?}")));
        }
        // The operator's per-cluster gauge made it through honorLabels.
        let gauge =
            format!(r#"studio_operator_cluster_ready_nodes{{namespace="{ns}", cluster="mon"}}"#);
        wait_for(
            "the operator's gauge for the cluster",
            Duration::from_secs(30),
            || async {
                ensure!(count(&prom, &gauge).await? >= 1.0, "{gauge} not scraped");
                Ok(())
            },
        )
        .await?;
        // Right after discovery a replica may have a single sample (`changes()` = 0 while
        // the primary moves on), so the rule can be pending for a scrape or two; `for: 1m`
        // keeps that from firing. Before the fault it must clear, and never fire.
        wait_for(
            &format!("no {ALERT} while every member streams"),
            Duration::from_secs(60),
            || async {
                let alerts = not_streaming(&prom, &ns).await?;
                ensure!(alerts.is_empty(), "{ALERT} before any fault: {alerts:?}");
                Ok(())
            },
        )
        .await?;

        // Cut a replica from every other member; clients keep writing to the primary.
        let p = j.primary().await?;
        let victim = j
            .replicas(&p)
            .await?
            .into_iter()
            .next()
            .context("no replica")?;
        let all = j.members().await?;
        let id = j.nemesis.cut_from_peers(&victim, &all)?;
        j.first_fault = Some(Instant::now());
        let cut = Instant::now();
        // The rule needs 2 minutes without an applied entry, then holds for 1 minute.
        wait_for(
            &format!("{ALERT} firing for {}", victim.name),
            Duration::from_secs(300),
            || async {
                let a = not_streaming(&prom, &ns).await?;
                ensure!(
                    a.contains(&(victim.name.clone(), "firing".to_string())),
                    "alerts: {a:?}"
                );
                Ok(())
            },
        )
        .await?;
        let fired = cut.elapsed();
        let others: Vec<(String, String)> = not_streaming(&prom, &ns)
            .await?
            .into_iter()
            .filter(|(pod, _)| *pod != victim.name)
            .collect();
        ensure!(
            others.is_empty(),
            "{ALERT} also for members that stream: {others:?}"
        );
        eprintln!(
            "[monitoring] {ALERT} fired for {} {:.0}s after the cut",
            victim.name,
            fired.as_secs_f64()
        );

        j.nemesis.heal(id)?;
        let healed = Instant::now();
        wait_for(
            &format!("{ALERT} to clear"),
            Duration::from_secs(60),
            || async {
                let a = not_streaming(&prom, &ns).await?;
                ensure!(a.is_empty(), "alerts: {a:?}");
                Ok(())
            },
        )
        .await?;
        eprintln!(
            "[monitoring] {ALERT} cleared {:.0}s after the heal",
            healed.elapsed().as_secs_f64()
        );
        anyhow::Ok(())
    }
    .await;
    j.finish(
        r,
        Expect {
            max_gap_from: None,
            observe_after_heal: Duration::ZERO,
        },
    )
    .await
}
