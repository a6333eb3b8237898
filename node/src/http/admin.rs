//! Internal admin routes owned by the storage side: digest and quarantine list.
//! (Promote/demote/follow/switchover/stream/snapshot live in `crate::replication::http`.)

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use studio_crds::node_api::{self, DigestResponse, QuarantineList, QuarantinedEntry};

use super::error::ApiError;
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(node_api::ADMIN_DIGEST, get(digest))
        .route(node_api::ADMIN_QUARANTINE, get(quarantine))
}

async fn digest(State(state): State<AppState>) -> Result<Json<DigestResponse>, ApiError> {
    let (digest, pos) = state
        .store
        .call(|s| {
            // Position and digest from one consistent moment: retry if a write slipped in.
            loop {
                let before = s.position();
                let d = s.digest()?;
                if s.position() == before {
                    return Ok((d, before));
                }
            }
        })
        .await?;
    Ok(Json(DigestResponse {
        digest,
        seq: pos.seq,
        term: pos.term,
    }))
}

async fn quarantine(State(state): State<AppState>) -> Result<Json<QuarantineList>, ApiError> {
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
