//! Backups: `spec.backup` and `spec.bootstrap.recovery` of a StudioCluster, and the

// kube-derive printcolumn(...) repeats `type_ = ...`; clippy reads that as a duplicate.
#![allow(clippy::duplicated_attributes)]
//! `StudioBackup` / `StudioScheduledBackup` resources.
//!
//! Archive layout (written by the nodes, see `node/src/backup`): everything of one
//! cluster lives under `s3://<bucket>/<path>/<cluster id>/`, so a restored cluster
//! (always a new cluster id) can never archive into its source's folder.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `spec.backup`: continuous archiving of the journal and base backups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    pub object_store: ObjectStoreSpec,
    /// A journal segment is closed and uploaded at least this often, in seconds (the
    /// most a failover in async mode can lose from the archive).
    #[serde(default = "default_archive_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub archive_timeout_seconds: i64,
    /// Which member takes base backups.
    #[serde(default)]
    pub target: BackupTarget,
    #[serde(default)]
    pub retention: RetentionSpec,
}

fn default_archive_timeout() -> i64 {
    5
}

/// An S3-compatible object store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreSpec {
    /// Endpoint URL, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://minio:9000`
    /// (unset: AWS S3 of `region`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://\S+$"))]
    pub endpoint: Option<String>,
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket: String,
    /// Prefix inside the bucket (default: none). Each cluster writes under
    /// `<path>/<cluster id>/`.
    #[serde(default)]
    #[schemars(
        length(max = 512),
        regex(pattern = r"^([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$")
    )]
    pub path: String,
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// Secret (same namespace) with the access key id and secret access key.
    pub credentials: CredentialsRef,
    /// Secret key with PEM CA certificates to trust for the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<SecretKeyRef>,
}

fn default_region() -> String {
    "us-east-1".to_string()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRef {
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    #[serde(default = "default_access_key_id_key")]
    pub access_key_id_key: String,
    #[serde(default = "default_secret_access_key_key")]
    pub secret_access_key_key: String,
}

fn default_access_key_id_key() -> String {
    "ACCESS_KEY_ID".to_string()
}

fn default_secret_access_key_key() -> String {
    "SECRET_ACCESS_KEY".to_string()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Which member takes a base backup.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BackupTarget {
    /// The most up-to-date connected replica or the arbiter; the primary only when no
    /// other member can.
    #[default]
    PreferStandby,
    Primary,
}

/// Which base backups to keep (the newer of the two limits wins; at least one base
/// backup is always kept). Journal segments older than the oldest kept base backup
/// are deleted with it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Delete base backups older than this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 36500))]
    pub max_age_days: Option<i64>,
    /// Keep at most this many base backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_count: Option<i64>,
}

/// `spec.bootstrap`: how a new cluster gets its first content.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoverySpec>,
}

/// Restore from a backup or an archive into this (new) cluster. The object store is
/// the one in `spec.backup.objectStore` (required).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "[has(self.backup), has(self.clusterId), has(self.cluster)].filter(x, x).size() == 1"
).message("spec.bootstrap.recovery needs exactly one of backup, cluster or clusterId"))]
#[x_kube(validation = Rule::new(
    "[has(self.targetSeq), has(self.targetTime), has(self.targetImmediate) && self.targetImmediate].filter(x, x).size() <= 1"
).message("spec.bootstrap.recovery: at most one of targetSeq, targetTime, targetImmediate (none: latest)"))]
pub struct RecoverySpec {
    /// A `StudioBackup` (same namespace) whose base backup to start from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub backup: Option<String>,
    /// A StudioCluster (same namespace) whose archive to restore (it must have a
    /// cluster id in its status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub cluster: Option<String>,
    /// The cluster id of the archive to restore (for a cluster that no longer exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9-]+$"))]
    pub cluster_id: Option<String>,
    /// Restore up to and including this journal seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub target_seq: Option<i64>,
    /// Restore every write made at or before this time (RFC 3339; UTC if no zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 10, max = 64))]
    pub target_time: Option<String>,
    /// Restore the base backup only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_immediate: Option<bool>,
}

/// A one-off base backup of a StudioCluster. The spec cannot change.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "studio.cms.io",
    version = "v1alpha1",
    kind = "StudioBackup",
    plural = "studiobackups",
    shortname = "sbk",
    namespaced,
    status = "StudioBackupStatus",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Seq", type_ = "integer", json_path = ".status.seq"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.sizeBytes"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("the spec of a StudioBackup cannot change; create another"))]
pub struct StudioBackupSpec {
    /// The StudioCluster (same namespace) to back up.
    #[schemars(length(min = 1, max = 253))]
    pub cluster: String,
    /// Overrides `spec.backup.target` of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupTarget>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StudioBackupStatus {
    /// `Pending`, `Running`, `Completed` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The id of the base backup in the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// The cluster id of the backed-up content (its archive folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The member that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Time>,
    /// Journal position of the backed-up content; the archive covers later seqs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// Base backups on a cron schedule.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "studio.cms.io",
    version = "v1alpha1",
    kind = "StudioScheduledBackup",
    plural = "studioscheduledbackups",
    shortname = "ssbk",
    namespaced,
    status = "StudioScheduledBackupStatus",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(name = "Last", type_ = "date", json_path = ".status.lastScheduleTime"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StudioScheduledBackupSpec {
    #[schemars(length(min = 1, max = 253))]
    pub cluster: String,
    /// Five-field cron expression in UTC (`minute hour day-of-month month day-of-week`),
    /// or six fields with seconds first.
    #[schemars(length(min = 9, max = 128))]
    pub schedule: String,
    #[serde(default)]
    pub suspend: bool,
    /// Also take one backup as soon as this resource is created.
    #[serde(default)]
    pub immediate: bool,
    /// A run missed by more than this many seconds (operator down, suspended) is
    /// skipped, and at most one missed run is ever caught up.
    #[serde(default = "default_starting_deadline")]
    #[schemars(range(min = 10, max = 86400))]
    pub starting_deadline_seconds: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BackupTarget>,
}

fn default_starting_deadline() -> i64 {
    300
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StudioScheduledBackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// Failed runs in a row (each failure doubles the wait before the next attempt, up
    /// to the schedule's own period).
    #[serde(default)]
    pub consecutive_failures: i32,
    /// The StudioBackup of the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// What the StudioCluster status says about backups.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// `s3://bucket/path/<cluster id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The earliest point a restore can reach (the oldest base backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverability_point: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_recoverability_seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_time: Option<Time>,
    /// Entries not archived yet, and the age of the oldest, on the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_lag_entries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_lag_seconds: Option<f64>,
}
