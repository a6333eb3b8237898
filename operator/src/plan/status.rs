//! What the plan writes into the StudioCluster's status: member lines, the
//! kstatus-compatible conditions, the newest failover record, quarantine growth, and
//! which changes are only journal positions (rate-limited).

use super::write_quorum_check::without_durations;
use super::*;

/// Member status lines for `status.members`.
pub fn member_statuses(obs: &Observed) -> Vec<studio_crds::MemberStatus> {
    member_statuses_with(obs, None)
}

/// Member status lines, with whether each member is connected to the write quorum of
/// the writable primary `wq` names (sync mode).
pub fn member_statuses_with(
    obs: &Observed,
    wq: Option<&WriteQuorumCheck>,
) -> Vec<studio_crds::MemberStatus> {
    let primary = obs.primary().map(|m| m.name.clone());
    obs.members
        .iter()
        .map(|m| {
            let quorum_connected = wq.and_then(|q| {
                let connected = q.connected.as_ref()?;
                (q.primary.as_ref() != Some(&m.name)).then(|| connected.contains(&m.name))
            });
            let role = if m.arbiter {
                roles::ARBITER.to_string()
            } else if Some(&m.name) == primary.as_ref() {
                roles::PRIMARY.to_string()
            } else if let Some(r) = &m.role_label {
                r.clone()
            } else {
                "unknown".to_string()
            };
            studio_crds::MemberStatus {
                name: m.name.clone(),
                role,
                ready: m.ready,
                term: m.node.as_ref().map(|n| n.term as i64),
                seq: m.node.as_ref().map(|n| n.seq as i64),
                lag: obs.lag(m).map(|l| l as i64),
                quarantined: m.node.as_ref().map(|n| n.quarantined as i64),
                up_to_date: obs.up_to_date(m),
                pod_ip: m.ip.clone(),
                quorum_connected,
            }
        })
        .collect()
}

