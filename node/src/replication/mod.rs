//! Replication: journal stream, apply, catch-up, clone, divergence repair and the
//! sync write quorum.
//!
//! ## Protocol (all routes under `/internal/v1`, cluster token)
//! - A replica (or arbiter) opens ONE long-lived `GET REPLICATION_STREAM?node_id=..&
//!   after_seq=..&after_term=..` to the primary. The answer is newline-delimited JSON
//!   [`StreamFrame`](studio_crds::node_api::StreamFrame)s: `entry` frames in seq order
//!   from `after_seq + 1`, a `heartbeat` every second when idle, or a single
//!   `diverged {common}` / `clone_required` frame.
//! - Acknowledgements: the stream request carries the replica's durable position,
//!   and after every applied batch (and on every heartbeat) the replica POSTs its new
//!   durable position to `REPLICATION_ACK` over the same keep-alive connection pool.
//!   (A separate small POST instead of a full-duplex request body: HTTP/1.1 clients
//!   and proxies handle it everywhere, and on loopback it costs ~100 µs.)
//! - Binaries: before an entry registering a binary applies, the replica fetches it
//!   from `BLOB_PREFIX/{sha256}` and stores it durably.
//! - Clone: `GET SNAPSHOT` returns a consistent online copy of the database
//!   (`VACUUM INTO`) with its position in headers; the replica fetches every binary
//!   it lists, then swaps the copy in and streams from its position.
//! - Divergence: the primary checks the requested position against its term history;
//!   a position not in it gets `diverged {common}`. The replica rolls back to
//!   `common`, keeps the removed entries in its quarantine and reconnects.
//! - Terms: the stream answer carries the primary's term; a node refuses a primary
//!   (and entries) of a term below the highest term it knows or has promised.
//!
//! ## Sync mode
//! [`after_commit`] waits until `--sync-replicas` peers (replicas or arbiter) have
//! acknowledged a position at or past the entry, up to `--sync-timeout`. Before the
//! write is even committed, [`before_commit`] refuses it when fewer than K peers are
//! connected, so with the quorum down a write fails without leaving anything behind.
//! A write whose quorum disappears *between* that check and the acknowledgements
//! gets a 503 `sync_timeout` (not acknowledged) but stays in the primary's journal,
//! as with PostgreSQL's synchronous replication: it may still reach the replicas
//! later, or end in the quarantine of this node after a failover. Rolling it back
//! instead would reuse its (seq, term) for another entry, which divergence
//! detection relies on never happening.
//!
//! ## Shutdown
//! On SIGTERM/SIGINT the streams this node serves end (so the HTTP server's graceful
//! shutdown completes); replicas reconnect with backoff.

pub mod coordinator;
mod follower;
pub mod http;

pub(crate) use follower::fetch_blob;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use studio_crds::node_api::{NodeRole, PeerStatus};
use tokio::sync::watch;

use crate::app::AppState;
use crate::config::ReplicationMode;
use crate::http::error::ApiError;
use crate::roles::Role;
use crate::storage::{JournalEntry, Position};

/// Idle streams send a heartbeat this often.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A peer not heard from for this long no longer counts as connected.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// A replica as seen by the primary.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub address: Option<String>,
    pub role: Option<NodeRole>,
    /// Durable position last acknowledged.
    pub acked: Position,
    pub last_seen: Instant,
    /// Open streams of this peer.
    pub streams: u32,
}

