//! The `WriteQuorum` condition from what the members report: True only with exactly
//! one writable primary that can acknowledge writes; False with a reason and a message
//! naming the members that are not connected; Ready False (and the phase not Ready)
//! while it is False; one Event per transition, decided from the previous status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use studio_crds::node_api::{ClusterStatus, NodeRole, WriteQuorumStatus};
use studio_crds::{Phase, StudioCluster, StudioClusterStatus, conditions, write_quorum};
use studio_operator::plan::{self, Member, Observed, WriteQuorumCheck, WriteQuorumReason};

/// `demo`: 3 data nodes + arbiter, `replication: {mode: sync, syncReplicas: 2}`.
fn sync_cluster() -> StudioCluster {
    serde_yaml::from_str(
        "apiVersion: studio.cms.io/v1alpha1\nkind: StudioCluster\nmetadata: {name: demo, namespace: cms, uid: u1, generation: 2}\nspec: {nodes: 3, image: studio-node:1, arbiter: {enabled: true}, replication: {mode: sync, syncReplicas: 2}}\n",
    )
    .expect("cluster yaml")
}

fn async_cluster() -> StudioCluster {
    serde_yaml::from_str(
        "apiVersion: studio.cms.io/v1alpha1\nkind: StudioCluster\nmetadata: {name: demo, namespace: cms, uid: u1, generation: 2}\nspec: {nodes: 3, image: studio-node:1}\n",
    )
    .expect("cluster yaml")
}

fn node(name: &str, role: NodeRole, read_only: bool, mode: &str) -> ClusterStatus {
    ClusterStatus {
        cluster_id: Some("c1".into()),
        node_id: name.into(),
        role,
        term: 3,
        seq: 100,
        last_term: 3,
        read_only,
        primary: None,
        replication_mode: mode.into(),
        sync_replicas: if mode == "sync" { 2 } else { 0 },
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

fn quorum(needed: u32, connected: &[&str], unavailable_for_ms: u64) -> WriteQuorumStatus {
    WriteQuorumStatus {
        needed,
        connected: connected.iter().map(|s| s.to_string()).collect(),
        available: connected.len() as u32 >= needed,
        unavailable_for_ms,
    }
}

fn member(name: &str, status: Option<ClusterStatus>) -> Member {
    let arbiter = name.contains("arbiter");
    let role_label = status.as_ref().map(|s| match s.role {
        NodeRole::Primary => "primary".to_string(),
        NodeRole::Replica => "replica".to_string(),
        NodeRole::Arbiter => "arbiter".to_string(),
    });
    Member {
        name: name.into(),
        ordinal: if arbiter {
            None
        } else {
            name.strip_prefix("demo-").and_then(|o| o.parse().ok())
        },
        arbiter,
        role_label,
        ready: true,
        terminating: false,
        ip: Some("10.0.0.1".into()),
        revision: Some("r1".into()),
        node: status,
    }
}

/// demo-0 primary (sync, with `q`), demo-1 and demo-2 replicas, demo-arbiter-0.
fn sync_members(q: Option<WriteQuorumStatus>) -> Observed {
    let mut primary = node("demo-0", NodeRole::Primary, false, "sync");
    primary.write_quorum = q;
    Observed {
        members: vec![
            member("demo-0", Some(primary)),
            member(
                "demo-1",
                Some(node("demo-1", NodeRole::Replica, true, "sync")),
            ),
            member(
                "demo-2",
                Some(node("demo-2", NodeRole::Replica, true, "sync")),
            ),
            member(
                "demo-arbiter-0",
                Some(node("demo-arbiter-0", NodeRole::Arbiter, true, "sync")),
            ),
        ],
        sts_replicas: Some(3),
        update_revision: Some("r1".into()),
        arbiter_update_revision: Some("r1".into()),
        lease_holder: Some("demo-0".into()),
        had_primary: true,
        prev_phase: Some(Phase::Ready),
        ..Default::default()
    }
}

fn find<'a>(c: &'a [Condition], t: &str) -> &'a Condition {
    c.iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no {t} condition in {c:?}"))
}

/// The status the controller would write for `obs` after `prev`.
fn status_after(
    sc: &StudioCluster,
    obs: &Observed,
    prev: Option<&StudioClusterStatus>,
) -> StudioClusterStatus {
    let p = plan::plan(sc, obs);
    StudioClusterStatus {
        phase: Some(p.phase),
        message: Some(p.message.clone()),
        conditions: plan::cluster_conditions(sc, p.phase, &p.message, Some(&p.write_quorum), prev),
        current_primary: obs.primary().map(|m| m.name.clone()),
        members: plan::member_statuses_with(obs, Some(&p.write_quorum)),
        ..Default::default()
    }
}

