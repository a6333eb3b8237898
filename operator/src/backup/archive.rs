//! The archive of a cluster as the StudioCluster status shows it, and retention.
//!
//! After every completed backup and every [`INTERVAL`] for each cluster with
//! `spec.backup`: the members list the archive's base backups; retention
//! ([`super::retention`]) picks what to delete and one member prunes it (Event
//! `BackupsPruned`); then `status.backup.lastSuccessfulBackup`,
//! `firstRecoverabilityPoint` and `firstRecoverabilitySeq` are set from the list with a
//! JSON merge patch of just those three fields, so the StudioCluster controller's own
//! status write (which carries `status.backup` over from the previous status) is not
//! clobbered.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::{Value, json};
use studio_crds::node_api::{BackupPhase, BaseBackupList};
use studio_crds::{BackupStatus, MemberStatus, StudioCluster};
use tracing::{debug, info, warn};

use super::{BackupContext, api, key, member, nodes_for, retention, select};
use crate::error::{Error, Result};
use crate::node_client::NodeClient;

/// How often every cluster's archive is looked at (retention, recoverability).
pub const INTERVAL: Duration = Duration::from_secs(10 * 60);

/// The three fields this module owns in `status.backup`, from the archive's list;
/// `lastSuccessfulBackup` never moves back (`known`: the value in the status, which a
/// completion may have set before the archive lists that backup).
pub fn recoverability(list: &BaseBackupList, known: Option<&Time>) -> Value {
    let ms = |ms: Option<i64>| {
        ms.and_then(|m| Timestamp::from_millisecond(m).ok())
            .map(|t| json!(Time(t)))
            .unwrap_or(Value::Null)
    };
    let newest = list
        .backups
        .iter()
        .filter(|b| b.phase == BackupPhase::Completed)
        .filter_map(|b| b.stopped_ms)
        .max()
        .max(known.map(|t| t.0.as_millisecond()));
    json!({
        "lastSuccessfulBackup": ms(newest),
        "firstRecoverabilityPoint": ms(list.first_recoverability_time_ms),
        "firstRecoverabilitySeq": list.first_recoverability_seq.map(|s| s as i64),
    })
}

/// Whether the status already shows `fields` (so nothing is written).
pub fn shows(status: Option<&BackupStatus>, fields: &Value) -> bool {
    let cur = status
        .map(|b| {
            json!({
                "lastSuccessfulBackup": b.last_successful_backup,
                "firstRecoverabilityPoint": b.first_recoverability_point,
                "firstRecoverabilitySeq": b.first_recoverability_seq,
            })
        })
        .unwrap_or_else(|| {
            json!({"lastSuccessfulBackup": null, "firstRecoverabilityPoint": null, "firstRecoverabilitySeq": null})
        });
    &cur == fields
}

/// The archive's list from the first member that answers.
async fn list(nodes: &NodeClient, members: &[MemberStatus]) -> Result<(String, BaseBackupList)> {
    let mut last = None;
    for m in select::answerers(members, None) {
        match nodes.list_backups(&member(m)).await {
            Ok(l) => return Ok((m.name.clone(), l)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Waiting("no ready member to list the archive".into())))
}

/// A backup of `sc` completed at `at`: `status.backup.lastSuccessfulBackup` moves
/// forward to it at once (merge patch of that field alone), whether or not the archive
/// can be listed right now.
pub async fn note_success(bctx: &BackupContext, sc: &StudioCluster, at: &Time) -> Result<()> {
    let current = sc
        .status
        .as_ref()
        .and_then(|s| s.backup.as_ref())
        .and_then(|b| b.last_successful_backup.as_ref());
    if current.is_some_and(|c| c.0 >= at.0) {
        return Ok(());
    }
    let ns = sc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let clusters: Api<StudioCluster> = Api::namespaced(bctx.ctx.client.clone(), &ns);
    clusters
        .patch_status(
            &sc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"backup": {"lastSuccessfulBackup": at}}})),
        )
        .await?;
    Ok(())
}

