//! Day-2 decisions from observed cluster states: scale-down never removes the primary
//! while it is primary, rolling upgrades go replicas → switchover → old primary,
//! supervised upgrades wait, user switchovers are validated, role labels are repaired
//! only when they disagree with the Lease.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use studio_crds::node_api::{ClusterStatus, NodeRole};
use studio_crds::{Phase, PrimaryUpdateStrategy, StudioCluster, UpgradeKind, annotations};
use studio_operator::plan::{self, LabelRepair, Member, Observed, Reason, Step};

fn cluster(nodes: i32) -> StudioCluster {
    let yaml = format!(
        "apiVersion: studio.cms.io/v1alpha1\nkind: StudioCluster\nmetadata: {{name: acme, namespace: cms, uid: u1, generation: 1}}\nspec: {{nodes: {nodes}, image: studio-node:1}}\n"
    );
    serde_yaml::from_str(&yaml).expect("cluster yaml")
}

fn annotate(mut sc: StudioCluster, k: &str, v: &str) -> StudioCluster {
    sc.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(k.into(), v.into());
    sc
}

fn status(role: NodeRole, seq: u64) -> ClusterStatus {
    ClusterStatus {
        cluster_id: Some("c1".into()),
        node_id: String::new(),
        role,
        term: 3,
        seq,
        last_term: 3,
        read_only: role != NodeRole::Primary,
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

fn member(i: i32, role: &str, rev: &str, seq: u64) -> Member {
    let node_role = if role == "primary" {
        NodeRole::Primary
    } else {
        NodeRole::Replica
    };
    Member {
        name: format!("acme-{i}"),
        ordinal: Some(i),
        arbiter: false,
        role_label: Some(role.into()),
        ready: true,
        terminating: false,
        ip: Some(format!("10.0.0.{}", i + 10)),
        revision: Some(rev.into()),
        node: Some(status(node_role, seq)),
    }
}

fn observed(members: Vec<Member>, replicas: i32, rev: &str, holder: Option<&str>) -> Observed {
    Observed {
        members,
        sts_replicas: Some(replicas),
        update_revision: Some(rev.into()),
        arbiter_update_revision: Some(rev.into()),
        lease_holder: holder.map(String::from),
        had_primary: true,
        prev_phase: None,
        sts_image: None,
        upgrade_kind: None,
        ..Default::default()
    }
}

fn healthy(n: i32, primary: i32) -> Observed {
    let members = (0..n)
        .map(|i| {
            member(
                i,
                if i == primary { "primary" } else { "replica" },
                "r1",
                100,
            )
        })
        .collect();
    observed(members, n, "r1", Some(&format!("acme-{primary}")))
}

#[test]
fn healthy_cluster_is_ready_and_left_alone() {
    let p = plan::plan(&cluster(3), &healthy(3, 0));
    assert_eq!(p.phase, Phase::Ready);
    assert_eq!(p.step, None);
    assert_eq!(p.data_replicas, 3);
    assert!(p.repairs.is_empty());
}

#[test]
fn new_cluster_waits_for_its_first_primary() {
    let mut obs = observed(vec![], 3, "r1", None);
    obs.sts_replicas = None;
    obs.had_primary = false;
    let p = plan::plan(&cluster(3), &obs);
    assert_eq!(p.phase, Phase::Creating);
    assert_eq!(p.data_replicas, 3);

    // First primary elected, other nodes still cloning: still creating, not degraded.
    let mut obs = healthy(3, 0);
    obs.had_primary = false;
    obs.members[2].ready = false;
    let p = plan::plan(&cluster(3), &obs);
    assert_eq!(p.phase, Phase::Creating);
    assert!(p.message.contains("2 of 3"), "{}", p.message);

    // The same after the cluster has run: degraded.
    obs.had_primary = true;
    let p = plan::plan(&cluster(3), &obs);
    assert_eq!(p.phase, Phase::Degraded);
}

#[test]
fn scale_up_applies_at_once() {
    let p = plan::plan(&cluster(5), &healthy(3, 0));
    assert_eq!(p.data_replicas, 5);
    assert_eq!(p.phase, Phase::Scaling);
    assert_eq!(p.step, None);
}

#[test]
fn scale_down_keeps_the_primary_pod_until_it_is_switched_away() {
    // 5 → 2 while acme-4 is primary: replicas stay 5, switch over to acme-0/1 first.
    let mut obs = healthy(5, 4);
    obs.members[1].node = Some(status(NodeRole::Replica, 120));
    obs.members[0].node = Some(status(NodeRole::Replica, 90));
    let p = plan::plan(&cluster(2), &obs);
    assert_eq!(
        p.data_replicas, 5,
        "the primary's pod must not be removed while primary"
    );
    assert_eq!(
        p.step,
        Some(Step::Switchover {
            from: "acme-4".into(),
            to: "acme-1".into(),
            reason: Reason::ScaleDown
        }),
        "the most advanced remaining replica takes over"
    );
    assert_eq!(p.phase, Phase::Scaling);

    // Once acme-1 is primary the scale-down proceeds.
    let p = plan::plan(&cluster(2), &healthy(5, 1));
    assert_eq!(p.data_replicas, 2);
    assert_eq!(p.step, None);
}

#[test]
fn scale_down_waits_when_no_remaining_replica_can_take_over() {
    let mut obs = healthy(3, 2);
    obs.members[0].ready = false;
    let p = plan::plan(&cluster(1), &obs);
    assert_eq!(p.data_replicas, 3);
    assert_eq!(p.step, None);
    assert!(p.message.contains("waits"), "{}", p.message);
}

#[test]
fn rolling_upgrade_restarts_replicas_one_at_a_time_then_switches_over() {
    // New revision r2: replicas first, highest ordinal first.
    let obs = observed(
        vec![
            member(0, "primary", "r1", 100),
            member(1, "replica", "r1", 100),
            member(2, "replica", "r1", 100),
        ],
        3,
        "r2",
        Some("acme-0"),
    );
    let p = plan::plan(&cluster(3), &obs);
    assert_eq!(
        p.step,
        Some(Step::RestartPod {
            name: "acme-2".into(),
            primary: false
        })
    );
    assert_eq!(p.phase, Phase::Upgrading);

    // acme-2 restarted but not ready yet: wait.
    let mut obs2 = obs.clone();
    obs2.members[2].revision = Some("r2".into());
    obs2.members[2].ready = false;
    let p = plan::plan(&cluster(3), &obs2);
    assert_eq!(p.step, None);
    assert!(p.message.contains("acme-2"), "{}", p.message);

    // acme-2 ready but far behind: wait for it to catch up.
    obs2.members[2].ready = true;
    obs2.members[2].node = Some(status(NodeRole::Replica, 100 - 100).clone());
    obs2.members[0].node = Some(status(NodeRole::Primary, 5000));
    let p = plan::plan(&cluster(3), &obs2);
    assert_eq!(p.step, None);
    assert!(p.message.contains("catch up"), "{}", p.message);

    // Caught up: next replica.
    obs2.members[2].node = Some(status(NodeRole::Replica, 5000));
    obs2.members[1].node = Some(status(NodeRole::Replica, 5000));
    let p = plan::plan(&cluster(3), &obs2);
    assert_eq!(
        p.step,
        Some(Step::RestartPod {
            name: "acme-1".into(),
            primary: false
        })
    );

    // All replicas upgraded: switch over to an upgraded replica, never restart the primary first.
    let mut obs3 = obs2.clone();
    obs3.members[1].revision = Some("r2".into());
    let p = plan::plan(&cluster(3), &obs3);
    match &p.step {
        Some(Step::Switchover { from, to, reason }) => {
            assert_eq!(from, "acme-0");
            assert!(to == "acme-1" || to == "acme-2");
            assert_eq!(*reason, Reason::Upgrade);
        }
        other => panic!("expected a switchover, got {other:?}"),
    }

    // After the switchover the old primary is an outdated replica: restart it.
    let mut obs4 = obs3.clone();
    obs4.members[0].role_label = Some("replica".into());
    obs4.members[0].node = Some(status(NodeRole::Replica, 5000));
    obs4.members[1].role_label = Some("primary".into());
    obs4.members[1].node = Some(status(NodeRole::Primary, 5000));
    obs4.lease_holder = Some("acme-1".into());
    let p = plan::plan(&cluster(3), &obs4);
    assert_eq!(
        p.step,
        Some(Step::RestartPod {
            name: "acme-0".into(),
            primary: false
        })
    );

    // Everything on r2: ready.
    let mut obs5 = obs4.clone();
    obs5.members[0].revision = Some("r2".into());
    let p = plan::plan(&cluster(3), &obs5);
    assert_eq!(p.step, None);
    assert_eq!(p.phase, Phase::Ready);
}

#[test]
fn supervised_upgrade_waits_for_the_user_before_touching_the_primary() {
    let mut sc = cluster(3);
    sc.spec.upgrades.primary_update_strategy = PrimaryUpdateStrategy::Supervised;
    let obs = observed(
        vec![
            member(0, "primary", "r1", 100),
            member(1, "replica", "r2", 100),
            member(2, "replica", "r2", 100),
        ],
        3,
        "r2",
        Some("acme-0"),
    );
    let p = plan::plan(&sc, &obs);
    assert_eq!(p.step, None);
    assert_eq!(p.phase, Phase::WaitingForUser);
    assert!(
        p.message.contains("kubectl studio promote"),
        "{}",
        p.message
    );

    // Approval lets the operator switch over.
    let sc = annotate(sc, annotations::APPROVE_PRIMARY_UPDATE, "true");
    let p = plan::plan(&sc, &obs);
    assert!(
        matches!(
            p.step,
            Some(Step::Switchover {
                reason: Reason::Upgrade,
                ..
            })
        ),
        "{:?}",
        p.step
    );
}

#[test]
fn an_offline_upgrade_restarts_every_member_together_never_one_by_one() {
    let mut obs = observed(
        vec![
            member(0, "primary", "r1", 100),
            member(1, "replica", "r1", 100),
            member(2, "replica", "r1", 100),
        ],
        3,
        "r2",
        Some("acme-0"),
    );
    obs.upgrade_kind = Some(UpgradeKind::Offline);
    let p = plan::plan(&cluster(3), &obs);
    assert_eq!(
        p.step,
        Some(Step::RestartAll {
            names: vec!["acme-0".into(), "acme-1".into(), "acme-2".into()]
        })
    );
    assert_eq!(p.phase, Phase::Upgrading);

    // While they stop: nothing more (no switchover to a member about to restart).
    let mut stopping = obs.clone();
    stopping.members[1].terminating = true;
    let p = plan::plan(&cluster(3), &stopping);
    assert_eq!(p.step, None);
    assert!(p.message.contains("acme-1"), "{}", p.message);

    // Supervised: writes stop only after the approval.
    let mut sc = cluster(3);
    sc.spec.upgrades.primary_update_strategy = PrimaryUpdateStrategy::Supervised;
    let p = plan::plan(&sc, &obs);
    assert_eq!((p.step, p.phase), (None, Phase::WaitingForUser));
    let sc = annotate(sc, annotations::APPROVE_PRIMARY_UPDATE, "true");
    assert!(matches!(
        plan::plan(&sc, &obs).step,
        Some(Step::RestartAll { .. })
    ));
}

/// A StatefulSet as the API returns it: `generation` bumped by the template change,
/// `observedGeneration`/`updateRevision` as far as its controller got.
fn statefulset(name: &str, image: &str, generation: i64, observed: i64, rev: &str) -> StatefulSet {
    let yaml = format!(
        "metadata: {{name: {name}, generation: {generation}}}\nspec: {{selector: {{}}, serviceName: x, template: {{spec: {{containers: [{{name: studio, image: {image}}}]}}}}}}\nstatus: {{replicas: 1, observedGeneration: {observed}, updateRevision: {rev}}}\n"
    );
    serde_yaml::from_str(&yaml).expect("statefulset yaml")
}

/// The race CI hit: the data StatefulSet's controller had seen the new template, the
/// arbiter's had not, so only the data pods looked outdated; restarting them without
/// the arbiter let a revision-2 primary count a revision-1 arbiter's vote.
#[test]
fn an_offline_upgrade_waits_until_every_statefulset_observed_the_new_template() {
    let mut arbiter = member(0, "replica", "a1", 100);
    arbiter.name = "acme-arbiter-0".into();
    arbiter.arbiter = true;
    let members = vec![
        member(0, "primary", "r1", 100),
        member(1, "replica", "r1", 100),
        member(2, "replica", "r1", 100),
        arbiter,
    ];
    let data = statefulset("acme", "studio-node:2", 2, 2, "r2");
    let stale = statefulset("acme-arbiter", "studio-node:2", 2, 1, "a1");
    let mut obs = Observed::new(&[], "acme").with_statefulsets(Some(&data), Some(&stale));
    obs.members = members;
    obs.lease_holder = Some("acme-0".into());
    obs.had_primary = true;
    obs.upgrade_kind = Some(UpgradeKind::Offline);
    let p = plan::plan(&cluster(3), &obs);
    assert_eq!((p.step, p.phase), (None, Phase::Upgrading), "{}", p.message);
    assert!(p.message.contains("new template"), "{}", p.message);

    // Once it has: every member, the arbiter too, in one step.
    let current = statefulset("acme-arbiter", "studio-node:2", 2, 2, "a2");
    let obs = Observed {
        members: obs.members.clone(),
        ..obs.clone().with_statefulsets(Some(&data), Some(&current))
    };
    let p = plan::plan(&cluster(3), &obs);
    assert_eq!(
        p.step,
        Some(Step::RestartAll {
            names: vec![
                "acme-0".into(),
                "acme-1".into(),
                "acme-2".into(),
                "acme-arbiter-0".into()
            ]
        })
    );

    // An arbiter template still on the old image (its apply failed): wait as well.
    let old = statefulset("acme-arbiter", "studio-node:1", 1, 1, "a1");
    let obs = obs.with_statefulsets(Some(&data), Some(&old));
    let p = plan::plan(&cluster(3), &obs);
    assert_eq!(p.step, None, "{}", p.message);
}

#[test]
fn single_node_upgrade_restarts_in_place() {
    let obs = observed(vec![member(0, "primary", "r1", 1)], 1, "r2", Some("acme-0"));
    let p = plan::plan(&cluster(1), &obs);
    assert_eq!(
        p.step,
        Some(Step::RestartPod {
            name: "acme-0".into(),
            primary: true
        })
    );
}

#[test]
fn user_switchover_is_validated() {
    let obs = healthy(3, 0);
    let sw = |target: &str| {
        plan::plan(
            &annotate(cluster(3), annotations::SWITCHOVER_TO, target),
            &obs,
        )
        .step
    };
    assert_eq!(
        sw("acme-2"),
        Some(Step::Switchover {
            from: "acme-0".into(),
            to: "acme-2".into(),
            reason: Reason::User
        })
    );
    assert_eq!(
        sw("acme-0"),
        Some(Step::SwitchoverDone {
            target: "acme-0".into()
        })
    );
    assert!(matches!(sw("acme-9"), Some(Step::RejectSwitchover { .. })));
    let mut obs_nr = obs.clone();
    obs_nr.members[1].ready = false;
    let p = plan::plan(
        &annotate(cluster(3), annotations::SWITCHOVER_TO, "acme-1"),
        &obs_nr,
    );
    match p.step {
        Some(Step::RejectSwitchover { why, .. }) => assert!(why.contains("not ready"), "{why}"),
        other => panic!("expected rejection, got {other:?}"),
    }
    // The arbiter never becomes primary.
    let mut with_arb = obs.clone();
    with_arb.members.push(Member {
        name: "acme-arbiter-0".into(),
        ordinal: None,
        arbiter: true,
        role_label: Some("arbiter".into()),
        ..member(9, "replica", "r1", 100)
    });
    let p = plan::plan(
        &annotate(cluster(3), annotations::SWITCHOVER_TO, "acme-arbiter-0"),
        &with_arb,
    );
    assert!(
        matches!(p.step, Some(Step::RejectSwitchover { .. })),
        "{:?}",
        p.step
    );
}

#[test]
fn stale_primary_label_is_repaired_to_agree_with_the_lease() {
    // acme-0 holds the Lease and reports primary; acme-1 still carries the primary label
    // but reports replica (e.g. relabelling was interrupted).
    let mut obs = healthy(3, 0);
    obs.members[1].role_label = Some("primary".into());
    assert_eq!(
        plan::label_repairs(&obs),
        vec![LabelRepair {
            pod: "acme-1".into(),
            role: "replica"
        }]
    );

    // The holder reports primary but lacks the label: label it.
    let mut obs = healthy(3, 0);
    obs.members[0].role_label = Some("replica".into());
    assert_eq!(
        plan::label_repairs(&obs),
        vec![LabelRepair {
            pod: "acme-0".into(),
            role: "primary"
        }]
    );

    // A stale Lease (holder restarted as replica) never makes the operator label it primary.
    let mut obs = healthy(3, 0);
    obs.members[0].role_label = Some("replica".into());
    obs.members[0].node = Some(status(NodeRole::Replica, 100));
    assert!(plan::label_repairs(&obs).is_empty());

    // Mid-election (a node that reports primary keeps its label) nothing is touched.
    let mut obs = healthy(3, 0);
    obs.members[1].role_label = Some("primary".into());
    obs.members[1].node = Some(status(NodeRole::Primary, 100));
    assert!(plan::label_repairs(&obs).is_empty());
}

#[test]
fn lost_primary_is_degraded_and_status_reports_members() {
    let mut obs = healthy(3, 0);
    obs.members.remove(0);
    obs.lease_holder = Some("acme-0".into());
    let p = plan::plan(&cluster(3), &obs);
    assert_eq!(p.phase, Phase::Degraded);

    let obs = healthy(3, 1);
    let mut obs = obs;
    obs.members[2].node = Some(status(NodeRole::Replica, 40));
    let ms = plan::member_statuses(&obs);
    assert_eq!(ms.len(), 3);
    assert_eq!(ms[1].role, "primary");
    assert_eq!(ms[2].lag, Some(60));
    assert_eq!(ms[2].seq, Some(40));
    assert!(ms.iter().all(|m| m.ready && m.up_to_date));
}

#[test]
fn paused_cluster_is_not_touched() {
    let mut sc = cluster(1);
    sc.spec.paused = true;
    let p = plan::plan(&sc, &healthy(3, 2));
    assert_eq!(p.phase, Phase::Paused);
    assert_eq!(p.data_replicas, 3);
    assert_eq!(p.step, None);
}

#[test]
fn priorities_must_name_data_pods() {
    let mut sc = cluster(3);
    sc.spec.election.priorities = Some(BTreeMap::from([("other-0".to_string(), 1)]));
    assert!(plan::validate(&sc).is_err());
    sc.spec.election.priorities = Some(BTreeMap::from([
        ("acme-0".to_string(), 0),
        ("acme-1".to_string(), 0),
        ("acme-2".to_string(), 0),
    ]));
    assert!(
        plan::validate(&sc)
            .expect_err("invalid")
            .contains("no data node")
    );
    sc.spec.election.priorities = Some(BTreeMap::from([("acme-0".to_string(), 0)]));
    assert!(plan::validate(&sc).is_ok());
}

#[test]
fn storage_sizes_compare_by_amount_not_spelling() {
    assert_eq!(plan::quantity_bytes("1Gi"), plan::quantity_bytes("1024Mi"));
    assert_eq!(plan::quantity_bytes("1G"), Some(1_000_000_000));
    assert_eq!(plan::quantity_bytes("1.5Gi"), Some(1_610_612_736));
    assert_eq!(plan::quantity_bytes("2e3"), Some(2000));
    assert!(plan::quantity_bytes("10Gi") > plan::quantity_bytes("9000Mi"));
    assert_eq!(plan::quantity_bytes("lots"), None);
}

#[test]
fn conditions_are_kstatus_compatible() {
    let sc = cluster(3);
    let find = |c: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], t: &str| {
        c.iter()
            .find(|c| c.type_ == t)
            .map(|c| c.status.clone())
            .unwrap_or_default()
    };
    let ready = plan::conditions_for(&sc, Phase::Ready, "ok", None);
    assert_eq!(find(&ready, "Ready"), "True");
    assert_eq!(find(&ready, "Reconciling"), "False");
    assert_eq!(find(&ready, "Stalled"), "False");
    let up = plan::conditions_for(&sc, Phase::Upgrading, "upgrading", None);
    assert_eq!(find(&up, "Progressing"), "True");
    assert_eq!(find(&up, "Reconciling"), "True");
    let bad = plan::conditions_for(&sc, Phase::Invalid, "bad", None);
    assert_eq!(find(&bad, "Stalled"), "True");
    assert_eq!(find(&bad, "Degraded"), "True");
    assert!(bad.iter().all(|c| c.observed_generation == Some(1)));

    // lastTransitionTime only moves when the status flips.
    let mut prev = studio_crds::StudioClusterStatus {
        conditions: ready.clone(),
        ..Default::default()
    };
    prev.conditions[0].last_transition_time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    );
    let again = plan::conditions_for(&sc, Phase::Ready, "still ok", Some(&prev));
    assert_eq!(
        again[0].last_transition_time,
        prev.conditions[0].last_transition_time
    );
    let flipped = plan::conditions_for(&sc, Phase::Degraded, "lost one", Some(&prev));
    assert_ne!(
        flipped[0].last_transition_time,
        prev.conditions[0].last_transition_time
    );
}