#[test]
fn a_sync_primary_with_its_quorum_is_writable_and_ready() {
    let sc = sync_cluster();
    let obs = sync_members(Some(quorum(2, &["demo-1", "demo-arbiter-0"], 0)));
    let p = plan::plan(&sc, &obs);
    assert_eq!(p.write_quorum.reason, WriteQuorumReason::Writable);
    assert!(p.write_quorum.ok());
    assert_eq!(p.phase, Phase::Ready, "{}", p.message);
    let st = status_after(&sc, &obs, None);
    assert_eq!(find(&st.conditions, conditions::READY).status, "True");
    let wq = find(&st.conditions, conditions::WRITE_QUORUM);
    assert_eq!(
        (wq.status.as_str(), wq.reason.as_str()),
        ("True", "WritablePrimary")
    );
    assert_eq!(wq.observed_generation, Some(2));
    // Per member: connected to the primary's quorum or not; nothing for the primary.
    let connected: Vec<(String, Option<bool>)> = st
        .members
        .iter()
        .map(|m| (m.name.clone(), m.quorum_connected))
        .collect();
    assert_eq!(
        connected,
        vec![
            ("demo-0".to_string(), None),
            ("demo-1".to_string(), Some(true)),
            ("demo-2".to_string(), Some(false)),
            ("demo-arbiter-0".to_string(), Some(true)),
        ]
    );
}

#[test]
fn an_async_primary_or_one_that_reports_no_quorum_is_writable() {
    let sc = async_cluster();
    let mut obs = sync_members(None);
    for m in &mut obs.members {
        if let Some(n) = m.node.as_mut() {
            n.replication_mode = "async".into();
        }
    }
    obs.members.pop();
    let p = plan::plan(&sc, &obs);
    assert!(p.write_quorum.ok(), "{}", p.write_quorum.message);
    assert!(p.write_quorum.message.contains("async"));
    assert_eq!(p.phase, Phase::Ready);
    // Async: no per-member quorum column.
    assert!(
        plan::member_statuses_with(&obs, Some(&p.write_quorum))
            .iter()
            .all(|m| m.quorum_connected.is_none())
    );

    // A sync primary of a node version that does not report its quorum: not judged.
    let obs = sync_members(None);
    let q = plan::check_write_quorum(&sync_cluster(), &obs);
    assert!(q.ok(), "{}", q.message);
    assert!(q.message.contains("not reported"), "{}", q.message);
}

#[test]
fn a_primary_without_its_quorum_is_not_ready_and_names_the_missing_members() {
    let sc = sync_cluster();
    let obs = sync_members(Some(quorum(2, &["demo-1"], 12_400)));
    let p = plan::plan(&sc, &obs);
    let q = &p.write_quorum;
    assert_eq!(q.reason, WriteQuorumReason::QuorumUnavailable);
    assert_eq!(
        q.message,
        "primary demo-0 needs 2 connected replica(s) for sync writes, 1 connected; not connected: demo-2, demo-arbiter-0 (for 12s)"
    );
    // The phase does not say healthy; it says why.
    assert_eq!(p.phase, Phase::Degraded);
    assert_eq!(p.message, q.message);

    let st = status_after(&sc, &obs, None);
    let ready = find(&st.conditions, conditions::READY);
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, write_quorum::READY_REASON);
    assert!(
        ready
            .message
            .contains("not connected: demo-2, demo-arbiter-0"),
        "{}",
        ready.message
    );
    assert_eq!(find(&st.conditions, conditions::DEGRADED).status, "True");
    assert_eq!(find(&st.conditions, conditions::STALLED).status, "False");
    let wq = find(&st.conditions, conditions::WRITE_QUORUM);
    assert_eq!(
        (wq.status.as_str(), wq.reason.as_str()),
        ("False", "QuorumUnavailable")
    );
    assert_eq!(wq.message, q.message);
    let in_quorum: Vec<Option<bool>> = st.members.iter().map(|m| m.quorum_connected).collect();
    assert_eq!(in_quorum, vec![None, Some(true), Some(false), Some(false)]);
}

#[test]
fn a_member_without_a_pod_is_named_as_not_connected() {
    let sc = sync_cluster();
    let mut obs = sync_members(Some(quorum(2, &["demo-1"], 65_000)));
    obs.members.retain(|m| m.name != "demo-arbiter-0");
    let q = plan::check_write_quorum(&sc, &obs);
    assert!(
        q.message
            .ends_with("not connected: demo-2, demo-arbiter-0 (for 1m05s)"),
        "{}",
        q.message
    );
}

