//! The StudioScheduledBackup controller: reads the StudioBackups the schedule created
//! (from the API, not a cache), asks [`super::schedule::decide`] what to do now,
//! creates at most one StudioBackup (`<schedule>-<yyyymmddhhmmss>`, owned by the
//! schedule), writes the status, and looks again at the next run time.
//!
//! Condition `Ready`: True `Scheduled` (next run in the message); False `Suspended`,
//! `Running` (the last run is not finished), `BackingOff` (failed runs in a row) or
//! `InvalidSchedule`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use studio_crds::{StudioBackup, StudioScheduledBackup, StudioScheduledBackupStatus};
use tracing::{info, warn};

use super::decide::{self, to_chrono};
use super::manifest::{self, SCHEDULE_LABEL, SCHEDULED_AT};
use super::schedule::{self, Decision, Outcome, Run, State};
use super::{BackupContext, api, key};
use crate::error::{Error, Result};

pub const READY: &str = "Ready";

/// Runs the StudioScheduledBackup controller until shutdown.
pub async fn run(bctx: Arc<BackupContext>, namespace: Option<String>) {
    let client = bctx.ctx.client.clone();
    Controller::new(
        api::<StudioScheduledBackup>(&client, &namespace),
        watcher::Config::default(),
    )
    .owns(
        api::<StudioBackup>(&client, &namespace),
        watcher::Config::default().labels(SCHEDULE_LABEL),
    )
    .shutdown_on_signal()
    .run(reconcile, error_policy, bctx)
    .for_each(|res| async move {
        match res {
            Ok((obj, _)) => tracing::debug!(schedule = %obj, "reconciled"),
            Err(e) => tracing::debug!(error = %e, "schedule reconcile failed"),
        }
    })
    .await;
}

fn error_policy(s: Arc<StudioScheduledBackup>, err: &Error, _: Arc<BackupContext>) -> Action {
    warn!(schedule = %key(s.as_ref()), error = %err, "schedule reconcile failed");
    Action::requeue(err.backoff(2).min(Duration::from_secs(30)))
}

fn to_jiff(t: DateTime<Utc>) -> Option<Time> {
    Timestamp::from_millisecond(t.timestamp_millis())
        .ok()
        .map(Time)
}

/// A StudioBackup of the schedule as a run.
pub fn as_run(b: &StudioBackup) -> Run {
    let scheduled_at = b
        .annotations()
        .get(SCHEDULED_AT)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| b.meta().creation_timestamp.as_ref().and_then(to_chrono))
        .unwrap_or_default();
    let st = b.status.clone().unwrap_or_default();
    let outcome = match st.phase.as_deref() {
        Some(decide::COMPLETED) => Outcome::Completed,
        Some(decide::FAILED) => Outcome::Failed,
        _ => Outcome::Active,
    };
    Run {
        name: b.name_any(),
        scheduled_at,
        outcome,
        finished_at: st.stopped_at.as_ref().and_then(to_chrono),
    }
}

