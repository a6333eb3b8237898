//! The Lease as this node last observed it (from its watch or its own writes): when the
//! record last changed and since when its holder holds it (local clock), whether it is a
//! hold of this pod's previous process, and whether the Lease may be taken now.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use studio_crds::names;

use super::election::{self, Observed};
use super::{Coordinator, kubeapi, lock};
use crate::replication::promise::version_number;

/// The cached observation of the Lease.
#[derive(Default)]
pub(super) struct LeaseView {
    /// The Lease as last observed, and when it last changed (local clock).
    lease: Mutex<Option<Observed>>,
    /// The Lease watch has listed once.
    pub(super) synced: AtomicBool,
    /// The holder named by the Lease and since when (local clock).
    holder_since: Mutex<Option<(String, Instant)>>,
    first_seen: AtomicBool,
    /// When the Lease was last read (watch event or own call), changed or not.
    last_heard: Mutex<Option<Instant>>,
    /// resourceVersion of a Lease naming this node that predates this process: its
    /// previous incarnation is dead (we are running), so that holding proves nothing.
    stale_self: Mutex<Option<String>>,
}

impl LeaseView {
    /// How long `holder` has been the holder (zero if the Lease names someone else).
    pub(super) fn held_for(&self, holder: &str) -> Duration {
        match &*lock(&self.holder_since) {
            Some((n, t)) if n == holder => t.elapsed(),
            _ => Duration::ZERO,
        }
    }

    /// Whether `obs` is the hold of this pod's previous process (`me_holds`: it names
    /// this pod).
    pub(super) fn stale_self(&self, obs: Option<&Observed>, me_holds: bool) -> bool {
        me_holds && obs.and_then(|o| o.record.resource_version.clone()) == *lock(&self.stale_self)
    }
}

impl Coordinator {
    pub(super) fn lease_name(&self) -> String {
        names::primary_lease(&self.s.cluster)
    }

    /// Whether nothing was heard of the Lease for `quiet` (a watch may be stuck on a
    /// dead connection after a network cut, silently).
    pub(super) fn lease_quiet(&self, quiet: Duration) -> bool {
        lock(&self.view.last_heard).is_none_or(|t| t.elapsed() > quiet)
    }

    pub(super) fn lease_now(&self) -> Option<Observed> {
        lock(&self.view.lease).clone()
    }

    /// The resourceVersion of the Lease as this node last observed it (a number).
    pub fn lease_version(&self) -> Option<u64> {
        version_number(
            lock(&self.view.lease)
                .as_ref()
                .and_then(|o| o.record.resource_version.as_deref()),
        )
    }

    /// Records an observation of the Lease (from the watch or our own calls).
    pub(super) fn observe(&self, l: Option<&Lease>) {
        let now = Instant::now();
        let view = &self.view;
        *lock(&view.last_heard) = Some(now);
        let mut g = lock(&view.lease);
        match l {
            Some(l) => {
                let rec = kubeapi::record_of(l);
                if !view.first_seen.swap(true, Ordering::SeqCst)
                    && rec.holder.as_deref() == Some(self.me())
                    && self.acting_term().is_none()
                {
                    tracing::info!(
                        term = rec.transitions,
                        "the Lease names this pod from a previous run: that process is gone, so the Lease is free"
                    );
                    *lock(&view.stale_self) = rec.resource_version.clone();
                }
                // Ignore an older resourceVersion arriving late from the watch.
                if let (Some(old), Some(new)) = (
                    g.as_ref()
                        .and_then(|o| o.record.resource_version.as_deref())
                        .and_then(|v| v.parse::<u64>().ok()),
                    rec.resource_version
                        .as_deref()
                        .and_then(|v| v.parse::<u64>().ok()),
                ) && new < old
                {
                    return;
                }
                {
                    let mut hs = lock(&view.holder_since);
                    if hs.as_ref().map(|(n, _)| Some(n)) != Some(rec.holder.as_ref()) {
                        *hs = rec.holder.clone().map(|h| (h, now));
                    }
                }
                // A promise made to a campaign that can no longer win lapses here.
                self.state
                    .repl
                    .lease_observed(rec.resource_version.as_deref(), rec.transitions);
                *g = Some(Observed::update(g.as_ref(), rec, now));
            }
            None => {
                view.first_seen.store(true, Ordering::SeqCst);
                *g = None;
            }
        }
        drop(g);
        self.wake.notify_one();
    }

    /// Why the Lease may be taken now, if it may.
    pub(super) fn lease_free(&self, obs: Option<&Observed>, stale_self: bool) -> Option<String> {
        let Some(o) = obs else {
            return Some("there is no Lease yet".into());
        };
        if stale_self {
            return Some("this pod's previous process held it".into());
        }
        if o.expired(Instant::now(), self.s.timing.lease_duration) {
            return Some(match &o.record.holder {
                Some(h) => {
                    format!("the Lease of {h} expired (no renewal observed for a lease duration)")
                }
                None => "the Lease has no holder".into(),
            });
        }
        let h = o.record.holder.as_deref()?;
        election::proof_of_death(&self.holder_pod(h), o.record.acquire_time)
            .map(|r| format!("proof of death of {h}: {r}"))
    }
}
