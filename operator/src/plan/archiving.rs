//! Backups in the status: `status.backup` and the `ContinuousArchiving` condition from
//! what the primary reports about its archive (with `spec.backup`), and what the members
//! report about a restore at bootstrap (`spec.bootstrap.recovery`).

use studio_crds::node_api::{ArchiveStatus, RestorePhase};
use studio_crds::{BackupStatus, archiving, restore};

use super::write_quorum_check::QuorumEvent;
use super::*;

fn time_ms(ms: i64) -> Option<Time> {
    Timestamp::from_millisecond(ms).ok().map(Time)
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The primary and what it reports about its archive.
fn primary_archive(obs: &Observed) -> Option<(&str, &ArchiveStatus)> {
    let p = obs.primary()?;
    let a = p.node.as_ref()?.archive.as_ref()?;
    Some((p.name.as_str(), a))
}

/// `status.backup`: where the archive is and how far behind it is, from the primary
/// (kept as last seen while no primary reports it). `firstRecoverabilityPoint`,
/// `firstRecoverabilitySeq` and `lastSuccessfulBackup` are the base backups' business
/// (the StudioBackup controller's) and are carried over from `prev`. `None` without
/// `spec.backup`.
pub fn backup_status(
    sc: &StudioCluster,
    obs: &Observed,
    prev: Option<&BackupStatus>,
) -> Option<BackupStatus> {
    sc.spec.backup.as_ref()?;
    let mut b = prev.cloned().unwrap_or_default();
    if let Some((_, a)) = primary_archive(obs) {
        if !a.destination.is_empty() {
            b.destination = Some(a.destination.clone());
        }
        if a.archiving {
            b.last_archived_seq = (a.archived_seq > 0).then(|| to_i64(a.archived_seq));
            b.last_archived_time = a.archived_time_ms.and_then(time_ms);
            b.archive_lag_entries = Some(to_i64(a.lag_entries));
            b.archive_lag_seconds = finite(a.lag_seconds);
        }
    }
    Some(b)
}

/// The `ContinuousArchiving` condition as computed from the members.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivingCheck {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
    /// The primary reported its archive. When not, a condition already in the status
    /// is kept as it is (a primary that misses one poll does not flap it).
    pub observed: bool,
}

fn rfc3339_ms(ms: i64) -> String {
    time_ms(ms)
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| format!("{ms} ms since the epoch"))
}

/// `ContinuousArchiving` from the primary's archive status; `None` without
/// `spec.backup` (the condition is then absent).
/// - True `Archiving`: the primary archives, its last upload succeeded, no gap;
/// - False `ArchivingFailing`: uploads fail (the error and since when);
/// - False `ArchiveGap`: the archive misses entries (point-in-time recovery only from
///   a base backup taken after the gap);
/// - Unknown `NotArchiving` / `ArchiveStatusUnknown`: the primary says it does not
///   archive, or no primary reports anything.
pub fn check_archiving(sc: &StudioCluster, obs: &Observed) -> Option<ArchivingCheck> {
    sc.spec.backup.as_ref()?;
    let Some((primary, a)) = primary_archive(obs) else {
        let why = match obs.primary() {
            None => "no primary".to_string(),
            Some(p) if p.node.is_none() => format!("the primary {} does not answer", p.name),
            Some(p) => format!(
                "the primary {} reports no archive status (an image without backups?)",
                p.name
            ),
        };
        return Some(ArchivingCheck {
            status: "Unknown",
            reason: archiving::UNKNOWN,
            message: format!("archive status unknown: {why}"),
            observed: false,
        });
    };
    let dest = if a.destination.is_empty() {
        "the object store".to_string()
    } else {
        a.destination.clone()
    };
    let check = |status, reason, message| ArchivingCheck {
        status,
        reason,
        message,
        observed: true,
    };
    if !a.archiving {
        return Some(check(
            "Unknown",
            archiving::NOT_ARCHIVING,
            format!("the primary {primary} reports that it does not archive to {dest}"),
        ));
    }
    if let Some(err) = &a.last_error {
        let since = a
            .failing_since_ms
            .map(|ms| format!(" since {}", rfc3339_ms(ms)))
            .unwrap_or_default();
        return Some(check(
            "False",
            archiving::FAILING,
            // No counts here (they move with every write): status.backup has the lag.
            format!("the primary {primary} cannot archive to {dest}{since}: {err}"),
        ));
    }
    if let Some(seq) = a.gap_before_seq {
        return Some(check(
            "False",
            archiving::GAP,
            format!(
                "the archive at {dest} misses journal entries before seq {seq} (compacted before they were archived): point-in-time recovery is possible only from a base backup taken after it; take a StudioBackup"
            ),
        ));
    }
    Some(check(
        "True",
        archiving::ARCHIVING,
        format!("the primary {primary} archives its journal to {dest}"),
    ))
}