/// The later of two records of a change of primary (by time).
pub fn newest_failover(
    a: Option<studio_crds::FailoverRecord>,
    b: Option<studio_crds::FailoverRecord>,
) -> Option<studio_crds::FailoverRecord> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.time > a.time { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Members whose quarantine grew since the last status: (pod, before, now). Each is
/// worth a Warning Event, since someone has to look at the entries.
pub fn quarantine_growth(
    prev: &[studio_crds::MemberStatus],
    now: &[studio_crds::MemberStatus],
) -> Vec<(String, i64, i64)> {
    now.iter()
        .filter_map(|m| {
            let n = m.quarantined?;
            let before = prev
                .iter()
                .find(|p| p.name == m.name)
                .and_then(|p| p.quarantined)
                .unwrap_or(0);
            (n > before).then(|| (m.name.clone(), before, n))
        })
        .collect()
}

/// kstatus-compatible conditions for a phase; `lastTransitionTime` only moves when a
/// condition's status changes. The previous `WriteQuorum` condition, if any, is kept
/// as it was (see [`cluster_conditions`]).
pub fn conditions_for(
    sc: &StudioCluster,
    phase: Phase,
    message: &str,
    prev: Option<&StudioClusterStatus>,
) -> Vec<Condition> {
    cluster_conditions(sc, phase, message, None, prev)
}

/// The conditions for a phase and what the members report about writes:
/// `Ready`, `Progressing`, `Degraded`, `Reconciling`, `Stalled` and `WriteQuorum`.
/// When `write_quorum` says no write can succeed, `Ready` is False (reason
/// `WriteQuorumUnavailable`, its message saying why) whatever the phase, and
/// `Degraded` is True unless the cluster is still being created. Without a check
/// (`None`: nothing was observed, e.g. an invalid spec) the previous `WriteQuorum`
/// condition is kept. `lastTransitionTime` only moves when a status changes.
pub fn cluster_conditions(
    sc: &StudioCluster,
    phase: Phase,
    message: &str,
    write_quorum: Option<&WriteQuorumCheck>,
    prev: Option<&StudioClusterStatus>,
) -> Vec<Condition> {
    let gen_ = sc.metadata.generation;
    // kstatus reads only Reconciling and Stalled (and observedGeneration): Reconciling
    // is True whenever the cluster is not where the spec wants it and the operator is
    // working on it (creating, scaling, upgrading, recovering a member or the write
    // quorum), so that GitOps tools do not call a degraded cluster healthy.
    let (mut ready, progressing, mut degraded, mut reconciling, stalled) = match phase {
        Phase::Ready => ("True", "False", "False", "False", "False"),
        Phase::Creating | Phase::Scaling | Phase::Upgrading | Phase::WaitingForUser => {
            ("False", "True", "False", "True", "False")
        }
        Phase::Degraded => ("False", "False", "True", "True", "False"),
        Phase::Invalid => ("False", "False", "True", "False", "True"),
        Phase::Paused => ("Unknown", "False", "False", "False", "False"),
    };
    let reason = phase.as_str();
    let no_writes = write_quorum.filter(|q| !q.ok());
    if no_writes.is_some() {
        ready = "False";
        if phase != Phase::Creating {
            degraded = "True";
        }
        if phase != Phase::Paused {
            reconciling = "True";
        }
    }
    let prev_conds: BTreeMap<String, Condition> = prev
        .map(|p| {
            p.conditions
                .iter()
                .map(|c| (c.type_.clone(), c.clone()))
                .collect()
        })
        .unwrap_or_default();
    let now = Time(Timestamp::now());
    let quorum_why = |t: &str| match no_writes {
        Some(q)
            if t == conditions::READY
                || (t == conditions::DEGRADED && degraded == "True")
                || (t == conditions::RECONCILING && reconciling == "True") =>
        {
            Some((write_quorum::READY_REASON, q.message.as_str()))
        }
        _ => None,
    };
    let mut out: Vec<Condition> = [
        (conditions::READY, ready),
        (conditions::PROGRESSING, progressing),
        (conditions::DEGRADED, degraded),
        (conditions::RECONCILING, reconciling),
        (conditions::STALLED, stalled),
    ]
    .into_iter()
    .map(|(t, s)| {
        let ltt = match prev_conds.get(t) {
            Some(p) if p.status == s => p.last_transition_time.clone(),
            _ => now.clone(),
        };
        let (reason, message) = quorum_why(t).unwrap_or((reason, message));
        Condition {
            type_: t.into(),
            status: s.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: gen_,
            last_transition_time: ltt,
        }
    })
    .collect();
    match write_quorum {
        Some(q) => {
            let s = q.status();
            let ltt = match prev_conds.get(conditions::WRITE_QUORUM) {
                Some(p) if p.status == s => p.last_transition_time.clone(),
                _ => now,
            };
            out.push(Condition {
                type_: conditions::WRITE_QUORUM.into(),
                status: s.into(),
                reason: q.reason.as_str().into(),
                message: q.message.clone(),
                observed_generation: gen_,
                last_transition_time: ltt,
            });
        }
        None => {
            if let Some(p) = prev_conds.get(conditions::WRITE_QUORUM) {
                out.push(p.clone());
            }
        }
    }
    out
}

/// Whether two statuses differ at most in the members' journal positions (term, seq,
/// lag) and the archive's (`status.backup` seq, time and lag), which change with every
/// write, and in how long the write quorum has been
/// missing (" (for 12s)" in messages), which changes with every poll.
pub fn same_but_positions(a: &StudioClusterStatus, b: &StudioClusterStatus) -> bool {
    let strip = |s: &StudioClusterStatus| {
        let mut s = s.clone();
        for m in &mut s.members {
            m.term = None;
            m.seq = None;
            m.lag = None;
        }
        s.max_lag = None;
        // Archive progress moves with every write too.
        if let Some(b) = &mut s.backup {
            b.last_archived_seq = None;
            b.last_archived_time = None;
            b.archive_lag_entries = None;
            b.archive_lag_seconds = None;
        }
        s.message = s.message.as_deref().map(without_durations);
        for c in &mut s.conditions {
            c.message = without_durations(&c.message);
        }
        s
    };
    strip(a) == strip(b)
}
