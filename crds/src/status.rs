//! The `StudioCluster` status: what the operator observed and decided, written by the
//! operator only.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state, written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StudioClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Human-readable summary of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `Ready`, `Progressing`, `Degraded`, `Reconciling`, `Stalled`, `WriteQuorum`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Pod holding the primary role (the `<name>-primary` Lease holder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary: Option<String>,
    /// Data nodes that are ready.
    #[serde(default)]
    pub ready_nodes: i32,
    /// One entry per member (data nodes and arbiter).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<FailoverRecord>,
    /// Id the first node generated at bootstrap; data of another cluster never joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Revision of the data StatefulSet the pods are being moved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// The switchover in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverRecord>,
    /// Members ready / members, e.g. `4/4` (data nodes and the arbiter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_ready: Option<String>,
    /// Whether a write can succeed now (see the `WriteQuorum` condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writable: Option<bool>,
    /// Journal entries the most lagging member is behind the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag: Option<i64>,
    /// The image the StatefulSets run: `spec.image` once the operator has checked that
    /// the data can be upgraded to it (see `upgrade`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The last image change and what the operator learned about it before rolling it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStatus>,
    /// Continuous archiving and base backups (with `spec.backup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::BackupStatus>,
}

/// An image change: the schema revision of the new image (from `studio-node --version
/// --json`, run by a short Job) and how the operator rolls it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    /// The image being upgraded to.
    pub target_image: String,
    /// Schema revision the new image writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_revision: Option<i64>,
    /// Oldest revision the new image still replicates with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_compatible_revision: Option<i64>,
    /// Schema revision of the data before the upgrade (the members' lowest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_revision: Option<i64>,
    /// How the image is rolled (absent while its revision is being learned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<UpgradeKind>,
    /// What the operator is doing or why it refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How an image change is rolled out.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum UpgradeKind {
    /// Same schema revision: one member at a time, the primary last (by switchover).
    Online,
    /// A newer revision the old members can still replicate with: the same rolling
    /// order (replicas first, primary last); members run mixed revisions meanwhile.
    Compatible,
    /// A revision the old members cannot replicate with: writes stop, every member
    /// restarts on the new image (each migrates its data), writes resume. Members
    /// never run mixed revisions.
    Offline,
    /// The image cannot open the data (its revision is older than the data's, or it
    /// did not report one): nothing is touched; the StatefulSets keep `status.image`.
    Refused,
}

impl UpgradeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "Online",
            Self::Compatible => "Compatible",
            Self::Offline => "Offline",
            Self::Refused => "Refused",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Objects created, waiting for the first primary.
    Creating,
    /// All members ready and up to date, one primary.
    Ready,
    /// Adding or removing nodes.
    Scaling,
    /// Rolling a new pod template out.
    Upgrading,
    /// Waiting for the user to switch the primary over (supervised upgrade).
    WaitingForUser,
    /// Serving with reduced redundancy, or without a primary.
    Degraded,
    /// The spec cannot be reconciled (see the message).
    Invalid,
    /// `spec.paused` is set.
    Paused,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "Creating",
            Self::Ready => "Ready",
            Self::Scaling => "Scaling",
            Self::Upgrading => "Upgrading",
            Self::WaitingForUser => "WaitingForUser",
            Self::Degraded => "Degraded",
            Self::Invalid => "Invalid",
            Self::Paused => "Paused",
        }
    }
}

/// One member of the cluster as the operator last saw it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Pod name.
    pub name: String,
    /// `primary`, `replica`, `arbiter`, or `unknown`.
    pub role: String,
    pub ready: bool,
    /// Election term of the member's last journal entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<i64>,
    /// Sequence number of the member's last journal entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// Entries behind the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
    /// Journal entries this member moved to its quarantine (it held them, the primary
    /// did not: e.g. async writes of a primary lost before they replicated). They are
    /// listed at `/internal/v1/admin/quarantine` on the member, never dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<i64>,
    /// The pod runs the StatefulSet's update revision.
    #[serde(default)]
    pub up_to_date: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// Sync mode: whether the primary counts this member among the replicas connected
    /// to its write quorum. Absent on the primary itself, in async mode, and when the
    /// primary does not report its quorum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum_connected: Option<bool>,
}

/// A switchover the operator asked a primary for and has not seen completed yet. Kept
/// in the status (not in the operator's memory) so that an operator leader that takes
/// over mid-switchover neither asks again nor records the change as a failover.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverRecord {
    pub from: String,
    pub to: String,
    /// `requested`, `scale-down` or `upgrade`.
    pub reason: String,
    pub started: Time,
}

/// The last change of primary the operator observed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRecord {
    pub time: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
    /// `failover` (unplanned) or `switchover` (planned).
    pub kind: String,
}