/// Retention and the recoverability fields of one cluster.
pub async fn maintain(bctx: &BackupContext, sc: &StudioCluster) -> Result<()> {
    let Some(spec) = sc.spec.backup.as_ref() else {
        return Ok(());
    };
    let ctx = &bctx.ctx;
    let ns = sc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = sc.name_any();
    let members = sc
        .status
        .as_ref()
        .map(|s| s.members.clone())
        .unwrap_or_default();
    let nodes = nodes_for(ctx, sc).await?;
    let (lister, mut listed) = list(&nodes, &members).await?;
    let delete = retention::to_delete(
        &listed.backups,
        &spec.retention,
        Timestamp::now().as_millisecond(),
    );
    if !delete.is_empty() {
        let pruner = members
            .iter()
            .find(|m| m.name == lister)
            .map(member)
            .ok_or(Error::MissingField("status.members"))?;
        match nodes.prune_backups(&pruner, delete.clone()).await {
            Ok(answer) => {
                let n = answer.deleted_backups.len() as u64;
                ctx.metrics
                    .backups_pruned
                    .get_or_create(&crate::metrics::ClusterLabels {
                        namespace: ns.clone(),
                        cluster: name.clone(),
                    })
                    .inc_by(n);
                let note = format!(
                    "retention ({}) deleted base backup(s) {} and {} journal segment(s) only they needed",
                    describe(&spec.retention),
                    if answer.deleted_backups.is_empty() {
                        "(none)".to_string()
                    } else {
                        answer.deleted_backups.join(", ")
                    },
                    answer.deleted_segments
                );
                info!(cluster = %key(sc), %note, "backups pruned");
                bctx.event(sc, EventType::Normal, "BackupsPruned", note)
                    .await;
                listed = list(&nodes, &members).await?.1;
            }
            Err(e) => {
                let note = format!(
                    "retention could not delete base backup(s) {}: {e}",
                    delete.join(", ")
                );
                if bctx.first_time(&format!("prune:{}", key(sc)), &note) {
                    bctx.event(sc, EventType::Warning, "BackupPruneFailed", note)
                        .await;
                }
            }
        }
    }
    let known = sc
        .status
        .as_ref()
        .and_then(|s| s.backup.as_ref())
        .and_then(|b| b.last_successful_backup.as_ref());
    let fields = recoverability(&listed, known);
    if let Some(at) = fields["lastSuccessfulBackup"]
        .as_str()
        .and_then(|t| t.parse::<Timestamp>().ok())
    {
        ctx.metrics.note_backup_success(&ns, &name, at.as_second());
    }
    if !shows(sc.status.as_ref().and_then(|s| s.backup.as_ref()), &fields) {
        let clusters: Api<StudioCluster> = Api::namespaced(ctx.client.clone(), &ns);
        clusters
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"backup": fields}})),
            )
            .await?;
        debug!(cluster = %key(sc), %fields, "recoverability updated");
    }
    Ok(())
}

fn describe(r: &studio_crds::RetentionSpec) -> String {
    let mut parts = Vec::new();
    if let Some(d) = r.max_age_days {
        parts.push(format!("maxAgeDays {d}"));
    }
    if let Some(n) = r.max_count {
        parts.push(format!("maxCount {n}"));
    }
    parts.join(", ")
}

/// Every [`INTERVAL`]: [`maintain`] each cluster with `spec.backup`.
pub async fn run_periodically(bctx: Arc<BackupContext>, namespace: Option<String>) {
    let clusters: Api<StudioCluster> = api(&bctx.ctx.client, &namespace);
    // A first pass soon after the start (the members' status is filled by then).
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::time::sleep(wait).await;
        wait = INTERVAL;
        let list = match clusters.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "cannot list StudioClusters for the archive upkeep");
                continue;
            }
        };
        for sc in list
            .items
            .iter()
            .filter(|sc| sc.spec.backup.is_some() && sc.metadata.deletion_timestamp.is_none())
        {
            if let Err(e) = maintain(&bctx, sc).await {
                debug!(cluster = %key(sc), error = %e, "archive upkeep failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use studio_crds::node_api::BaseBackupStatus;

    fn b(id: &str, stopped: i64) -> BaseBackupStatus {
        BaseBackupStatus {
            id: id.into(),
            phase: BackupPhase::Completed,
            message: String::new(),
            cluster_id: "c".into(),
            node_id: "n".into(),
            started_ms: stopped - 1000,
            stopped_ms: Some(stopped),
            seq: 1,
            term: 1,
            time_ms: 0,
            size_bytes: 1,
            location: String::new(),
        }
    }

    #[test]
    fn recoverability_comes_from_the_list_and_is_compared_with_the_status() {
        let list = BaseBackupList {
            backups: vec![b("a", 1_800_000_000_000), b("b", 1_800_000_500_000)],
            first_recoverability_seq: Some(17),
            first_recoverability_time_ms: Some(1_799_999_000_000),
        };
        let f = recoverability(&list, None);
        assert_eq!(f["lastSuccessfulBackup"], "2027-01-15T08:08:20Z");
        assert_eq!(f["firstRecoverabilityPoint"], "2027-01-15T07:43:20Z");
        assert_eq!(f["firstRecoverabilitySeq"], 17);
        assert!(!shows(None, &f));
        let st: BackupStatus = serde_json::from_value(json!({
            "destination": "s3://x/y/c",
            "lastSuccessfulBackup": "2027-01-15T08:08:20Z",
            "firstRecoverabilityPoint": "2027-01-15T07:43:20Z",
            "firstRecoverabilitySeq": 17,
            "lastArchivedSeq": 99,
        }))
        .unwrap_or_default();
        assert!(
            shows(Some(&st), &f),
            "other fields of status.backup do not matter"
        );
        let later: Time =
            serde_json::from_value(json!("2027-01-16T00:00:00Z")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            recoverability(&list, Some(&later))["lastSuccessfulBackup"],
            "2027-01-16T00:00:00Z",
            "never moves back"
        );
        let empty = recoverability(&BaseBackupList::default(), None);
        assert_eq!(
            empty,
            json!({"lastSuccessfulBackup": null, "firstRecoverabilityPoint": null, "firstRecoverabilitySeq": null})
        );
        assert!(shows(None, &empty));
    }
}
