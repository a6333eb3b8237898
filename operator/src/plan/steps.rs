//! The disruptive steps a plan may take: a user's switchover, and the next step of a
//! rolling upgrade (with the candidate a switchover goes to).

use super::*;
use studio_crds::UpgradeKind;

pub(super) fn user_switchover(
    obs: &Observed,
    primary: Option<&str>,
    target: &str,
    desired: i32,
) -> Step {
    let reject = |why: String| Step::RejectSwitchover {
        target: target.to_string(),
        why,
    };
    let Some(m) = obs.member(target) else {
        return reject(format!("{target} is not a pod of this cluster"));
    };
    if m.arbiter {
        return reject(format!(
            "{target} is the arbiter, which never becomes primary"
        ));
    }
    if m.ordinal.map(|o| o >= desired).unwrap_or(true) {
        return reject(format!("{target} is being scaled away"));
    }
    if primary == Some(target) {
        return Step::SwitchoverDone {
            target: target.to_string(),
        };
    }
    if !m.ready || m.terminating {
        return reject(format!("{target} is not ready"));
    }
    match primary {
        Some(p) => Step::Switchover {
            from: p.to_string(),
            to: target.to_string(),
            reason: Reason::User,
        },
        None => reject("there is no primary to hand over from".into()),
    }
}

/// The best replica to take over: ready, not terminating, up to date when possible,
/// most advanced journal, then lowest ordinal.
pub(super) fn best_candidate(
    obs: &Observed,
    allowed: impl Fn(&Member) -> bool,
    exclude: Option<&str>,
) -> Option<String> {
    let mut c: Vec<&Member> = obs
        .data()
        .filter(|m| {
            m.ready
                && !m.terminating
                && Some(m.name.as_str()) != exclude
                && allowed(m)
                && obs.caught_up(m)
        })
        .collect();
    c.sort_by(|a, b| {
        let key = |m: &Member| {
            (
                std::cmp::Reverse(obs.up_to_date(m)),
                std::cmp::Reverse(m.position().map(|(s, t)| (t, s))),
                m.ordinal,
            )
        };
        key(a).cmp(&key(b))
    });
    c.first().map(|m| m.name.clone())
}