#[test]
fn no_member_reporting_a_writable_primary_is_no_writable_primary() {
    let sc = sync_cluster();
    // The Lease holder is fenced (read-only), demo-2 does not answer.
    let mut obs = sync_members(None);
    if let Some(n) = obs.members[0].node.as_mut() {
        n.read_only = true;
    }
    obs.members[2].node = None;
    let p = plan::plan(&sc, &obs);
    let q = &p.write_quorum;
    assert_eq!(q.reason, WriteQuorumReason::NoWritablePrimary);
    assert!(q.message.contains("Lease holder demo-0"), "{}", q.message);
    assert!(
        q.message.contains("demo-0 primary (read-only"),
        "{}",
        q.message
    );
    assert!(q.message.contains("demo-2 not answering"), "{}", q.message);
    assert_ne!(p.phase, Phase::Ready);
    let st = status_after(&sc, &obs, None);
    assert_eq!(find(&st.conditions, conditions::READY).status, "False");
    let wq = find(&st.conditions, conditions::WRITE_QUORUM);
    assert_eq!(
        (wq.status.as_str(), wq.reason.as_str()),
        ("False", "NoWritablePrimary")
    );

    // Nobody answers at all: the operator cannot see a writable primary either.
    let mut obs = sync_members(None);
    for m in &mut obs.members {
        m.node = None;
    }
    let q = plan::check_write_quorum(&sc, &obs);
    assert_eq!(q.reason, WriteQuorumReason::NoWritablePrimary);
}

#[test]
fn two_writable_primaries_are_reported_as_such() {
    let sc = sync_cluster();
    let mut obs = sync_members(Some(quorum(2, &["demo-1", "demo-arbiter-0"], 0)));
    let mut second = node("demo-2", NodeRole::Primary, false, "sync");
    second.term = 4;
    obs.members[2].node = Some(second);
    let p = plan::plan(&sc, &obs);
    let q = &p.write_quorum;
    assert_eq!(q.reason, WriteQuorumReason::MultiplePrimaries);
    assert!(
        q.message.contains("demo-0 (term 3), demo-2 (term 4)"),
        "{}",
        q.message
    );
    assert!(q.message.contains("should never happen"), "{}", q.message);
    assert_eq!(p.phase, Phase::Degraded);
    let st = status_after(&sc, &obs, None);
    assert_eq!(find(&st.conditions, conditions::READY).status, "False");
    assert_eq!(
        find(&st.conditions, conditions::WRITE_QUORUM).reason,
        "MultiplePrimaries"
    );
}

#[test]
fn an_operation_under_way_keeps_its_phase_but_ready_says_why_no_write_succeeds() {
    let sc = sync_cluster();
    // Rolling upgrade: the restarted pod is the one the quorum misses.
    let mut obs = sync_members(Some(quorum(2, &["demo-1"], 3_000)));
    obs.update_revision = Some("r2".into());
    obs.members[2].ready = false;
    let p = plan::plan(&sc, &obs);
    assert_eq!(p.phase, Phase::Upgrading);
    let st = status_after(&sc, &obs, None);
    let ready = find(&st.conditions, conditions::READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", write_quorum::READY_REASON)
    );
    assert_eq!(find(&st.conditions, conditions::DEGRADED).status, "True");
    assert_eq!(find(&st.conditions, conditions::PROGRESSING).status, "True");

    // A new cluster whose first primary waits for its replicas: creating, not degraded.
    let mut obs = sync_members(Some(quorum(2, &[], 1_000)));
    obs.had_primary = false;
    obs.prev_phase = None;
    for m in obs.members.iter_mut().skip(1) {
        m.ready = false;
    }
    let p = plan::plan(&sc, &obs);
    assert_eq!(p.phase, Phase::Creating);
    let st = status_after(&sc, &obs, None);
    assert_eq!(find(&st.conditions, conditions::READY).status, "False");
    assert_eq!(find(&st.conditions, conditions::DEGRADED).status, "False");
    assert_eq!(
        find(&st.conditions, conditions::WRITE_QUORUM).status,
        "False"
    );
}

#[test]
fn an_invalid_spec_keeps_the_last_observed_write_quorum() {
    let sc = sync_cluster();
    let obs = sync_members(Some(quorum(2, &["demo-1"], 3_000)));
    let prev = status_after(&sc, &obs, None);
    let c = plan::conditions_for(&sc, Phase::Invalid, "bad", Some(&prev));
    assert_eq!(
        find(&c, conditions::WRITE_QUORUM),
        find(&prev.conditions, conditions::WRITE_QUORUM)
    );
    assert_eq!(find(&c, conditions::READY).status, "False");
}

