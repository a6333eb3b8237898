//! Write forwarding on replicas: the middleware in front of every content route.
//!
//! - primary: serves everything locally.
//! - arbiter: answers no content request (503).
//! - replica, coordinator mode `CUD` (default): writes (any method but GET/HEAD/
//!   OPTIONS) are forwarded to the primary, reads are served locally; `ALL`: every
//!   request is forwarded; `DISABLED`: writes get 503 with the primary's address in
//!   the `X-Studio-Primary` header and the JSON body.
//! - `X-Studio-Direct: true` serves the request locally whatever the mode.
//! - A forwarded response carries `X-Studio-Forwarded-From: <this node id>`; the
//!   forwarded request carries it too, and a node never forwards a request that was
//!   already forwarded (no loops while roles change).
//!
//! Forwarding streams both bodies and keeps method, path, query and every end-to-end
//! header (authorization, If-Match, content-type, ...).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use studio_crds::node_api::{HEADER_DIRECT, HEADER_FORWARDED_FROM};

use super::ApiState;
use super::error::ApiError;
use crate::cluster::Role;
use crate::config::CoordinatorMode;

/// Longest a forwarded request may take, body transfer included (uploads of large
/// binaries go to the primary directly in practice; this bounds a hung primary).
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

fn is_read(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        if !hop_by_hop(k) {
            to.append(k.clone(), v.clone());
        }
    }
}

/// Middleware in front of every content route (see the module doc).
pub async fn forward_writes(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let info = state.role.get();
    match info.role {
        Role::Primary => return next.run(req).await,
        Role::Arbiter => {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "arbiter",
                "this node is an arbiter and serves no content",
            )
            .into_response();
        }
        Role::Replica => {}
    }
    let headers = req.headers();
    let direct = headers
        .get(HEADER_DIRECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let already_forwarded = headers.contains_key(HEADER_FORWARDED_FROM);
    if direct || already_forwarded {
        return next.run(req).await;
    }
    let read = is_read(req.method());
    let forward = match state.config.coordinator_mode {
        CoordinatorMode::Cud => !read,
        CoordinatorMode::All => true,
        CoordinatorMode::Disabled => {
            if !read {
                return ApiError::read_only(info.primary.as_deref()).into_response();
            }
            false
        }
    };
    if !forward {
        return next.run(req).await;
    }
    let Some(primary) = info.primary else {
        return ApiError::read_only(None).into_response();
    };
    match forward_to(&state, &primary, req).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(primary = %primary, error = %e, "forwarding to the primary failed");
            let mut err = ApiError::new(
                StatusCode::BAD_GATEWAY,
                "primary_unreachable",
                format!("forwarding to the primary {primary} failed: {e}"),
            );
            err.primary = Some(primary);
            err.into_response()
        }
    }
}

async fn forward_to(
    state: &ApiState,
    primary: &str,
    req: Request,
) -> Result<Response, reqwest::Error> {
    let (parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{primary}{pq}");
    let mut headers = HeaderMap::new();
    copy_headers(&parts.headers, &mut headers);
    if let Ok(v) = HeaderValue::from_str(&state.node_id) {
        headers.insert(HEADER_FORWARDED_FROM, v);
    }
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    // A total bound: a primary that accepted the connection and went silent must not
    // hold the client (and this task) forever.
    let mut out = state
        .stream_http
        .request(method, url)
        .timeout(FORWARD_TIMEOUT)
        .headers(headers);
    if !is_read(&parts.method) || parts.headers.contains_key(header::CONTENT_LENGTH) {
        out = out.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let resp = out.send().await?;
    let status = resp.status();
    let mut builder = Response::builder().status(status.as_u16());
    if let Some(h) = builder.headers_mut() {
        copy_headers(resp.headers(), h);
        if let Ok(v) = HeaderValue::from_str(&state.node_id) {
            h.insert(HEADER_FORWARDED_FROM, v);
        }
    }
    let body = Body::from_stream(resp.bytes_stream().map_err(std::io::Error::other));
    Ok(builder
        .body(body)
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response()))
}