/// The `ContinuousArchiving` condition to write; `lastTransitionTime` only moves when
/// the status changes. `None` without `spec.backup`.
pub fn archiving_condition(
    sc: &StudioCluster,
    check: Option<&ArchivingCheck>,
    prev: Option<&StudioClusterStatus>,
) -> Option<Condition> {
    let check = check?;
    let prev_cond = prev.and_then(|p| {
        p.conditions
            .iter()
            .find(|c| c.type_ == conditions::CONTINUOUS_ARCHIVING)
    });
    if !check.observed
        && let Some(p) = prev_cond
    {
        return Some(p.clone());
    }
    let ltt = match prev_cond {
        Some(p) if p.status == check.status => p.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    };
    Some(Condition {
        type_: conditions::CONTINUOUS_ARCHIVING.into(),
        status: check.status.into(),
        reason: check.reason.into(),
        message: check.message.clone(),
        observed_generation: sc.metadata.generation,
        last_transition_time: ltt,
    })
}

/// The Event of a change of `ContinuousArchiving`, decided from the condition in the
/// previous status: Warning `ArchivingFailing` / `ArchiveGap` when it turns False (or
/// False for another reason), Normal `ArchivingRecovered` when it turns True after
/// False. Nothing while it stays the same or is not observed.
pub fn archiving_event(
    prev: Option<&StudioClusterStatus>,
    check: Option<&ArchivingCheck>,
) -> Option<QuorumEvent> {
    let check = check.filter(|c| c.observed)?;
    let before = prev.and_then(|p| {
        p.conditions
            .iter()
            .find(|c| c.type_ == conditions::CONTINUOUS_ARCHIVING)
    });
    match check.status {
        "False" => {
            let same = before.is_some_and(|b| b.status == "False" && b.reason == check.reason);
            (!same).then(|| QuorumEvent {
                warning: true,
                reason: check.reason,
                note: check.message.clone(),
            })
        }
        "True" if before.is_some_and(|b| b.status == "False") => Some(QuorumEvent {
            warning: false,
            reason: archiving::EVENT_RECOVERED,
            note: format!("archiving works again: {}", check.message),
        }),
        _ => None,
    }
}

/// What the members report about a restore at bootstrap.
#[derive(Debug, Clone, PartialEq)]
pub enum RestoreCheck {
    /// A member's restore failed for good.
    Failed { message: String },
    /// A member restores.
    Running { message: String },
    /// A member restored (and no other one restores or failed).
    Completed { message: String },
}

