//! The one client of the journal stream and of a peer's binaries: opening a stream,
//! decoding its frames, reading bodies that must keep making progress. Used by the
//! follower and by an election candidate catching up from another member.

use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use studio_crds::node_api::{
    self, ErrorBody, HEADER_CLUSTER_ID, HEADER_MIN_COMPATIBLE_REVISION, HEADER_SCHEMA_REVISION,
    HEADER_TERM, NodeRole, StreamParams, WirePosition,
};

use super::Replication;
use crate::storage::schema::Revisions;
use crate::storage::{JournalEntry, StoreError};

/// A stream (or download) silent for this long is treated as dead.
pub const STREAM_SILENCE: Duration = Duration::from_secs(5);

/// The replica's view of [`node_api::StreamFrame`], decoding entries directly.
#[derive(Debug, Deserialize)]
#[serde(tag = "frame", rename_all = "snake_case")]
pub enum Frame {
    Entry {
        entry: JournalEntry,
    },
    Diverged {
        common: WirePosition,
        #[serde(default)]
        terms: Vec<WirePosition>,
    },
    CloneRequired {
        oldest_seq: u64,
    },
    Heartbeat {
        primary: WirePosition,
        #[allow(dead_code)]
        time: i64,
    },
}

/// Why a stream session (or a download) ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("peer answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("bad frame: {0}")]
    Frame(#[from] serde_json::Error),
    #[error("{0}")]
    Refused(String),
    /// The peer's schema revision and this node's cannot replicate with each other
    /// (either side found out). Not retried quickly; the node is not ready meanwhile.
    #[error("{0}")]
    IncompatibleSchema(String),
    #[error("stream silent for {0:?}")]
    Silent(Duration),
    #[error("stream ended")]
    Ended,
}

/// An open stream: the serving node's term and cluster id, and the body.
pub struct OpenStream {
    pub remote_term: u64,
    pub cluster_id: Option<String>,
    pub response: reqwest::Response,
}

/// Opens the journal stream of `url` after this node's durable position.
/// `from_any`: read from a member that is not the primary (election catch-up).
pub async fn open(
    state: &Replication,
    url: &str,
    from_any: bool,
) -> Result<OpenStream, SessionError> {
    let pos = state.store.position();
    let role = if from_any {
        NodeRole::Replica
    } else {
        state.role.get().role
    };
    let params = StreamParams {
        node_id: state.node_id.to_string(),
        after_seq: pos.seq,
        after_term: pos.term,
        role: Some(role),
        address: Some(state.advertise_url.to_string()),
        from_any,
        schema_revision: Revisions::OWN.revision,
        min_compatible_revision: Revisions::OWN.min_compatible,
    };
    let req = state
        .stream_http
        .get(format!("{url}{}", node_api::REPLICATION_STREAM))
        .query(&params);
    let resp = tokio::time::timeout(STREAM_SILENCE, state.internal(req).send())
        .await
        .map_err(|_| SessionError::Silent(STREAM_SILENCE))??;
    if !resp.status().is_success() {
        return Err(error_status(resp).await);
    }
    check_schema(&resp, url, "stream")?;
    Ok(OpenStream {
        remote_term: header(&resp, HEADER_TERM)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        cluster_id: header(&resp, HEADER_CLUSTER_ID),
        response: resp,
    })
}

/// Splits newline-delimited frames out of the bytes received so far.
#[derive(Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
}

impl FrameBuffer {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Decodes every complete frame received so far, in order.
    pub fn frames(&mut self) -> Result<Vec<Frame>, SessionError> {
        let mut out = Vec::new();
        let mut consumed = 0;
        while let Some(i) = self.buf[consumed..].iter().position(|b| *b == b'\n') {
            let line = &self.buf[consumed..consumed + i];
            consumed += i + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.push(serde_json::from_slice::<Frame>(line)?);
        }
        self.buf.drain(..consumed);
        Ok(out)
    }
}

