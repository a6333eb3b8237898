//! Backups in the status, from what the members report: `status.backup` and the
//! `ContinuousArchiving` condition from the primary's archive (absent without
//! spec.backup, one Event per transition, archive progress rate-limited like journal
//! positions), and a restore at bootstrap in the phase and conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use studio_crds::node_api::{ArchiveStatus, ClusterStatus, NodeRole, RestorePhase, RestoreStatus};
use studio_crds::{
    BackupStatus, Phase, StudioCluster, StudioClusterStatus, archiving, conditions, restore,
};
use studio_operator::plan::{self, ArchivingCheck, Member, Observed, RestoreCheck};

fn cluster(backup: bool) -> StudioCluster {
    let backup = if backup {
        ", backup: {objectStore: {bucket: b, credentials: {secretName: s3}}}"
    } else {
        ""
    };
    serde_yaml::from_str(&format!(
        "apiVersion: studio.cms.io/v1alpha1\nkind: StudioCluster\nmetadata: {{name: demo, namespace: cms, uid: u1, generation: 2}}\nspec: {{nodes: 2, image: studio-node:1{backup}}}\n"
    ))
    .expect("cluster yaml")
}

fn node(name: &str, role: NodeRole) -> ClusterStatus {
    ClusterStatus {
        cluster_id: Some("c1".into()),
        node_id: name.into(),
        role,
        term: 3,
        seq: 100,
        last_term: 3,
        read_only: false,
        primary: None,
        replication_mode: "async".into(),
        sync_replicas: 0,
        peers: vec![],
        quarantined: 0,
        oldest_seq: 0,
        write_quorum: None,
        schema_revision: 1,
        min_compatible_revision: 1,
        replication_refused: None,
        archive: None,
        restore: None,
    }
}

fn member(name: &str, role: NodeRole, status: Option<ClusterStatus>) -> Member {
    Member {
        name: name.into(),
        ordinal: name.strip_prefix("demo-").and_then(|o| o.parse().ok()),
        arbiter: false,
        role_label: Some(format!("{role:?}").to_lowercase()),
        ready: true,
        terminating: false,
        ip: Some("10.0.0.1".into()),
        revision: Some("r1".into()),
        node: status,
    }
}

fn archive() -> ArchiveStatus {
    ArchiveStatus {
        archiving: true,
        destination: "s3://b/c1".into(),
        archived_seq: 90,
        archived_time_ms: Some(1_764_500_000_000),
        lag_entries: 10,
        lag_seconds: 1.5,
        last_success_ms: Some(1_764_500_000_500),
        last_error: None,
        failing_since_ms: None,
        gap_before_seq: None,
    }
}

/// demo-0 primary with `archive` (None: it reports none), demo-1 replica.
fn observed(archive: Option<ArchiveStatus>) -> Observed {
    let mut p = node("demo-0", NodeRole::Primary);
    p.archive = archive;
    let mut r = node("demo-1", NodeRole::Replica);
    r.archive = Some(ArchiveStatus {
        archiving: false,
        ..Default::default()
    });
    Observed {
        members: vec![
            member("demo-0", NodeRole::Primary, Some(p)),
            member("demo-1", NodeRole::Replica, Some(r)),
        ],
        lease_holder: Some("demo-0".into()),
        had_primary: true,
        sts_replicas: Some(2),
        ..Default::default()
    }
}

fn with_condition(c: Option<Condition>) -> StudioClusterStatus {
    StudioClusterStatus {
        current_primary: Some("demo-0".into()),
        conditions: c.into_iter().collect(),
        ..Default::default()
    }
}

fn check(sc: &StudioCluster, obs: &Observed) -> ArchivingCheck {
    plan::check_archiving(sc, obs).expect("a check with spec.backup")
}