#[test]
fn a_lease_holder_that_reports_replica_is_not_a_writable_primary() {
    // After a failed hand-over: the Lease still names acme-0, which follows someone else.
    let mut obs = healthy(3, 0);
    obs.members[0].node = Some(status(NodeRole::Replica, 100));
    let p = plan::plan(&cluster(3), &obs);
    assert_eq!(p.phase, Phase::Degraded);
    assert!(p.message.contains("no writable primary"), "{}", p.message);
    assert!(p.message.contains("acme-0"), "{}", p.message);
}

#[test]
fn a_pod_still_labelled_primary_is_never_removed_or_restarted() {
    // Scale 5 → 2 right after the switchover: the Lease is on acme-0 but acme-4 still
    // carries the primary label (the new primary is relabelling it).
    let mut obs = healthy(5, 0);
    obs.members[4].role_label = Some("primary".into());
    obs.members[4].node = Some(status(NodeRole::Replica, 100));
    let p = plan::plan(&cluster(2), &obs);
    assert_eq!(p.data_replicas, 5, "{}", p.message);
    assert!(p.message.contains("acme-4"), "{}", p.message);
    obs.members[4].role_label = Some("replica".into());
    assert_eq!(plan::plan(&cluster(2), &obs).data_replicas, 2);

    // Upgrade right after the switchover: the old primary (outdated) still labelled.
    let mut obs = observed(
        vec![
            member(0, "primary", "r1", 100),
            member(1, "primary", "r2", 100),
            member(2, "replica", "r2", 100),
        ],
        3,
        "r2",
        Some("acme-1"),
    );
    obs.members[0].node = Some(status(NodeRole::Replica, 100));
    let p = plan::plan(&cluster(3), &obs);
    assert_eq!(p.step, None, "{}", p.message);
    obs.members[0].role_label = Some("replica".into());
    let p = plan::plan(&cluster(3), &obs);
    assert_eq!(
        p.step,
        Some(Step::RestartPod {
            name: "acme-0".into(),
            primary: false
        })
    );
}