/// The schema revisions a stream or snapshot answer announces (none: a node from
/// before revisions, revision 1).
pub fn announced_revisions(resp: &reqwest::Response) -> Revisions {
    let get = |name| header(resp, name).and_then(|v| v.parse().ok()).unwrap_or(0);
    Revisions::announced(
        get(HEADER_SCHEMA_REVISION),
        get(HEADER_MIN_COMPATIBLE_REVISION),
    )
}

/// Refuses a stream or snapshot (`what`) from `url` whose schema revision this node
/// cannot replicate with.
pub fn check_schema(resp: &reqwest::Response, url: &str, what: &str) -> Result<(), SessionError> {
    let peer = announced_revisions(resp);
    if Revisions::OWN.compatible_with(peer) {
        return Ok(());
    }
    Err(SessionError::IncompatibleSchema(format!(
        "incompatible schema: the {what} of {url} has {peer}, this node has {}: they cannot replicate with each other",
        Revisions::OWN
    )))
}

/// Refuses a snapshot of `url` this node cannot replicate with, or whose data is at
/// a newer revision than this build's (a node never opens newer data: it would be a
/// downgrade), before anything is downloaded.
pub fn check_snapshot_schema(resp: &reqwest::Response, url: &str) -> Result<(), SessionError> {
    check_schema(resp, url, "snapshot")?;
    let data = announced_revisions(resp).revision;
    if data > Revisions::OWN.revision {
        return Err(SessionError::IncompatibleSchema(format!(
            "the snapshot of {url} holds data at schema revision {data}, newer than this node's {}: \
             a node never opens newer data (upgrade this node first)",
            Revisions::OWN
        )));
    }
    Ok(())
}

pub async fn error_status(resp: reqwest::Response) -> SessionError {
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    if let Ok(e) = serde_json::from_str::<ErrorBody>(&body)
        && e.error == "incompatible_schema"
    {
        return SessionError::IncompatibleSchema(format!("refused by the peer: {}", e.message));
    }
    SessionError::Status {
        status,
        body: body.chars().take(500).collect(),
    }
}

pub fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Fetches a binary from `url` and stores it durably (hash verified).
pub async fn fetch_blob(state: &Replication, url: &str, sha: &str) -> Result<u64, SessionError> {
    let req = state
        .stream_http
        .get(format!("{url}{}/{sha}", node_api::BLOB_PREFIX));
    let resp = tokio::time::timeout(STREAM_SILENCE, state.internal(req).send())
        .await
        .map_err(|_| SessionError::Silent(STREAM_SILENCE))??;
    if !resp.status().is_success() {
        return Err(error_status(resp).await);
    }
    let stream = Box::pin(chunks_with_timeout(resp));
    let (_, size) = state
        .store
        .put_blob_stream(stream, u64::MAX, Some(sha))
        .await?;
    Ok(size)
}

/// Fetches every binary `entries` need that this node lacks (before they apply: a
/// binary must be durable before the entry that registers it).
pub async fn fetch_missing_blobs(
    state: &Replication,
    url: &str,
    entries: &[JournalEntry],
) -> Result<(), SessionError> {
    for e in entries {
        if let Some(sha) = e.required_blob()
            && !state.store.has_blob(sha)
        {
            fetch_blob(state, url, sha).await?;
        }
    }
    Ok(())
}

/// A response body whose chunks fail when the sender stalls for [`STREAM_SILENCE`].
pub fn chunks_with_timeout(
    resp: reqwest::Response,
) -> impl futures::Stream<Item = Result<bytes::Bytes, String>> {
    futures::stream::unfold(Some(resp.bytes_stream()), |s| async move {
        let mut s = s?;
        match tokio::time::timeout(STREAM_SILENCE, s.next()).await {
            Ok(Some(Ok(b))) => Some((Ok(b), Some(s))),
            Ok(Some(Err(e))) => Some((Err(format!("reading from the peer: {e}")), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(format!("the peer sent nothing for {STREAM_SILENCE:?}")),
                None,
            )),
        }
    })
}
