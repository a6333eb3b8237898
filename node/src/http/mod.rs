//! The HTTP API: content (`/api/v1`), operations (`/healthz`, `/readyz`,
//! `/metrics`, `/api/v1/cluster/status`) and internal routes (`/internal/v1`, behind
//! the cluster token).

pub mod admin;
pub mod auth;
mod backups;
mod binaries;
pub mod content;
pub mod error;
pub mod forward;
pub mod internal;
pub mod jwks;
pub mod listener;
pub mod openapi;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use studio_crds::node_api::{self, ClusterStatus};

use crate::cluster::Role;
use crate::config::ReplicationMode;
use crate::metrics::HttpLabels;
use crate::node::Node;
use crate::replication::status;
use crate::storage::schema::Revisions;
use auth::Auth;
use error::ApiError;

/// What every handler sees: the node and the request authentication. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub node: Node,
    pub auth: Arc<Auth>,
}

impl Deref for ApiState {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

/// The whole router of a node.
pub fn router(state: ApiState) -> Router {
    routers(state).0
}

/// The node's routers: every route, and the public ones only (content, cluster status,
/// probes, metrics) for the `--listen` port when internal routes have their own port.
/// Both count content requests against one limit.
pub fn routers(state: ApiState) -> (Router, Router) {
    let internal = admin::router()
        .merge(internal::router())
        .merge(backups::router())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_member,
        ));
    // At most `max_concurrent_requests` content requests at once; beyond that the
    // node answers 503 + Retry-After at once instead of queueing without bound.
    // (Internal routes are not limited: replication streams are long-lived.)
    let content = content::router()
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            forward::forward_writes,
        ))
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::error_handling::HandleErrorLayer::new(overloaded))
                .load_shed()
                // Global: `Router::layer` clones the layer per route, and one
                // semaphore must count every content route.
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    state.config.max_concurrent_requests.max(1),
                )),
        );
    let public = Router::new()
        .route(node_api::HEALTHZ, get(healthz))
        .route(node_api::READYZ, get(readyz))
        .route(node_api::METRICS, get(metrics))
        .route(
            node_api::CLUSTER_STATUS,
            get(cluster_status).route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_reader,
            )),
        )
        .merge(content);
    let finish = |r: Router<ApiState>| {
        r.method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
            .layer(middleware::from_fn_with_state(state.clone(), observe))
            .with_state(state.clone())
    };
    let full = finish(public.clone().merge(internal).fallback(fallback));
    (full, finish(public.fallback(public_fallback)))
}

/// The public port's answer for anything else: internal routes live on the other one.
async fn public_fallback(uri: axum::http::Uri) -> ApiError {
    if uri.path().starts_with(node_api::INTERNAL_PREFIX) {
        ApiError::not_found("internal routes are served on the node's internal port")
    } else {
        ApiError::not_found("no such route")
    }
}

/// The answer when the concurrency limit sheds a request.
async fn overloaded(e: tower::BoxError) -> ApiError {
    let mut err = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        format!("too many requests in progress: {e}; retry shortly"),
    );
    err.retry_after = Some(1);
    err
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such route")
}

/// Counts and times every request; logs it (never its headers).
async fn observe(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let elapsed = start.elapsed();
    let labels = HttpLabels {
        method: method.clone(),
        route,
        status,
    };
    state.metrics.http_requests.get_or_create(&labels).inc();
    state
        .metrics
        .http_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    if status >= 500 {
        tracing::warn!(%method, %path, status, ms = elapsed.as_millis() as u64, "request");
    } else {
        tracing::debug!(%method, %path, status, ms = elapsed.as_millis() as u64, "request");
    }
    resp
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<ApiState>) -> Response {
    let info = state.role.get();
    let ok = match info.role {
        Role::Primary => state.role.writable(),
        _ => info.primary.is_some(),
    } && status::ready(&state);
    if ok {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let pos = state.store.position();
    state.metrics.journal_seq.set(pos.seq as i64);
    state.metrics.journal_term.set(pos.term as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// This node's view of the cluster.
pub async fn status_of(state: &Node) -> Result<ClusterStatus, ApiError> {
    let info = state.role.get();
    let (cluster_id, oldest, quarantined) = state
        .store
        .call(|s| Ok((s.cluster_id()?, s.oldest_seq()?, s.quarantine_count()?)))
        .await?;
    let pos = state.store.position();
    Ok(ClusterStatus {
        cluster_id,
        node_id: state.node_id.to_string(),
        role: info.role,
        term: info.term.max(pos.term),
        seq: pos.seq,
        last_term: pos.term,
        // The truth for clients: the role and the write fence.
        read_only: state.may_write().is_err(),
        primary: info.primary.clone(),
        replication_mode: match state.config.replication_mode {
            ReplicationMode::Async => "async".into(),
            ReplicationMode::Sync => "sync".into(),
        },
        sync_replicas: state.config.sync_replicas,
        peers: status::peers(state).await,
        quarantined,
        oldest_seq: oldest,
        write_quorum: crate::replication::quorum::write_quorum(state),
        schema_revision: Revisions::OWN.revision,
        min_compatible_revision: Revisions::OWN.min_compatible,
        replication_refused: status::replication_refused(state),
        archive: state.backups.archive_status(),
        restore: state.backups.restore_status(),
    })
}

async fn cluster_status(State(state): State<ApiState>) -> Result<Json<ClusterStatus>, ApiError> {
    Ok(Json(status_of(&state).await?))
}
