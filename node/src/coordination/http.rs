//! Internal routes of the coordination layer (merged under the cluster-token check by
//! `crate::http::router`): the election's position request and the planned switchover.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use studio_crds::node_api::{AdminResponse, SwitchoverRequest};

use super::{POSITION_ROUTE, PositionAnswer, PositionRequest, SWITCHOVER_ROUTE};
use crate::app::AppState;
use crate::http::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(POSITION_ROUTE, post(position))
        .route(SWITCHOVER_ROUTE, post(switchover))
}

/// A candidate asks for this node's durable position; the node promises to apply and
/// acknowledge no entry of a term below `term` from now on.
async fn position(
    State(state): State<AppState>,
    Json(req): Json<PositionRequest>,
) -> Result<Json<PositionAnswer>, ApiError> {
    let pos = crate::roles::position_promise(&state, req.term).await;
    let cluster_id = state.store.call(|s| s.cluster_id()).await?;
    Ok(Json(PositionAnswer {
        node_id: state.node_id.to_string(),
        seq: pos.seq,
        term: pos.term,
        cluster_id,
        role: state.role.get().role,
    }))
}

/// Planned hand-over of the primary role to the named replica through the Lease.
/// Served at [`SWITCHOVER_ROUTE`]; `ADMIN_SWITCHOVER` (replication's router) delegates
/// here in Kubernetes mode (see [`super::active`]).
pub async fn switchover(
    State(_state): State<AppState>,
    Json(req): Json<SwitchoverRequest>,
) -> Result<Json<AdminResponse>, ApiError> {
    let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(5_000).clamp(100, 120_000));
    super::switchover(&req.target, timeout)
        .await
        .map(Json)
        .map_err(|m| ApiError::new(StatusCode::CONFLICT, "switchover_refused", m))
}
