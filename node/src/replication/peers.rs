//! Replication bookkeeping shared by the stream server, the follower, the roles API
//! and the sync quorum: peers and their acknowledgements, the promise (highest term
//! this node vowed not to go below), the apply gate, the follower's view of its
//! primary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use studio_crds::node_api::NodeRole;
use tokio::sync::watch;

use super::promise::{Promises, version_number};
use crate::storage::Position;

/// A peer not heard from for this long no longer counts as connected: three missed
/// heartbeat acknowledgements (a replica acknowledges every heartbeat, 1 s apart).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(3);
/// A peer with no open stream and not heard from for this long is forgotten (the
/// table and its metric labels stay bounded when pods come and go).
pub const PEER_FORGET_AFTER: Duration = Duration::from_secs(600);
/// At most this many peers are tracked; the longest silent one without a stream
/// makes room (node ids come from callers, so the table must not grow without bound).
pub const MAX_PEERS: usize = 256;

/// A replica as seen by the primary.
#[derive(Debug, Clone)]
pub struct Peer {
    pub address: Option<String>,
    pub role: Option<NodeRole>,
    /// Durable position last acknowledged.
    pub acked: Position,
    pub last_seen: Instant,
    /// Open streams of this peer.
    pub streams: u32,
}

impl Peer {
    pub fn is_connected(&self) -> bool {
        self.streams > 0 && self.last_seen.elapsed() < PEER_TIMEOUT
    }
}

/// Replication state shared inside the node.
pub struct Shared {
    peers: Mutex<HashMap<String, Peer>>,
    /// Bumped on every acknowledgement (wakes sync waiters).
    ack_tx: watch::Sender<u64>,
    promises: Mutex<Promises>,
    /// Held while a replicated batch is applied and acknowledged (never across
    /// network I/O).
    pub(crate) apply_gate: tokio::sync::Mutex<()>,
    /// Replica: the primary's position from the last heartbeat/entry, and when.
    primary_pos: Mutex<Option<(Position, Instant)>>,
    /// Replica: caught up with the primary at least once since start / clone.
    pub(crate) caught_up: AtomicBool,
    /// Replica: the stream is connected.
    pub(crate) connected: AtomicBool,
    /// Replica: when the last batch was applied (for lag in seconds).
    pub(crate) last_entry_time: AtomicU64,
    /// Set when the process is shutting down (ends the streams this node serves).
    pub(crate) shutdown: watch::Sender<bool>,
    /// A switchover is in progress (see `switchover::InProgress`).
    pub switching: AtomicBool,
    /// Last time the write quorum was available (or this node was not a sync primary).
    quorum_ok_at: Mutex<Instant>,
    /// Last time a replica was connected (or this node was not a primary).
    replicas_ok_at: Mutex<Instant>,
    /// As primary, the write quorum / a replica was available at least once since it
    /// became one (a primary still waiting for its first replicas, e.g. while they
    /// clone, has not "lost" them).
    had_quorum: AtomicBool,
    had_replica: AtomicBool,
    /// Replica: why it refuses to replicate from its primary (incompatible schema
    /// revisions); not ready while set.
    refused: Mutex<Option<String>>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            peers: Mutex::new(HashMap::new()),
            ack_tx: watch::channel(0).0,
            promises: Mutex::new(Promises::default()),
            apply_gate: tokio::sync::Mutex::new(()),
            primary_pos: Mutex::new(None),
            caught_up: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            last_entry_time: AtomicU64::new(0),
            shutdown: watch::channel(false).0,
            switching: AtomicBool::new(false),
            quorum_ok_at: Mutex::new(Instant::now()),
            replicas_ok_at: Mutex::new(Instant::now()),
            had_quorum: AtomicBool::new(false),
            had_replica: AtomicBool::new(false),
            refused: Mutex::new(None),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// The highest term this node promised not to go below.
    pub fn promised_term(&self) -> u64 {
        lock(&self.promises).term()
    }

    /// A permanent promise (role changes, candidates that name no campaign).
    pub(crate) fn promise(&self, term: u64) {
        lock(&self.promises).adopt(term);
    }

