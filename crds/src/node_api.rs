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

/// POST [`BaseBackupRequest`] → 202 [`BaseBackupStatus`]: take a base backup of this
/// node's content into the cluster's object store, in the background (one at a time;
/// the same `id` again answers the status of that backup instead of starting another).
pub const BACKUPS: &str = "/internal/v1/backups";
/// GET `/internal/v1/backups/{id}` → [`BaseBackupStatus`]: a backup this node is taking
/// or took, or (from any member) one whose manifest is in the object store; 404 if
/// neither. GET [`BACKUPS`] → [`BaseBackupList`]: every completed base backup in the
/// cluster's archive, oldest first.
pub const BACKUP_PREFIX: &str = "/internal/v1/backups";
/// POST [`PruneRequest`] → [`PruneAnswer`]: delete the named base backups and every
/// archived journal segment wholly older than the oldest base backup that remains.
pub const BACKUPS_PRUNE: &str = "/internal/v1/backups-prune";

/// Environment of a node with backups configured (the operator sets these from
/// `spec.backup`); the node's flags of the same meaning read them.
pub mod backup_env {
    /// Object store endpoint URL (`https://s3.example:9000`); unset: AWS S3.
    pub const ENDPOINT: &str = "STUDIO_BACKUP_ENDPOINT";
    pub const BUCKET: &str = "STUDIO_BACKUP_BUCKET";
    /// Prefix inside the bucket; the cluster's archive is `<path>/<cluster id>/`.
    pub const PATH: &str = "STUDIO_BACKUP_PATH";
    pub const REGION: &str = "STUDIO_BACKUP_REGION";
    pub const ACCESS_KEY_ID: &str = "STUDIO_BACKUP_ACCESS_KEY_ID";
    pub const SECRET_ACCESS_KEY: &str = "STUDIO_BACKUP_SECRET_ACCESS_KEY";
    /// PEM file of CA certificates trusted for the endpoint (besides the system's).
    pub const CA_FILE: &str = "STUDIO_BACKUP_CA_FILE";
    /// A journal segment is closed and uploaded at least this often (seconds).
    pub const ARCHIVE_TIMEOUT: &str = "STUDIO_ARCHIVE_TIMEOUT";
    /// Restore (only on a node with an empty data dir that bootstraps the cluster):
    /// the cluster id whose archive (under the same bucket and path) to restore from.
    pub const RESTORE_CLUSTER_ID: &str = "STUDIO_RESTORE_CLUSTER_ID";
    /// Restore from this base backup (default: the newest one before the target).
    pub const RESTORE_BACKUP_ID: &str = "STUDIO_RESTORE_BACKUP_ID";
    /// Restore up to and including this journal seq.
    pub const RESTORE_TARGET_SEQ: &str = "STUDIO_RESTORE_TARGET_SEQ";
    /// Restore every entry written at or before this time (RFC 3339; UTC if no zone).
    pub const RESTORE_TARGET_TIME: &str = "STUDIO_RESTORE_TARGET_TIME";
    /// Restore only the base backup, no archived journal after it.
    pub const RESTORE_TARGET_IMMEDIATE: &str = "STUDIO_RESTORE_TARGET_IMMEDIATE";
}

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
    /// Continuous archiving, on a node with backups configured (the primary archives;
    /// other members report `archiving: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveStatus>,
    /// A restore this node runs or ran at bootstrap (`spec.bootstrap.recovery`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
}

/// Continuous journal archiving as seen by one node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveStatus {
    /// This node is the one archiving (the primary).
    pub archiving: bool,
    /// Where this cluster's archive lives: `s3://bucket/path/<cluster id>`.
    pub destination: String,
    /// Highest journal seq in the archive (0: nothing yet).
    pub archived_seq: u64,
    /// Write time (ms since the epoch) of that entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_time_ms: Option<i64>,
    /// Entries in this node's journal not yet archived.
    pub lag_entries: u64,
    /// Age of the oldest entry not yet archived, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// Last successful upload (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<i64>,
    /// The last upload failed: why (cleared by the next success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Uploads have failed since then (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<i64>,
    /// The archive misses entries (compacted before they were archived): point-in-time
    /// recovery is possible only from a base backup taken after `gap_before_seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_before_seq: Option<u64>,
}

/// A restore at bootstrap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    pub phase: RestorePhase,
    #[serde(default)]
    pub message: String,
    /// The base backup restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The journal position the restored content ends at.
    #[serde(default)]
    pub restored_seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestorePhase {
    Running,
    Completed,
    /// Refused for good (the target is not covered by the archive, no base backup, ...):
    /// the node does not start serving; fix `spec.bootstrap.recovery` (new cluster).
    Failed,
}

/// Body of a POST to [`BACKUPS`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseBackupRequest {
    /// Names the backup in the archive (`base/<id>/`): letters, digits, `-`, `_`, `.`.
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupPhase {
    Running,
    Completed,
    Failed,
}

/// A base backup: where it stands, what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseBackupStatus {
    pub id: String,
    pub phase: BackupPhase,
    #[serde(default)]
    pub message: String,
    /// The cluster the content belongs to.
    pub cluster_id: String,
    /// The member that took it.
    pub node_id: String,
    /// ms since the epoch.
    pub started_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_ms: Option<i64>,
    /// The journal position the backup's content is at (known once the snapshot is
    /// taken).
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub term: u64,
    /// Write time (ms) of the entry at `seq` (0 for an empty journal).
    #[serde(default)]
    pub time_ms: i64,
    /// Bytes uploaded: the compressed database plus binaries not in the archive yet.
    #[serde(default)]
    pub size_bytes: u64,
    /// `s3://bucket/path/<cluster id>/base/<id>`.
    #[serde(default)]
    pub location: String,
}

/// Answer of GET [`BACKUPS`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseBackupList {
    pub backups: Vec<BaseBackupStatus>,
    /// The earliest point the archive can restore to (the oldest base backup's
    /// position), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverability_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverability_time_ms: Option<i64>,
}

/// Body of [`BACKUPS_PRUNE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneRequest {
    pub delete: Vec<String>,
}

/// Answer of [`BACKUPS_PRUNE`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneAnswer {
    pub deleted_backups: Vec<String>,
    pub deleted_segments: u64,
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
