//! The node's admin/internal HTTP contract, shared by the operator and the nodes.
//! Serde types and route paths only (no HTTP framework here).
//!
//! Authentication: every route under [`INTERNAL_PREFIX`] requires a client certificate
//! from the cluster CA (members and the operator; clusters with TLS) or, without TLS,
//! `Authorization: Bearer <cluster token>`. Content routes use a user JWT.
//! [`CLUSTER_STATUS`] takes either: a member/operator credential or a user JWT with at
//! least the reader role. [`HEALTHZ`], [`READYZ`] and [`METRICS`] need none.
//! A user JWT may come in [`ALT_AUTHORIZATION`] instead of `Authorization` (for clients
//! behind a proxy that uses `Authorization` itself, such as the API server's pod proxy).

use serde::{Deserialize, Serialize};

/// Header carrying `Bearer <token>` when `Authorization` belongs to a proxy in between.
pub const ALT_AUTHORIZATION: &str = "x-studio-authorization";

/// Prefix of every internal (node-to-node and operator-to-node) route.
pub const INTERNAL_PREFIX: &str = "/internal/v1";

/// GET: [`ClusterStatus`] of the answering node.
pub const CLUSTER_STATUS: &str = "/api/v1/cluster/status";
/// GET: 200 while the process is alive.
pub const HEALTHZ: &str = "/healthz";
/// GET: 200 when the node can serve its role, 503 otherwise.
pub const READYZ: &str = "/readyz";
/// GET: Prometheus text exposition.
pub const METRICS: &str = "/metrics";

/// POST [`PromoteRequest`] → [`AdminResponse`]: replica → primary at a new term.
pub const ADMIN_PROMOTE: &str = "/internal/v1/admin/promote";
/// POST [`DemoteRequest`] → [`AdminResponse`]: primary → read-only replica at once.
pub const ADMIN_DEMOTE: &str = "/internal/v1/admin/demote";
/// POST [`FollowRequest`] → [`AdminResponse`]: follow a (new) primary.
pub const ADMIN_FOLLOW: &str = "/internal/v1/admin/follow";
/// POST [`SwitchoverRequest`] → [`AdminResponse`]: planned hand-over to a target.
pub const ADMIN_SWITCHOVER: &str = "/internal/v1/admin/switchover";
/// POST [`SwitchoverRequest`] → [`AdminResponse`]: the same switchover as
/// [`ADMIN_SWITCHOVER`] (one implementation; in Kubernetes mode both hand over the
/// election Lease). Kept because operators before 0.2 call this path.
pub const ELECTION_SWITCHOVER: &str = "/internal/v1/election/switchover";
/// POST [`PositionRequest`] → [`PositionAnswer`]: an election candidate asks a member
/// for its durable position; the member promises to apply and acknowledge no entry of
/// a term below `term` from then on.
pub const ELECTION_POSITION: &str = "/internal/v1/election/position";
/// GET → [`QuarantineList`].
pub const ADMIN_QUARANTINE: &str = "/internal/v1/admin/quarantine";
/// GET → [`DigestResponse`]: content digest for convergence checks.
pub const ADMIN_DIGEST: &str = "/internal/v1/admin/digest";

/// GET with [`StreamParams`] as query: long-lived stream of newline-delimited JSON
/// [`StreamFrame`]s.
pub const REPLICATION_STREAM: &str = "/internal/v1/replication/stream";
/// POST [`AckRequest`]: a replica reports what it now holds durably (sent after every
/// applied batch and on heartbeats; this is how sync writes learn their quorum). The
/// stream request itself also carries the position ([`StreamParams`]).
pub const REPLICATION_ACK: &str = "/internal/v1/replication/ack";
/// GET: a consistent snapshot of the database (body: SQLite file); headers
/// [`HEADER_SNAPSHOT_SEQ`] and [`HEADER_SNAPSHOT_TERM`] give its position.
pub const SNAPSHOT: &str = "/internal/v1/snapshot";
/// GET `/internal/v1/blobs/{sha256}`: a binary's bytes.
pub const BLOB_PREFIX: &str = "/internal/v1/blobs";

