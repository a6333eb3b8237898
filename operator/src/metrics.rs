//! Prometheus metrics of the operator.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub namespace: String,
    pub cluster: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub switchovers: Counter,
    pub failovers: Counter,
    pub leader: Gauge<i64, AtomicI64>,
    /// Ready data nodes per StudioCluster.
    pub ready_nodes: Family<ClusterLabels, Gauge<i64, AtomicI64>>,
    /// 1 while a StudioCluster is Ready.
    pub cluster_ready: Family<ClusterLabels, Gauge<i64, AtomicI64>>,
    /// When the newest completed base backup of each cluster finished (unix seconds).
    pub backup_last_success: Family<ClusterLabels, Gauge<i64, AtomicI64>>,
    /// When the last failed StudioBackup of each cluster failed (unix seconds).
    pub backup_last_failure: Family<ClusterLabels, Gauge<i64, AtomicI64>>,
    pub backups_completed: Family<ClusterLabels, Counter>,
    pub backups_failed: Family<ClusterLabels, Counter>,
    /// Base backups deleted by retention.
    pub backups_pruned: Family<ClusterLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("studio_operator");
        let reconciles = Counter::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let switchovers = Counter::default();
        let failovers = Counter::default();
        let leader = Gauge::default();
        let ready_nodes = Family::<ClusterLabels, Gauge<i64, AtomicI64>>::default();
        let cluster_ready = Family::<ClusterLabels, Gauge<i64, AtomicI64>>::default();
        let backup_last_success = Family::<ClusterLabels, Gauge<i64, AtomicI64>>::default();
        let backup_last_failure = Family::<ClusterLabels, Gauge<i64, AtomicI64>>::default();
        let backups_completed = Family::<ClusterLabels, Counter>::default();
        let backups_failed = Family::<ClusterLabels, Counter>::default();
        let backups_pruned = Family::<ClusterLabels, Counter>::default();
        registry.register(
            "backup_last_success_timestamp_seconds",
            "When the newest completed base backup of the StudioCluster finished",
            backup_last_success.clone(),
        );
        registry.register(
            "backup_last_failure_timestamp_seconds",
            "When the last StudioBackup of the StudioCluster failed",
            backup_last_failure.clone(),
        );
        registry.register(
            "backups_completed",
            "StudioBackups completed",
            backups_completed.clone(),
        );
        registry.register(
            "backups_failed",
            "StudioBackups failed",
            backups_failed.clone(),
        );
        registry.register(
            "backups_pruned",
            "Base backups deleted by retention",
            backups_pruned.clone(),
        );
        registry.register("reconciles", "Reconciliations run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciliations failed, by error kind",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconciliation",
            reconcile_duration.clone(),
        );
        registry.register(
            "switchovers",
            "Switchovers the operator requested",
            switchovers.clone(),
        );
        registry.register(
            "failovers",
            "Unplanned changes of primary observed",
            failovers.clone(),
        );
        registry.register(
            "cluster_ready_nodes",
            "Ready data nodes of each StudioCluster",
            ready_nodes.clone(),
        );
        registry.register(
            "cluster_ready",
            "1 while the StudioCluster is Ready",
            cluster_ready.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the elected leader",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            switchovers,
            failovers,
            leader,
            ready_nodes,
            cluster_ready,
            backup_last_success,
            backup_last_failure,
            backups_completed,
            backups_failed,
            backups_pruned,
        }
    }

    /// A StudioBackup of the cluster finished (`at`: unix seconds).
    pub fn observe_backup(&self, namespace: &str, cluster: &str, completed: bool, at: i64) {
        let l = ClusterLabels {
            namespace: namespace.into(),
            cluster: cluster.into(),
        };
        if completed {
            self.backups_completed.get_or_create(&l).inc();
            self.note_backup_success(namespace, cluster, at);
        } else {
            self.backups_failed.get_or_create(&l).inc();
            let g = self.backup_last_failure.get_or_create(&l);
            if g.get() < at {
                g.set(at);
            }
        }
    }

    /// The newest completed base backup of the cluster finished at `at` (unix seconds;
    /// also from the archive's list, so the gauge survives an operator restart).
    pub fn note_backup_success(&self, namespace: &str, cluster: &str, at: i64) {
        let l = ClusterLabels {
            namespace: namespace.into(),
            cluster: cluster.into(),
        };
        let g = self.backup_last_success.get_or_create(&l);
        if g.get() < at {
            g.set(at);
        }
    }

    pub fn observe_cluster(&self, namespace: &str, cluster: &str, ready_nodes: i32, ready: bool) {
        let l = ClusterLabels {
            namespace: namespace.into(),
            cluster: cluster.into(),
        };
        self.ready_nodes.get_or_create(&l).set(ready_nodes as i64);
        self.cluster_ready.get_or_create(&l).set(ready as i64);
    }

    /// A deleted cluster stops being reported.
    pub fn forget_cluster(&self, namespace: &str, cluster: &str) {
        let l = ClusterLabels {
            namespace: namespace.into(),
            cluster: cluster.into(),
        };
        self.ready_nodes.remove(&l);
        self.cluster_ready.remove(&l);
        self.backup_last_success.remove(&l);
        self.backup_last_failure.remove(&l);
        self.backups_completed.remove(&l);
        self.backups_failed.remove(&l);
        self.backups_pruned.remove(&l);
    }

    pub fn observe_reconcile(&self, took: Duration, err: Option<&Error>) {
        self.reconciles.inc();
        self.reconcile_duration.observe(took.as_secs_f64());
        if let Some(e) = err {
            self.reconcile_errors
                .get_or_create(&ErrorLabels {
                    error: e.metric_label().into(),
                })
                .inc();
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_the_leader_and_each_cluster() {
        let m = Metrics::new();
        m.leader.set(1);
        m.observe_cluster("cms", "acme", 3, true);
        m.observe_reconcile(Duration::from_millis(20), Some(&Error::MissingField("x")));
        let text = m.encode();
        assert!(
            text.lines().any(|l| l == "studio_operator_leader 1"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"studio_operator_cluster_ready_nodes{namespace="cms",cluster="acme"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"studio_operator_reconcile_errors_total{error="missing_field"} 1"#),
            "{text}"
        );
        m.observe_backup("cms", "acme", true, 1_800_000_000);
        m.observe_backup("cms", "acme", false, 1_800_000_100);
        m.note_backup_success("cms", "acme", 1_700_000_000);
        let text = m.encode();
        for line in [
            r#"studio_operator_backup_last_success_timestamp_seconds{namespace="cms",cluster="acme"} 1800000000"#,
            r#"studio_operator_backup_last_failure_timestamp_seconds{namespace="cms",cluster="acme"} 1800000100"#,
            r#"studio_operator_backups_completed_total{namespace="cms",cluster="acme"} 1"#,
            r#"studio_operator_backups_failed_total{namespace="cms",cluster="acme"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        m.forget_cluster("cms", "acme");
        assert!(!m.encode().contains("acme"));
    }
}