#[test]
fn the_last_restart_of_an_upgrade_is_still_upgrading_not_degraded() {
    // The old primary was restarted on the new revision and is not ready yet.
    let mut obs = observed(
        vec![
            member(0, "replica", "r2", 100),
            member(1, "primary", "r2", 100),
            member(2, "replica", "r2", 100),
        ],
        3,
        "r2",
        Some("acme-1"),
    );
    obs.members[0].ready = false;
    obs.prev_phase = Some(Phase::Upgrading);
    assert_eq!(plan::plan(&cluster(3), &obs).phase, Phase::Upgrading);
    obs.prev_phase = Some(Phase::Ready);
    assert_eq!(plan::plan(&cluster(3), &obs).phase, Phase::Degraded);
}

#[test]
fn statuses_that_only_move_positions_are_recognised() {
    let obs = healthy(3, 0);
    let a = studio_crds::StudioClusterStatus {
        members: plan::member_statuses(&obs),
        ..Default::default()
    };
    let mut obs2 = obs.clone();
    obs2.members[1].node = Some(status(NodeRole::Replica, 150));
    let b = studio_crds::StudioClusterStatus {
        members: plan::member_statuses(&obs2),
        ..Default::default()
    };
    assert_ne!(a, b);
    assert!(plan::same_but_positions(&a, &b));
    let mut obs3 = obs.clone();
    obs3.members[1].ready = false;
    let c = studio_crds::StudioClusterStatus {
        members: plan::member_statuses(&obs3),
        ..Default::default()
    };
    assert!(
        !plan::same_but_positions(&a, &c),
        "readiness is not a position"
    );
}

