//! The replica side: one task that follows whatever primary the role state names,
//! streams and applies entries, acknowledges them, repairs divergence and clones.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use studio_crds::node_api::{
    self, AckRequest, HEADER_SNAPSHOT_SEQ, HEADER_SNAPSHOT_TERM, WirePosition,
};

use super::Replication;
use super::client::{
    self, FrameBuffer, SessionError, chunks_with_timeout, error_status, fetch_blob,
    fetch_missing_blobs, header,
};
use crate::cluster::{Role, RoleInfo};
use crate::storage::{JournalEntry, Position, StoreError, TermStart, term_in};

/// Largest batch applied in one transaction.
const MAX_BATCH: usize = 2000;
/// Bytes of stream read ahead before applying.
const MAX_BUFFER: usize = 4 << 20;

/// How a session ended without error.
enum Outcome {
    RoleChanged,
    Resync,
}

fn target(info: &RoleInfo) -> Option<String> {
    match (info.role, &info.primary) {
        (Role::Replica | Role::Arbiter, Some(url)) => Some(url.clone()),
        _ => None,
    }
}

/// Follows the primary named by the role state, forever.
pub(super) async fn run(state: Replication) {
    cleanup_temp_files(&state).await;
    let mut role_rx = state.role.subscribe();
    let mut backoff = Duration::from_millis(100);
    loop {
        let info = role_rx.borrow_and_update().clone();
        let Some(url) = target(&info) else {
            state.repl.connected.store(false, Ordering::SeqCst);
            state.repl.set_replication_refused(None);
            if role_rx.changed().await.is_err() {
                return;
            }
            continue;
        };
        let result = session(&state, &url, &mut role_rx).await;
        state.repl.connected.store(false, Ordering::SeqCst);
        match result {
            Ok(Outcome::RoleChanged) => {
                backoff = Duration::from_millis(100);
            }
            Ok(Outcome::Resync) => {
                backoff = Duration::from_millis(100);
                continue;
            }
            Err(e) => {
                if let SessionError::IncompatibleSchema(why) = &e {
                    super::status::refuse_replication(&state, &url, why);
                }
                tracing::warn!(primary = %url, error = %e, retry_ms = backoff.as_millis() as u64, "replication stream interrupted");
                // Wait before retrying, but react to a role change at once.
                let changed = tokio::time::timeout(backoff, role_changed(&mut role_rx, &url))
                    .await
                    .is_ok();
                // A new primary to follow starts with a short back-off again.
                backoff = if changed {
                    Duration::from_millis(100)
                } else {
                    (backoff * 2).min(Duration::from_secs(2))
                };
            }
        }
    }
}

