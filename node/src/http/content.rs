//! Content API under `/api/v1`: items, children, versions, move, publish, binaries,
//! search, OpenAPI document.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::ApiState;
use super::auth::{Caller, Level};
use super::binaries;
use super::error::ApiError;
use crate::storage::path::{parse_path, parse_path_or_root};
use crate::storage::{Item, Op, Workspace};

/// Largest page of a children listing or search.
pub const MAX_PAGE: u64 = 1000;

pub fn router() -> Router<ApiState> {
    Router::new()
        .route(
            "/api/v1/content/{*path}",
            get(get_item).put(put_item).delete(delete_item),
        )
        .route("/api/v1/children", get(children_root))
        .route("/api/v1/children/{*path}", get(children))
        .route("/api/v1/versions/{*path}", get(versions))
        .route("/api/v1/restore/{*path}", post(restore))
        .route("/api/v1/move", post(move_item))
        .route("/api/v1/publish/{*path}", post(publish))
        .route("/api/v1/unpublish/{*path}", post(unpublish))
        .route("/api/v1/search", get(search))
        .route("/api/v1/openapi.json", get(openapi))
        .route(
            "/api/v1/binaries/{sha256}",
            get(binaries::get_binary).head(binaries::get_binary),
        )
        .route(
            "/api/v1/binaries",
            post(binaries::upload_binary).layer(DefaultBodyLimit::disable()),
        )
}

// ---- extraction helpers -------------------------------------------------------------

/// A JSON body: requires `Content-Type: application/json`, obeys the body limit,
/// and turns every failure into a JSON 4xx.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if mime != "application/json"
            && !(mime.starts_with("application/") && mime.ends_with("+json"))
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}")))
    }
}

fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "request body is too large",
        )
    } else {
        ApiError::bad_request(
            "bad_body",
            format!("cannot read the body: {}", e.body_text()),
        )
    }
}

fn content_path(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(raw) = p.map_err(|e| {
        ApiError::bad_request("invalid_path", format!("invalid path: {}", e.body_text()))
    })?;
    parse_path(&format!("/{raw}")).map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

fn workspace(ws: Option<&str>) -> Result<Workspace, ApiError> {
    match ws {
        None | Some("") => Ok(Workspace::Authoring),
        Some(s) => Workspace::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "unknown_workspace",
                format!("unknown workspace {s:?} (authoring or live)"),
            )
        }),
    }
}

/// `If-Match` → expected version; `If-None-Match: *` → must not exist (Some(0)).
fn expected_version(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    if let Some(v) = headers.get(header::IF_NONE_MATCH) {
        if v.as_bytes() == b"*" {
            return Ok(Some(0));
        }
        return Err(ApiError::bad_request(
            "invalid_precondition",
            "only 'If-None-Match: *' is supported",
        ));
    }
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| ApiError::bad_request("invalid_precondition", "If-Match is not valid text"))?
        .trim();
    if s == "*" {
        return Ok(None);
    }
    let s = s.strip_prefix("W/").unwrap_or(s);
    let s = s.trim_matches('"');
    s.parse::<u64>()
        .ok()
        .filter(|v| *v > 0)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_precondition",
                "If-Match must be an ETag returned by this API",
            )
        })
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn item_response(status: StatusCode, item: &Item) -> Response {
    let mut resp = (status, Json(item)).into_response();
    resp.headers_mut().insert(header::ETAG, etag(item.version));
    resp
}

// ---- items --------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    workspace: Option<String>,
    version: Option<u64>,
}

async fn get_item(
    State(state): State<ApiState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Level::Reader)?;
    let path = content_path(path)?;
    let q = query(q)?;
    let ws = workspace(q.workspace.as_deref())?;
    if let Some(v) = q.version {
        if ws != Workspace::Authoring {
            return Err(ApiError::bad_request(
                "invalid_query",
                "versions exist in the authoring workspace only",
            ));
        }
        let p = path.clone();
        let versions = state.store.call(move |s| s.versions(&p)).await?;
        let Some(ver) = versions.into_iter().find(|x| x.version == v) else {
            return Err(ApiError::not_found(format!("{path} has no version {v}")));
        };
        return Ok(Json(ver).into_response());
    }
    let p = path.clone();
    let item = state.store.call(move |s| s.get_item(ws, &p)).await?;
    match item {
        Some(item) => Ok(item_response(StatusCode::OK, &item)),
        None => Err(ApiError::not_found(format!(
            "no item at {path} in {}",
            ws.as_str()
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteQuery {
    workspace: Option<String>,
    #[serde(default)]
    recursive: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    #[serde(rename = "type")]
    item_type: String,
    #[serde(default = "empty_object")]
    properties: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn authoring_only(ws: Option<&str>) -> Result<(), ApiError> {
    match workspace(ws)? {
        Workspace::Authoring => Ok(()),
        Workspace::Live => Err(ApiError::bad_request(
            "read_only_workspace",
            "the live workspace changes only through publish/unpublish",
        )),
    }
}

async fn put_item(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<WriteQuery>, QueryRejection>,
    JsonBody(body): JsonBody<PutBody>,
) -> Result<Response, ApiError> {
    caller.require(Level::Editor)?;
    let path = content_path(path)?;
    let q = query(q)?;
    authoring_only(q.workspace.as_deref())?;
    let expected_version = expected_version(&headers)?;
    let op = Op::Put {
        path,
        item_type: body.item_type,
        properties: body.properties,
        expected_version,
        author: caller.sub,
    };
    let (_, applied) = state.commit(op).await?;
    let item = applied
        .item
        .ok_or_else(|| ApiError::internal("write returned no item"))?;
    let status = if item.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(item_response(status, &item))
}

async fn delete_item(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<WriteQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Level::Editor)?;
    let path = content_path(path)?;
    let q = query(q)?;
    let ws = workspace(q.workspace.as_deref())?;
    let op = match ws {
        Workspace::Authoring => Op::Delete {
            path,
            recursive: q.recursive,
            expected_version: expected_version(&headers)?,
            author: caller.sub,
        },
        Workspace::Live => Op::Unpublish {
            path,
            recursive: q.recursive,
            author: caller.sub,
        },
    };
    let (entry, applied) = state.commit(op).await?;
    Ok(Json(json!({"deleted": applied.count, "seq": entry.seq})).into_response())
}

// ---- children, versions ---------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    workspace: Option<String>,
    offset: Option<u64>,
    limit: Option<u64>,
}

async fn children_root(
    State(state): State<ApiState>,
    caller: Caller,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    list_children(state, caller, "/".to_string(), query(q)?).await
}

async fn children(
    State(state): State<ApiState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let path = content_path(path)?;
    list_children(state, caller, path, query(q)?).await
}

async fn list_children(
    state: ApiState,
    caller: Caller,
    parent: String,
    q: PageQuery,
) -> Result<Response, ApiError> {
    caller.require(Level::Reader)?;
    let ws = workspace(q.workspace.as_deref())?;
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1..={MAX_PAGE}"),
        ));
    }
    let p = parent.clone();
    let (items, total) = state
        .store
        .call(move |s| s.children(ws, &p, offset, limit))
        .await?;
    let next = (offset + (items.len() as u64) < total).then_some(offset + items.len() as u64);
    Ok(Json(json!({
        "parent": parent, "workspace": ws, "items": items, "total": total,
        "offset": offset, "limit": limit, "nextOffset": next,
    }))
    .into_response())
}