/// Rolling upgrade with OnDelete: replicas (and the arbiter) one at a time, each ready
/// and caught up before the next, then a switchover to an upgraded replica, then the
/// old primary. `supervised` stops before the switchover.
pub(super) fn upgrade_step(
    sc: &StudioCluster,
    obs: &Observed,
    primary: Option<&str>,
) -> (Option<Step>, Option<Phase>, String) {
    let outdated: Vec<&Member> = obs.members.iter().filter(|m| !obs.up_to_date(m)).collect();
    let upgrading = Some(Phase::Upgrading);
    // A stale `updateRevision` would name only part of the outdated pods: an offline
    // upgrade would then restart the data pods without the arbiter and run two
    // revisions side by side. Wait for the StatefulSet controller first.
    if obs.templates_pending {
        let phase = (!outdated.is_empty()).then_some(Phase::Upgrading);
        return (
            None,
            phase,
            "upgrade: waiting for the StatefulSets to take the new template".into(),
        );
    }
    if outdated.is_empty() {
        return (None, None, String::new());
    }
    if obs.upgrade_kind == Some(UpgradeKind::Offline) {
        return offline_upgrade_step(sc, obs, &outdated);
    }
    // One at a time: wait while any member is restarting, not ready, or behind.
    if let Some(m) = obs.members.iter().find(|m| m.terminating || !m.ready) {
        return (
            None,
            upgrading,
            format!("upgrade: waiting for {} to be ready", m.name),
        );
    }
    if let Some(m) = obs.members.iter().find(|m| !obs.caught_up(m)) {
        return (
            None,
            upgrading,
            format!("upgrade: waiting for {} to catch up", m.name),
        );
    }
    // Replicas and arbiter first, highest ordinal first (arbiter last).
    let mut others: Vec<&&Member> = outdated
        .iter()
        .filter(|m| Some(m.name.as_str()) != primary)
        .collect();
    others.sort_by_key(|m| (m.arbiter, std::cmp::Reverse(m.ordinal)));
    if let Some(m) = others.first() {
        if m.looks_primary() {
            // Just switched away from: wait until it has dropped the primary role.
            return (
                None,
                upgrading,
                format!("upgrade: waiting for {} to drop the primary role", m.name),
            );
        }
        return (
            Some(Step::RestartPod {
                name: m.name.clone(),
                primary: false,
            }),
            upgrading,
            format!("upgrade: restarting {} on the new revision", m.name),
        );
    }
    let Some(p) = primary else {
        return (None, upgrading, "upgrade: waiting for a primary".into());
    };
    if waits_for_approval(sc) {
        return (
            None,
            Some(Phase::WaitingForUser),
            format!(
                "upgrade: replicas upgraded; primary {p} waits for a switchover (kubectl studio promote) or the {} annotation",
                annotations::APPROVE_PRIMARY_UPDATE
            ),
        );
    }
    match best_candidate(obs, |m| obs.up_to_date(m), Some(p)) {
        Some(to) => (
            Some(Step::Switchover {
                from: p.to_string(),
                to: to.clone(),
                reason: Reason::Upgrade,
            }),
            upgrading,
            format!("upgrade: switching the primary {p} over to {to}"),
        ),
        // A single node has nobody to hand over to: restart it in place.
        None if obs.data().count() == 1 => (
            Some(Step::RestartPod {
                name: p.to_string(),
                primary: true,
            }),
            upgrading,
            format!("upgrade: restarting the only node {p}"),
        ),
        None => (
            None,
            upgrading,
            format!("upgrade: no upgraded replica ready to take over from {p}"),
        ),
    }
}

/// `supervised` and the user has not approved (annotation) the disruptive step yet.
fn waits_for_approval(sc: &StudioCluster) -> bool {
    let approved = sc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::APPROVE_PRIMARY_UPDATE))
        .map(|v| v == "true")
        .unwrap_or(false);
    sc.spec.upgrades.primary_update_strategy == PrimaryUpdateStrategy::Supervised && !approved
}

/// Offline upgrade (an incompatible schema revision): every outdated member restarts
/// at once, so old and new revisions never run side by side; each migrates its own
/// data on start and the members elect a primary among themselves. Writes stop until
/// then. `supervised` waits for the approval annotation before stopping writes.
fn offline_upgrade_step(
    sc: &StudioCluster,
    obs: &Observed,
    outdated: &[&Member],
) -> (Option<Step>, Option<Phase>, String) {
    let upgrading = Some(Phase::Upgrading);
    if let Some(m) = obs.members.iter().find(|m| m.terminating) {
        return (
            None,
            upgrading,
            format!("offline upgrade: waiting for {} to stop", m.name),
        );
    }
    // The arbiter restarts with the data pods or the new primary would count the vote
    // of an old-revision arbiter.
    if obs.arbiter_sts_image.is_some() && obs.arbiter_sts_image != obs.sts_image {
        return (
            None,
            upgrading,
            "offline upgrade: waiting for the arbiter's StatefulSet to take the new image".into(),
        );
    }
    let started = outdated.len() < obs.members.len();
    if !started && waits_for_approval(sc) {
        return (
            None,
            Some(Phase::WaitingForUser),
            format!(
                "offline upgrade: writes stop while every member restarts; set the {} annotation to go ahead",
                annotations::APPROVE_PRIMARY_UPDATE
            ),
        );
    }
    let names: Vec<String> = outdated.iter().map(|m| m.name.clone()).collect();
    let msg = format!(
        "offline upgrade: restarting {} on the new revision (writes resume once a primary is elected)",
        names.join(", ")
    );
    (Some(Step::RestartAll { names }), upgrading, msg)
}
