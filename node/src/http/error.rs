//! The JSON error every endpoint answers with: `{"error": code, "message": text}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use studio_crds::node_api::{ErrorBody, HEADER_PRIMARY};

use crate::cluster::{RoleError, WriteError};
use crate::replication::server::StreamRefused;
use crate::replication::switchover::SwitchoverError;
use crate::storage::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Primary address to report (503 read-only answers).
    pub primary: Option<String>,
    /// Seconds after which a retry makes sense (`Retry-After`, overload answers).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            primary: None,
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// This node does not take writes; `primary` says where to go.
    pub fn read_only(primary: Option<&str>) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "read_only",
            match primary {
                Some(p) => format!("this node does not accept writes; the primary is {p}"),
                None => "this node does not accept writes and knows no primary".to_string(),
            },
        );
        e.primary = primary.map(str::to_string);
        e
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let msg = e.to_string();
        match e {
            StoreError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", msg),
            StoreError::Conflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "version_conflict", msg)
            }
            StoreError::AlreadyExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "already_exists", msg)
            }
            StoreError::HasChildren(_) => ApiError::new(StatusCode::CONFLICT, "has_children", msg),
            StoreError::BadRequest(_) => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", msg),
            StoreError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", msg)
            }
            StoreError::StaleTerm { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stale_term", msg)
            }
            StoreError::Compacted { .. } => ApiError::new(StatusCode::GONE, "compacted", msg),
            StoreError::OutOfOrder { .. } => {
                ApiError::new(StatusCode::CONFLICT, "out_of_order", msg)
            }
            StoreError::SchemaTooNew { .. } => {
                ApiError::new(StatusCode::CONFLICT, "incompatible_schema", msg)
            }
            StoreError::Overloaded { .. } => {
                let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", msg);
                e.retry_after = Some(1);
                e
            }
            _ => {
                tracing::error!(error = %msg, "storage error");
                ApiError::internal("internal storage error")
            }
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> ApiError {
        let e = match e {
            WriteError::Store(s) => return s.into(),
            other => other,
        };
        let code = match &e {
            WriteError::ReadOnly { primary } => return ApiError::read_only(primary.as_deref()),
            WriteError::Store(_) => "internal",
            WriteError::QuorumUnavailable { .. } => "sync_quorum_unavailable",
            WriteError::NotAcknowledged { .. } => "not_acknowledged",
            WriteError::SyncTimeout { .. } => "sync_timeout",
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string())
    }
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

impl From<StreamRefused> for ApiError {
    fn from(e: StreamRefused) -> ApiError {
        match e {
            StreamRefused::NotPrimary { primary } => {
                let mut err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_primary",
                    "this node is not the primary",
                );
                err.primary = primary;
                err
            }
            StreamRefused::StaleTerm { .. } => {
                ApiError::new(StatusCode::CONFLICT, "stale_term", e.to_string())
            }
            StreamRefused::IncompatibleSchema { .. } => {
                ApiError::new(StatusCode::CONFLICT, "incompatible_schema", e.to_string())
            }
            StreamRefused::Store(s) => s.into(),
        }
    }
}

impl From<SwitchoverError> for ApiError {
    fn from(e: SwitchoverError) -> ApiError {
        let msg = e.to_string();
        match e {
            SwitchoverError::NotPrimary => ApiError::new(StatusCode::CONFLICT, "not_primary", msg),
            SwitchoverError::InProgress | SwitchoverError::BadTarget(_) => {
                ApiError::new(StatusCode::CONFLICT, "switchover_refused", msg)
            }
            SwitchoverError::CatchUpTimeout { .. } => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "switchover_timeout", msg)
            }
            SwitchoverError::TransferFailed { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "switchover_failed", msg)
            }
            SwitchoverError::Task(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "switchover_failed", msg)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_string(),
            message: self.message,
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(p) = self.primary.and_then(|p| HeaderValue::from_str(&p).ok()) {
            resp.headers_mut().insert(HEADER_PRIMARY, p);
        }
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overloaded_store_answers_503_with_retry_after() {
        let resp = ApiError::from(StoreError::Overloaded { queued: 10 }).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            resp.headers()
                .get(axum::http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
    }

    #[test]
    fn write_errors_keep_their_codes() {
        let e = ApiError::from(WriteError::QuorumUnavailable {
            needed: 2,
            connected: 1,
        });
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code, "sync_quorum_unavailable");
        let e = ApiError::from(WriteError::ReadOnly {
            primary: Some("http://p:8080".into()),
        });
        assert_eq!(e.code, "read_only");
        assert_eq!(e.primary.as_deref(), Some("http://p:8080"));
    }
}