/// Feeds observations in order, as successive reconciles writing their status, and
/// returns the Events emitted (reason).
fn events_over(
    sc: &StudioCluster,
    start: Option<StudioClusterStatus>,
    steps: &[Observed],
) -> Vec<&'static str> {
    let mut prev = start;
    let mut out = vec![];
    for obs in steps {
        let p = plan::plan(sc, obs);
        if let Some(ev) = plan::write_quorum_event(prev.as_ref(), &p.write_quorum) {
            assert_eq!(ev.warning, ev.reason == write_quorum::EVENT_LOST);
            assert!(ev.note.contains(&p.write_quorum.message), "{}", ev.note);
            out.push(ev.reason);
        }
        prev = Some(status_after(sc, obs, prev.as_ref()));
    }
    out
}

#[test]
fn one_event_per_transition() {
    let sc = sync_cluster();
    let ok = || sync_members(Some(quorum(2, &["demo-1", "demo-2"], 0)));
    let lost = |ms| sync_members(Some(quorum(2, &["demo-1"], ms)));
    let no_primary = || {
        let mut o = ok();
        o.members[0].node = None;
        o
    };
    let healthy = status_after(&sc, &ok(), None);

    // Lost once (however long it lasts, whatever the reason becomes), restored once.
    let events = events_over(
        &sc,
        Some(healthy.clone()),
        &[
            ok(),
            lost(1_000),
            lost(4_000),
            no_primary(),
            lost(10_000),
            ok(),
            ok(),
            lost(500),
            ok(),
        ],
    );
    assert_eq!(
        events,
        vec![
            write_quorum::EVENT_LOST,
            write_quorum::EVENT_RESTORED,
            write_quorum::EVENT_LOST,
            write_quorum::EVENT_RESTORED,
        ]
    );

    // An operator restart reads the condition it wrote: nothing is announced again.
    let down = status_after(&sc, &lost(1_000), Some(&healthy));
    assert!(events_over(&sc, Some(down.clone()), &[lost(9_000)]).is_empty());
    assert!(events_over(&sc, Some(healthy.clone()), &[ok()]).is_empty());

    // A status written before the condition existed, on a cluster that had a primary:
    // the loss is announced; being fine is not.
    let mut old = healthy.clone();
    old.conditions
        .retain(|c| c.type_ != conditions::WRITE_QUORUM);
    assert_eq!(
        events_over(&sc, Some(old.clone()), &[lost(1_000)]),
        vec![write_quorum::EVENT_LOST]
    );
    assert!(events_over(&sc, Some(old), &[ok()]).is_empty());

    // A brand-new cluster: no Event before its first primary, none when it comes.
    let mut creating = ok();
    creating.had_primary = false;
    creating.lease_holder = None;
    for m in &mut creating.members {
        m.node = None;
        m.role_label = None;
    }
    assert!(events_over(&sc, None, &[creating.clone(), creating, ok()]).is_empty());
}

#[test]
fn the_growing_duration_alone_does_not_rewrite_the_status() {
    let sc = sync_cluster();
    let a = status_after(
        &sc,
        &sync_members(Some(quorum(2, &["demo-1"], 2_000))),
        None,
    );
    let b = status_after(
        &sc,
        &sync_members(Some(quorum(2, &["demo-1"], 7_000))),
        Some(&a),
    );
    assert_ne!(a, b);
    assert!(plan::same_but_positions(&a, &b));
    // Another member missing is news.
    let c = status_after(&sc, &sync_members(Some(quorum(2, &[], 7_000))), Some(&a));
    assert!(!plan::same_but_positions(&a, &c));
    // So is the quorum coming back.
    let d = status_after(
        &sc,
        &sync_members(Some(quorum(2, &["demo-1", "demo-2"], 0))),
        Some(&a),
    );
    assert!(!plan::same_but_positions(&a, &d));
}

#[test]
fn the_check_is_plain_data() {
    // The controller requeues quickly while writes fail; the check says so by itself.
    let q = WriteQuorumCheck {
        reason: WriteQuorumReason::NoWritablePrimary,
        message: "x".into(),
        primary: None,
        connected: None,
    };
    assert!(!q.ok());
    assert_eq!(q.status(), "False");
    assert_eq!(q.reason.as_str(), write_quorum::NO_WRITABLE_PRIMARY);
}
