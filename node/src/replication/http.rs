//! Internal replication and admin HTTP routes (under `/internal/v1`, behind the
//! cluster token): the journal stream, acknowledgements, snapshots, binaries, and
//! promote / demote / follow / switchover.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use studio_crds::node_api::{
    self, AckRequest, AdminResponse, DemoteRequest, FollowRequest, HEADER_CLUSTER_ID,
    HEADER_SNAPSHOT_SEQ, HEADER_SNAPSHOT_TERM, HEADER_TERM, PromoteRequest, StreamFrame,
    StreamParams, SwitchoverRequest, WirePosition,
};

use super::HEARTBEAT;
pub use super::coordinator::coordinator;
use crate::app::AppState;
use crate::http::error::ApiError;
use crate::roles::{self, Role, RoleError, RoleInfo};
use crate::storage::{Position, Store, StoreError, TermStart};

/// Entries read from the journal per stream chunk.
const STREAM_CHUNK: usize = 512;

/// Routes under `/internal/v1` (merged by `crate::http::router`, behind the cluster
/// token check).
pub fn router() -> Router<AppState> {
    Router::new()
        .route(node_api::REPLICATION_STREAM, get(stream))
        .route(node_api::REPLICATION_ACK, post(ack))
        .route(node_api::SNAPSHOT, get(snapshot))
        .route(&format!("{}/{{sha256}}", node_api::BLOB_PREFIX), get(blob))
        .route(node_api::ADMIN_PROMOTE, post(promote))
        .route(node_api::ADMIN_DEMOTE, post(demote))
        .route(node_api::ADMIN_FOLLOW, post(follow))
        .route(node_api::ADMIN_SWITCHOVER, post(switchover))
}

// ---- stream ---------------------------------------------------------------------------

/// What the primary makes of a replica's position.
#[derive(Debug, PartialEq)]
enum Check {
    Stream,
    Clone { oldest: u64 },
    Diverged { common: Position },
}

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
    state: AppState,
    node_id: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.state.role.repl.stream_closed(&self.node_id);
        tracing::info!(replica = %self.node_id, "replication stream closed");
    }
}

fn serving(info: &RoleInfo, from_any: bool) -> bool {
    info.role == Role::Primary || from_any
}

async fn stream(
    State(state): State<AppState>,
    Query(params): Query<StreamParams>,
) -> Result<Response, ApiError> {
    let info = state.role.get();
    if !serving(&info, params.from_any) {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_primary",
            "this node is not the primary",
        );
        e.primary = info.primary.clone();
        return Err(e);
    }
    let known = roles::known_term(&state);
    if params.after_term > known {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale_term",
            format!(
                "the replica has seen term {}, this node only {known}",
                params.after_term
            ),
        ));
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
    let shared = &state.role.repl;
    shared.record_ack(&params.node_id, after, params.role, params.address.clone());
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
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
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(HEADER_TERM, HeaderValue::from(info.term));
    if let Some(id) = cluster_id.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(HEADER_CLUSTER_ID, id);
    }
    Ok(resp)
}

/// Feeds one replica: entries after `cursor` as they commit, heartbeats when idle
/// (and at least every [`HEARTBEAT`] when busy). Ends when the replica goes away or
/// this node stops being primary.
async fn produce(
    state: AppState,
    mut cursor: u64,
    from_any: bool,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    _guard: StreamGuard,
) {
    let mut pos_rx = state.store.subscribe();
    let mut role_rx = state.role.subscribe();
    let mut shutdown = state.role.repl.shutdown.subscribe();
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

async fn ack(State(state): State<AppState>, Json(req): Json<AckRequest>) -> Response {
    state.role.repl.record_ack(
        &req.node_id,
        Position {
            seq: req.seq,
            term: req.term,
        },
        req.role,
        req.address,
    );
    StatusCode::NO_CONTENT.into_response()
}

// ---- snapshot and binaries --------------------------------------------------------------

/// A consistent online snapshot of the database (any role can serve it).
async fn snapshot(State(state): State<AppState>) -> Result<Response, ApiError> {
    let dir = state.store.dir().join("replication-tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(StoreError::from)?;
    let path = dir.join(format!("snapshot-{}.db", uuid::Uuid::new_v4()));
    let p = path.clone();
    let started = Instant::now();
    let made = state
        .store
        .call(move |s| Ok((s.snapshot_to(&p)?, s.cluster_id()?)))
        .await;
    let (pos, cluster_id) = match made {
        Ok(v) => v,
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e.into());
        }
    };
    let file = tokio::fs::File::open(&path).await;
    // Unlink now: the open handle keeps the data until the response is sent.
    let _ = tokio::fs::remove_file(&path).await;
    let file = file.map_err(StoreError::from)?;
    let len = file.metadata().await.map_err(StoreError::from)?.len();
    tracing::info!(
        seq = pos.seq,
        term = pos.term,
        bytes = len,
        ms = started.elapsed().as_millis() as u64,
        "serving a snapshot"
    );
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.sqlite3"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(HEADER_SNAPSHOT_SEQ, HeaderValue::from(pos.seq));
    h.insert(HEADER_SNAPSHOT_TERM, HeaderValue::from(pos.term));
    if let Some(id) = cluster_id.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(HEADER_CLUSTER_ID, id);
    }
    Ok(resp)
}

