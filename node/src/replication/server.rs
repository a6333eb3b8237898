//! The serving side of the journal stream and of snapshots (any transport: the HTTP
//! layer wraps these in routes).

use std::time::Instant;

use bytes::Bytes;
use studio_crds::node_api::{StreamFrame, StreamParams, WirePosition};

use super::roles::known_term;
use super::{HEARTBEAT, Replication};
use crate::cluster::{Role, RoleInfo};
use crate::storage::schema::Revisions;
use crate::storage::{Position, Store, StoreError, term_in};

/// Entries read from the journal per stream chunk.
const STREAM_CHUNK: usize = 512;
/// Stream chunks buffered per replica before the producer waits (back-pressure).
const STREAM_QUEUE: usize = 8;

/// Why a stream was not opened.
#[derive(Debug, thiserror::Error)]
pub enum StreamRefused {
    #[error("this node is not the primary")]
    NotPrimary { primary: Option<String> },
    #[error("the replica has seen term {replica}, this node only {known}")]
    StaleTerm { replica: u64, known: u64 },
    #[error(
        "incompatible schema: replica {replica} has {peer}, this node has {own}: they cannot replicate with each other"
    )]
    IncompatibleSchema {
        replica: String,
        own: Revisions,
        peer: Revisions,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An opened stream: the term and cluster id to announce, and the body (newline-
/// delimited frames) as it is produced.
pub struct OpenedStream {
    pub term: u64,
    pub cluster_id: Option<String>,
    pub body: tokio::sync::mpsc::Receiver<Bytes>,
}

/// What the primary makes of a replica's position.
#[derive(Debug, PartialEq)]
enum Check {
    Stream,
    Clone { oldest: u64 },
    Diverged { common: Position },
}

/// Decides whether a replica at `after` can stream from this journal. `after` is in
/// our history when our entry at `after.seq` has the same term (terms identify their
/// single writer, so equal (seq, term) means an equal prefix).
fn check_position(store: &Store, after: Position) -> Result<Check, StoreError> {
    let own = store.position();
    let oldest = store.oldest_seq()?;
    if after.seq == 0 {
        // An empty node clones (faster than replaying, and works past compaction).
        return Ok(if own.seq > 0 {
            Check::Clone { oldest }
        } else {
            Check::Stream
        });
    }
    let hist = store.term_history()?;
    if after.seq <= own.seq && term_in(&hist, after.seq) == after.term {
        return Ok(if after.seq + 1 < oldest {
            Check::Clone { oldest }
        } else {
            Check::Stream
        });
    }
    // Not in our history. The replica's entries up to `after.seq` all have terms
    // <= after.term, so the common prefix ends before our first term above it,
    // before `after.seq` itself and within our journal.
    let end_of_term = hist
        .iter()
        .filter(|t| t.term > after.term)
        .map(|t| t.first_seq.saturating_sub(1))
        .min()
        .unwrap_or(own.seq);
    let seq = (after.seq - 1).min(own.seq).min(end_of_term);
    Ok(Check::Diverged {
        common: Position {
            seq,
            term: term_in(&hist, seq),
        },
    })
}

fn frame_line(frame: &StreamFrame) -> Bytes {
    let mut v = serde_json::to_vec(frame).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn heartbeat(store: &Store) -> Bytes {
    let p = store.position();
    frame_line(&StreamFrame::Heartbeat {
        primary: WirePosition {
            seq: p.seq,
            term: p.term,
        },
        time: chrono::Utc::now().timestamp_millis(),
    })
}

/// Unregisters a stream when its producer ends.
struct StreamGuard {
    state: Replication,
    node_id: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.state.repl.stream_closed(&self.node_id);
        tracing::info!(replica = %self.node_id, "replication stream closed");
    }
}

fn serving(info: &RoleInfo, from_any: bool) -> bool {
    info.role == Role::Primary || from_any
}

/// Opens a stream for a replica at `params`' position: entries from there on, or a
/// single `clone_required` / `diverged` frame.
pub async fn open(
    state: &Replication,
    params: StreamParams,
) -> Result<OpenedStream, StreamRefused> {
    let peer = Revisions::announced(params.schema_revision, params.min_compatible_revision);
    if !Revisions::OWN.compatible_with(peer) {
        state.metrics.schema_refused.inc();
        let e = StreamRefused::IncompatibleSchema {
            replica: params.node_id,
            own: Revisions::OWN,
            peer,
        };
        tracing::warn!(error = %e, "replication stream refused");
        return Err(e);
    }
    let info = state.role.get();
    if !serving(&info, params.from_any) {
        return Err(StreamRefused::NotPrimary {
            primary: info.primary.clone(),
        });
    }
    let known = known_term(state);
    if params.after_term > known {
        return Err(StreamRefused::StaleTerm {
            replica: params.after_term,
            known,
        });
    }
    let after = Position {
        seq: params.after_seq,
        term: params.after_term,
    };
    let (check, cluster_id, hist) = state
        .store
        .call(move |s| {
            Ok((
                check_position(s, after)?,
                s.cluster_id()?,
                s.term_history()?,
            ))
        })
        .await?;
    let shared = &state.repl;
    for gone in shared.record_ack(&params.node_id, after, params.role, params.address.clone()) {
        super::status::forget_peer_metrics(state, &gone);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(STREAM_QUEUE);
    match check {
        Check::Stream => {
            shared.stream_opened(&params.node_id);
            tracing::info!(replica = %params.node_id, after_seq = after.seq, after_term = after.term, "replication stream opened");
            let guard = StreamGuard {
                state: state.clone(),
                node_id: params.node_id.clone(),
            };
            tokio::spawn(produce(
                state.clone(),
                after.seq,
                params.from_any,
                tx,
                guard,
            ));
        }
        Check::Clone { oldest } => {
            tracing::info!(replica = %params.node_id, after_seq = after.seq, oldest, "replica must clone");
            let _ = tx
                .send(frame_line(&StreamFrame::CloneRequired {
                    oldest_seq: oldest,
                }))
                .await;
        }
        Check::Diverged { common } => {
            tracing::warn!(replica = %params.node_id, after_seq = after.seq, after_term = after.term, common_seq = common.seq, "replica diverged");
            let terms = hist
                .iter()
                .map(|t| WirePosition {
                    seq: t.first_seq,
                    term: t.term,
                })
                .collect();
            let _ = tx
                .send(frame_line(&StreamFrame::Diverged {
                    common: WirePosition {
                        seq: common.seq,
                        term: common.term,
                    },
                    terms,
                }))
                .await;
        }
    }
    Ok(OpenedStream {
        term: info.term,
        cluster_id,
        body: rx,
    })
}

/// Feeds one replica: entries after `cursor` as they commit, heartbeats when idle
/// (and at least every [`HEARTBEAT`] when busy). Ends when the replica goes away or
/// this node stops being primary.
async fn produce(
    state: Replication,
    mut cursor: u64,
    from_any: bool,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    _guard: StreamGuard,
) {
    let mut pos_rx = state.store.subscribe();
    let mut role_rx = state.role.subscribe();
    let mut shutdown = state.repl.shutdown.subscribe();
    let mut last_hb = Instant::now();
    if tx.send(heartbeat(&state.store)).await.is_err() {
        return;
    }
    loop {
        if !serving(&role_rx.borrow_and_update(), from_any) || *shutdown.borrow_and_update() {
            return;
        }
        pos_rx.borrow_and_update();
        let c = cursor;
        let entries = state
            .store
            .call(move |s| s.entries_after(c, STREAM_CHUNK))
            .await;
        match entries {
            Ok(entries) if !entries.is_empty() => {
                let mut buf = Vec::with_capacity(entries.len() * 256);
                for e in &entries {
                    buf.extend_from_slice(b"{\"frame\":\"entry\",\"entry\":");
                    buf.extend_from_slice(&e.encode());
                    buf.extend_from_slice(b"}\n");
                }
                if let Some(last) = entries.last() {
                    cursor = last.seq;
                    tracing::trace!(
                        n = entries.len(),
                        seq = last.seq,
                        lag_ms = chrono::Utc::now().timestamp_millis() - last.time,
                        "stream chunk"
                    );
                }
                if tx.send(Bytes::from(buf)).await.is_err() {
                    return;
                }
                if last_hb.elapsed() >= HEARTBEAT {
                    last_hb = Instant::now();
                    if tx.send(heartbeat(&state.store)).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            Ok(_) => {}
            Err(StoreError::Compacted { oldest }) => {
                let _ = tx
                    .send(frame_line(&StreamFrame::CloneRequired {
                        oldest_seq: oldest,
                    }))
                    .await;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "replication stream: reading the journal failed");
                return;
            }
        }
        let next_hb = tokio::time::Instant::from_std(last_hb + HEARTBEAT);
        tokio::select! {
            _ = pos_rx.changed() => {}
            _ = role_rx.changed() => {}
            _ = tx.closed() => return,
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep_until(next_hb) => {
                last_hb = Instant::now();
                if tx.send(heartbeat(&state.store)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Records a replica's acknowledged durable position.
pub fn ack(state: &Replication, req: studio_crds::node_api::AckRequest) {
    let pos = Position {
        seq: req.seq,
        term: req.term,
    };
    for gone in state
        .repl
        .record_ack(&req.node_id, pos, req.role, req.address)
    {
        super::status::forget_peer_metrics(state, &gone);
    }
}

/// A consistent online snapshot of the database, unlinked (the open handle keeps it
/// until it is sent).
pub struct Snapshot {
    pub file: tokio::fs::File,
    pub len: u64,
    pub position: Position,
    pub cluster_id: Option<String>,
}

/// Makes a [`Snapshot`] (any role can serve one).
pub async fn snapshot(state: &Replication) -> Result<Snapshot, StoreError> {
    let dir = state.store.dir().join("replication-tmp");
    tokio::fs::create_dir_all(&dir).await?;
    let path = dir.join(format!("snapshot-{}.db", uuid::Uuid::new_v4()));
    let p = path.clone();
    let started = Instant::now();
    let made = state
        .store
        .call(move |s| Ok((s.snapshot_to(&p)?, s.cluster_id()?)))
        .await;
    let (position, cluster_id) = match made {
        Ok(v) => v,
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
    };
    let file = tokio::fs::File::open(&path).await;
    // Unlink now: the open handle keeps the data until the response is sent.
    let _ = tokio::fs::remove_file(&path).await;
    let file = file?;
    let len = file.metadata().await?.len();
    tracing::info!(
        seq = position.seq,
        term = position.term,
        bytes = len,
        ms = started.elapsed().as_millis() as u64,
        "serving a snapshot"
    );
    Ok(Snapshot {
        file,
        len,
        position,
        cluster_id,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::Op;

    fn put(path: &str) -> Op {
        Op::Put {
            path: path.into(),
            item_type: "doc".into(),
            properties: serde_json::json!({}),
            expected_version: None,
            author: "t".into(),
        }
    }

    #[test]
    fn positions_are_checked_against_the_term_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..10 {
            store.write(put(&format!("/a{i}")), 1).unwrap();
        }
        store.write(Op::TermStart { node: "b".into() }, 3).unwrap();
        for i in 0..5 {
            store.write(put(&format!("/b{i}")), 3).unwrap();
        }
        let p = |seq, term| Position { seq, term };
        assert_eq!(
            check_position(&store, p(0, 0)).unwrap(),
            Check::Clone { oldest: 1 }
        );
        assert_eq!(check_position(&store, p(5, 1)).unwrap(), Check::Stream);
        assert_eq!(check_position(&store, p(10, 1)).unwrap(), Check::Stream);
        assert_eq!(check_position(&store, p(16, 3)).unwrap(), Check::Stream);
        // The old primary wrote 11..=14 in term 1: diverged after 10.
        assert_eq!(
            check_position(&store, p(14, 1)).unwrap(),
            Check::Diverged { common: p(10, 1) }
        );
        // A term we never had, inside our term 1 range.
        assert_eq!(
            check_position(&store, p(8, 2)).unwrap(),
            Check::Diverged { common: p(7, 1) }
        );
        // Ahead of us in our own term.
        assert_eq!(
            check_position(&store, p(20, 3)).unwrap(),
            Check::Diverged { common: p(16, 3) }
        );
    }
}
