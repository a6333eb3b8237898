//! What replication knows about its peers, for `/api/v1/cluster/status`, the lag
//! metrics and readiness.

use std::sync::atomic::Ordering;
use std::time::Duration;

use studio_crds::node_api::{NodeRole, PeerStatus};

use super::Replication;
use crate::cluster::Role;
use crate::metrics::PeerLabels;

/// Peers known to replication. On a primary: every replica that streamed from it,
/// with its acknowledged position and lag. On a replica: the primary it follows.
/// Reads the journal (lag in seconds) on the blocking pool.
pub async fn peers(state: &Replication) -> Vec<PeerStatus> {
    let info = state.role.get();
    let own = state.store.position();
    match info.role {
        Role::Primary => {
            let mut out = Vec::new();
            for (id, p) in state.repl.peers_snapshot() {
                let lag_entries = own.seq.saturating_sub(p.acked.seq);
                out.push(PeerStatus {
                    node_id: id,
                    address: p.address.clone(),
                    role: p.role,
                    seq: p.acked.seq,
                    term: p.acked.term,
                    lag_entries,
                    lag_seconds: lag_seconds(state, p.acked.seq, lag_entries).await,
                    connected: p.is_connected(),
                });
            }
            out
        }
        _ => {
            let Some(primary) = info.primary.clone() else {
                return Vec::new();
            };
            let ppos = state.repl.primary_pos().unwrap_or_default();
            let lag_entries = ppos.seq.saturating_sub(own.seq);
            vec![PeerStatus {
                node_id: "primary".into(),
                address: Some(primary),
                role: Some(NodeRole::Primary),
                seq: ppos.seq,
                term: ppos.term,
                lag_entries,
                lag_seconds: replica_lag_seconds(state, lag_entries),
                connected: state.repl.connected.load(Ordering::SeqCst),
            }]
        }
    }
}

/// Primary: age of the oldest entry a peer does not hold yet.
async fn lag_seconds(state: &Replication, acked_seq: u64, lag_entries: u64) -> f64 {
    if lag_entries == 0 {
        return 0.0;
    }
    match state.store.call(move |s| s.entry_at(acked_seq + 1)).await {
        Ok(Some(e)) => {
            let now = chrono::Utc::now().timestamp_millis();
            (now - e.time).max(0) as f64 / 1000.0
        }
        _ => 0.0,
    }
}

/// Replica: time since the newest applied entry was written by the primary, when
/// behind.
fn replica_lag_seconds(state: &Replication, lag_entries: u64) -> f64 {
    if lag_entries == 0 {
        return 0.0;
    }
    let t = state.repl.last_entry_time.load(Ordering::SeqCst) as i64;
    if t == 0 {
        return 0.0;
    }
    let now = chrono::Utc::now().timestamp_millis();
    (now - t).max(0) as f64 / 1000.0
}

/// Keeps the per-peer lag gauges current and drops the labels of forgotten peers.
pub(super) async fn lag_metrics_loop(state: Replication) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        update_lag_metrics(&state).await;
        for gone in state.repl.prune() {
            forget_peer_metrics(&state, &gone);
        }
    }
}

pub async fn update_lag_metrics(state: &Replication) {
    for p in peers(state).await {
        let labels = PeerLabels {
            peer: p.node_id.clone(),
        };
        state
            .metrics
            .replication_lag_entries
            .get_or_create(&labels)
            .set(p.lag_entries as i64);
        state
            .metrics
            .replication_lag_seconds
            .get_or_create(&labels)
            .set(p.lag_seconds);
    }
}

/// Removes the lag series of a peer that is no longer tracked.
pub(crate) fn forget_peer_metrics(state: &Replication, peer: &str) {
    let labels = PeerLabels {
        peer: peer.to_string(),
    };
    state.metrics.replication_lag_entries.remove(&labels);
    state.metrics.replication_lag_seconds.remove(&labels);
}

/// Whether replication considers this node able to serve its role (for /readyz):
/// a replica or arbiter that has caught up with its primary at least once and does
/// not refuse it (incompatible schema revisions).
pub fn ready(state: &Replication) -> bool {
    match state.role.get().role {
        Role::Primary => true,
        _ => {
            state.repl.caught_up.load(Ordering::SeqCst)
                && state.repl.replication_refused().is_none()
        }
    }
}

/// Why this node refuses to replicate from its primary, if it does.
pub fn replication_refused(state: &Replication) -> Option<String> {
    state.repl.replication_refused()
}

/// The follower refuses its primary (`why`: incompatible schema revisions): not
/// ready until a compatible stream opens. Logged once per distinct reason.
pub(crate) fn refuse_replication(state: &Replication, primary: &str, why: &str) {
    state.repl.caught_up.store(false, Ordering::SeqCst);
    state.metrics.schema_refused.inc();
    if state.repl.set_replication_refused(Some(why.to_string())) {
        tracing::error!(%primary, reason = %why, "refusing to replicate: incompatible schema revision; this node stays not ready until its primary runs a compatible revision");
    }
}