/// The restore the members report: a failure first, then one running, then a
/// completed one. `None` when no member reports a restore.
pub fn check_restore(obs: &Observed) -> Option<RestoreCheck> {
    let reports: Vec<(&str, &studio_crds::node_api::RestoreStatus)> = obs
        .members
        .iter()
        .filter_map(|m| Some((m.name.as_str(), m.node.as_ref()?.restore.as_ref()?)))
        .collect();
    let from = |r: &studio_crds::node_api::RestoreStatus| {
        r.backup_id
            .as_deref()
            .map(|b| format!(" from base backup {b}"))
            .unwrap_or_default()
    };
    let said = |r: &studio_crds::node_api::RestoreStatus| {
        if r.message.is_empty() {
            String::new()
        } else {
            format!(": {}", r.message)
        }
    };
    if let Some((pod, r)) = reports
        .iter()
        .find(|(_, r)| r.phase == RestorePhase::Failed)
    {
        return Some(RestoreCheck::Failed {
            message: format!(
                "restore{} failed on {pod}{}; spec.bootstrap.recovery cannot change: delete the cluster (and its PersistentVolumeClaims) and create it again with another recovery source or target",
                from(r),
                said(r)
            ),
        });
    }
    if let Some((pod, r)) = reports
        .iter()
        .find(|(_, r)| r.phase == RestorePhase::Running)
    {
        return Some(RestoreCheck::Running {
            message: format!("{pod} restores{}{}", from(r), said(r)),
        });
    }
    reports
        .iter()
        .find(|(_, r)| r.phase == RestorePhase::Completed)
        .map(|(pod, r)| RestoreCheck::Completed {
            message: format!(
                "{pod} restored{} up to journal seq {}",
                from(r),
                r.restored_seq
            ),
        })
}

/// Applies a restore to the plan: a failed one makes the cluster `Invalid` (Stalled:
/// only a new cluster helps) with reason `RestoreFailed`; a running one keeps a
/// cluster being created `Creating` with reason `Restoring`.
pub fn apply_restore(p: &mut Plan, check: Option<&RestoreCheck>) {
    match check {
        Some(RestoreCheck::Failed { message }) => {
            p.phase = Phase::Invalid;
            p.message = message.clone();
            p.reason = Some(restore::FAILED);
        }
        Some(RestoreCheck::Running { message }) if p.phase == Phase::Creating => {
            p.message = format!("restoring: {message}");
            p.reason = Some(restore::RESTORING);
        }
        _ => {}
    }
}

/// Gives the conditions that say the cluster is not where it should be (Ready False,
/// Progressing, Degraded, Reconciling and Stalled True) `reason` and `message` instead
/// of the phase's (a restore, a recovery source that is not there).
pub fn override_reason(conds: &mut [Condition], reason: &str, message: &str) {
    for c in conds.iter_mut() {
        let bad = match c.type_.as_str() {
            conditions::READY => c.status == "False",
            conditions::PROGRESSING
            | conditions::DEGRADED
            | conditions::RECONCILING
            | conditions::STALLED => c.status == "True",
            _ => false,
        };
        if bad {
            c.reason = reason.into();
            c.message = message.into();
        }
    }
}

/// The Event of a plan's reason (restore and recovery source), decided from the
/// previous status's `Ready` condition: one when the reason (or, for a recovery source
/// not ready, its message) changes, and `RestoreCompleted` once a restore is over.
pub fn reason_event(
    prev: Option<&StudioClusterStatus>,
    plan: &Plan,
    restore_check: Option<&RestoreCheck>,
) -> Option<QuorumEvent> {
    let before = prev.and_then(|p| p.conditions.iter().find(|c| c.type_ == conditions::READY));
    let before_reason = before.map(|c| c.reason.as_str());
    match plan.reason {
        Some(r) => {
            let same = before_reason == Some(r)
                && (r == restore::RESTORING
                    || r == restore::FAILED
                    || before.is_some_and(|c| c.message == plan.message));
            (!same).then(|| QuorumEvent {
                warning: r != restore::RESTORING,
                reason: r,
                note: plan.message.clone(),
            })
        }
        None => match restore_check {
            Some(RestoreCheck::Completed { message })
                if before_reason == Some(restore::RESTORING) =>
            {
                Some(QuorumEvent {
                    warning: false,
                    reason: restore::EVENT_COMPLETED,
                    note: message.clone(),
                })
            }
            _ => None,
        },
    }
}
