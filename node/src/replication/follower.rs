//! The replica side: one task that follows whatever primary the role state names,
//! streams and applies entries, acknowledges them, repairs divergence and clones.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Deserialize;
use studio_crds::node_api::{
    self, AckRequest, HEADER_CLUSTER_ID, HEADER_SNAPSHOT_SEQ, HEADER_SNAPSHOT_TERM, HEADER_TERM,
    StreamParams, WirePosition,
};

use crate::app::AppState;
use crate::roles::{Role, RoleInfo};
use crate::storage::{JournalEntry, Position, StoreError, TermStart};

/// Replicas treat a stream silent for this long as dead and reconnect.
const STREAM_SILENCE: Duration = Duration::from_secs(5);
/// Largest batch applied in one transaction.
const MAX_BATCH: usize = 2000;
/// Bytes of stream read ahead before applying.
const MAX_BUFFER: usize = 4 << 20;

/// The replica's view of [`node_api::StreamFrame`], decoding entries directly.
#[derive(Debug, Deserialize)]
#[serde(tag = "frame", rename_all = "snake_case")]
pub(crate) enum Frame {
    Entry {
        entry: JournalEntry,
    },
    Diverged {
        common: WirePosition,
        #[serde(default)]
        terms: Vec<WirePosition>,
    },
    CloneRequired {
        oldest_seq: u64,
    },
    Heartbeat {
        primary: WirePosition,
        #[allow(dead_code)]
        time: i64,
    },
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("primary answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("bad frame: {0}")]
    Frame(#[from] serde_json::Error),
    #[error("{0}")]
    Refused(String),
    #[error("stream silent for {0:?}")]
    Silent(Duration),
    #[error("stream ended")]
    Ended,
}

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
pub(super) async fn run(state: AppState) {
    cleanup_temp_files(&state).await;
    let mut role_rx = state.role.subscribe();
    let mut backoff = Duration::from_millis(100);
    loop {
        let info = role_rx.borrow_and_update().clone();
        let Some(url) = target(&info) else {
            state.role.repl.connected.store(false, Ordering::SeqCst);
            if role_rx.changed().await.is_err() {
                return;
            }
            continue;
        };
        let result = session(&state, &url, &mut role_rx).await;
        state.role.repl.connected.store(false, Ordering::SeqCst);
        match result {
            Ok(Outcome::RoleChanged) => {
                backoff = Duration::from_millis(100);
            }
            Ok(Outcome::Resync) => {
                backoff = Duration::from_millis(100);
                continue;
            }
            Err(e) => {
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

fn internal(state: &AppState, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match state.role.repl.token(state) {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

async fn error_status(resp: reqwest::Response) -> SessionError {
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    SessionError::Status {
        status,
        body: body.chars().take(500).collect(),
    }
}

/// Checks (and adopts, on an empty node) the cluster id announced by a peer.
async fn check_cluster_id(state: &AppState, remote: Option<String>) -> Result<(), SessionError> {
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

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn session(
    state: &AppState,
    url: &str,
    role_rx: &mut tokio::sync::watch::Receiver<RoleInfo>,
) -> Result<Outcome, SessionError> {
    let shared = &state.role.repl;
    let pos = state.store.position();
    let role = state.role.get().role;
    let params = StreamParams {
        node_id: state.node_id.to_string(),
        after_seq: pos.seq,
        after_term: pos.term,
        role: Some(role),
        address: Some(state.advertise_url.to_string()),
        from_any: false,
    };
    let req = state
        .http
        .get(format!("{url}{}", node_api::REPLICATION_STREAM))
        .query(&params);
    let resp = tokio::select! {
        r = tokio::time::timeout(STREAM_SILENCE, internal(state, req).send()) => {
            r.map_err(|_| SessionError::Silent(STREAM_SILENCE))??
        }
        _ = role_changed(role_rx, url) => return Ok(Outcome::RoleChanged),
    };
    if !resp.status().is_success() {
        return Err(error_status(resp).await);
    }
    check_cluster_id(state, header(&resp, HEADER_CLUSTER_ID)).await?;
    let remote_term: u64 = header(&resp, HEADER_TERM)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let promised = shared.promised_term();
    if remote_term < promised {
        return Err(SessionError::Refused(format!(
            "{url} is at term {remote_term}, below term {promised} this node knows: stale primary"
        )));
    }
    shared.connected.store(true, Ordering::SeqCst);
    tracing::info!(primary = %url, seq = pos.seq, term = pos.term, "replication stream connected");
    // The reader task keeps receiving while a batch is applied, so the next batch
    // takes everything that arrived meanwhile (one transaction, one fsync).
    let (chunk_tx, mut chunks) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, String>>(4096);
    let mut body = Box::pin(chunks_with_timeout(resp));
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

async fn receive(
    state: &AppState,
    url: &str,
    remote_term: u64,
    role_rx: &mut tokio::sync::watch::Receiver<RoleInfo>,
    chunks: &mut tokio::sync::mpsc::Receiver<Result<bytes::Bytes, String>>,
    ack: &tokio::sync::watch::Sender<Position>,
) -> Result<Outcome, SessionError> {
    let shared = &state.role.repl;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::select! {
            c = chunks.recv() => c,
            _ = role_changed(role_rx, url) => return Ok(Outcome::RoleChanged),
        };
        let Some(chunk) = chunk else {
            return Err(SessionError::Ended);
        };
        buf.extend_from_slice(&chunk.map_err(SessionError::Refused)?);
        // Take whatever else has already arrived.
        let mut ended = false;
        let mut failed = None;
        let mut idle = false;
        while buf.len() < MAX_BUFFER {
            match chunks.try_recv() {
                Ok(Ok(c)) => buf.extend_from_slice(&c),
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
        let mut consumed = 0;
        while let Some(i) = buf[consumed..].iter().position(|b| *b == b'\n') {
            let line = &buf[consumed..consumed + i];
            consumed += i + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Frame>(line)? {
                Frame::Entry { entry } => {
                    batch.push(entry);
                    if batch.len() >= MAX_BATCH {
                        apply_batch(state, url, remote_term, std::mem::take(&mut batch), ack)
                            .await?;
                    }
                }
                Frame::Heartbeat { primary, .. } => {
                    let promised = shared.promised_term();
                    if remote_term < promised {
                        return Err(SessionError::Refused(format!(
                            "{url} is at term {remote_term}, below term {promised} this node promised: stale primary"
                        )));
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
                        shared.caught_up.store(true, Ordering::SeqCst);
                    }
                    // Re-acknowledge on heartbeats so the primary knows this node is
                    // alive, even when nothing changed.
                    ack.send_replace(own);
                }
                Frame::Diverged { common, terms } => {
                    if !batch.is_empty() {
                        apply_batch(state, url, remote_term, std::mem::take(&mut batch), ack)
                            .await?;
                    }
                    repair_divergence(state, url, common, &terms).await?;
                    return Ok(Outcome::Resync);
                }
                Frame::CloneRequired { oldest_seq } => {
                    tracing::info!(primary = %url, oldest_seq, own_seq = state.store.position().seq, "behind the primary's journal retention (or empty): cloning");
                    clone_from(state, url).await?;
                    return Ok(Outcome::Resync);
                }
            }
        }
        buf.drain(..consumed);
        if !batch.is_empty() {
            apply_batch(state, url, remote_term, batch, ack).await?;
            if idle {
                // Applied everything the primary had sent: caught up.
                shared.caught_up.store(true, Ordering::SeqCst);
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

/// Applies consecutive entries (fetching their binaries first) and acknowledges the
/// new durable position. Returns it.
async fn apply_batch(
    state: &AppState,
    url: &str,
    remote_term: u64,
    batch: Vec<JournalEntry>,
    ack: &tokio::sync::watch::Sender<Position>,
) -> Result<Position, SessionError> {
    let shared = &state.role.repl;
    let _gate = shared.apply_gate.lock().await;
    // The role may have changed while waiting for the gate (promote holds it).
    if target(&state.role.get()).as_deref() != Some(url) {
        return Ok(state.store.position());
    }
    // A promise (election) fences the *primary's* term, like a Raft vote: entries of
    // older terms are still fine when a primary of a current term sends them (catch-up).
    let promised = shared.promised_term();
    if remote_term < promised {
        return Err(SessionError::Refused(format!(
            "{url} streams at term {remote_term}, below term {promised} this node promised: stale primary"
        )));
    }
    for e in &batch {
        if let Some(sha) = e.required_blob()
            && !state.store.has_blob(sha)
        {
            fetch_blob(state, url, sha).await?;
        }
    }
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
        shared.caught_up.store(true, Ordering::SeqCst);
    }
    tracing::trace!(
        n,
        ms = start.elapsed().as_millis() as u64,
        lag_ms = chrono::Utc::now().timestamp_millis() - last_time,
        "batch applied"
    );
    // Acknowledged (asynchronously) while still holding the gate: a promise made
    // after this point reports a position that includes this batch.
    ack.send_replace(applied);
    Ok(applied)
}

/// Reports the durable position to the primary (best effort; the next batch or
/// heartbeat reports again).
async fn send_ack(state: &AppState, url: &str, pos: Position) {
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
    match internal(state, req).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::debug!(status = r.status().as_u16(), "ack refused"),
        Err(e) => tracing::debug!(error = %e, "ack failed"),
    }
}

/// Fetches a binary from `url` and stores it durably (hash verified). Also used by an
/// election candidate catching up from the arbiter.
pub(crate) async fn fetch_blob(
    state: &AppState,
    url: &str,
    sha: &str,
) -> Result<u64, SessionError> {
    let req = state
        .http
        .get(format!("{url}{}/{sha}", node_api::BLOB_PREFIX));
    let resp = tokio::time::timeout(STREAM_SILENCE, internal(state, req).send())
        .await
        .map_err(|_| SessionError::Silent(STREAM_SILENCE))??;
    if !resp.status().is_success() {
        return Err(error_status(resp).await);
    }
    let stream = Box::pin(chunks_with_timeout(resp));
    let (_, size) = state
        .store
        .put_blob_stream(stream, u64::MAX, Some(sha))
        .await?;
    Ok(size)
}

/// A response body whose chunks fail when the sender stalls for [`STREAM_SILENCE`].
fn chunks_with_timeout(
    resp: reqwest::Response,
) -> impl futures::Stream<Item = Result<bytes::Bytes, String>> {
    futures::stream::unfold(Some(resp.bytes_stream()), |s| async move {
        let mut s = s?;
        match tokio::time::timeout(STREAM_SILENCE, s.next()).await {
            Ok(Some(Ok(b))) => Some((Ok(b), Some(s))),
            Ok(Some(Err(e))) => Some((Err(format!("reading from the peer: {e}")), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(format!("the peer sent nothing for {STREAM_SILENCE:?}")),
                None,
            )),
        }
    })
}

/// The term of `seq` in a term history (ascending by term).
fn term_in(hist: &[TermStart], seq: u64) -> u64 {
    if seq == 0 {
        return 0;
    }
    hist.iter()
        .filter(|t| t.first_seq <= seq)
        .map(|t| t.term)
        .max()
        .unwrap_or(0)
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
    state: &AppState,
    url: &str,
    common: WirePosition,
    primary_terms: &[WirePosition],
) -> Result<(), SessionError> {
    let shared = &state.role.repl;
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
    let oldest = state.store.call(|s| s.oldest_seq()).await?;
    let from = common_seq.max(oldest.saturating_sub(1));
    let removed = state
        .store
        .call(move |s| s.entries_after(from, usize::MAX >> 1))
        .await?;
    let n = removed.len();
    // Quarantine first, then roll back: a crash in between duplicates quarantine
    // records at worst, never loses an entry.
    if !removed.is_empty() {
        let r = reason.clone();
        state
            .store
            .call(move |s| s.quarantine_add(&removed, &r))
            .await?;
    }
    let rewound = state
        .store
        .call(move |s| s.truncate_after(common_seq))
        .await;
    match rewound {
        Ok(_) => {
            let count = state.store.call(|s| s.quarantine_count()).await?;
            state.metrics.quarantined.set(count as i64);
            tracing::warn!(primary = %url, from_seq = own.seq, common_seq, quarantined = n, "diverged from the primary: entries moved to quarantine, rewound");
            Ok(())
        }
        Err(StoreError::Compacted { oldest }) => {
            tracing::warn!(primary = %url, common_seq, oldest, quarantined = n, "diverged beyond the local journal: entries quarantined, cloning");
            drop(_gate);
            clone_from(state, url).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes leftovers of interrupted clones and snapshots.
async fn cleanup_temp_files(state: &AppState) {
    let dir = state.store.dir().join("replication-tmp");
    let _ = tokio::fs::remove_dir_all(&dir).await;
}

/// Clones a consistent snapshot of `url` (database, then every binary it lists),
/// swaps it in, and leaves the stream to catch up from its position.
pub(crate) async fn clone_from(state: &AppState, url: &str) -> Result<(), SessionError> {
    let shared = &state.role.repl;
    shared.caught_up.store(false, Ordering::SeqCst);
    let start = Instant::now();
    let dir = state.store.dir().join("replication-tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(StoreError::from)?;
    let tmp = dir.join(format!("clone-{}.db", uuid::Uuid::new_v4()));
    let result = async {
        let req = state.http.get(format!("{url}{}", node_api::SNAPSHOT));
        // Making the snapshot may take a while on a big repository.
        let resp = tokio::time::timeout(Duration::from_secs(600), internal(state, req).send())
            .await
            .map_err(|_| SessionError::Silent(Duration::from_secs(600)))??;
        if !resp.status().is_success() {
            return Err(error_status(resp).await);
        }
        check_cluster_id(state, header(&resp, HEADER_CLUSTER_ID)).await?;
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