#[test]
fn status_backup_comes_from_the_primary_and_keeps_the_base_backup_fields() {
    let sc = cluster(true);
    let prev = BackupStatus {
        first_recoverability_seq: Some(12),
        first_recoverability_point: Some(Time(Timestamp::UNIX_EPOCH)),
        last_successful_backup: Some(Time(Timestamp::UNIX_EPOCH)),
        last_archived_seq: Some(1),
        ..Default::default()
    };
    let b = plan::backup_status(&sc, &observed(Some(archive())), Some(&prev)).expect("status");
    assert_eq!(b.destination.as_deref(), Some("s3://b/c1"));
    assert_eq!(b.last_archived_seq, Some(90));
    assert_eq!(
        b.last_archived_time.as_ref().map(|t| t.0.as_millisecond()),
        Some(1_764_500_000_000)
    );
    assert_eq!(b.archive_lag_entries, Some(10));
    assert_eq!(b.archive_lag_seconds, Some(1.5));
    assert_eq!(b.first_recoverability_seq, Some(12));
    assert_eq!(
        b.first_recoverability_point,
        prev.first_recoverability_point
    );
    assert_eq!(b.last_successful_backup, prev.last_successful_backup);
    // The primary does not answer: as last seen.
    let b2 = plan::backup_status(&sc, &observed(None), Some(&b)).expect("status");
    assert_eq!(b2, b);
    // Without spec.backup: none.
    assert_eq!(
        plan::backup_status(&cluster(false), &observed(Some(archive())), Some(&b)),
        None
    );
}

#[test]
fn continuous_archiving_condition() {
    let sc = cluster(true);
    // Absent without spec.backup.
    assert_eq!(
        plan::check_archiving(&cluster(false), &observed(Some(archive()))),
        None
    );
    assert_eq!(plan::archiving_condition(&cluster(false), None, None), None);

    let ok = check(&sc, &observed(Some(archive())));
    assert_eq!((ok.status, ok.reason), ("True", archiving::ARCHIVING));
    assert!(ok.message.contains("demo-0") && ok.message.contains("s3://b/c1"));

    let failing = ArchiveStatus {
        last_error: Some("PUT s3://b/c1/wal/0000000091: 403 AccessDenied".into()),
        failing_since_ms: Some(1_764_500_000_000),
        ..archive()
    };
    let f = check(&sc, &observed(Some(failing.clone())));
    assert_eq!((f.status, f.reason), ("False", archiving::FAILING));
    assert!(f.message.contains("403 AccessDenied"), "{}", f.message);
    let since = Timestamp::from_millisecond(1_764_500_000_000)
        .expect("ts")
        .to_string();
    assert!(f.message.contains(&since), "{}", f.message);
    // The message does not move with the journal (no status write per write).
    let later = check(
        &sc,
        &observed(Some(ArchiveStatus {
            lag_entries: 500,
            lag_seconds: 60.0,
            archived_seq: 95,
            ..failing.clone()
        })),
    );
    assert_eq!(later, f);

    let gap = check(
        &sc,
        &observed(Some(ArchiveStatus {
            gap_before_seq: Some(77),
            ..archive()
        })),
    );
    assert_eq!((gap.status, gap.reason), ("False", archiving::GAP));
    assert!(gap.message.contains("seq 77"), "{}", gap.message);

    // A failure wins over a gap.
    let both = check(
        &sc,
        &observed(Some(ArchiveStatus {
            gap_before_seq: Some(77),
            ..failing
        })),
    );
    assert_eq!(both.reason, archiving::FAILING);

    let not = check(
        &sc,
        &observed(Some(ArchiveStatus {
            archiving: false,
            ..archive()
        })),
    );
    assert_eq!(
        (not.status, not.reason),
        ("Unknown", archiving::NOT_ARCHIVING)
    );

    // Nothing reported: Unknown on a first status, the previous condition kept after.
    let unknown = check(&sc, &observed(None));
    assert_eq!((unknown.status, unknown.observed), ("Unknown", false));
    let first = plan::archiving_condition(&sc, Some(&unknown), None).expect("condition");
    assert_eq!(
        (first.status.as_str(), first.reason.as_str()),
        ("Unknown", archiving::UNKNOWN)
    );
    let was = plan::archiving_condition(&sc, Some(&ok), None).expect("condition");
    assert_eq!(was.type_, conditions::CONTINUOUS_ARCHIVING);
    let kept = plan::archiving_condition(
        &sc,
        Some(&unknown),
        Some(&with_condition(Some(was.clone()))),
    )
    .expect("condition");
    assert_eq!(kept, was);

    // lastTransitionTime moves only with the status.
    let mut old = was.clone();
    old.last_transition_time = Time(Timestamp::UNIX_EPOCH);
    let prev = with_condition(Some(old.clone()));
    let same = plan::archiving_condition(&sc, Some(&ok), Some(&prev)).expect("condition");
    assert_eq!(same.last_transition_time, old.last_transition_time);
    let moved = plan::archiving_condition(&sc, Some(&f), Some(&prev)).expect("condition");
    assert_ne!(moved.last_transition_time, old.last_transition_time);
    assert_eq!(moved.observed_generation, Some(2));
}

