//! The write fence of Kubernetes mode: this node takes writes only as primary, with a
//! Lease renewed within the renew deadline and no hand-over in progress. Past the
//! deadline writes stop at once (before any other node can judge the Lease expired);
//! a later renewal resumes them at the same term; past a lease duration the watchdog
//! steps the node down.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Coordinator, lock};
use crate::cluster::WriteFence;

/// Whether and since when this node acts as primary.
#[derive(Default)]
pub(super) struct Fence {
    /// Some(term) while acting as primary.
    primary_term: Mutex<Option<u64>>,
    /// Start time of the last successful acquisition or renewal.
    last_renew: Mutex<Option<Instant>>,
    /// When this node last gave the primary role up for lack of a quorum.
    relinquished_at: Mutex<Option<Instant>>,
}

impl WriteFence for Coordinator {
    /// Only as primary with a Lease renewed within the renew deadline and no
    /// hand-over in progress.
    fn may_write(&self) -> bool {
        self.fence_ok()
    }
}

impl Coordinator {
    pub(super) fn acting_term(&self) -> Option<u64> {
        *lock(&self.fence.primary_term)
    }

    pub(super) fn set_primary(&self, t: Option<u64>) {
        *lock(&self.fence.primary_term) = t;
    }

    /// Records a successful acquisition or renewal whose request started at `started`.
    pub(super) fn set_renewed(&self, started: Instant) {
        *lock(&self.fence.last_renew) = Some(started);
    }

    pub(super) fn renewed_within(&self, d: Duration) -> bool {
        lock(&self.fence.last_renew).is_some_and(|t| t.elapsed() < d)
    }

    /// Acting as primary, whether it lacked its write quorum (sync mode) or every
    /// replica (async mode, when configured) for longer than allowed.
    pub(super) fn quorum_lost(&self) -> Option<String> {
        self.acting_term()?;
        let repl = &self.state.repl;
        match (
            self.s.sync_k,
            self.s.quorum_loss_timeout,
            self.s.isolation_timeout,
        ) {
            (Some(k), Some(bound), _) if repl.quorum_missing_for() > bound => Some(format!(
                "fewer than {k} replica(s) connected for {:?} (bound {bound:?})",
                repl.quorum_missing_for()
            )),
            (None, _, Some(bound)) if repl.isolated_for() > bound => Some(format!(
                "no replica connected for {:?} (bound {bound:?})",
                repl.isolated_for()
            )),
            _ => None,
        }
    }

    /// Gave the primary role up for lack of a quorum less than a lease duration ago.
    pub(super) fn backing_off(&self) -> bool {
        lock(&self.fence.relinquished_at)
            .is_some_and(|t| t.elapsed() < self.s.timing.lease_duration)
    }

    /// Steps down and releases the Lease: a primary that cannot reach a write quorum
    /// lets the members that can elect one of themselves (never two writable
    /// primaries: it is read-only before the Lease changes hands).
    pub(super) async fn relinquish(&self, why: &str) {
        tracing::error!(reason = %why, "cannot reach the write quorum: stepping down and releasing the Lease");
        *lock(&self.fence.relinquished_at) = Some(Instant::now());
        self.step_down().await;
        if !self.release_lease().await {
            tracing::warn!("could not release the Lease; it expires after a lease duration");
        }
    }

    pub(super) fn handing_over(&self) -> bool {
        self.state.repl.switching.load(Ordering::SeqCst)
    }

    pub(super) fn fence_ok(&self) -> bool {
        self.acting_term().is_some()
            && !self.handing_over()
            && self.renewed_within(self.s.timing.renew_deadline)
    }

    /// Watches the fence of an acting primary. Past the renew deadline without a
    /// renewal, `fence_ok` already refuses every write (before any other node can
    /// judge the Lease expired); the node stays primary, streams keep flowing, and a
    /// renewal that still succeeds (its resourceVersion precondition proves nobody
    /// took the Lease meanwhile) resumes writes at the same term — a link blip costs
    /// no election, no new term and no reconnection. Past a whole lease duration
    /// without a renewal, another node may hold the Lease: step down for good.
    pub(super) async fn fence_watchdog(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fenced = false;
        loop {
            tick.tick().await;
            let acting = self.acting_term().is_some();
            let t = self.s.timing;
            let now_fenced = acting && !self.renewed_within(t.renew_deadline);
            if now_fenced && !fenced {
                tracing::warn!(
                    renew_deadline = ?t.renew_deadline,
                    "could not renew the Lease within the renew deadline: read-only until a renewal succeeds"
                );
            } else if fenced && !now_fenced && acting {
                tracing::info!("the Lease was renewed: taking writes again");
            }
            fenced = now_fenced;
            if acting && !self.renewed_within(t.lease_duration) {
                tracing::error!(
                    lease_duration = ?t.lease_duration,
                    "could not renew the Lease for a lease duration: stepping down"
                );
                self.step_down().await;
                fenced = false;
            }
        }
    }
}
