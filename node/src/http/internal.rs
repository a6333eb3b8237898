//! Internal routes (under `/internal/v1`, behind the cluster token): the journal
//! stream, acknowledgements, snapshots, binaries, role changes, switchover and the
//! election's position request. Thin: each calls the replication layer or the node.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use studio_crds::node_api::{
    self, AckRequest, AdminResponse, DemoteRequest, FollowRequest, HEADER_CLUSTER_ID,
    HEADER_MIN_COMPATIBLE_REVISION, HEADER_SCHEMA_REVISION, HEADER_SNAPSHOT_SEQ,
    HEADER_SNAPSHOT_TERM, HEADER_TERM, PositionAnswer, PositionRequest, PromoteRequest,
    StreamParams, SwitchoverRequest,
};

use super::ApiState;
use super::error::ApiError;
use crate::replication::{Replication, roles, server};
use crate::storage::schema::Revisions;

/// Announces this node's schema revisions on a stream or snapshot answer (the data
/// of a snapshot is at this build's revision: the store was migrated on open).
fn schema_headers(h: &mut axum::http::HeaderMap) {
    h.insert(
        HEADER_SCHEMA_REVISION,
        HeaderValue::from(Revisions::OWN.revision),
    );
    h.insert(
        HEADER_MIN_COMPATIBLE_REVISION,
        HeaderValue::from(Revisions::OWN.min_compatible),
    );
}

/// Default time a switchover waits for the target to catch up.
const SWITCHOVER_DEFAULT: Duration = Duration::from_secs(10);

pub fn router() -> Router<ApiState> {
    Router::new()
        .route(node_api::REPLICATION_STREAM, get(stream))
        .route(node_api::REPLICATION_ACK, post(ack))
        .route(node_api::SNAPSHOT, get(snapshot))
        .route(&format!("{}/{{sha256}}", node_api::BLOB_PREFIX), get(blob))
        .route(node_api::ADMIN_PROMOTE, post(promote))
        .route(node_api::ADMIN_DEMOTE, post(demote))
        .route(node_api::ADMIN_FOLLOW, post(follow))
        .route(node_api::ADMIN_SWITCHOVER, post(switchover))
        .route(node_api::ELECTION_SWITCHOVER, post(switchover))
        .route(node_api::ELECTION_POSITION, post(position))
}

async fn stream(
    State(state): State<ApiState>,
    Query(params): Query<StreamParams>,
) -> Result<Response, ApiError> {
    let opened = server::open(&state, params).await?;
    let body = futures::stream::unfold(opened.body, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(HEADER_TERM, HeaderValue::from(opened.term));
    schema_headers(h);
    if let Some(id) = opened
        .cluster_id
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        h.insert(HEADER_CLUSTER_ID, id);
    }
    Ok(resp)
}

async fn ack(State(state): State<ApiState>, Json(req): Json<AckRequest>) -> Response {
    server::ack(&state, req);
    StatusCode::NO_CONTENT.into_response()
}

async fn snapshot(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let snap = server::snapshot(&state).await?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        snap.file,
        256 * 1024,
    ));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.sqlite3"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(snap.len));
    h.insert(HEADER_SNAPSHOT_SEQ, HeaderValue::from(snap.position.seq));
    h.insert(HEADER_SNAPSHOT_TERM, HeaderValue::from(snap.position.term));
    schema_headers(h);
    if let Some(id) = snap.cluster_id.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(HEADER_CLUSTER_ID, id);
    }
    Ok(resp)
}

async fn blob(
    State(state): State<ApiState>,
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

fn admin_response(state: &Replication, message: impl Into<String>) -> Json<AdminResponse> {
    let info = state.role.get();
    Json(AdminResponse {
        ok: true,
        role: info.role,
        term: info.term,
        seq: state.store.position().seq,
        message: message.into(),
    })
}

async fn promote(
    State(state): State<ApiState>,
    Json(req): Json<PromoteRequest>,
) -> Result<Json<AdminResponse>, ApiError> {
    roles::promote(&state, req.term, req.force).await?;
    Ok(admin_response(
        &state,
        format!("primary at term {}", req.term),
    ))
}

async fn demote(
    State(state): State<ApiState>,
    body: Option<Json<DemoteRequest>>,
) -> Result<Json<AdminResponse>, ApiError> {
    let req = body.map(|Json(r)| r).unwrap_or_default();
    roles::demote(&state, req.follow).await?;
    Ok(admin_response(&state, "read-only replica"))
}

async fn follow(
    State(state): State<ApiState>,
    Json(req): Json<FollowRequest>,
) -> Result<Json<AdminResponse>, ApiError> {
    roles::follow(&state, &req.primary, req.term).await?;
    Ok(admin_response(&state, format!("following {}", req.primary)))
}

/// Planned hand-over (both modes: see `crate::replication::switchover`).
async fn switchover(
    State(state): State<ApiState>,
    Json(req): Json<SwitchoverRequest>,
) -> Result<Json<AdminResponse>, ApiError> {
    let timeout = req
        .timeout_ms
        .map(|ms| Duration::from_millis(ms.clamp(100, 120_000)))
        .unwrap_or(SWITCHOVER_DEFAULT);
    Ok(Json(state.switchover(&req.target, timeout).await?))
}

/// A candidate asks for this node's durable position; the node promises to apply and
/// acknowledge no entry of a term below `term` from now on.
async fn position(
    State(state): State<ApiState>,
    Json(req): Json<PositionRequest>,
) -> Result<Json<PositionAnswer>, ApiError> {
    let own_version = state.coordinator().and_then(|c| c.lease_version());
    let pos = roles::position_promise(&state, req.term, req.campaign.as_ref(), own_version).await;
    let cluster_id = state.store.call(|s| s.cluster_id()).await?;
    Ok(Json(PositionAnswer {
        node_id: state.node_id.to_string(),
        seq: pos.seq,
        term: pos.term,
        cluster_id,
        role: state.role.get().role,
    }))
}
