//! `spec.backup` and `spec.bootstrap.recovery` in the pods: the object store settings
//! every studio-node container gets (credentials by Secret reference only, the CA as a
//! mounted Secret key), and the restore settings of the data nodes, resolved from the
//! recovery source (a cluster id, a StudioCluster's `status.clusterId`, or a completed
//! StudioBackup).
//!
//! Names: `studio_crds::node_api::backup_env`.

use k8s_openapi::api::core::v1::{
    Container, EnvVar, KeyToPath, SecretVolumeSource, Volume, VolumeMount,
};
use studio_crds::node_api::backup_env;
use studio_crds::{BackupSpec, RecoverySpec, StudioBackup, StudioCluster};

use super::container::{env, env_secret};

/// Where the object store's CA certificates are mounted (`spec.backup.objectStore.ca`).
pub const BACKUP_CA_DIR: &str = "/etc/studio/backup-ca";
/// File name of the CA certificates inside [`BACKUP_CA_DIR`].
pub const BACKUP_CA_FILE: &str = "ca.crt";
const BACKUP_CA_VOLUME: &str = "backup-ca";

/// Names of the restore settings (what [`pinned_restore_env`] carries over).
const RESTORE_NAMES: [&str; 5] = [
    backup_env::RESTORE_CLUSTER_ID,
    backup_env::RESTORE_BACKUP_ID,
    backup_env::RESTORE_TARGET_SEQ,
    backup_env::RESTORE_TARGET_TIME,
    backup_env::RESTORE_TARGET_IMMEDIATE,
];

/// Object store settings of every studio-node container (data nodes and arbiter).
/// The access keys come from the credentials Secret by reference: their values never
/// appear in the pod template.
pub fn backup_env(b: &BackupSpec) -> Vec<EnvVar> {
    let store = &b.object_store;
    let mut v = vec![];
    if let Some(e) = &store.endpoint {
        v.push(env(backup_env::ENDPOINT, e.clone()));
    }
    v.push(env(backup_env::BUCKET, store.bucket.clone()));
    if !store.path.is_empty() {
        v.push(env(backup_env::PATH, store.path.clone()));
    }
    v.push(env(backup_env::REGION, store.region.clone()));
    v.push(env(
        backup_env::ARCHIVE_TIMEOUT,
        b.archive_timeout_seconds.max(1).to_string(),
    ));
    let c = &store.credentials;
    v.push(env_secret(
        backup_env::ACCESS_KEY_ID,
        &c.secret_name,
        &c.access_key_id_key,
    ));
    v.push(env_secret(
        backup_env::SECRET_ACCESS_KEY,
        &c.secret_name,
        &c.secret_access_key_key,
    ));
    if store.ca.is_some() {
        v.push(env(
            backup_env::CA_FILE,
            format!("{BACKUP_CA_DIR}/{BACKUP_CA_FILE}"),
        ));
    }
    v
}