/// The `Ready` condition for a decision (keeping the transition time while the status
/// stays the same).
pub fn condition(d: &Decision, generation: Option<i64>, prev: &[Condition]) -> Condition {
    let when =
        |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".to_string());
    let (status, reason, message) = match &d.state {
        State::Scheduled => ("True", "Scheduled", format!("next run at {}", when(d.next))),
        State::Suspended => ("False", "Suspended", "spec.suspend is set".to_string()),
        State::Running(b) => ("False", "Running", format!("waiting for StudioBackup {b}")),
        State::BackingOff => (
            "False",
            "BackingOff",
            format!(
                "{} run(s) failed in a row; next attempt at {}",
                d.consecutive_failures,
                when(d.next)
            ),
        ),
        State::Invalid(why) => ("False", "InvalidSchedule", why.clone()),
    };
    let last_transition_time = prev
        .iter()
        .find(|c| c.type_ == READY && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: READY.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

pub(crate) async fn reconcile(
    s: Arc<StudioScheduledBackup>,
    bctx: Arc<BackupContext>,
) -> Result<Action> {
    let ctx = &bctx.ctx;
    let ns = s
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = s.name_any();
    let uid = s.uid().ok_or(Error::MissingField("metadata.uid"))?;
    if s.meta().deletion_timestamp.is_some() {
        for what in ["invalid", "skipped"] {
            bctx.forget(&format!("{}#{what}", key(s.as_ref())));
        }
        return Ok(Action::await_change());
    }
    let backups: Api<StudioBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let owned = backups
        .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={name}")))
        .await?;
    let runs: Vec<Run> = owned
        .items
        .iter()
        .filter(|b| b.owner_references().iter().any(|o| o.uid == uid))
        .map(as_run)
        .collect();
    let created = s
        .meta()
        .creation_timestamp
        .as_ref()
        .and_then(to_chrono)
        .unwrap_or_else(Utc::now);
    let d = schedule::decide(&schedule::Input {
        schedule: &s.spec.schedule,
        suspend: s.spec.suspend,
        immediate: s.spec.immediate,
        starting_deadline_seconds: s.spec.starting_deadline_seconds,
        created,
        runs: &runs,
        now: Utc::now(),
    });

    if let State::Invalid(why) = &d.state
        && bctx.first_time(&format!("{}#invalid", key(s.as_ref())), why)
    {
        bctx.event(
            s.as_ref(),
            EventType::Warning,
            "InvalidSchedule",
            why.clone(),
        )
        .await;
    }
    if let Some(t) = d.skipped {
        let note = format!(
            "the run of {} was missed by more than startingDeadlineSeconds ({} s) and is skipped; next run at {}",
            t.to_rfc3339(),
            s.spec.starting_deadline_seconds,
            d.next.map(|n| n.to_rfc3339()).unwrap_or_else(|| "-".into())
        );
        if bctx.first_time(&format!("{}#skipped", key(s.as_ref())), &t.to_rfc3339()) {
            bctx.event(s.as_ref(), EventType::Warning, "MissedRunSkipped", note)
                .await;
        }
    }
    if let Some((at, why)) = d.create {
        let owner = s
            .controller_owner_ref(&())
            .ok_or(Error::MissingField("metadata.uid"))?;
        let owner = OwnerReference {
            block_owner_deletion: Some(true),
            ..owner
        };
        let bname = manifest::stamped_name(&name, at);
        let b = manifest::studio_backup(
            &ns,
            &bname,
            &s.spec.cluster,
            s.spec.target,
            Some((owner, at)),
        );
        match backups.create(&PostParams::default(), &b).await {
            Ok(_) => {
                info!(schedule = %key(s.as_ref()), backup = %bname, why = why.as_str(), "backup created");
                bctx.event(
                    s.as_ref(),
                    EventType::Normal,
                    "BackupCreated",
                    format!("created StudioBackup {bname} ({})", why.as_str()),
                )
                .await;
            }
            // Created by an earlier attempt whose status write was lost.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }

    let prev = s.status.clone().unwrap_or_default();
    let status = StudioScheduledBackupStatus {
        last_schedule_time: d.last_schedule.and_then(to_jiff),
        last_successful_time: d.last_successful.and_then(to_jiff),
        next_schedule_time: d.next.and_then(to_jiff),
        consecutive_failures: d.consecutive_failures,
        last_backup: d
            .create
            .map(|(at, _)| manifest::stamped_name(&name, at))
            .or(d.last_backup.clone()),
        conditions: vec![condition(&d, s.meta().generation, &prev.conditions)],
    };
    if status != prev {
        let api: Api<StudioScheduledBackup> = Api::namespaced(ctx.client.clone(), &ns);
        // Merge patch of the whole status; `null` clears what is gone (nextScheduleTime
        // while suspended).
        let mut body = serde_json::to_value(&status)?;
        if let Some(o) = body.as_object_mut() {
            for k in [
                "lastScheduleTime",
                "lastSuccessfulTime",
                "nextScheduleTime",
                "lastBackup",
            ] {
                o.entry(k).or_insert(serde_json::Value::Null);
            }
        }
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": body })),
        )
        .await?;
    }
    Ok(match d.requeue {
        Some(r) => Action::requeue(r),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(yaml: &str) -> StudioBackup {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_backup_reads_as_a_run() {
        let b = backup(
            r#"
apiVersion: studio.cms.io/v1alpha1
kind: StudioBackup
metadata:
  name: nightly-20261130020000
  creationTimestamp: "2026-11-30T02:00:03Z"
  annotations: {studio.cms.io/scheduled-at: "2026-11-30T02:00:00+00:00"}
spec: {cluster: content}
status: {phase: Completed, stoppedAt: "2026-11-30T02:01:00Z"}
"#,
        );
        let r = as_run(&b);
        assert_eq!(r.outcome, Outcome::Completed);
        assert_eq!(r.scheduled_at.to_rfc3339(), "2026-11-30T02:00:00+00:00");
        assert_eq!(
            r.finished_at.map(|t| t.to_rfc3339()),
            Some("2026-11-30T02:01:00+00:00".into())
        );
        let pending = backup(
            r#"
apiVersion: studio.cms.io/v1alpha1
kind: StudioBackup
metadata: {name: x, creationTimestamp: "2026-11-30T02:00:03Z"}
spec: {cluster: content}
"#,
        );
        let r = as_run(&pending);
        assert_eq!(r.outcome, Outcome::Active);
        assert_eq!(r.scheduled_at.to_rfc3339(), "2026-11-30T02:00:03+00:00");
    }

    #[test]
    fn the_ready_condition_names_the_state_and_keeps_its_transition_time() {
        let d = Decision {
            create: None,
            next: "2026-12-01T02:00:00Z".parse().ok(),
            requeue: None,
            state: State::BackingOff,
            consecutive_failures: 3,
            last_schedule: None,
            last_successful: None,
            last_backup: None,
            skipped: None,
        };
        let c = condition(&d, Some(2), &[]);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "BackingOff")
        );
        assert!(c.message.contains("3 run(s) failed"), "{}", c.message);
        let old = Condition {
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            ..c.clone()
        };
        assert_eq!(
            condition(&d, Some(2), std::slice::from_ref(&old)).last_transition_time,
            old.last_transition_time
        );
        let ok = Decision {
            state: State::Scheduled,
            ..d
        };
        let c = condition(&ok, Some(2), &[old]);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "Scheduled")
        );
        assert_ne!(c.last_transition_time, Time(Timestamp::UNIX_EPOCH));
    }
}