/// Serve the request locally on a replica, without forwarding.
pub const HEADER_DIRECT: &str = "x-studio-direct";
/// On a forwarded response: the node that forwarded it.
pub const HEADER_FORWARDED_FROM: &str = "x-studio-forwarded-from";
/// On a 503 from a replica in coordinator mode DISABLED: the primary's address.
pub const HEADER_PRIMARY: &str = "x-studio-primary";
/// On a stream or snapshot response: the cluster id of the serving node's data.
pub const HEADER_CLUSTER_ID: &str = "x-studio-cluster-id";
/// On a stream response: the serving node's current term.
pub const HEADER_TERM: &str = "x-studio-term";
/// On a stream or snapshot response: the serving node's schema revision (absent from
/// nodes before revisions: revision 1). A snapshot carries the revision of its data.
pub const HEADER_SCHEMA_REVISION: &str = "x-studio-schema-revision";
/// On a stream or snapshot response: the oldest schema revision the serving node
/// replicates with (absent: the same as [`HEADER_SCHEMA_REVISION`]).
pub const HEADER_MIN_COMPATIBLE_REVISION: &str = "x-studio-min-compatible-revision";
/// Journal position of a snapshot.
pub const HEADER_SNAPSHOT_SEQ: &str = "x-studio-snapshot-seq";
pub const HEADER_SNAPSHOT_TERM: &str = "x-studio-snapshot-term";

/// A journal position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WirePosition {
    pub seq: u64,
    pub term: u64,
}

/// Role of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Primary,
    Replica,
    Arbiter,
}

/// The answer of [`CLUSTER_STATUS`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub cluster_id: Option<String>,
    pub node_id: String,
    pub role: NodeRole,
    pub term: u64,
    pub seq: u64,
    /// Term of the last journal entry (may be below `term` right after a promote).
    #[serde(default)]
    pub last_term: u64,
    /// Writes refused locally (demoted, fenced, or a replica).
    #[serde(default)]
    pub read_only: bool,
    /// Address of the primary this node follows (replicas) or its own (primary).
    #[serde(default)]
    pub primary: Option<String>,
    #[serde(default)]
    pub replication_mode: String,
    #[serde(default)]
    pub sync_replicas: u32,
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
    #[serde(default)]
    pub quarantined: u64,
    #[serde(default)]
    pub oldest_seq: u64,
    /// On a primary in sync mode: whether it can meet its write quorum now. None on
    /// replicas, in async mode, and from nodes before 0.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_quorum: Option<WriteQuorumStatus>,
    /// The schema revision of this node's build and data (0 from nodes before
    /// revisions, which are at revision 1).
    #[serde(default)]
    pub schema_revision: u32,
    /// The oldest schema revision this node replicates with (0 from nodes before
    /// revisions).
    #[serde(default)]
    pub min_compatible_revision: u32,
    /// Why this node refuses to replicate from its primary (an incompatible schema
    /// revision); it is not ready while this is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_refused: Option<String>,
}

/// Whether a sync-mode primary can acknowledge writes (see [`ClusterStatus`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteQuorumStatus {
    /// K: replicas (arbiter included) that must hold a write before it is acknowledged.
    pub needed: u32,
    /// Node ids of the replicas connected now (streaming and heard from recently).
    pub connected: Vec<String>,
    /// `connected.len() >= needed`.
    pub available: bool,
    /// Milliseconds since the quorum was last available (0 while available).
    #[serde(default)]
    pub unavailable_for_ms: u64,
}

