//! Internal replication and admin HTTP routes. Stub from the skeleton; the
//! replication engineer owns this file.

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::AppState;

/// Routes under `/internal/v1` (merged by `crate::http::router`, behind the cluster
/// token check).
pub fn router() -> Router<AppState> {
    Router::new()
}

/// Middleware in front of every content route: coordinator modes (forwarding to the
/// primary, 503 in DISABLED, `X-Studio-Direct`), and refusing content on an arbiter.
pub async fn coordinator(State(_state): State<AppState>, req: Request, next: Next) -> Response {
    next.run(req).await
}
