//! The objects the backup commands and the schedule create (pure): StudioBackups, and
//! the StudioCluster of a restore.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use studio_crds::{
    BackupTarget, BootstrapSpec, RecoverySpec, StudioBackup, StudioBackupSpec, StudioCluster,
    StudioClusterSpec, labels,
};

/// Label on a StudioBackup: the StudioScheduledBackup that created it.
pub const SCHEDULE_LABEL: &str = "studio.cms.io/scheduled-backup";
/// Annotation on a StudioBackup a schedule created: the time it was created for.
pub const SCHEDULED_AT: &str = "studio.cms.io/scheduled-at";

/// `<prefix>-<yyyymmddhhmmss>` (UTC), the prefix cut so that the name stays a valid
/// object name.
pub fn stamped_name(prefix: &str, at: DateTime<Utc>) -> String {
    let stamp = at.format("%Y%m%d%H%M%S").to_string();
    let max = 253 - stamp.len() - 1;
    let mut p = prefix.to_string();
    if p.len() > max {
        p.truncate(max);
    }
    let p = p.trim_end_matches(['-', '.']);
    format!("{p}-{stamp}")
}

/// The longest id a node accepts (`1-128 letters, digits, '-', '_' or '.'`).
pub const MAX_BACKUP_ID: usize = 128;

/// The base backup's id in the archive: stable for the StudioBackup (its name and the
/// first 8 characters of its uid, so a re-created StudioBackup of the same name gets
/// another id); a name too long for an id is cut (the uid part keeps it unique).
pub fn backup_id(name: &str, uid: &str) -> String {
    let short: String = uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    let mut name = name.to_string();
    name.truncate(MAX_BACKUP_ID - short.len() - 1);
    format!("{name}-{short}")
}

/// A StudioBackup of `cluster`. `owner`: the schedule that creates it, with the time it
/// is created for.
pub fn studio_backup(
    namespace: &str,
    name: &str,
    cluster: &str,
    target: Option<BackupTarget>,
    owner: Option<(OwnerReference, DateTime<Utc>)>,
) -> StudioBackup {
    let mut lbls = BTreeMap::from([
        (labels::CLUSTER.to_string(), cluster.to_string()),
        (
            labels::APP_NAME.to_string(),
            labels::APP_NAME_VALUE.to_string(),
        ),
    ]);
    let mut annotations = BTreeMap::new();
    let mut owners = None;
    if let Some((o, at)) = owner {
        lbls.insert(SCHEDULE_LABEL.to_string(), o.name.clone());
        lbls.insert(
            labels::APP_MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        );
        annotations.insert(SCHEDULED_AT.to_string(), at.to_rfc3339());
        owners = Some(vec![o]);
    }
    StudioBackup {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(lbls),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: owners,
            ..Default::default()
        },
        spec: StudioBackupSpec {
            cluster: cluster.to_string(),
            target,
        },
        status: None,
    }
}

/// What a restore starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreFrom {
    /// The archive of a StudioCluster (its newest suitable base backup + journal).
    Cluster(String),
    /// A StudioBackup's base backup (+ journal after it).
    Backup(String),
}

/// How far a restore replays the archived journal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RestorePoint {
    #[default]
    Latest,
    Seq(i64),
    /// RFC 3339 (UTC if no zone), as the user wrote it.
    Time(String),
}

/// `--from`: `cluster/<name>`, `backup/<name>`, or a bare name (`None`: look it up).
pub fn parse_from(s: &str) -> Result<(Option<RestoreFrom>, String), String> {
    let s = s.trim();
    let (kind, name) = match s.split_once('/') {
        Some((k, n)) => (Some(k), n),
        None => (None, s),
    };
    if name.is_empty() || name.contains('/') {
        return Err(format!(
            "--from {s:?}: give a StudioCluster or StudioBackup name (or cluster/NAME, backup/NAME)"
        ));
    }
    match kind {
        None => Ok((None, name.to_string())),
        Some("cluster" | "studiocluster" | "stc") => {
            Ok((Some(RestoreFrom::Cluster(name.into())), name.into()))
        }
        Some("backup" | "studiobackup" | "sbk") => {
            Ok((Some(RestoreFrom::Backup(name.into())), name.into()))
        }
        Some(k) => Err(format!("--from {s:?}: {k:?} is neither cluster nor backup")),
    }
}

