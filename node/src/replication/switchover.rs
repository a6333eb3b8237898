//! The planned switchover, one implementation for both modes: stop taking writes,
//! wait until the target has acknowledged everything, hand it the primary role, step
//! down and follow it. How the role is handed over is the only difference between
//! modes ([`Transfer`]): outside Kubernetes the target is promoted over HTTP
//! ([`PromoteOverHttp`]); in Kubernetes mode coordination hands it the Lease.
//!
//! On any failure before the hand-over, writes resume here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use studio_crds::node_api::{self, AdminResponse, ClusterStatus, NodeRole, PromoteRequest};

use super::Replication;
use super::roles::{demote, follow, known_term};
use crate::cluster::Role;

/// Longest wait for the target to answer as primary after the hand-over.
const SERVING_WAIT: Duration = Duration::from_secs(3);
/// The promote call of a switchover without Kubernetes gives up after this long.
pub const PROMOTE_TIMEOUT: Duration = Duration::from_secs(5);

/// The member to hand over to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Node id (the pod name in Kubernetes mode).
    pub name: String,
    /// Base URL.
    pub url: String,
}

/// Why a switchover did not happen (writes continue here in every case).
#[derive(Debug, thiserror::Error)]
pub enum SwitchoverError {
    #[error("switchover starts on the writable primary")]
    NotPrimary,
    #[error("a switchover is already in progress")]
    InProgress,
    #[error("{0}")]
    BadTarget(String),
    #[error("{target} did not catch up with seq {seq} within {timeout:?}; writes resumed here")]
    CatchUpTimeout {
        target: String,
        seq: u64,
        timeout: Duration,
    },
    #[error("handing over to {target} failed ({reason}); writes resumed here")]
    TransferFailed { target: String, reason: String },
    #[error("the switchover task failed: {0}")]
    Task(String),
}

/// Hands the primary role to a target that holds everything this primary wrote.
pub trait Transfer {
    /// Makes `target` the primary after `term`; returns the term it will write in.
    fn transfer(
        &self,
        target: &Target,
        term: u64,
    ) -> impl std::future::Future<Output = Result<u64, String>> + Send;
}

/// Outside Kubernetes: promote the target at the next term over its admin route.
pub struct PromoteOverHttp<'a>(pub &'a Replication);

impl Transfer for PromoteOverHttp<'_> {
    async fn transfer(&self, target: &Target, _term: u64) -> Result<u64, String> {
        let state = self.0;
        let term = known_term(state) + 1;
        let call = state
            .http
            .post(format!("{}{}", target.url, node_api::ADMIN_PROMOTE))
            .timeout(PROMOTE_TIMEOUT)
            .json(&PromoteRequest { term, force: false });
        match state.internal(call).send().await {
            Ok(r) if r.status().is_success() => Ok(term),
            Ok(r) => Err(format!(
                "{} answered {}",
                target.name,
                r.text().await.unwrap_or_default()
            )),
            Err(e) if e.is_timeout() => Err(format!(
                "the promote call to {} timed out after {PROMOTE_TIMEOUT:?}",
                target.name
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Marks a switchover in progress; refuses a second one (two racing hand-overs could
/// leave the cluster without a writable primary).
pub struct InProgress<'a>(&'a AtomicBool);

impl<'a> InProgress<'a> {
    pub fn begin(flag: &'a AtomicBool) -> Result<InProgress<'a>, SwitchoverError> {
        if flag.swap(true, Ordering::SeqCst) {
            return Err(SwitchoverError::InProgress);
        }
        Ok(InProgress(flag))
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Finds `target` (node id or URL) among the replicas that streamed from this primary.
pub fn connected_target(state: &Replication, target: &str) -> Result<Target, SwitchoverError> {
    let target = target.trim().trim_end_matches('/');
    state
        .repl
        .peers_snapshot()
        .into_iter()
        .find(|(id, p)| id == target || p.address.as_deref() == Some(target))
        .filter(|(_, p)| p.role != Some(Role::Arbiter))
        .and_then(|(id, p)| {
            Some(Target {
                name: id,
                url: p.address?,
            })
        })
        .ok_or_else(|| {
            SwitchoverError::BadTarget(format!(
                "{target} is not a connected replica of this primary"
            ))
        })
}

/// The switchover itself (see the module doc). The caller marked it in progress.
pub async fn run(
    state: &Replication,
    target: &Target,
    timeout: Duration,
    transfer: &impl Transfer,
) -> Result<AdminResponse, SwitchoverError> {
    let info = state.role.get();
    if info.role != Role::Primary || info.read_only {
        return Err(SwitchoverError::NotPrimary);
    }
    let started = Instant::now();
    state.role.update(|i| i.read_only = true);
    let resume = |e: SwitchoverError| {
        state.role.update(|i| {
            if i.role == Role::Primary {
                i.read_only = false;
            }
        });
        tracing::warn!(target = %target.name, error = %e, "switchover failed; still primary");
        e
    };
    if let Err(e) = wait_caught_up(state, target, timeout).await {
        return Err(resume(e));
    }
    let term = match transfer.transfer(target, info.term).await {
        Ok(t) => t,
        Err(reason) => {
            return Err(resume(SwitchoverError::TransferFailed {
                target: target.name.clone(),
                reason,
            }));
        }
    };
    if let Err(e) = demote(state, None).await {
        tracing::warn!(error = %e, "demote after switchover failed");
    }
    // Follow the target once it serves as primary, so the stream connects at the
    // first attempt.
    let until = Instant::now() + SERVING_WAIT;
    while Instant::now() < until && !serves_as_primary(state, &target.url).await {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Err(e) = follow(state, &target.url, Some(term)).await {
        tracing::warn!(error = %e, "following the new primary failed");
    }
    let ms = started.elapsed().as_millis() as u64;
    tracing::info!(target = %target.name, term, ms, "switchover: handed the primary role over");
    Ok(AdminResponse {
        ok: true,
        role: NodeRole::Replica,
        term,
        seq: state.store.position().seq,
        message: format!("handed the primary role to {} in {ms} ms", target.name),
    })
}

/// Waits until the target acknowledged this node's last position (writes are
/// already refused, so the position is final).
async fn wait_caught_up(
    state: &Replication,
    target: &Target,
    timeout: Duration,
) -> Result<(), SwitchoverError> {
    let deadline = Instant::now() + timeout;
    let mut acks = state.repl.subscribe_acks();
    loop {
        let own = state.store.position();
        let acked =
            state.repl.peers_snapshot().into_iter().any(|(id, p)| {
                id == target.name && (p.acked.term, p.acked.seq) >= (own.term, own.seq)
            });
        if acked {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(SwitchoverError::CatchUpTimeout {
                target: target.name.clone(),
                seq: own.seq,
                timeout,
            });
        }
        let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), acks.changed()).await;
    }
}

/// Whether the node at `url` answers as a writable primary.
pub async fn serves_as_primary(state: &Replication, url: &str) -> bool {
    status_of(state, url)
        .await
        .is_some_and(|s| s.role == NodeRole::Primary && !s.read_only)
}

/// A peer's `/api/v1/cluster/status` (short timeout; None when it does not answer).
pub async fn status_of(state: &Replication, url: &str) -> Option<ClusterStatus> {
    let resp = state
        .internal(state.http.get(format!("{url}{}", node_api::CLUSTER_STATUS)))
        .timeout(Duration::from_millis(1500))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}