    /// A promise to the campaign replacing the Lease at `lease_version` (see
    /// [`Promises`]); `own_version` is the Lease version this node observed.
    pub(crate) fn promise_campaign(
        &self,
        term: u64,
        lease_version: Option<&str>,
        own_version: Option<u64>,
    ) {
        lock(&self.promises).promise_campaign(term, lease_version, own_version);
    }

    /// The Lease was observed (coordination): a failed campaign's promise lapses.
    pub fn lease_observed(&self, version: Option<&str>, transitions: u64) {
        let lapsed = lock(&self.promises).lease_observed(version_number(version), transitions);
        if let Some(term) = lapsed {
            tracing::info!(
                term,
                lease_term = transitions,
                "the campaign this node promised term {term} to did not win the Lease: promise released"
            );
        }
    }

    /// Why this node refuses to replicate from its primary, if it does.
    pub fn replication_refused(&self) -> Option<String> {
        lock(&self.refused).clone()
    }

    /// Replica: caught up with a primary it accepts (ends a refusal).
    pub(crate) fn mark_caught_up(&self) {
        self.caught_up.store(true, Ordering::SeqCst);
        self.set_replication_refused(None);
    }

    /// Sets (or clears) the refusal; returns whether it changed.
    pub(crate) fn set_replication_refused(&self, why: Option<String>) -> bool {
        let mut r = lock(&self.refused);
        let changed = *r != why;
        *r = why;
        changed
    }

    /// Records a peer's acknowledged position. Returns the ids of peers forgotten to
    /// keep the table bounded (their metric labels go too).
    pub(crate) fn record_ack(
        &self,
        node_id: &str,
        pos: Position,
        role: Option<NodeRole>,
        address: Option<String>,
    ) -> Vec<String> {
        let mut peers = lock(&self.peers);
        let forgotten = if peers.contains_key(node_id) {
            Vec::new()
        } else {
            Self::make_room(&mut peers)
        };
        let p = peers.entry(node_id.to_string()).or_insert(Peer {
            address: None,
            role: None,
            acked: pos,
            last_seen: Instant::now(),
            streams: 0,
        });
        p.acked = pos;
        p.last_seen = Instant::now();
        if role.is_some() {
            p.role = role;
        }
        if address.is_some() {
            p.address = address;
        }
        drop(peers);
        self.ack_tx.send_modify(|n| *n = n.wrapping_add(1));
        forgotten
    }

    /// Drops forgotten peers (see [`Shared::prune`]) and, if the table is still full,
    /// the longest silent one without a stream.
    fn make_room(peers: &mut HashMap<String, Peer>) -> Vec<String> {
        let mut gone = Self::drop_forgotten(peers);
        if peers.len() >= MAX_PEERS
            && let Some(oldest) = peers
                .iter()
                .filter(|(_, p)| p.streams == 0)
                .min_by_key(|(_, p)| p.last_seen)
                .map(|(k, _)| k.clone())
        {
            peers.remove(&oldest);
            gone.push(oldest);
        }
        gone
    }

    /// Forgets peers without a stream silent for [`PEER_FORGET_AFTER`]; returns their ids.
    pub(crate) fn prune(&self) -> Vec<String> {
        Self::drop_forgotten(&mut lock(&self.peers))
    }