/// A bare `--from` name: a StudioBackup or a StudioCluster of that name, refused when
/// both or neither exist.
pub fn resolve_from(
    name: &str,
    backup_exists: bool,
    cluster_exists: bool,
) -> Result<RestoreFrom, String> {
    match (backup_exists, cluster_exists) {
        (true, false) => Ok(RestoreFrom::Backup(name.into())),
        (false, true) => Ok(RestoreFrom::Cluster(name.into())),
        (true, true) => Err(format!(
            "both a StudioBackup and a StudioCluster are named {name}: use --from backup/{name} or --from cluster/{name}"
        )),
        (false, false) => Err(format!(
            "no StudioBackup or StudioCluster named {name} in this namespace"
        )),
    }
}

/// The one-line result `kubectl studio backup --wait` prints (None while it runs).
pub fn backup_result(b: &StudioBackup) -> Option<Result<String, String>> {
    let st = b.status.clone().unwrap_or_default();
    let name = b.metadata.name.clone().unwrap_or_default();
    let msg = st.message.clone().unwrap_or_default();
    match st.phase.as_deref() {
        Some(super::decide::COMPLETED) => Ok(format!(
            "{name}: Completed on {} (base backup {}, seq {}, {} bytes) at {}",
            st.node.as_deref().unwrap_or("?"),
            st.backup_id.as_deref().unwrap_or("?"),
            st.seq.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
            st.size_bytes
                .map(|s| s.to_string())
                .unwrap_or_else(|| "?".into()),
            st.location.as_deref().unwrap_or("?"),
        ))
        .into(),
        Some(super::decide::FAILED) => Some(Err(format!("{name}: Failed: {msg}"))),
        _ => None,
    }
}

/// Checks a `--to-time` value: RFC 3339, or a date-time without zone (UTC).
pub fn check_time(s: &str) -> Result<(), String> {
    if DateTime::parse_from_rfc3339(s).is_ok()
        || NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
    {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not an RFC 3339 time (e.g. 2026-11-30T18:00:00Z)"
        ))
    }
}