/// Replication state shared by the HTTP handlers, the stream task and the roles API
/// (lives in [`crate::roles::RoleState::repl`]).
pub struct Shared {
    peers: Mutex<HashMap<String, Peer>>,
    /// Bumped on every acknowledgement (wakes sync waiters).
    ack_tx: watch::Sender<u64>,
    promised: AtomicU64,
    /// Held while a replicated batch is applied and acknowledged.
    pub(crate) apply_gate: tokio::sync::Mutex<()>,
    /// Replica: the primary's position from the last heartbeat/entry, and when.
    primary_pos: Mutex<Option<(Position, Instant)>>,
    /// Replica: caught up with the primary at least once since start / clone.
    caught_up: AtomicBool,
    /// Replica: the stream is connected.
    connected: AtomicBool,
    /// Replica: when the last batch was applied (for lag in seconds).
    last_entry_time: AtomicU64,
    /// The cluster token for outgoing internal calls (read once).
    token: std::sync::OnceLock<Option<String>>,
    /// Set when the process is shutting down (ends outgoing streams).
    pub(crate) shutdown: watch::Sender<bool>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            peers: Mutex::new(HashMap::new()),
            ack_tx: watch::channel(0).0,
            promised: AtomicU64::new(0),
            apply_gate: tokio::sync::Mutex::new(()),
            primary_pos: Mutex::new(None),
            caught_up: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            last_entry_time: AtomicU64::new(0),
            token: std::sync::OnceLock::new(),
            shutdown: watch::channel(false).0,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// The highest term this node promised not to go below.
    pub fn promised_term(&self) -> u64 {
        self.promised.load(Ordering::SeqCst)
    }

    pub(crate) fn promise(&self, term: u64) {
        self.promised.fetch_max(term, Ordering::SeqCst);
    }

    /// Records a peer's acknowledged position (never moves it backwards within a
    /// stream, except on an explicit lower report after a rewind or clone).
    pub(crate) fn record_ack(
        &self,
        node_id: &str,
        pos: Position,
        role: Option<NodeRole>,
        address: Option<String>,
    ) {
        let mut peers = lock(&self.peers);
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

    fn peers_snapshot(&self) -> Vec<(String, Peer)> {
        let mut v: Vec<_> = lock(&self.peers)
            .iter()
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn is_connected(p: &Peer) -> bool {
        p.streams > 0 && p.last_seen.elapsed() < PEER_TIMEOUT
    }

    /// Connected peers holding `seq` of `term` (or later) durably.
    fn holders(&self, seq: u64, term: u64) -> usize {
        lock(&self.peers)
            .values()
            .filter(|p| p.acked.seq >= seq && p.acked.term >= term)
            .count()
    }

    fn connected_count(&self) -> usize {
        lock(&self.peers)
            .values()
            .filter(|p| Self::is_connected(p))
            .count()
    }

    pub(crate) fn set_primary_pos(&self, pos: Position) {
        *lock(&self.primary_pos) = Some((pos, Instant::now()));
    }

    pub(crate) fn primary_pos(&self) -> Option<Position> {
        lock(&self.primary_pos).map(|(p, _)| p)
    }
}

fn sync_quorum(state: &AppState) -> Option<usize> {
    match state.config.replication_mode {
        ReplicationMode::Sync if state.config.sync_replicas > 0 => {
            Some(state.config.sync_replicas as usize)
        }
        _ => None,
    }
}

fn quorum_error(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
}

/// Called before a local commit in sync mode: refuses the write (nothing is
/// written) when fewer than K peers are connected, since it could not be
/// acknowledged anyway.
pub fn before_commit(state: &AppState) -> Result<(), ApiError> {
    let Some(k) = sync_quorum(state) else {
        return Ok(());
    };
    let n = state.role.repl.connected_count();
    if n < k {
        return Err(quorum_error(
            "sync_quorum_unavailable",
            format!(
                "sync replication needs {k} connected replica(s), {n} connected: the write was refused and not applied"
            ),
        ));
    }
    Ok(())
}

/// Called by the content API after every local commit, before the client is
/// answered. In sync mode this waits for the write quorum (an error here means the
/// write is NOT acknowledged to the client).
pub async fn after_commit(state: &AppState, entry: &JournalEntry) -> Result<(), ApiError> {
    let Some(k) = sync_quorum(state) else {
        return Ok(());
    };
    let shared = &state.role.repl;
    let mut rx = shared.ack_tx.subscribe();
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
            return Err(quorum_error(
                "not_acknowledged",
                format!(
                    "this node stopped being a writable primary before {k} replica(s) confirmed seq {}: the write is not acknowledged",
                    entry.seq
                ),
            ));
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
                return Err(quorum_error(
                    "sync_timeout",
                    format!(
                        "only {n} of {k} required replica(s) confirmed seq {} within {:?}: the write is not acknowledged",
                        entry.seq, state.config.sync_timeout
                    ),
                ));
            }
        }
    }
}