#[test]
fn one_event_per_archiving_transition() {
    let sc = cluster(true);
    let ok = check(&sc, &observed(Some(archive())));
    let failing = check(
        &sc,
        &observed(Some(ArchiveStatus {
            last_error: Some("timeout".into()),
            ..archive()
        })),
    );
    let gap = check(
        &sc,
        &observed(Some(ArchiveStatus {
            gap_before_seq: Some(5),
            ..archive()
        })),
    );
    let cond = |c: &ArchivingCheck| plan::archiving_condition(&sc, Some(c), None);
    let status = |c: &ArchivingCheck| with_condition(cond(c));

    // True → False: Warning with the reason.
    let ev = plan::archiving_event(Some(&status(&ok)), Some(&failing)).expect("event");
    assert!(ev.warning);
    assert_eq!(ev.reason, archiving::FAILING);
    assert!(ev.note.contains("timeout"));
    // First status already failing: Warning too.
    assert!(plan::archiving_event(None, Some(&failing)).is_some_and(|e| e.warning));
    // Still failing: nothing; failing for another reason: a new one.
    assert_eq!(
        plan::archiving_event(Some(&status(&failing)), Some(&failing)),
        None
    );
    assert_eq!(
        plan::archiving_event(Some(&status(&failing)), Some(&gap)).map(|e| e.reason),
        Some(archiving::GAP)
    );
    // False → True: Normal.
    let ev = plan::archiving_event(Some(&status(&failing)), Some(&ok)).expect("event");
    assert!(!ev.warning);
    assert_eq!(ev.reason, archiving::EVENT_RECOVERED);
    // True → True, first True, or not observed: nothing.
    assert_eq!(plan::archiving_event(Some(&status(&ok)), Some(&ok)), None);
    assert_eq!(plan::archiving_event(None, Some(&ok)), None);
    let unknown = check(&sc, &observed(None));
    assert_eq!(
        plan::archiving_event(Some(&status(&ok)), Some(&unknown)),
        None
    );
    assert_eq!(plan::archiving_event(Some(&status(&ok)), None), None);
}