/// Resolves when the role state stops pointing this node at `url`.
async fn role_changed(rx: &mut tokio::sync::watch::Receiver<RoleInfo>, url: &str) {
    loop {
        if target(&rx.borrow_and_update()).as_deref() != Some(url) {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Checks (and adopts, on an empty node) the cluster id announced by a peer.
async fn check_cluster_id(state: &Replication, remote: Option<String>) -> Result<(), SessionError> {
    let Some(remote) = remote else {
        return Ok(());
    };
    let local = state.store.call(|s| s.cluster_id()).await?;
    match local {
        Some(l) if l == remote => Ok(()),
        Some(l) if !state.store.is_empty() => {
            tracing::error!(local = %l, primary = %remote, "this node's data belongs to another cluster: refusing to replicate");
            Err(SessionError::Refused(format!(
                "data belongs to cluster {l}, the primary serves cluster {remote}"
            )))
        }
        _ => {
            let r = remote.clone();
            state.store.call(move |s| s.set_cluster_id(&r)).await?;
            Ok(())
        }
    }
}

async fn session(
    state: &Replication,
    url: &str,
    role_rx: &mut tokio::sync::watch::Receiver<RoleInfo>,
) -> Result<Outcome, SessionError> {
    let shared = &state.repl;
    let pos = state.store.position();
    let opened = tokio::select! {
        r = client::open(state, url, false) => r?,
        _ = role_changed(role_rx, url) => return Ok(Outcome::RoleChanged),
    };
    check_cluster_id(state, opened.cluster_id.clone()).await?;
    let remote_term = opened.remote_term;
    let promised = shared.promised_term();
    if remote_term < promised {
        return Err(stale_primary(state, url, remote_term, promised));
    }
    shared.connected.store(true, Ordering::SeqCst);
    tracing::info!(primary = %url, seq = pos.seq, term = pos.term, "replication stream connected");
    // The reader task keeps receiving while a batch is applied, so the next batch
    // takes everything that arrived meanwhile (one transaction, one fsync). The
    // channel is bounded: a slow apply pushes back on the TCP stream.
    let (chunk_tx, mut chunks) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, String>>(4096);
    let mut body = Box::pin(chunks_with_timeout(opened.response));
    let reader = AbortOnDrop(tokio::spawn(async move {
        while let Some(c) = body.next().await {
            let failed = c.is_err();
            if chunk_tx.send(c).await.is_err() || failed {
                return;
            }
        }
    }));
    // The ack task reports the latest durable position as soon as it changes,
    // without holding up the next batch.
    let (ack_tx, mut ack_rx) = tokio::sync::watch::channel(pos);
    let acker = {
        let (state, url) = (state.clone(), url.to_string());
        AbortOnDrop(tokio::spawn(async move {
            while ack_rx.changed().await.is_ok() {
                let p = *ack_rx.borrow_and_update();
                send_ack(&state, &url, p).await;
            }
        }))
    };
    let result = receive(state, url, remote_term, role_rx, &mut chunks, &ack_tx).await;
    drop(reader);
    drop(acker);
    result
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn stale_primary(state: &Replication, url: &str, remote_term: u64, promised: u64) -> SessionError {
    state.metrics.stale_streams_refused.inc();
    SessionError::Refused(format!(
        "{url} streams at term {remote_term}, below term {promised} this node promised: stale primary"
    ))
}

async fn receive(
    state: &Replication,
    url: &str,
    remote_term: u64,
    role_rx: &mut tokio::sync::watch::Receiver<RoleInfo>,
    chunks: &mut tokio::sync::mpsc::Receiver<Result<bytes::Bytes, String>>,
    ack: &tokio::sync::watch::Sender<Position>,
) -> Result<Outcome, SessionError> {
    let shared = &state.repl;
    let mut buf = FrameBuffer::default();
    loop {
        let chunk = tokio::select! {
            c = chunks.recv() => c,
            _ = role_changed(role_rx, url) => return Ok(Outcome::RoleChanged),
        };
        let Some(chunk) = chunk else {
            return Err(SessionError::Ended);
        };
        buf.push(&chunk.map_err(SessionError::Refused)?);
        // Take whatever else has already arrived.
        let mut ended = false;
        let mut failed = None;
        let mut idle = false;
        while buf.len() < MAX_BUFFER {
            match chunks.try_recv() {
                Ok(Ok(c)) => buf.push(&c),
                Ok(Err(e)) => {
                    failed = Some(e);
                    break;
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                    idle = true;
                    break;
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    ended = true;
                    break;
                }
            }
        }
        let mut batch: Vec<JournalEntry> = Vec::new();
        for frame in buf.frames()? {
            match frame {
                client::Frame::Entry { entry } => {
                    batch.push(entry);
                    if batch.len() >= MAX_BATCH {
                        apply_batch(state, url, remote_term, std::mem::take(&mut batch), ack)
                            .await?;
                    }
                }
                client::Frame::Heartbeat { primary, .. } => {
                    let promised = shared.promised_term();
                    if remote_term < promised {
                        return Err(stale_primary(state, url, remote_term, promised));
                    }
                    if !batch.is_empty() {
                        apply_batch(state, url, remote_term, std::mem::take(&mut batch), ack)
                            .await?;
                    }
                    let ppos = Position {
                        seq: primary.seq,
                        term: primary.term,
                    };
                    shared.set_primary_pos(ppos);
                    let own = state.store.position();
                    if own.seq >= ppos.seq {
                        shared.mark_caught_up();
                    }
                    // Re-acknowledge on heartbeats so the primary knows this node is
                    // alive, even when nothing changed.
                    ack.send_replace(own);
                }
                client::Frame::Diverged { common, terms } => {
                    if !batch.is_empty() {
                        apply_batch(state, url, remote_term, std::mem::take(&mut batch), ack)
                            .await?;
                    }
                    repair_divergence(state, url, common, &terms).await?;
                    return Ok(Outcome::Resync);
                }
                client::Frame::CloneRequired { oldest_seq } => {
                    tracing::info!(primary = %url, oldest_seq, own_seq = state.store.position().seq, "behind the primary's journal retention (or empty): cloning");
                    clone_from(state, url).await?;
                    return Ok(Outcome::Resync);
                }
            }
        }
        if !batch.is_empty() {
            apply_batch(state, url, remote_term, batch, ack).await?;
            if idle {
                // Applied everything the primary had sent: caught up.
                shared.mark_caught_up();
            }
        }
        if let Some(e) = failed {
            return Err(SessionError::Refused(e));
        }
        if ended {
            return Err(SessionError::Ended);
        }
    }
}

/// Applies consecutive entries (their binaries fetched first, outside the apply gate)
/// and acknowledges the new durable position. Returns it.
async fn apply_batch(
    state: &Replication,
    url: &str,
    remote_term: u64,
    batch: Vec<JournalEntry>,
    ack: &tokio::sync::watch::Sender<Position>,
) -> Result<Position, SessionError> {
    let shared = &state.repl;
    // Network first, without the gate: a blob fetch from a dead primary must not
    // hold up an election's position request.
    fetch_missing_blobs(state, url, &batch).await?;
    let _gate = shared.apply_gate.lock().await;
    // The role may have changed while waiting for the gate (promote holds it).
    if target(&state.role.get()).as_deref() != Some(url) {
        return Ok(state.store.position());
    }
    // A promise (election) fences the *primary's* term, like a Raft vote: entries of
    // older terms are still fine when a primary of a current term sends them (catch-up).
    let promised = shared.promised_term();
    if remote_term < promised {
        return Err(stale_primary(state, url, remote_term, promised));
    }
    let applied = apply_entries(state, batch).await?;
    // Acknowledged (asynchronously) while still holding the gate: a promise made
    // after this point reports a position that includes this batch.
    ack.send_replace(applied);
    Ok(applied)
}

/// Applies entries whose binaries are present (caller holds the apply gate) and
/// updates the metrics and the follower's bookkeeping.
async fn apply_entries(
    state: &Replication,
    batch: Vec<JournalEntry>,
) -> Result<Position, SessionError> {
    let shared = &state.repl;
    let n = batch.len() as u64;
    let last_time = batch.last().map(|e| e.time).unwrap_or(0);
    let start = Instant::now();
    let applied = state
        .store
        .call(move |s| {
            s.apply_entries(&batch)?;
            Ok(s.position())
        })
        .await?;
    state.metrics.applied.inc_by(n);
    state.metrics.journal_seq.set(applied.seq as i64);
    state.metrics.journal_term.set(applied.term as i64);
    shared
        .last_entry_time
        .store(last_time.max(0) as u64, Ordering::SeqCst);
    if let Some(p) = shared.primary_pos()
        && applied.seq >= p.seq
    {
        shared.mark_caught_up();
    }
    tracing::trace!(
        n,
        ms = start.elapsed().as_millis() as u64,
        lag_ms = chrono::Utc::now().timestamp_millis() - last_time,
        "batch applied"
    );
    Ok(applied)
}

/// Election catch-up: pulls the entries this node lacks from a member that cannot be
/// primary (the arbiter, a priority-0 node) through its stream (`from_any`), until
/// this node's position reaches `target`. The member answers `diverged` if this
/// node's position is not in its history (then nothing is applied). Binaries come
/// from the same member. Returns the number of entries applied.
pub async fn catch_up(
    state: &Replication,
    url: &str,
    target: Position,
) -> Result<usize, SessionError> {
    let opened = client::open(state, url, true).await?;
    let mut body = Box::pin(chunks_with_timeout(opened.response));
    let mut buf = FrameBuffer::default();
    let mut applied = 0usize;
    let reached = |p: Position| (p.term, p.seq) >= (target.term, target.seq);
    while !reached(state.store.position()) {
        let chunk = body
            .next()
            .await
            .ok_or(SessionError::Ended)?
            .map_err(SessionError::Refused)?;
        buf.push(&chunk);
        let mut batch = Vec::new();
        for frame in buf.frames()? {
            match frame {
                client::Frame::Entry { entry } => batch.push(entry),
                client::Frame::Heartbeat { .. } => {}
                other => {
                    return Err(SessionError::Refused(format!(
                        "the member answered {other:?}"
                    )));
                }
            }
        }
        if !batch.is_empty() {
            fetch_missing_blobs(state, url, &batch).await?;
            let n = batch.len();
            let _gate = state.repl.apply_gate.lock().await;
            apply_entries(state, batch).await?;
            applied += n;
        }
    }
    Ok(applied)
}

/// Reports the durable position to the primary (best effort; the next batch or
/// heartbeat reports again).
async fn send_ack(state: &Replication, url: &str, pos: Position) {
    let body = AckRequest {
        node_id: state.node_id.to_string(),
        seq: pos.seq,
        term: pos.term,
        role: Some(state.role.get().role),
        address: Some(state.advertise_url.to_string()),
    };
    let req = state
        .http
        .post(format!("{url}{}", node_api::REPLICATION_ACK))
        .timeout(Duration::from_secs(2))
        .json(&body);
    match state.internal(req).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::debug!(status = r.status().as_u16(), "ack refused"),
        Err(e) => tracing::debug!(error = %e, "ack failed"),
    }
}

/// The last seq at which two journals (given by their term histories and ends) hold
/// the same entry: the largest `s <= min(end_a, end_b)` with equal terms at `s`.
pub(crate) fn last_common(a: &[TermStart], end_a: u64, b: &[TermStart], end_b: u64) -> u64 {
    let end = end_a.min(end_b);
    let mut candidates: Vec<u64> = vec![end];
    for t in a.iter().chain(b.iter()) {
        if t.first_seq >= 1 && t.first_seq - 1 <= end {
            candidates.push(t.first_seq - 1);
        }
    }
    candidates.sort_unstable_by(|x, y| y.cmp(x));
    candidates.dedup();
    candidates
        .into_iter()
        .find(|&s| term_in(a, s) == term_in(b, s))
        .unwrap_or(0)
}

/// Moves the entries after the common point into quarantine and rolls back to it
/// (or, when the rollback reaches compacted history, clones).
async fn repair_divergence(
    state: &Replication,
    url: &str,
    common: WirePosition,
    primary_terms: &[WirePosition],
) -> Result<(), SessionError> {
    let shared = &state.repl;
    let _gate = shared.apply_gate.lock().await;
    let own = state.store.position();
    let own_terms = state.store.call(|s| s.term_history()).await?;
    // Refine the primary's estimate with both term histories when it sent its own.
    let common_seq = if primary_terms.is_empty() {
        common.seq
    } else {
        let pt: Vec<TermStart> = primary_terms
            .iter()
            .map(|w| TermStart {
                term: w.term,
                first_seq: w.seq,
            })
            .collect();
        // The true common point is at most the primary's estimate.
        last_common(&pt, common.seq, &own_terms, own.seq)
    };
    let reason = format!(
        "diverged: not in the history of primary {url}; last common seq {common_seq} (term {})",
        common.term
    );
    let r = reason.clone();
    let rewound = state
        .store
        .call(move |s| s.quarantine_after(common_seq, &r))
        .await;
    match rewound {
        Ok(n) => {
            let count = state.store.call(|s| s.quarantine_count()).await?;
            state.metrics.quarantined.set(count as i64);
            tracing::warn!(primary = %url, from_seq = own.seq, common_seq, quarantined = n, "diverged from the primary: entries moved to quarantine, rewound");
            Ok(())
        }
        Err(StoreError::Compacted { oldest }) => {
            // Keep what this node still has of its divergent tail, then clone.
            let from = common_seq.max(oldest.saturating_sub(1));
            let n = state
                .store
                .call(move |s| s.quarantine_copy_after(from, &reason))
                .await?;
            tracing::warn!(primary = %url, common_seq, oldest, quarantined = n, "diverged beyond the local journal: entries quarantined, cloning");
            drop(_gate);
            clone_from(state, url).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes leftovers of interrupted clones and snapshots.
async fn cleanup_temp_files(state: &Replication) {
    let dir = state.store.dir().join("replication-tmp");
    let _ = tokio::fs::remove_dir_all(&dir).await;
}

/// Clones a consistent snapshot of `url` (database, then every binary it lists),
/// swaps it in, and leaves the stream to catch up from its position.
pub(crate) async fn clone_from(state: &Replication, url: &str) -> Result<(), SessionError> {
    let shared = &state.repl;
    shared.caught_up.store(false, Ordering::SeqCst);
    let start = Instant::now();
    let dir = state.store.dir().join("replication-tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(StoreError::from)?;
    let tmp = dir.join(format!("clone-{}.db", uuid::Uuid::new_v4()));
    let result = async {
        let req = state.stream_http.get(format!("{url}{}", node_api::SNAPSHOT));
        // Making the snapshot may take a while on a big repository.
        let resp = tokio::time::timeout(Duration::from_secs(600), state.internal(req).send())
            .await
            .map_err(|_| SessionError::Silent(Duration::from_secs(600)))??;
        if !resp.status().is_success() {
            return Err(error_status(resp).await);
        }
        client::check_snapshot_schema(&resp, url)?;
        check_cluster_id(state, header(&resp, node_api::HEADER_CLUSTER_ID)).await?;
        let seq = header(&resp, HEADER_SNAPSHOT_SEQ).unwrap_or_default();
        let term = header(&resp, HEADER_SNAPSHOT_TERM).unwrap_or_default();
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(StoreError::from)?;
        let mut body = Box::pin(chunks_with_timeout(resp));
        let mut db_bytes: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(SessionError::Refused)?;
            db_bytes += chunk.len() as u64;
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                .await
                .map_err(StoreError::from)?;
        }
        file.sync_all().await.map_err(StoreError::from)?;
        drop(file);
        // Binaries first, so no entry ever refers to a missing file.
        let t = tmp.clone();
        let blobs = tokio::task::spawn_blocking(move || snapshot_blobs(&t))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        let missing: Vec<String> = blobs
            .into_iter()
            .filter(|(sha, _)| !state.store.has_blob(sha))
            .map(|(sha, _)| sha)
            .collect();
        let fetched: Vec<Result<u64, SessionError>> = futures::stream::iter(missing)
            .map(|sha| async move { fetch_blob(state, url, &sha).await })
            .buffer_unordered(4)
            .collect()
            .await;
        let mut blob_bytes = 0;
        for r in fetched {
            blob_bytes += r?;
        }
        let _gate = shared.apply_gate.lock().await;
        let t = tmp.clone();
        let pos = state.store.call(move |s| s.restore_from(&t)).await?;
        drop(_gate);
        let secs = start.elapsed().as_secs_f64().max(1e-6);
        let total = (db_bytes + blob_bytes) as f64;
        state.metrics.journal_seq.set(pos.seq as i64);
        state.metrics.journal_term.set(pos.term as i64);
        tracing::info!(
            primary = %url, seq = pos.seq, term = pos.term, snapshot_seq = %seq, snapshot_term = %term,
            db_bytes, blob_bytes, secs, mb_per_s = total / secs / 1e6,
            "clone complete"
        );
        send_ack(state, url, pos).await;
        Ok(())
    }
    .await;
    let _ = tokio::fs::remove_file(&tmp).await;
    result
}

/// Every binary registered in a snapshot file.
fn snapshot_blobs(path: &std::path::Path) -> Result<Vec<(String, u64)>, StoreError> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare("SELECT sha256, size FROM blobs")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[(u64, u64)]) -> Vec<TermStart> {
        v.iter()
            .map(|&(term, first_seq)| TermStart { term, first_seq })
            .collect()
    }

    #[test]
    fn common_point_of_two_histories() {
        // Same history.
        assert_eq!(last_common(&h(&[(1, 1)]), 10, &h(&[(1, 1)]), 10), 10);
        // One is a prefix of the other.
        assert_eq!(last_common(&h(&[(1, 1)]), 10, &h(&[(1, 1)]), 7), 7);
        // Ex-primary wrote 101..=120 in term 1; the new primary started term 2 at 101.
        assert_eq!(
            last_common(&h(&[(1, 1), (2, 101)]), 130, &h(&[(1, 1)]), 120),
            100
        );
        // Diverged inside an unknown term.
        assert_eq!(
            last_common(&h(&[(1, 1), (2, 51)]), 60, &h(&[(1, 1), (3, 10)]), 110),
            9
        );
        // Nothing in common.
        assert_eq!(last_common(&h(&[(2, 1)]), 5, &h(&[(1, 1)]), 5), 0);
    }
}
