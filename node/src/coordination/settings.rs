//! Kubernetes-mode settings (pod spec env and flags), and the back-off of the watches.

use std::time::Duration;

use anyhow::Context;
use kube::runtime::watcher;

use super::election::{Policy, Timing};
use crate::config::{Config, ReplicationMode, RoleArg};

/// Kubernetes-mode settings, from the pod spec (env) and flags.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster: String,
    pub namespace: String,
    pub pod_name: String,
    pub port: u16,
    /// `http` or `https` (the members serve TLS when the node does).
    pub scheme: &'static str,
    pub timing: Timing,
    pub policy: Policy,
    /// M: members holding the journal (data nodes + arbiter); None = from the
    /// StatefulSets.
    pub members: Option<usize>,
    pub arbiter: bool,
    /// K in sync mode.
    pub sync_k: Option<u32>,
    /// Sync mode: a primary without its write quorum for this long steps down.
    pub quorum_loss_timeout: Option<Duration>,
    /// Async mode: a primary without any replica for this long steps down.
    pub isolation_timeout: Option<Duration>,
}

impl Settings {
    pub fn from_config(c: &Config) -> anyhow::Result<Settings> {
        let cluster = c
            .cluster
            .clone()
            .filter(|s| !s.is_empty())
            .context("Kubernetes mode needs the cluster name (STUDIO_CLUSTER or --cluster); use --standalone or --follow outside Kubernetes")?;
        let namespace = c
            .namespace
            .clone()
            .filter(|s| !s.is_empty())
            .context("Kubernetes mode needs POD_NAMESPACE (downward API) or --namespace")?;
        let timing = Timing {
            lease_duration: c.lease_duration,
            renew_deadline: c.renew_deadline,
            retry_period: c.retry_period,
        };
        timing.validate().map_err(anyhow::Error::msg)?;
        let policy = Policy::parse(
            c.election_priorities.as_deref(),
            c.eligible_pattern.as_deref(),
        )
        .map_err(anyhow::Error::msg)?;
        Ok(Settings {
            cluster,
            namespace,
            pod_name: c.node_id(),
            port: c.peer_port(),
            scheme: c.scheme(),
            timing,
            policy,
            members: c.members.map(|m| m as usize),
            arbiter: c.role == Some(RoleArg::Arbiter),
            sync_k: match c.replication_mode {
                ReplicationMode::Sync if c.sync_replicas > 0 => Some(c.sync_replicas),
                _ => None,
            },
            quorum_loss_timeout: match c.quorum_loss_timeout {
                None => Some(c.lease_duration),
                Some(d) if d.is_zero() => None,
                Some(d) => Some(d),
            },
            isolation_timeout: Some(c.isolation_timeout).filter(|d| !d.is_zero()),
        })
    }
}

/// Back-off of the pod and Lease watches: 200 ms doubling up to 1.5 s, plus backon's
/// jitter (up to the same again), so at most 3 s. kube-runtime's default (client-go's
/// reflector: up to 30 s) meant a node could wait ~25 s after a 30 s API outage before
/// it saw the Lease again (measured 26.7 s once); a few nodes retrying every few
/// seconds is nothing for the API server.
pub(super) fn watch_backoff() -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_millis(1500))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_retry_within_three_seconds_forever() {
        let delays: Vec<Duration> = watch_backoff().take(200).collect();
        assert_eq!(delays.len(), 200, "the back-off must never give up");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(3)),
            "{delays:?}"
        );
        assert!(delays[0] < Duration::from_millis(401), "{delays:?}");
    }
}