/// A peer as seen by this node (on a primary: each connected replica).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    pub node_id: String,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub role: Option<NodeRole>,
    pub seq: u64,
    pub term: u64,
    pub lag_entries: u64,
    pub lag_seconds: f64,
    pub connected: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromoteRequest {
    /// The new term; must exceed every term this node has seen.
    pub term: u64,
    /// Promote even when the safety checks cannot prove no acknowledged write is lost.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DemoteRequest {
    /// The primary to follow after demoting, if known.
    #[serde(default)]
    pub follow: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowRequest {
    /// Base URL of the primary, e.g. `http://10.0.0.5:8080`.
    pub primary: String,
    #[serde(default)]
    pub term: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchoverRequest {
    /// Node id or base URL of the replica to hand over to.
    pub target: String,
    /// How long to wait for the target to catch up, in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Answer of the admin POST routes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminResponse {
    pub ok: bool,
    pub role: NodeRole,
    pub term: u64,
    pub seq: u64,
    #[serde(default)]
    pub message: String,
}

/// One quarantined journal entry; `entry` is the node's journal entry JSON
/// (`{seq, term, time, op}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantinedEntry {
    pub id: u64,
    pub reason: String,
    pub quarantined_at: i64,
    pub entry: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineList {
    pub entries: Vec<QuarantinedEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestResponse {
    pub digest: String,
    pub seq: u64,
    pub term: u64,
}

/// Query parameters of [`REPLICATION_STREAM`]: where the replica's journal ends and
/// what it holds durably (acknowledgements ride on the stream's requests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamParams {
    pub node_id: String,
    pub after_seq: u64,
    pub after_term: u64,
    #[serde(default)]
    pub role: Option<NodeRole>,
    /// The replica's own base URL (for status and switchover).
    #[serde(default)]
    pub address: Option<String>,
    /// Also serve the stream when the answering node is not the primary (catching
    /// up from the most advanced member during an election).
    #[serde(default)]
    pub from_any: bool,
    /// The replica's schema revision (0: a node before revisions, revision 1). The
    /// primary answers 409 `incompatible_schema` when the two cannot replicate.
    #[serde(default)]
    pub schema_revision: u32,
    /// The oldest schema revision the replica replicates with (0: the same as
    /// `schema_revision`).
    #[serde(default)]
    pub min_compatible_revision: u32,
}

/// Body of [`REPLICATION_ACK`]: the replica's durable position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckRequest {
    pub node_id: String,
    pub seq: u64,
    pub term: u64,
    #[serde(default)]
    pub role: Option<NodeRole>,
    #[serde(default)]
    pub address: Option<String>,
}

/// One line of the replication stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "frame", rename_all = "snake_case")]
pub enum StreamFrame {
    /// A journal entry (`{seq, term, time, op}`).
    Entry { entry: serde_json::Value },
    /// The requested position is not in the primary's history; the replica must
    /// quarantine its entries after `common` and continue from there.
    Diverged {
        common: WirePosition,
        /// The primary's term history (`seq` = first seq of `term`), so the replica
        /// can refine `common` against its own history.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        terms: Vec<WirePosition>,
    },
    /// The requested position is older than the retention window: clone.
    CloneRequired { oldest_seq: u64 },
    /// Keep-alive with the primary's position.
    Heartbeat { primary: WirePosition, time: i64 },
}

/// A JSON error body, as every node endpoint answers on failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

/// Body of [`ELECTION_POSITION`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionRequest {
    pub term: u64,
    /// The campaign the promise belongs to (from 0.2). Without it (older candidates)
    /// the promise is permanent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<Campaign>,
}

/// Which Lease a candidate tries to replace: the promise made to it lapses as soon as
/// the member observes the Lease at a newer version without the candidate's term
/// (the campaign failed), so a candidate that never won cannot wedge the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Campaign {
    /// resourceVersion of the Lease the candidate will replace; None: it saw no Lease
    /// and will create one.
    pub lease_version: Option<String>,
}

/// Answer of [`ELECTION_POSITION`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionAnswer {
    pub node_id: String,
    pub seq: u64,
    /// Term of the last journal entry.
    pub term: u64,
    pub cluster_id: Option<String>,
    pub role: NodeRole,
}
