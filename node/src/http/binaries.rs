//! Content-addressed binaries: upload (streamed, size-limited, hashed) and download
//! (with HTTP ranges).

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::ApiState;
use super::auth::{Caller, Level};
use super::error::ApiError;
use crate::storage::{Op, is_sha256_hex};

pub(super) async fn upload_binary(
    State(state): State<ApiState>,
    caller: Caller,
    req: Request,
) -> Result<Response, ApiError> {
    caller.require(Level::Editor)?;
    state.may_write()?;
    let limit = state.config.max_binary_bytes;
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("binary larger than the limit of {limit} bytes"),
        ));
    }
    let stream = req.into_body().into_data_stream().boxed();
    let (sha, size) = state.store.put_blob_stream(stream, limit, None).await?;
    let s = sha.clone();
    let known = state.store.call(move |st| st.blob_registered(&s)).await?;
    let created = known.is_none();
    if created {
        state
            .commit(Op::RegisterBinary {
                sha256: sha.clone(),
                size,
            })
            .await?;
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"sha256": sha, "size": size, "ref": {"$binary": sha}})),
    )
        .into_response())
}

/// A parsed single `Range: bytes=...` request.
enum RangeReq {
    Full,
    Partial(u64, u64),
    Unsatisfiable,
}

fn parse_range(h: Option<&HeaderValue>, size: u64) -> RangeReq {
    let Some(s) = h.and_then(|v| v.to_str().ok()) else {
        return RangeReq::Full;
    };
    let Some(spec) = s.trim().strip_prefix("bytes=") else {
        return RangeReq::Full;
    };
    if spec.contains(',') {
        // Multiple ranges: answering the whole body is allowed.
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Unsatisfiable;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        match b.parse::<u64>() {
            Ok(0) | Err(_) => None,
            Ok(n) => Some((size.saturating_sub(n), size.saturating_sub(1))),
        }
    } else {
        match (a.parse::<u64>(), b.is_empty()) {
            (Ok(start), true) => Some((start, size.saturating_sub(1))),
            (Ok(start), false) => b
                .parse::<u64>()
                .ok()
                .map(|end| (start, end.min(size.saturating_sub(1)))),
            _ => None,
        }
    };
    match range {
        Some((start, end)) if size > 0 && start <= end && start < size => {
            RangeReq::Partial(start, end)
        }
        _ => RangeReq::Unsatisfiable,
    }
}

pub(super) async fn get_binary(
    State(state): State<ApiState>,
    caller: Caller,
    method: axum::http::Method,
    headers: HeaderMap,
    sha: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    caller.require(Level::Reader)?;
    let Path(sha) = sha.map_err(|e| ApiError::bad_request("invalid_binary_id", e.body_text()))?;
    if !is_sha256_hex(&sha) {
        return Err(ApiError::bad_request(
            "invalid_binary_id",
            "a binary id is 64 lowercase hex digits",
        ));
    }
    let s = sha.clone();
    if state
        .store
        .call(move |st| st.blob_registered(&s))
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!("no binary {sha}")));
    }
    let (mut file, size) = state.store.open_blob(&sha).await?;
    let range = parse_range(headers.get(header::RANGE), size);
    let (status, start, len) = match range {
        RangeReq::Full => (StatusCode::OK, 0, size),
        RangeReq::Partial(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        RangeReq::Unsatisfiable => {
            let mut resp = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                "invalid range",
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    let body = if method == axum::http::Method::HEAD {
        Body::empty()
    } else {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(crate::storage::StoreError::from)?;
        Body::from_stream(tokio_util::io::ReaderStream::new(file.take(len)))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&len.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{sha}\"")) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) =
            HeaderValue::from_str(&format!("bytes {}-{}/{}", start, start + len - 1, size))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(resp)
}