#[test]
fn archive_progress_alone_is_rate_limited_like_positions() {
    let a = StudioClusterStatus {
        backup: Some(BackupStatus {
            destination: Some("s3://b/c1".into()),
            last_archived_seq: Some(90),
            archive_lag_entries: Some(10),
            archive_lag_seconds: Some(1.5),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut b = a.clone();
    if let Some(x) = &mut b.backup {
        x.last_archived_seq = Some(95);
        x.last_archived_time = Some(Time(Timestamp::UNIX_EPOCH));
        x.archive_lag_entries = Some(0);
        x.archive_lag_seconds = Some(0.0);
    }
    assert!(plan::same_but_positions(&a, &b));
    let mut c = b.clone();
    if let Some(x) = &mut c.backup {
        x.destination = Some("s3://b/c2".into());
    }
    assert!(!plan::same_but_positions(&a, &c));
}

fn restoring(phase: RestorePhase, message: &str) -> Observed {
    let mut n = node("demo-0", NodeRole::Replica);
    n.cluster_id = None;
    n.restore = Some(RestoreStatus {
        phase,
        message: message.into(),
        backup_id: Some("b-1".into()),
        restored_seq: 4200,
    });
    Observed {
        members: vec![
            member("demo-0", NodeRole::Replica, Some(n)),
            member("demo-1", NodeRole::Replica, None),
        ],
        sts_replicas: Some(2),
        ..Default::default()
    }
}

fn ready(conds: &[Condition]) -> &Condition {
    conds
        .iter()
        .find(|c| c.type_ == conditions::READY)
        .expect("Ready")
}

fn conditions_of(sc: &StudioCluster, p: &plan::Plan) -> Vec<Condition> {
    let mut c = plan::cluster_conditions(sc, p.phase, &p.message, Some(&p.write_quorum), None);
    if let Some(r) = p.reason {
        plan::override_reason(&mut c, r, &p.message);
    }
    c
}

#[test]
fn a_restore_shows_in_the_phase_and_conditions() {
    let sc = cluster(true);
    // Running: still Creating, Progressing with reason Restoring.
    let obs = restoring(RestorePhase::Running, "downloading base backup");
    let p = plan::plan(&sc, &obs);
    assert_eq!(p.phase, Phase::Creating);
    assert_eq!(p.reason, Some(restore::RESTORING));
    assert!(
        p.message.contains("demo-0") && p.message.contains("b-1"),
        "{}",
        p.message
    );
    let c = conditions_of(&sc, &p);
    let progressing = c
        .iter()
        .find(|c| c.type_ == conditions::PROGRESSING)
        .expect("Progressing");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("True", restore::RESTORING)
    );
    assert_eq!(ready(&c).reason, restore::RESTORING);
    let ev = plan::reason_event(None, &p, plan::check_restore(&obs).as_ref()).expect("event");
    assert_eq!((ev.warning, ev.reason), (false, restore::RESTORING));
    let prev = StudioClusterStatus {
        conditions: c.clone(),
        ..Default::default()
    };
    assert_eq!(
        plan::reason_event(Some(&prev), &p, plan::check_restore(&obs).as_ref()),
        None,
        "once"
    );

    // Failed: Ready False RestoreFailed with the node's message, Stalled, Warning.
    let obs = restoring(
        RestorePhase::Failed,
        "target time 2026-11-29T22:30:00Z is before the oldest base backup",
    );
    let p = plan::plan(&sc, &obs);
    assert_eq!(p.phase, Phase::Invalid);
    assert_eq!(p.reason, Some(restore::FAILED));
    let c = conditions_of(&sc, &p);
    let r = ready(&c);
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", restore::FAILED)
    );
    assert!(r.message.contains("before the oldest base backup") && r.message.contains("demo-0"));
    let stalled = c
        .iter()
        .find(|c| c.type_ == conditions::STALLED)
        .expect("Stalled");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", restore::FAILED)
    );
    let ev =
        plan::reason_event(Some(&prev), &p, plan::check_restore(&obs).as_ref()).expect("event");
    assert_eq!((ev.warning, ev.reason), (true, restore::FAILED));

    // Completed after Restoring: Normal RestoreCompleted, the plan as usual.
    let obs = restoring(RestorePhase::Completed, "");
    let p = plan::plan(&sc, &obs);
    assert_eq!(p.reason, None);
    let check = plan::check_restore(&obs);
    assert!(matches!(check, Some(RestoreCheck::Completed { .. })));
    let ev = plan::reason_event(Some(&prev), &p, check.as_ref()).expect("event");
    assert_eq!((ev.warning, ev.reason), (false, restore::EVENT_COMPLETED));
    assert!(ev.note.contains("4200"));
    // No restore reported: nothing changes.
    let p = plan::plan(&sc, &observed(Some(archive())));
    assert_eq!(p.reason, None);
    assert_eq!(plan::check_restore(&observed(Some(archive()))), None);
}

#[test]
fn a_recovery_source_not_ready_is_announced_per_message() {
    let sc = cluster(true);
    let mut p = plan::plan(&sc, &restoring(RestorePhase::Running, ""));
    p.reason = Some(restore::SOURCE_NOT_READY);
    p.message =
        "spec.bootstrap.recovery.backup: StudioBackup nightly is Running, not Completed yet".into();
    let ev = plan::reason_event(None, &p, None).expect("event");
    assert_eq!((ev.warning, ev.reason), (true, restore::SOURCE_NOT_READY));
    let prev = StudioClusterStatus {
        conditions: conditions_of(&sc, &p),
        ..Default::default()
    };
    assert_eq!(ready(&prev.conditions).reason, restore::SOURCE_NOT_READY);
    assert_eq!(plan::reason_event(Some(&prev), &p, None), None);
    p.message =
        "spec.bootstrap.recovery.backup: StudioBackup nightly not found in this namespace".into();
    assert!(plan::reason_event(Some(&prev), &p, None).is_some());
}
