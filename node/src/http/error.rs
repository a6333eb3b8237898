//! The JSON error every endpoint answers with: `{"error": code, "message": text}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use studio_crds::node_api::{ErrorBody, HEADER_PRIMARY};

use crate::storage::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Primary address to report (503 read-only answers).
    pub primary: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            primary: None,
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
            _ => {
                tracing::error!(error = %msg, "storage error");
                ApiError::internal("internal storage error")
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
        resp
    }
}
