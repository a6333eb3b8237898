//! The sync write quorum: a write is acknowledged once K peers (replicas or arbiter)
//! hold it durably (see the module doc of [`crate::replication`]).

use std::time::Duration;

use studio_crds::node_api::WriteQuorumStatus;

use crate::cluster::{Role, WriteError};
use crate::config::ReplicationMode;
use crate::storage::JournalEntry;

use super::Replication;

/// How often the quorum monitor looks.
const MONITOR_PERIOD: Duration = Duration::from_millis(200);

/// K in sync mode; None in async mode.
pub fn sync_quorum(state: &Replication) -> Option<usize> {
    match state.config.replication_mode {
        ReplicationMode::Sync if state.config.sync_replicas > 0 => {
            Some(state.config.sync_replicas as usize)
        }
        _ => None,
    }
}

/// Called before a local commit in sync mode: refuses the write (nothing is
/// written) when fewer than K peers are connected, since it could not be
/// acknowledged anyway.
pub fn before_commit(state: &Replication) -> Result<(), WriteError> {
    let Some(k) = sync_quorum(state) else {
        return Ok(());
    };
    let n = state.repl.connected_count();
    if n < k {
        return Err(WriteError::QuorumUnavailable {
            needed: k,
            connected: n,
        });
    }
    Ok(())
}

/// Called after every local commit, before the client is answered. In sync mode this
/// waits for the write quorum (an error here means the write is NOT acknowledged).
pub async fn after_commit(state: &Replication, entry: &JournalEntry) -> Result<(), WriteError> {
    let Some(k) = sync_quorum(state) else {
        return Ok(());
    };
    let shared = &state.repl;
    let mut rx = shared.subscribe_acks();
    // A demotion (failover, switchover) ends the wait at once: no ack will come.
    let mut role_rx = state.role.subscribe();
    let deadline = tokio::time::Instant::now() + state.config.sync_timeout;
    loop {
        rx.borrow_and_update();
        let n = shared.holders(entry.seq, entry.term);
        if n >= k {
            return Ok(());
        }
        if !state.role.writable() {
            return Err(WriteError::NotAcknowledged {
                needed: k,
                seq: entry.seq,
            });
        }
        let waited = tokio::select! {
            r = tokio::time::timeout_at(deadline, rx.changed()) => r,
            Ok(()) = role_rx.changed() => continue,
        };
        match waited {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => {
                let n = shared.holders(entry.seq, entry.term);
                if n >= k {
                    return Ok(());
                }
                state.metrics.sync_timeouts.inc();
                return Err(WriteError::SyncTimeout {
                    confirmed: n,
                    needed: k,
                    seq: entry.seq,
                    timeout: state.config.sync_timeout,
                });
            }
        }
    }
}

/// On a sync-mode primary: whether it can meet its write quorum now, with the
/// replicas connected and how long the quorum has been missing. None otherwise.
pub fn write_quorum(state: &Replication) -> Option<WriteQuorumStatus> {
    let k = sync_quorum(state)?;
    if state.role.get().role != Role::Primary {
        return None;
    }
    let connected: Vec<String> = state
        .repl
        .peers_snapshot()
        .into_iter()
        .filter(|(_, p)| p.is_connected())
        .map(|(id, _)| id)
        .collect();
    let available = connected.len() >= k;
    Some(WriteQuorumStatus {
        needed: k as u32,
        available,
        unavailable_for_ms: if available {
            0
        } else {
            state.repl.quorum_missing_for().as_millis() as u64
        },
        connected,
    })
}

/// Keeps "since when is the write quorum missing" and the metric current (the
/// coordination layer steps a primary down on a long loss).
pub(super) async fn monitor(state: Replication) {
    let mut tick = tokio::time::interval(MONITOR_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let quorum = write_quorum(&state);
        let primary = state.role.get().role == Role::Primary;
        let ok = quorum.as_ref().is_none_or(|q| q.available);
        state
            .repl
            .quorum_seen(primary, ok, state.repl.connected_count() > 0);
        state.metrics.write_quorum_available.set(i64::from(ok));
    }
}