    fn drop_forgotten(peers: &mut HashMap<String, Peer>) -> Vec<String> {
        let gone: Vec<String> = peers
            .iter()
            .filter(|(_, p)| p.streams == 0 && p.last_seen.elapsed() > PEER_FORGET_AFTER)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            peers.remove(k);
        }
        gone
    }

    pub(crate) fn stream_opened(&self, node_id: &str) {
        if let Some(p) = lock(&self.peers).get_mut(node_id) {
            p.streams += 1;
        }
    }

    pub(crate) fn stream_closed(&self, node_id: &str) {
        if let Some(p) = lock(&self.peers).get_mut(node_id) {
            p.streams = p.streams.saturating_sub(1);
        }
        self.ack_tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn forget_peers(&self) {
        // Keep peers whose stream is open: in Kubernetes mode replicas follow the new
        // Lease holder (and open their streams) before it finishes promoting, and
        // forgetting them would leave the sync quorum at 0 connected until they
        // reconnect.
        lock(&self.peers).retain(|_, p| p.streams > 0);
    }

    /// A new primary's quorum clocks start at its promotion: time spent as a replica,
    /// or frozen (SIGSTOP) before the quorum monitor last ran, must not count as quorum
    /// loss, or it steps down the moment it is promoted and forces another election.
    pub(crate) fn restart_quorum_clocks(&self) {
        let now = Instant::now();
        *lock(&self.quorum_ok_at) = now;
        *lock(&self.replicas_ok_at) = now;
    }

    pub fn peers_snapshot(&self) -> Vec<(String, Peer)> {
        let mut v: Vec<_> = lock(&self.peers)
            .iter()
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Connected peers holding `seq` of `term` (or later) durably.
    pub(crate) fn holders(&self, seq: u64, term: u64) -> usize {
        lock(&self.peers)
            .values()
            .filter(|p| p.acked.seq >= seq && p.acked.term >= term)
            .count()
    }

    pub(crate) fn connected_count(&self) -> usize {
        lock(&self.peers)
            .values()
            .filter(|p| p.is_connected())
            .count()
    }

    pub(crate) fn subscribe_acks(&self) -> watch::Receiver<u64> {
        self.ack_tx.subscribe()
    }

    /// Records what the quorum monitor sees: whether this node is a primary, whether
    /// its write quorum is available (always, in async mode) and whether any replica
    /// is connected.
    pub(crate) fn quorum_seen(&self, primary: bool, available: bool, any_replica: bool) {
        use std::sync::atomic::Ordering::SeqCst;
        let now = Instant::now();
        if !primary {
            self.had_quorum.store(false, SeqCst);
            self.had_replica.store(false, SeqCst);
            *lock(&self.quorum_ok_at) = now;
            *lock(&self.replicas_ok_at) = now;
            return;
        }
        if available {
            *lock(&self.quorum_ok_at) = now;
            self.had_quorum.store(true, SeqCst);
        }
        if any_replica {
            *lock(&self.replicas_ok_at) = now;
            self.had_replica.store(true, SeqCst);
        }
    }

    /// Whether, as primary, the write quorum was available at least once.
    pub fn had_quorum(&self) -> bool {
        self.had_quorum.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether, as primary, a replica was connected at least once.
    pub fn had_replica(&self) -> bool {
        self.had_replica.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How long this primary has had no replica connected (zero otherwise).
    pub fn isolated_for(&self) -> Duration {
        lock(&self.replicas_ok_at).elapsed()
    }

    /// How long the write quorum has been missing (zero while available).
    pub fn quorum_missing_for(&self) -> Duration {
        lock(&self.quorum_ok_at).elapsed()
    }

    pub(crate) fn set_primary_pos(&self, pos: Position) {
        *lock(&self.primary_pos) = Some((pos, Instant::now()));
    }

    pub(crate) fn primary_pos(&self) -> Option<Position> {
        lock(&self.primary_pos).map(|(p, _)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promotion_restarts_the_quorum_clocks() {
        let s = Shared::default();
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(10))
            .unwrap_or_else(Instant::now);
        *lock(&s.quorum_ok_at) = long_ago;
        *lock(&s.replicas_ok_at) = long_ago;
        assert!(s.quorum_missing_for() >= Duration::from_secs(9));
        s.restart_quorum_clocks();
        assert!(s.quorum_missing_for() < Duration::from_secs(1));
        assert!(s.isolated_for() < Duration::from_secs(1));
    }

    #[test]
    fn the_peer_table_stays_bounded() {
        let s = Shared::default();
        let mut forgotten = 0;
        for i in 0..(MAX_PEERS + 50) {
            forgotten += s
                .record_ack(&format!("n{i}"), Position::default(), None, None)
                .len();
        }
        assert_eq!(s.peers_snapshot().len(), MAX_PEERS);
        assert_eq!(forgotten, 50);
        // A peer with an open stream is never the one evicted.
        s.stream_opened("n60");
        for i in 0..MAX_PEERS {
            s.record_ack(&format!("m{i}"), Position::default(), None, None);
        }
        assert!(s.peers_snapshot().iter().any(|(k, _)| k == "n60"));
        assert_eq!(s.peers_snapshot().len(), MAX_PEERS);
    }
}