async fn blob(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    let (file, len) = state.store.open_blob(&sha256).await?;
    let mut resp = Response::new(Body::from_stream(
        tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024),
    ));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok(resp)
}

// ---- admin ------------------------------------------------------------------------------

fn admin_response(state: &AppState, message: impl Into<String>) -> Json<AdminResponse> {
    let info = state.role.get();
    Json(AdminResponse {
        ok: true,
        role: info.role,
        term: info.term,
        seq: state.store.position().seq,
        message: message.into(),
    })
}

impl From<RoleError> for ApiError {
    fn from(e: RoleError) -> ApiError {
        match e {
            RoleError::StaleTerm { .. } => {
                ApiError::new(StatusCode::CONFLICT, "stale_term", e.to_string())
            }
            RoleError::Arbiter => ApiError::new(StatusCode::CONFLICT, "arbiter", e.to_string()),
            RoleError::BadAddress(_) => ApiError::bad_request("bad_address", e.to_string()),
            RoleError::Store(s) => s.into(),
        }
    }
}

async fn promote(
    State(state): State<AppState>,
    Json(req): Json<PromoteRequest>,
) -> Result<Json<AdminResponse>, ApiError> {
    roles::promote(&state, req.term, req.force).await?;
    Ok(admin_response(
        &state,
        format!("primary at term {}", req.term),
    ))
}

async fn demote(
    State(state): State<AppState>,
    body: Option<Json<DemoteRequest>>,
) -> Result<Json<AdminResponse>, ApiError> {
    let req = body.map(|Json(r)| r).unwrap_or_default();
    roles::demote(&state, req.follow).await?;
    Ok(admin_response(&state, "read-only replica"))
}

async fn follow(
    State(state): State<AppState>,
    Json(req): Json<FollowRequest>,
) -> Result<Json<AdminResponse>, ApiError> {
    roles::follow(&state, &req.primary, req.term).await?;
    Ok(admin_response(&state, format!("following {}", req.primary)))
}

/// Planned hand-over without Kubernetes: stop taking writes, wait until the target
/// acknowledged everything, promote it at the next term, then follow it. On failure
/// before the promote, writes resume here.
async fn switchover(
    State(state): State<AppState>,
    Json(req): Json<SwitchoverRequest>,
) -> Result<Json<AdminResponse>, ApiError> {
    // In Kubernetes mode the primary role is the Lease: hand it over through it.
    if crate::coordination::active() {
        return crate::coordination::http::switchover(State(state), Json(req)).await;
    }
    let info = state.role.get();
    if info.role != Role::Primary || info.read_only {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_primary",
            "switchover starts on the writable primary",
        ));
    }
    let peers = super::peers(&state);
    let target = peers
        .iter()
        .find(|p| p.node_id == req.target || p.address.as_deref() == Some(req.target.as_str()))
        .filter(|p| p.role != Some(Role::Arbiter))
        .and_then(|p| Some((p.node_id.clone(), p.address.clone()?)))
        .ok_or_else(|| {
            ApiError::bad_request(
                "unknown_target",
                format!("{} is not a connected replica of this primary", req.target),
            )
        })?;
    let (target_id, target_url) = target;
    state.role.update(|i| i.read_only = true);
    let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(10_000));
    let deadline = Instant::now() + timeout;
    let own = state.store.position();
    loop {
        let caught_up = super::peers(&state)
            .iter()
            .any(|p| p.node_id == target_id && p.seq >= own.seq);
        if caught_up {
            break;
        }
        if Instant::now() >= deadline {
            state.role.update(|i| i.read_only = false);
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "switchover_timeout",
                format!("{target_id} did not catch up within {timeout:?}; writes resumed here"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let term = roles::known_term(&state) + 1;
    let mut call = state
        .http
        .post(format!("{target_url}{}", node_api::ADMIN_PROMOTE))
        .json(&PromoteRequest { term, force: false });
    if let Some(t) = state.role.repl.token(&state) {
        call = call.bearer_auth(t);
    }
    let promoted = match call.send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!(
            "{} answered {}",
            target_id,
            r.text().await.unwrap_or_default()
        )),
        Err(e) => Err(e.to_string()),
    };
    if let Err(msg) = promoted {
        state.role.update(|i| i.read_only = false);
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "switchover_failed",
            format!("promoting {target_id} failed ({msg}); writes resumed here"),
        ));
    }
    roles::follow(&state, &target_url, Some(term)).await?;
    Ok(admin_response(
        &state,
        format!("{target_id} is primary at term {term}"),
    ))
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