#[test]
fn a_growing_quarantine_is_reported_once_per_growth() {
    let mut obs = healthy(3, 0);
    let before = plan::member_statuses(&obs);
    assert_eq!(before[1].quarantined, Some(0));
    assert!(plan::quarantine_growth(&before, &before).is_empty());
    if let Some(n) = obs.members[1].node.as_mut() {
        n.quarantined = 5;
    }
    let after = plan::member_statuses(&obs);
    assert_eq!(
        plan::quarantine_growth(&before, &after),
        vec![("acme-1".to_string(), 0, 5)]
    );
    // Unchanged since the last status: nothing new to report.
    assert!(plan::quarantine_growth(&after, &after).is_empty());
    // A status written before the field existed counts as zero.
    let mut old = before.clone();
    old[1].quarantined = None;
    assert_eq!(plan::quarantine_growth(&old, &after).len(), 1);
}

#[test]
fn the_newest_record_of_a_primary_change_wins() {
    let rec = |t: &str, to: &str| -> studio_crds::FailoverRecord {
        serde_json::from_value(serde_json::json!({"time": t, "to": to, "kind": "switchover"}))
            .expect("record")
    };
    let old = rec("2026-01-01T00:00:00Z", "acme-1");
    let new = rec("2026-01-01T00:00:05Z", "acme-2");
    // A stale cached status must not overwrite what the last update recorded.
    assert_eq!(
        plan::newest_failover(Some(old.clone()), Some(new.clone())),
        Some(new.clone())
    );
    assert_eq!(
        plan::newest_failover(Some(new.clone()), Some(old.clone())),
        Some(new.clone())
    );
    assert_eq!(
        plan::newest_failover(None, Some(old.clone())),
        Some(old.clone())
    );
    assert_eq!(plan::newest_failover(Some(old.clone()), None), Some(old));
    assert_eq!(plan::newest_failover(None, None), None);
}
