//! The StudioBackup controller: decide (see [`super::decide`]) → act (ask the members)
//! → status and Events.
//!
//! A new StudioBackup: the member is chosen ([`super::select`]) and recorded first
//! (phase Pending with `node`), then asked to start base backup `<name>-<uid[..8]>`
//! (asking again with the same id only answers its status, so a retry never starts a
//! second backup); phase Running. The members are then polled until the node reports
//! Completed or Failed (once completed any member can answer from the archive's
//! manifest). After a completion the cluster's recoverability fields and retention are
//! brought up to date ([`super::archive`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use studio_crds::node_api::BackupPhase;
use studio_crds::{StudioBackup, StudioBackupStatus, StudioCluster};
use tracing::{info, warn};

use super::decide::{self, Answer, Poll, Step};
use super::{BackupContext, api, key, manifest, member, nodes_for, select};
use crate::error::{Error, Result};

/// Runs the StudioBackup controller until shutdown.
pub async fn run(bctx: Arc<BackupContext>, namespace: Option<String>) {
    let client = bctx.ctx.client.clone();
    Controller::new(
        api::<StudioBackup>(&client, &namespace),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(reconcile, error_policy, bctx)
    .for_each(|res| async move {
        match res {
            Ok((obj, _)) => tracing::debug!(backup = %obj, "reconciled"),
            Err(e) => tracing::debug!(error = %e, "backup reconcile failed"),
        }
    })
    .await;
}

fn error_policy(bk: Arc<StudioBackup>, err: &Error, _: Arc<BackupContext>) -> Action {
    match err {
        Error::Waiting(why) => info!(backup = %key(bk.as_ref()), %why, "waiting"),
        e => warn!(backup = %key(bk.as_ref()), error = %e, "backup reconcile failed"),
    }
    Action::requeue(err.backoff(2).min(Duration::from_secs(30)))
}

async fn write_status(
    bctx: &BackupContext,
    bk: &StudioBackup,
    status: &StudioBackupStatus,
) -> Result<()> {
    let ns = bk
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<StudioBackup> = Api::namespaced(bctx.ctx.client.clone(), &ns);
    api.patch_status(
        &bk.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await?;
    Ok(())
}

pub(crate) async fn reconcile(bk: Arc<StudioBackup>, bctx: Arc<BackupContext>) -> Result<Action> {
    let ctx = &bctx.ctx;
    let ns = bk
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    if decide::step(bk.status.as_ref()) == Step::Done {
        return Ok(Action::await_change());
    }
    // The controller's cache can lag behind our own last status write (a watch event
    // of the Pending write wakes us after Running was written): read the object
    // itself, so that a backup is never announced, counted or finished twice.
    let backups: Api<StudioBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(bk) = backups.get_opt(&bk.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let bk = Arc::new(bk);
    let prev = bk.status.clone().unwrap_or_default();
    let step = decide::step(bk.status.as_ref());
    if step == Step::Done {
        return Ok(Action::await_change());
    }
    let clusters: Api<StudioCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let sc = clusters.get_opt(&bk.spec.cluster).await?;
    if let Some(why) = decide::refuse(&bk.spec.cluster, sc.as_ref()) {
        return fail(&bctx, &bk, &prev, why).await;
    }
    let Some(sc) = sc else {
        return Ok(Action::await_change());
    };
    let members = sc
        .status
        .as_ref()
        .map(|s| s.members.clone())
        .unwrap_or_default();
    let nodes = nodes_for(ctx, &sc).await?;
    match step {
        Step::Done => Ok(Action::await_change()),
        Step::Start { recorded_node } => {
            let uid = bk.uid().ok_or(Error::MissingField("metadata.uid"))?;
            let id = manifest::backup_id(&bk.name_any(), &uid);
            // The member recorded by an earlier attempt, while it is still a member
            // with an address; else a new choice.
            let recorded = recorded_node
                .as_ref()
                .and_then(|n| members.iter().find(|m| &m.name == n && m.pod_ip.is_some()));
            let target = bk
                .spec
                .target
                .or(sc.spec.backup.as_ref().map(|b| b.target))
                .unwrap_or_default();
            let (chosen, why) = match recorded {
                Some(m) => (m.clone(), format!("{} (chosen earlier)", m.name)),
                None => match select::choose(&members, target) {
                    Ok(c) => match members.iter().find(|m| m.name == c.member) {
                        Some(m) => (m.clone(), c.why),
                        None => return Ok(Action::requeue(decide::POLL)),
                    },
                    Err(why) => return not_yet(&bctx, &bk, &prev, why).await,
                },
            };
            if recorded.is_none() {
                // Recorded before the member is asked, so a retry asks the same member.
                let pending = StudioBackupStatus {
                    phase: Some(decide::PENDING.into()),
                    message: Some(format!("starting on {why}")),
                    backup_id: Some(id.clone()),
                    node: Some(chosen.name.clone()),
                    ..prev.clone()
                };
                write_status(&bctx, &bk, &pending).await?;
            }
            match nodes.start_backup(&member(&chosen), &id).await {
                Ok(b) => {
                    let mut st = decide::status_from(&prev, &b);
                    st.node = Some(chosen.name.clone());
                    write_status(&bctx, &bk, &st).await?;
                    bctx.event(
                        bk.as_ref(),
                        EventType::Normal,
                        "Started",
                        format!("base backup {id} of {} started on {why}", bk.spec.cluster),
                    )
                    .await;
                    if b.phase != BackupPhase::Running {
                        return finished(&bctx, &bk, &sc, st).await;
                    }
                    Ok(Action::requeue(decide::POLL))
                }
                // The node refuses this request for good (bad id, no backups there).
                Err(Error::NodeApi {
                    status: 400 | 404 | 422 | 501,
                    message,
                    node,
                }) => {
                    fail(
                        &bctx,
                        &bk,
                        &prev,
                        format!("{node} refused to start base backup {id}: {message}"),
                    )
                    .await
                }
                Err(e) => {
                    not_yet(
                        &bctx,
                        &bk,
                        &prev,
                        format!("{} could not start it: {e}", chosen.name),
                    )
                    .await
                }
            }
        }
        Step::Poll { node, id } => {
            let mut answers = Vec::new();
            for m in select::answerers(&members, Some(&node)) {
                let a = match nodes.backup_status(&member(m), &id).await {
                    Ok(b) => Answer::Found(b),
                    Err(Error::NodeApi { status: 404, .. }) => Answer::NotFound,
                    Err(e) => Answer::Silent(e.to_string()),
                };
                let found = matches!(&a, Answer::Found(b) if b.phase != BackupPhase::Running || m.name == node);
                answers.push((m.name.clone(), a));
                if found {
                    break;
                }
            }
            let started = prev.started_at.as_ref().and_then(decide::to_chrono);
            match decide::interpret(&node, &answers, started, Utc::now()) {
                Poll::Finished(b) => {
                    let st = decide::status_from(&prev, &b);
                    finished(&bctx, &bk, &sc, st).await
                }
                Poll::Running(b) => {
                    let st = decide::status_from(&prev, &b);
                    if st != prev {
                        write_status(&bctx, &bk, &st).await?;
                    }
                    Ok(Action::requeue(decide::POLL))
                }
                Poll::Lost(why) => fail(&bctx, &bk, &prev, why).await,
                Poll::Unknown(why) => {
                    info!(backup = %key(bk.as_ref()), %why, "backup status unknown");
                    Ok(Action::requeue(decide::POLL * 2))
                }
            }
        }
    }
}

/// No member can start it now: Pending with why, retried; Failed after
/// [`decide::START_LIMIT`].
async fn not_yet(
    bctx: &BackupContext,
    bk: &StudioBackup,
    prev: &StudioBackupStatus,
    why: String,
) -> Result<Action> {
    let age = bk
        .meta()
        .creation_timestamp
        .as_ref()
        .and_then(decide::to_chrono)
        .map(|c| Utc::now() - c)
        .unwrap_or_default();
    if age.num_seconds() > decide::START_LIMIT.as_secs() as i64 {
        return fail(
            bctx,
            bk,
            prev,
            format!(
                "could not start within {} min: {why}",
                decide::START_LIMIT.as_secs() / 60
            ),
        )
        .await;
    }
    let st = StudioBackupStatus {
        phase: Some(decide::PENDING.into()),
        message: Some(format!("waiting: {why}")),
        ..prev.clone()
    };
    if &st != prev {
        write_status(bctx, bk, &st).await?;
    }
    Ok(Action::requeue(decide::POLL * 2))
}

async fn fail(
    bctx: &BackupContext,
    bk: &StudioBackup,
    prev: &StudioBackupStatus,
    why: String,
) -> Result<Action> {
    let mut st = decide::failed(prev, why.clone());
    if st.stopped_at.is_none() {
        st.stopped_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
    }
    write_status(bctx, bk, &st).await?;
    warn!(backup = %key(bk), %why, "backup failed");
    bctx.event(bk, EventType::Warning, "Failed", why).await;
    bctx.ctx.metrics.observe_backup(
        &bk.namespace().unwrap_or_default(),
        &bk.spec.cluster,
        false,
        Utc::now().timestamp(),
    );
    Ok(Action::await_change())
}

/// The node reports the backup finished: status, Event, metrics, and for a completed
/// one the cluster's recoverability fields and retention.
async fn finished(
    bctx: &BackupContext,
    bk: &StudioBackup,
    sc: &StudioCluster,
    st: StudioBackupStatus,
) -> Result<Action> {
    if st.phase.as_deref() != Some(decide::COMPLETED) {
        let why = st.message.clone().unwrap_or_else(|| "failed".into());
        return fail(bctx, bk, &st, why).await;
    }
    write_status(bctx, bk, &st).await?;
    let ns = bk.namespace().unwrap_or_default();
    let at = st
        .stopped_at
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or_else(|| Utc::now().timestamp());
    bctx.ctx
        .metrics
        .observe_backup(&ns, &bk.spec.cluster, true, at);
    info!(backup = %key(bk), message = ?st.message, "backup completed");
    bctx.event(
        bk,
        EventType::Normal,
        "Completed",
        format!(
            "base backup {} of {}: {}",
            st.backup_id.clone().unwrap_or_default(),
            bk.spec.cluster,
            st.message.clone().unwrap_or_default()
        ),
    )
    .await;
    if let Some(at) = &st.stopped_at
        && let Err(e) = super::archive::note_success(bctx, sc, at).await
    {
        warn!(cluster = %key(sc), error = %e, "cannot record the last successful backup");
    }
    if let Err(e) = super::archive::maintain(bctx, sc).await {
        warn!(cluster = %key(sc), error = %e, "archive upkeep after a backup failed (retried periodically)");
    }
    Ok(Action::await_change())
}
