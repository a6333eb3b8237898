//! The write fence of Kubernetes mode: this node takes writes only as primary, with a
//! Lease renewed within the renew deadline and no hand-over in progress; a watchdog
//! demotes a primary that missed the deadline (before any other node can consider the
//! Lease expired).

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

    pub(super) fn handing_over(&self) -> bool {
        self.state.repl.switching.load(Ordering::SeqCst)
    }

    pub(super) fn fence_ok(&self) -> bool {
        self.acting_term().is_some()
            && !self.handing_over()
            && self.renewed_within(self.s.timing.renew_deadline)
    }

    /// Demotes a primary the moment its last renewal is older than the renew deadline
    /// (before any other node can consider the lease expired).
    pub(super) async fn fence_watchdog(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.acting_term().is_some() && !self.renewed_within(self.s.timing.renew_deadline) {
                tracing::error!(
                    renew_deadline = ?self.s.timing.renew_deadline,
                    "could not renew the Lease within the renew deadline: read-only now, stepping down"
                );
                self.step_down().await;
            }
        }
    }
}