/// A new StudioCluster `name` restored from `from`, copying the source cluster's image,
/// nodes, arbiter, storage, replication, coordinator mode, TLS and backup settings (the
/// archive is read from `spec.backup.objectStore`; the new cluster archives under its
/// own cluster id). Credentials are not copied: the new cluster gets its own.
pub fn restore_cluster(
    name: &str,
    source: &StudioCluster,
    from: &RestoreFrom,
    point: &RestorePoint,
) -> Result<StudioCluster, String> {
    let src_name = source.metadata.name.clone().unwrap_or_default();
    let Some(backup) = source.spec.backup.clone() else {
        return Err(format!(
            "StudioCluster {src_name} has no spec.backup: it has no archive to restore from"
        ));
    };
    if name == src_name {
        return Err(format!(
            "the new cluster must have another name than {src_name}"
        ));
    }
    if let RestoreFrom::Cluster(_) = from
        && source
            .status
            .as_ref()
            .and_then(|s| s.cluster_id.as_ref())
            .is_none()
    {
        return Err(format!(
            "StudioCluster {src_name} has no cluster id in its status yet: nothing archived"
        ));
    }
    if let RestorePoint::Time(t) = point {
        check_time(t)?;
    }
    if let RestorePoint::Seq(s) = point
        && *s < 0
    {
        return Err(format!("--to-seq {s}: a journal seq is 0 or more"));
    }
    let mut recovery = RecoverySpec::default();
    match from {
        RestoreFrom::Cluster(c) => recovery.cluster = Some(c.clone()),
        RestoreFrom::Backup(b) => recovery.backup = Some(b.clone()),
    }
    match point {
        RestorePoint::Latest => {}
        RestorePoint::Seq(s) => recovery.target_seq = Some(*s),
        RestorePoint::Time(t) => recovery.target_time = Some(t.clone()),
    }
    let s = &source.spec;
    let mut spec: StudioClusterSpec = serde_json::from_value(serde_json::json!({
        "image": s.image,
    }))
    .map_err(|e| e.to_string())?;
    spec.nodes = s.nodes;
    spec.arbiter = s.arbiter.clone();
    spec.image_pull_policy = s.image_pull_policy;
    spec.resources = s.resources.clone();
    spec.storage = s.storage.clone();
    spec.replication = s.replication.clone();
    spec.coordinator_mode = s.coordinator_mode;
    spec.tls = s.tls.clone();
    spec.backup = Some(backup);
    spec.bootstrap = Some(BootstrapSpec {
        recovery: Some(recovery),
    });
    Ok(StudioCluster {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: source.metadata.namespace.clone(),
            ..Default::default()
        },
        spec,
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> StudioCluster {
        serde_yaml::from_str(
            r#"
apiVersion: studio.cms.io/v1alpha1
kind: StudioCluster
metadata: {name: content, namespace: cms, uid: 1234, resourceVersion: "9"}
spec:
  nodes: 3
  image: studio-node:2
  arbiter: {enabled: true}
  replication: {mode: sync, syncReplicas: 2}
  tls: {enabled: true}
  auth: {existingSecret: content-creds}
  storage: {size: 5Gi}
  backup:
    objectStore: {bucket: backups, path: studio, credentials: {secretName: s3}}
    retention: {maxCount: 7}
status: {clusterId: c-1}
"#,
        )
        .unwrap_or_else(|e| panic!("fixture: {e}"))
    }

    #[test]
    fn names_are_stamped_and_ids_stable() {
        let at: DateTime<Utc> = "2026-11-30T18:05:09Z".parse().unwrap_or_default();
        assert_eq!(stamped_name("nightly", at), "nightly-20261130180509");
        assert_eq!(stamped_name(&"x".repeat(300), at).len(), 253);
        assert_eq!(
            backup_id(
                "nightly-20261130180509",
                "6f1c2a9e-1111-2222-3333-444455556666"
            ),
            "nightly-20261130180509-6f1c2a9e"
        );
        let long = backup_id(&"n".repeat(253), "6f1c2a9e-1111");
        assert_eq!(long.len(), MAX_BACKUP_ID);
        assert!(long.ends_with("n-6f1c2a9e"), "{long}");
    }

    #[test]
    fn a_scheduled_backup_is_owned_labelled_and_stamped() {
        let at: DateTime<Utc> = "2026-11-30T02:00:00Z".parse().unwrap_or_default();
        let owner = OwnerReference {
            api_version: "studio.cms.io/v1alpha1".into(),
            kind: "StudioScheduledBackup".into(),
            name: "nightly".into(),
            uid: "u-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let b = studio_backup(
            "cms",
            "nightly-20261130020000",
            "content",
            Some(BackupTarget::Primary),
            Some((owner, at)),
        );
        let v = serde_json::to_value(&b).unwrap_or_default();
        assert_eq!(v["apiVersion"], "studio.cms.io/v1alpha1");
        assert_eq!(v["kind"], "StudioBackup");
        assert_eq!(
            v["spec"],
            serde_json::json!({"cluster": "content", "target": "primary"})
        );
        assert_eq!(v["metadata"]["ownerReferences"][0]["name"], "nightly");
        assert_eq!(v["metadata"]["labels"][SCHEDULE_LABEL], "nightly");
        assert_eq!(
            v["metadata"]["annotations"][SCHEDULED_AT],
            "2026-11-30T02:00:00+00:00"
        );
        let plain = serde_json::to_value(studio_backup("cms", "b", "content", None, None))
            .unwrap_or_default();
        assert_eq!(plain["spec"], serde_json::json!({"cluster": "content"}));
        assert!(plain["metadata"].get("ownerReferences").is_none());
    }

    #[test]
    fn restore_copies_the_spec_and_sets_the_recovery() {
        let sc = restore_cluster(
            "content-restored",
            &source(),
            &RestoreFrom::Cluster("content".into()),
            &RestorePoint::Seq(1200),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let v = serde_json::to_value(&sc).unwrap_or_default();
        assert_eq!(
            v["metadata"],
            serde_json::json!({"name": "content-restored", "namespace": "cms"})
        );
        assert_eq!(v["spec"]["image"], "studio-node:2");
        assert_eq!(v["spec"]["nodes"], 3);
        assert_eq!(v["spec"]["arbiter"]["enabled"], true);
        assert_eq!(v["spec"]["replication"]["mode"], "sync");
        assert_eq!(v["spec"]["replication"]["syncReplicas"], 2);
        assert_eq!(v["spec"]["tls"]["enabled"], true);
        assert_eq!(v["spec"]["storage"]["size"], "5Gi");
        assert_eq!(v["spec"]["backup"]["objectStore"]["bucket"], "backups");
        assert!(
            v["spec"].get("auth").is_none(),
            "credentials are not shared"
        );
        assert!(v.get("status").is_none());
        assert_eq!(
            v["spec"]["bootstrap"],
            serde_json::json!({"recovery": {"cluster": "content", "targetSeq": 1200}})
        );
        let sc = restore_cluster(
            "r2",
            &source(),
            &RestoreFrom::Backup("nightly-20261130020000".into()),
            &RestorePoint::Time("2026-11-30T03:00:00Z".into()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let v = serde_json::to_value(&sc).unwrap_or_default();
        assert_eq!(
            v["spec"]["bootstrap"],
            serde_json::json!({"recovery": {"backup": "nightly-20261130020000", "targetTime": "2026-11-30T03:00:00Z"}})
        );
    }

    #[test]
    fn restore_refuses_what_cannot_work() {
        let from = RestoreFrom::Cluster("content".into());
        let mut no_backup = source();
        no_backup.spec.backup = None;
        assert!(
            restore_cluster("r", &no_backup, &from, &RestorePoint::Latest)
                .is_err_and(|e| e.contains("no spec.backup"))
        );
        let mut no_id = source();
        no_id.status = None;
        assert!(
            restore_cluster("r", &no_id, &from, &RestorePoint::Latest)
                .is_err_and(|e| e.contains("cluster id"))
        );
        assert!(restore_cluster("content", &source(), &from, &RestorePoint::Latest).is_err());
        assert!(
            restore_cluster(
                "r",
                &source(),
                &from,
                &RestorePoint::Time("yesterday".into())
            )
            .is_err_and(|e| e.contains("RFC 3339"))
        );
        assert!(
            restore_cluster(
                "r",
                &source(),
                &from,
                &RestorePoint::Time("2026-11-30T03:00:00".into())
            )
            .is_ok()
        );
        assert!(restore_cluster("r", &source(), &from, &RestorePoint::Seq(-1)).is_err());
    }

    #[test]
    fn from_names_a_cluster_or_a_backup() {
        assert_eq!(parse_from("content"), Ok((None, "content".into())));
        assert_eq!(
            parse_from("backup/nightly-1"),
            Ok((
                Some(RestoreFrom::Backup("nightly-1".into())),
                "nightly-1".into()
            ))
        );
        assert_eq!(
            parse_from("cluster/content"),
            Ok((
                Some(RestoreFrom::Cluster("content".into())),
                "content".into()
            ))
        );
        assert!(parse_from("pod/x").is_err());
        assert!(parse_from("backup/").is_err());
        assert_eq!(
            resolve_from("x", true, false),
            Ok(RestoreFrom::Backup("x".into()))
        );
        assert_eq!(
            resolve_from("x", false, true),
            Ok(RestoreFrom::Cluster("x".into()))
        );
        assert!(resolve_from("x", true, true).is_err_and(|e| e.contains("backup/x")));
        assert!(resolve_from("x", false, false).is_err());
    }

    #[test]
    fn the_wait_result_says_where_and_what() {
        let mut b = studio_backup("cms", "b1", "content", None, None);
        assert_eq!(backup_result(&b), None);
        b.status = Some(studio_crds::StudioBackupStatus {
            phase: Some("Completed".into()),
            node: Some("content-2".into()),
            backup_id: Some("b1-1234abcd".into()),
            seq: Some(42),
            size_bytes: Some(1000),
            location: Some("s3://b/c-1/base/b1-1234abcd".into()),
            ..Default::default()
        });
        assert_eq!(
            backup_result(&b),
            Some(Ok("b1: Completed on content-2 (base backup b1-1234abcd, seq 42, 1000 bytes) at s3://b/c-1/base/b1-1234abcd".into()))
        );
        b.status = Some(studio_crds::StudioBackupStatus {
            phase: Some("Failed".into()),
            message: Some("bucket gone".into()),
            ..Default::default()
        });
        assert_eq!(
            backup_result(&b),
            Some(Err("b1: Failed: bucket gone".into()))
        );
    }
}