async fn versions(
    State(state): State<ApiState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    caller.require(Level::Reader)?;
    let path = content_path(path)?;
    let p = path.clone();
    let versions = state.store.call(move |s| s.versions(&p)).await?;
    Ok(Json(json!({"path": path, "versions": versions})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    version: u64,
}

async fn restore(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<RestoreBody>,
) -> Result<Response, ApiError> {
    caller.require(Level::Editor)?;
    let path = content_path(path)?;
    let op = Op::Restore {
        path,
        version: body.version,
        expected_version: expected_version(&headers)?,
        author: caller.sub,
    };
    let (_, applied) = state.commit(op).await?;
    let item = applied
        .item
        .ok_or_else(|| ApiError::internal("restore returned no item"))?;
    Ok(item_response(StatusCode::OK, &item))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    from: String,
    to: String,
}

async fn move_item(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<MoveBody>,
) -> Result<Response, ApiError> {
    caller.require(Level::Editor)?;
    let from = parse_path(&body.from)
        .map_err(|e| ApiError::bad_request("invalid_path", format!("from: {e}")))?;
    let to = parse_path(&body.to)
        .map_err(|e| ApiError::bad_request("invalid_path", format!("to: {e}")))?;
    let op = Op::Move {
        from,
        to,
        expected_version: expected_version(&headers)?,
        author: caller.sub,
    };
    let (_, applied) = state.commit(op).await?;
    let moved = applied.count;
    let item = applied
        .item
        .ok_or_else(|| ApiError::internal("move returned no item"))?;
    let mut resp = item_response(StatusCode::OK, &item);
    if let Ok(v) = HeaderValue::from_str(&moved.to_string()) {
        resp.headers_mut().insert("x-studio-moved", v);
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishQuery {
    #[serde(default)]
    recursive: bool,
}

async fn publish(
    State(state): State<ApiState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<PublishQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    change_live(state, caller, path, q, true).await
}

async fn unpublish(
    State(state): State<ApiState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<PublishQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    change_live(state, caller, path, q, false).await
}

/// Publish (authoring → live) or unpublish (remove from live) an item or subtree.
async fn change_live(
    state: ApiState,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<PublishQuery>, QueryRejection>,
    publish: bool,
) -> Result<Response, ApiError> {
    caller.require(Level::Editor)?;
    let path = content_path(path)?;
    let recursive = query(q)?.recursive;
    let author = caller.sub;
    let op = if publish {
        Op::Publish {
            path,
            recursive,
            author,
        }
    } else {
        Op::Unpublish {
            path,
            recursive,
            author,
        }
    };
    let (entry, applied) = state.commit(op).await?;
    let body = if publish {
        json!({"published": applied.count, "seq": entry.seq, "item": applied.item})
    } else {
        json!({"unpublished": applied.count, "seq": entry.seq})
    };
    Ok(Json(body).into_response())
}

// ---- search -----------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    q: String,
    path: Option<String>,
    #[serde(rename = "type")]
    item_type: Option<String>,
    workspace: Option<String>,
    limit: Option<u64>,
}

async fn search(
    State(state): State<ApiState>,
    caller: Caller,
    q: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Level::Reader)?;
    let q = query(q)?;
    let ws = workspace(q.workspace.as_deref())?;
    if q.q.trim().is_empty() || q.q.len() > 1000 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "q must have 1..=1000 characters",
        ));
    }
    let prefix = match q.path.as_deref() {
        None => None,
        Some(p) => Some(
            parse_path_or_root(p)
                .map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))?,
        ),
    };
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1..={MAX_PAGE}"),
        ));
    }
    let text = q.q.clone();
    let ty = q.item_type.clone();
    let hits = state
        .store
        .call(move |s| s.search(ws, &text, prefix.as_deref(), ty.as_deref(), limit))
        .await?;
    Ok(Json(json!({"query": q.q, "workspace": ws, "hits": hits})).into_response())
}

// ---- OpenAPI ----------------------------------------------------------------------------

async fn openapi() -> Response {
    let mut resp = Json(super::openapi::document()).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    resp
}
