//! Backup routes (internal, member/operator credential): start and inspect base
//! backups, list them, apply retention.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use studio_crds::node_api::{
    self, BaseBackupList, BaseBackupRequest, BaseBackupStatus, PruneAnswer, PruneRequest,
};

use super::ApiState;
use super::error::ApiError;
use crate::backup::{BackupError, base};

pub fn router() -> Router<ApiState> {
    Router::new()
        .route(node_api::BACKUPS, post(start).get(list))
        .route(&format!("{}/{{id}}", node_api::BACKUP_PREFIX), get(status))
        .route(node_api::BACKUPS_PRUNE, post(prune))
}

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> ApiError {
        let msg = e.to_string();
        match e {
            BackupError::NotConfigured => {
                ApiError::new(StatusCode::CONFLICT, "backups_not_configured", msg)
            }
            BackupError::Busy(_) => ApiError::new(StatusCode::CONFLICT, "backup_running", msg),
            BackupError::Refused(_) => ApiError::bad_request("backup_refused", msg),
            BackupError::NotFound(_) => ApiError::not_found(msg),
            BackupError::NoClusterId => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_cluster_id", msg)
            }
            BackupError::Store(_) => ApiError::new(StatusCode::BAD_GATEWAY, "object_store", msg),
            BackupError::Storage(s) => s.into(),
            BackupError::Corrupt(_) | BackupError::Io(_) | BackupError::Config(_) => {
                tracing::error!(error = %msg, "backup error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "backup_error", msg)
            }
        }
    }
}

async fn start(
    State(state): State<ApiState>,
    Json(req): Json<BaseBackupRequest>,
) -> Result<Response, ApiError> {
    let status = base::start(&state.repl, &state.backups, &req.id).await?;
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

async fn cluster_id(state: &ApiState) -> Result<String, ApiError> {
    state
        .store
        .call(|s| s.cluster_id())
        .await?
        .ok_or_else(|| BackupError::NoClusterId.into())
}

async fn status(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<BaseBackupStatus>, ApiError> {
    if let Some(run) = state.backups.run(&id) {
        return Ok(Json(run));
    }
    let objects = state.backups.objects()?;
    let cid = cluster_id(&state).await?;
    match base::manifest(objects, &cid, &id).await? {
        Some(m) => Ok(Json(m)),
        None => Err(BackupError::NotFound(id).into()),
    }
}

async fn list(State(state): State<ApiState>) -> Result<Json<BaseBackupList>, ApiError> {
    let objects = state.backups.objects()?;
    let cid = cluster_id(&state).await?;
    Ok(Json(base::list(objects, &cid).await?))
}

async fn prune(
    State(state): State<ApiState>,
    Json(req): Json<PruneRequest>,
) -> Result<Json<PruneAnswer>, ApiError> {
    let objects = state.backups.objects()?;
    let cid = cluster_id(&state).await?;
    Ok(Json(base::prune(objects, &cid, &req.delete).await?))
}
