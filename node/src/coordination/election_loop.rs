//! The election loop: bootstrap first, then one round of [`state::next`] per wake-up
//! (a watch event, a catch-up) or retry period; a candidate's campaign polls the
//! members' positions and applies the safety rule of [`election::decide`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::bootstrap::BootstrapError;
use super::election::{self, Decision, Heard, Observed, Pos};
use super::state::{self, Action, Inputs};
use super::{Coordinator, lock};
use crate::replication::roles;

/// How soon the next round runs.
enum Pace {
    /// A retry period later (or at the next wake-up).
    Normal,
    /// Soon: a renewal just failed.
    Hurry,
}

impl Coordinator {
    pub(super) async fn run(self: Arc<Self>) -> Result<(), String> {
        // Bootstrap first: nothing else makes sense without the cluster id.
        loop {
            match self.bootstrap().await {
                Ok(id) => {
                    *lock(&self.cluster_id) = Some(id);
                    break;
                }
                // The supervisor stops the process with this message.
                Err(BootstrapError::Fatal(msg)) => return Err(msg),
                Err(BootstrapError::Retry(msg)) => self.note("bootstrap", msg),
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.s.timing.retry_period) => {}
            }
        }
        loop {
            let pause = match self.step().await {
                Ok(Pace::Normal) => self.s.timing.retry_period,
                // A renewal that failed is retried soon, on a fresh request: after a
                // link flap the next attempt must land before the renew deadline,
                // not a whole retry period after the one stuck in TCP back-off.
                Ok(Pace::Hurry) => self.s.timing.retry_period / 4,
                Err(e) => {
                    self.warn("step", format!("{e:#}"));
                    self.s.timing.retry_period
                }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One round of the state machine: reads the inputs, asks [`state::next`] and
    /// performs its actions in order.
    async fn step(&self) -> anyhow::Result<Pace> {
        let mut pace = Pace::Normal;
        let timing = self.s.timing;
        // A Lease watch on a connection that died in a network cut can stay silent
        // for minutes: when nothing was heard for half a lease duration (a primary
        // renews every retry period), read the Lease instead.
        if self.view.synced.load(Ordering::SeqCst) && self.lease_quiet(timing.lease_duration / 2) {
            self.refresh_lease().await;
        }
        let lease_synced = self.view.synced.load(Ordering::SeqCst);
        let quorum_lost = self.quorum_lost();
        let obs = if lease_synced { self.lease_now() } else { None };
        let holder = obs.as_ref().and_then(|o| o.record.holder.clone());
        let me_holds = holder.as_deref() == Some(self.me());
        let inputs = Inputs {
            lease_synced,
            stale_self: lease_synced && self.view.stale_self(obs.as_ref(), me_holds),
            me_holds,
            holder,
            acting: self.acting_term().is_some(),
            handing_over: self.handing_over(),
            shutting_down: self.shutting_down.load(Ordering::SeqCst),
            renewed_recently: self.renewed_within(timing.retry_period.mul_f64(0.9)),
            arbiter: self.s.arbiter,
            quorum_lost: quorum_lost.is_some(),
            backing_off: self.backing_off(),
        };
        for action in state::next(&inputs) {
            match action {
                Action::Renew => {
                    if !self.renew(None).await {
                        pace = Pace::Hurry;
                    }
                }
                Action::StepDown { holder } => {
                    tracing::warn!(holder = ?holder, "the Lease names another holder: stepping down");
                    self.step_down().await;
                }
                // Handed to us (switchover), or acquired but not yet promoted.
                Action::TakeOver => self.take_over().await?,
                Action::Follow { holder } => {
                    let held_for = self.view.held_for(&holder);
                    self.follow(&holder, held_for).await;
                }
                // Shutting down may have begun while following.
                Action::Campaign if self.shutting_down.load(Ordering::SeqCst) => {}
                Action::Campaign => {
                    let mut obs = obs.clone();
                    // Expiry is "no change observed since a fresh read", never "no
                    // event seen": re-read the Lease before judging it expired.
                    if obs
                        .as_ref()
                        .is_some_and(|o| o.expired(Instant::now(), timing.lease_duration))
                    {
                        if !self.refresh_lease().await {
                            continue;
                        }
                        obs = self.lease_now();
                    }
                    match self.lease_free(obs.as_ref(), inputs.stale_self) {
                        Some(reason) => {
                            let since = *lock(&self.free_since).get_or_insert_with(Instant::now);
                            self.campaign(obs.as_ref(), &reason, since).await?;
                        }
                        None => *lock(&self.free_since) = None,
                    }
                }
                Action::Relinquish => {
                    self.relinquish(quorum_lost.as_deref().unwrap_or("write quorum lost"))
                        .await
                }
                Action::ReconcileLabel => self.reconcile_label().await,
            }
        }
        Ok(pace)
    }

    /// Polls the members' positions (each promises `term`), then applies the safety
    /// rule; acquires the Lease if it says so.
    async fn campaign(
        &self,
        obs: Option<&Observed>,
        reason: &str,
        free_since: Instant,
    ) -> anyhow::Result<()> {
        let bootstrap_id = lock(&self.cluster_id).clone();
        let mine = self.state.store.call(|s| s.cluster_id()).await?;
        let of_cluster = mine.is_some() && mine == bootstrap_id;
        if let Some(why) = self.s.policy.refuses(self.me(), self.s.arbiter) {
            self.note(
                "campaign",
                format!("the Lease is free ({reason}) but {why}"),
            );
            return Ok(());
        }
        if !of_cluster {
            self.note(
                "campaign",
                format!(
                    "the Lease is free ({reason}) but this node has no data of the cluster yet"
                ),
            );
            return Ok(());
        }
        // Every candidate that saw the same Lease promises the same term: the one the
        // winner of the resourceVersion race writes (term == leaseTransitions).
        let t0 = match obs {
            Some(o) => o.record.transitions + 1,
            None => roles::known_term(&self.state) + 1,
        };
        let version = obs.and_then(|o| o.record.resource_version.clone());
        let peers = self.poll_positions(t0, version).await;
        let pos = roles::position_promise(&self.state, t0 - 1, None, None).await;
        let me = Heard {
            name: self.me().to_string(),
            pos: Pos {
                term: pos.term,
                seq: pos.seq,
            },
            of_cluster,
            arbiter: false,
            url: None,
        };
        let members = self.members().await;
        let strict = free_since.elapsed() < self.s.timing.lease_duration;
        let d = election::decide(&me, &peers, members, self.s.sync_k, &self.s.policy, strict);
        match d {
            Decision::Acquire => {
                let heard_max = peers.iter().map(|h| h.pos.term).max().unwrap_or(0);
                let term = t0.max(heard_max + 1).max(pos.term + 1);
                tracing::info!(
                    term, %reason, seq = pos.seq, last_term = pos.term, heard = peers.len() + 1, members,
                    "the Lease is free and this node is the most advanced eligible member: acquiring"
                );
                self.acquire(obs, term).await
            }
            Decision::Defer { to, why } => {
                self.note(
                    "campaign",
                    format!("the Lease is free ({reason}); deferring to {to}: {why}"),
                );
                Ok(())
            }
            Decision::CatchUp { from, url } => {
                self.note(
                    "campaign",
                    format!("the Lease is free ({reason}); {from} is more advanced but cannot be primary: pulling its entries first"),
                );
                let target = peers
                    .iter()
                    .find(|h| h.name == from)
                    .map(|h| h.pos)
                    .unwrap_or_default();
                if let Some(u) = url {
                    let target = crate::storage::Position {
                        seq: target.seq,
                        term: target.term,
                    };
                    match crate::replication::follower::catch_up(&self.state, &u, target).await {
                        Ok(n) => {
                            tracing::info!(from = %from, entries = n, "caught up with the most advanced member")
                        }
                        Err(e) => self.warn(
                            "catch-up",
                            format!("pulling entries from {from} failed: {e:#}"),
                        ),
                    }
                    // Decide again at once with the new position.
                    self.wake.notify_one();
                }
                Ok(())
            }
            Decision::NoQuorum { heard, needed } => {
                self.warn(
                    "campaign",
                    format!(
                        "the Lease is free ({reason}) but only {heard} of {members} members answered, {needed} needed to be sure no acknowledged write is lost: no automatic failover"
                    ),
                );
                Ok(())
            }
            Decision::Ineligible(why) => {
                self.note(
                    "campaign",
                    format!("the Lease is free ({reason}) but {why}"),
                );
                Ok(())
            }
        }
    }
}
