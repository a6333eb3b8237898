//! Switchover through the Lease: [`Coordinator::switchover`] (the `ADMIN_SWITCHOVER`
//! route and SIGTERM) stops writes, waits for the target to hold everything and hands
//! it the Lease ([`LeaseTransfer`]); the target sees it through its Lease watch.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use studio_crds::node_api::AdminResponse;
use studio_crds::roles as role_values;

use super::{Coordinator, kubeapi};
use crate::replication::roles;
use crate::replication::switchover::{self as handover, InProgress, SwitchoverError, Target};

impl Coordinator {
    /// On SIGTERM: a primary hands the Lease to the most advanced replica (bounded), so
    /// deleting its pod costs well under a second of writes. Returns when done; the
    /// server ends the replication streams only after it (the target catches up
    /// through them).
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.hand_over_on_shutdown().await;
    }

    async fn hand_over_on_shutdown(&self) {
        let c = self;
        if c.acting_term().is_none() {
            return;
        }
        let started = Instant::now();
        match c.best_replica().await {
            Some(target) => {
                tracing::info!(%target, "shutting down as primary: switching over");
                match c.switchover(&target, Duration::from_secs(3)).await {
                    Ok(r) => {
                        tracing::info!(%target, ms = started.elapsed().as_millis() as u64, message = %r.message, "switchover on shutdown done")
                    }
                    Err(e) => {
                        tracing::warn!(%target, error = %e, "switchover on shutdown failed; the Lease will expire")
                    }
                }
            }
            None => {
                tracing::warn!("shutting down as primary with no eligible replica to hand over to");
            }
        }
        // Whatever happened, this process takes no more writes.
        c.set_primary(None);
        let _ = roles::demote(&c.state, None).await;
    }

    /// Planned hand-over to `target` (pod name or base URL) through the Lease: the
    /// shared switchover (`replication::switchover::run`) with [`LeaseTransfer`].
    pub async fn switchover(
        &self,
        target: &str,
        timeout: Duration,
    ) -> Result<AdminResponse, SwitchoverError> {
        let bad = SwitchoverError::BadTarget;
        if self.acting_term().is_none() {
            return Err(SwitchoverError::NotPrimary);
        }
        let target_t = target.trim().trim_end_matches('/');
        let pod = self
            .pods
            .store
            .state()
            .into_iter()
            .find(|p| {
                p.metadata.name.as_deref() == Some(target_t)
                    || self.url_of(p).as_deref() == Some(target_t)
            })
            .ok_or_else(|| bad(format!("no pod {target_t:?} in cluster {}", self.s.cluster)))?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        if name == self.me() {
            return Err(bad(format!("{name} is already the primary")));
        }
        if let Some(why) = self.s.policy.refuses(&name, Self::is_arbiter_pod(&pod)) {
            return Err(bad(format!("{name} cannot become primary: {why}")));
        }
        let url = self
            .url_of(&pod)
            .ok_or_else(|| bad(format!("{name} has no pod IP yet")))?;
        // Also closes the fence and keeps the election loop from stepping down.
        let _busy = InProgress::begin(&self.state.repl.switching)?;
        let target = Target { name, url };
        let done = handover::run(&self.state, &target, timeout, &LeaseTransfer(self)).await?;
        self.set_primary(None);
        if let Err(e) =
            kubeapi::label_pod(&self.pods_api, self.me(), role_values::REPLICA, None).await
        {
            self.warn(
                "label",
                kubeapi::explain(&e, "patch", "pods", &self.s.namespace),
            );
        }
        Ok(done)
    }
}

/// The Kubernetes-mode hand-over: the Lease moves to the target, which promotes
/// itself when its watch sees it.
struct LeaseTransfer<'a>(&'a Coordinator);

impl handover::Transfer for LeaseTransfer<'_> {
    async fn transfer(&self, target: &Target, term: u64) -> Result<u64, String> {
        let c = self.0;
        let term = c.acting_term().unwrap_or(term);
        c.give_lease(&target.name, term).await
    }
}