/// The volume of `spec.backup.objectStore.ca` (only its key, as [`BACKUP_CA_FILE`]).
pub fn backup_ca_volume(sc: &StudioCluster) -> Option<Volume> {
    let ca = sc.spec.backup.as_ref()?.object_store.ca.as_ref()?;
    Some(Volume {
        name: BACKUP_CA_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(ca.name.clone()),
            items: Some(vec![KeyToPath {
                key: ca.key.clone(),
                path: BACKUP_CA_FILE.into(),
                ..Default::default()
            }]),
            // Readable by the pod's fsGroup (the node runs as a non-root user).
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The mount of [`backup_ca_volume`].
pub fn backup_ca_mount(sc: &StudioCluster) -> Option<VolumeMount> {
    backup_ca_volume(sc).map(|_| VolumeMount {
        name: BACKUP_CA_VOLUME.into(),
        mount_path: BACKUP_CA_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    })
}

/// What a restore starts from, once the recovery source is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRecovery {
    /// The cluster id whose archive to restore.
    pub cluster_id: String,
    /// The base backup to start from (source `backup`).
    pub backup_id: Option<String>,
}

/// Why the restore settings cannot be built yet (no pods are created meanwhile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// Names the field and the object at fault.
    pub message: String,
    /// Waiting cannot help (a failed backup, the cluster naming itself): the cluster
    /// must be re-created with another `spec.bootstrap.recovery` (it is immutable).
    pub permanent: bool,
}

impl Unresolved {
    fn waiting(message: String) -> Self {
        Unresolved {
            message,
            permanent: false,
        }
    }
    fn permanent(message: String) -> Self {
        Unresolved {
            message,
            permanent: true,
        }
    }
}

/// Resolves `spec.bootstrap.recovery` of the cluster `own_name`. `source_cluster` and
/// `backup` are the objects named by `recovery.cluster` / `recovery.backup` as looked
/// up in the cluster's namespace (`None`: not found, or not asked for).
pub fn resolve_recovery(
    own_name: &str,
    r: &RecoverySpec,
    source_cluster: Option<&StudioCluster>,
    backup: Option<&StudioBackup>,
) -> Result<ResolvedRecovery, Unresolved> {
    if let Some(id) = r.cluster_id.as_deref().filter(|s| !s.is_empty()) {
        return Ok(ResolvedRecovery {
            cluster_id: id.to_string(),
            backup_id: None,
        });
    }
    if let Some(name) = r.cluster.as_deref().filter(|s| !s.is_empty()) {
        if name == own_name {
            return Err(Unresolved::permanent(format!(
                "spec.bootstrap.recovery.cluster names this cluster itself ({name}): name the StudioCluster whose archive to restore"
            )));
        }
        let Some(src) = source_cluster else {
            return Err(Unresolved::waiting(format!(
                "spec.bootstrap.recovery.cluster: StudioCluster {name} not found in this namespace (to restore the archive of a cluster that no longer exists, use spec.bootstrap.recovery.clusterId)"
            )));
        };
        return match src
            .status
            .as_ref()
            .and_then(|s| s.cluster_id.as_deref())
            .filter(|s| !s.is_empty())
        {
            Some(id) => Ok(ResolvedRecovery {
                cluster_id: id.to_string(),
                backup_id: None,
            }),
            None => Err(Unresolved::waiting(format!(
                "spec.bootstrap.recovery.cluster: StudioCluster {name} has no status.clusterId yet (it has not bootstrapped)"
            ))),
        };
    }
    if let Some(name) = r.backup.as_deref().filter(|s| !s.is_empty()) {
        let Some(b) = backup else {
            return Err(Unresolved::waiting(format!(
                "spec.bootstrap.recovery.backup: StudioBackup {name} not found in this namespace"
            )));
        };
        let status = b.status.clone().unwrap_or_default();
        let phase = status.phase.as_deref().unwrap_or("Pending");
        match phase {
            "Completed" => {}
            "Failed" => {
                return Err(Unresolved::permanent(format!(
                    "spec.bootstrap.recovery.backup: StudioBackup {name} failed{}; restore from another backup (spec.bootstrap cannot change: re-create the cluster)",
                    status
                        .message
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                )));
            }
            other => {
                return Err(Unresolved::waiting(format!(
                    "spec.bootstrap.recovery.backup: StudioBackup {name} is {other}, not Completed yet"
                )));
            }
        }
        let backup_id = status.backup_id.filter(|s| !s.is_empty());
        let cluster_id = status.cluster_id.filter(|s| !s.is_empty());
        return match (cluster_id, backup_id) {
            (Some(cluster_id), Some(backup_id)) => Ok(ResolvedRecovery {
                cluster_id,
                backup_id: Some(backup_id),
            }),
            _ => Err(Unresolved::permanent(format!(
                "spec.bootstrap.recovery.backup: StudioBackup {name} is Completed but its status lacks backupId or clusterId"
            ))),
        };
    }
    Err(Unresolved::permanent(
        "spec.bootstrap.recovery needs exactly one of backup, cluster or clusterId".into(),
    ))
}

/// The restore settings of the data nodes: the source and the recovery target (passed
/// through as given; the node parses and checks them).
pub fn restore_env(r: &RecoverySpec, resolved: &ResolvedRecovery) -> Vec<EnvVar> {
    let mut v = vec![env(
        backup_env::RESTORE_CLUSTER_ID,
        resolved.cluster_id.clone(),
    )];
    if let Some(id) = &resolved.backup_id {
        v.push(env(backup_env::RESTORE_BACKUP_ID, id.clone()));
    }
    if let Some(seq) = r.target_seq {
        v.push(env(backup_env::RESTORE_TARGET_SEQ, seq.to_string()));
    }
    if let Some(t) = &r.target_time {
        v.push(env(backup_env::RESTORE_TARGET_TIME, t.clone()));
    }
    if r.target_immediate == Some(true) {
        v.push(env(backup_env::RESTORE_TARGET_IMMEDIATE, "true"));
    }
    v
}

/// The restore settings an existing pod template (or pod) of the data nodes carries,
/// in order. Once the data StatefulSet exists the operator keeps these instead of
/// resolving the source again: the template stays the same (no rolling restart) even
/// when the source StudioCluster or StudioBackup is gone later; the nodes only read
/// them when they bootstrap a new cluster.
pub fn pinned_restore_env(c: &Container) -> Vec<EnvVar> {
    c.env
        .iter()
        .flatten()
        .filter(|e| RESTORE_NAMES.contains(&e.name.as_str()))
        .cloned()
        .collect()
}
