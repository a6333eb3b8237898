//! Internal admin routes over the store: content digest and quarantine list.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use studio_crds::node_api::{self, DigestResponse, QuarantineList, QuarantinedEntry};

use super::ApiState;
use super::error::ApiError;

pub fn router() -> Router<ApiState> {
    Router::new()
        .route(node_api::ADMIN_DIGEST, get(digest))
        .route(node_api::ADMIN_QUARANTINE, get(quarantine))
}

async fn digest(State(state): State<ApiState>) -> Result<Json<DigestResponse>, ApiError> {
    // Digest and position come from one read transaction: no retry while writes go on.
    let (digest, pos) = state.store.call(|s| s.digest_at()).await?;
    Ok(Json(DigestResponse {
        digest,
        seq: pos.seq,
        term: pos.term,
    }))
}

async fn quarantine(State(state): State<ApiState>) -> Result<Json<QuarantineList>, ApiError> {
    let list = state.store.call(|s| s.quarantine_list()).await?;
    let entries = list
        .into_iter()
        .map(|q| QuarantinedEntry {
            id: q.id,
            reason: q.reason,
            quarantined_at: q.quarantined_at,
            entry: serde_json::to_value(&q.entry).unwrap_or_default(),
        })
        .collect();
    Ok(Json(QuarantineList { entries }))
}