/// Starts background replication tasks for the configured role (the replica stream;
/// it follows role changes by itself). Called once by `main` after the server is bound.
pub fn start(state: &AppState) {
    tokio::spawn(follower::run(state.clone()));
    tokio::spawn(lag_metrics_loop(state.clone()));
    tokio::spawn(end_streams_on_shutdown(state.clone()));
}

/// Long-lived replication streams would hold the HTTP server's graceful shutdown
/// forever: end them when SIGTERM/SIGINT arrives (replicas reconnect elsewhere).
async fn end_streams_on_shutdown(state: AppState) {
    crate::server::shutdown_requested().await;
    // In Kubernetes mode a primary first hands over to a replica, which catches up
    // through these very streams.
    crate::coordination::hand_over_done().await;
    state.role.repl.shutdown.send_replace(true);
}

/// Peers known to replication, for `/api/v1/cluster/status`. On a primary: every
/// replica that streamed from it, with its acknowledged position and lag. On a
/// replica: the primary it follows.
pub fn peers(state: &AppState) -> Vec<PeerStatus> {
    let info = state.role.get();
    let own = state.store.position();
    match info.role {
        Role::Primary => state
            .role
            .repl
            .peers_snapshot()
            .into_iter()
            .map(|(id, p)| {
                let lag_entries = own.seq.saturating_sub(p.acked.seq);
                PeerStatus {
                    node_id: id,
                    address: p.address.clone(),
                    role: p.role,
                    seq: p.acked.seq,
                    term: p.acked.term,
                    lag_entries,
                    lag_seconds: lag_seconds(state, p.acked.seq, lag_entries),
                    connected: Shared::is_connected(&p),
                }
            })
            .collect(),
        _ => {
            let Some(primary) = info.primary.clone() else {
                return Vec::new();
            };
            let ppos = state.role.repl.primary_pos().unwrap_or_default();
            let lag_entries = ppos.seq.saturating_sub(own.seq);
            vec![PeerStatus {
                node_id: "primary".into(),
                address: Some(primary),
                role: Some(NodeRole::Primary),
                seq: ppos.seq,
                term: ppos.term,
                lag_entries,
                lag_seconds: replica_lag_seconds(state, lag_entries),
                connected: state.role.repl.connected.load(Ordering::SeqCst),
            }]
        }
    }
}

/// Primary: age of the oldest entry a peer does not hold yet.
fn lag_seconds(state: &AppState, acked_seq: u64, lag_entries: u64) -> f64 {
    if lag_entries == 0 {
        return 0.0;
    }
    match state.store.entry_at(acked_seq + 1) {
        Ok(Some(e)) => {
            let now = chrono::Utc::now().timestamp_millis();
            (now - e.time).max(0) as f64 / 1000.0
        }
        _ => 0.0,
    }
}

/// Replica: time since the newest applied entry was written by the primary, when
/// behind.
fn replica_lag_seconds(state: &AppState, lag_entries: u64) -> f64 {
    if lag_entries == 0 {
        return 0.0;
    }
    let t = state.role.repl.last_entry_time.load(Ordering::SeqCst) as i64;
    if t == 0 {
        return 0.0;
    }
    let now = chrono::Utc::now().timestamp_millis();
    (now - t).max(0) as f64 / 1000.0
}

/// Keeps the per-peer lag gauges current.
async fn lag_metrics_loop(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        update_lag_metrics(&state);
    }
}

pub(crate) fn update_lag_metrics(state: &AppState) {
    for p in peers(state) {
        let labels = crate::metrics::PeerLabels {
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

/// Whether replication considers this node able to serve its role (for /readyz):
/// a replica or arbiter that has caught up with its primary at least once.
pub fn ready(state: &AppState) -> bool {
    match state.role.get().role {
        Role::Primary => true,
        _ => state.role.repl.caught_up.load(Ordering::SeqCst),
    }
}

impl Shared {
    /// The cluster token for outgoing internal calls.
    pub(crate) fn token(&self, state: &AppState) -> Option<String> {
        self.token
            .get_or_init(|| {
                state
                    .config
                    .cluster_token()
                    .ok()
                    .flatten()
                    .and_then(|t| String::from_utf8(t).ok())
            })
            .clone()
    }
}
