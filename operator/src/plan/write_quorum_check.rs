//! Whether a write can succeed now, from what the members report (the `WriteQuorum`
//! condition), and the Event of a change.

use super::*;

/// Why a write can or cannot succeed, as the `WriteQuorum` condition's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteQuorumReason {
    /// One writable primary; async mode, or its sync quorum is connected (or it does
    /// not report one: a node before 0.2).
    Writable,
    /// The sync-mode primary has fewer connected replicas than it needs.
    QuorumUnavailable,
    /// No member reports role primary with `readOnly` false.
    NoWritablePrimary,
    /// More than one member reports itself a writable primary.
    MultiplePrimaries,
}

impl WriteQuorumReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Writable => write_quorum::WRITABLE,
            Self::QuorumUnavailable => write_quorum::QUORUM_UNAVAILABLE,
            Self::NoWritablePrimary => write_quorum::NO_WRITABLE_PRIMARY,
            Self::MultiplePrimaries => write_quorum::MULTIPLE_PRIMARIES,
        }
    }
}

/// The `WriteQuorum` condition computed from what the members report.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteQuorumCheck {
    pub reason: WriteQuorumReason,
    pub message: String,
    /// The one writable primary, when there is exactly one.
    pub primary: Option<String>,
    /// Sync mode: node ids the primary counts as connected to its write quorum. None
    /// when the primary does not report a quorum (async mode, older node, no primary).
    pub connected: Option<Vec<String>>,
}

impl WriteQuorumCheck {
    /// A write can succeed.
    pub fn ok(&self) -> bool {
        self.reason == WriteQuorumReason::Writable
    }

    /// `True` or `False`, for the condition.
    pub fn status(&self) -> &'static str {
        if self.ok() { "True" } else { "False" }
    }
}

/// Marks the part of a message that changes on every poll (how long the quorum has
/// been missing), so that [`same_but_positions`] can ignore it.
const FOR_OPEN: &str = " (for ";

/// `12s`, `3m04s`, `1h02m`.
fn fmt_duration(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// Pod names the operator knows as members: the observed pods plus the data pods and
/// arbiter the spec asks for (a pod not created yet is still a member that is not
/// connected), in the order data by ordinal, then the arbiter.
fn known_members(sc: &StudioCluster, obs: &Observed) -> Vec<String> {
    let cluster = sc.metadata.name.clone().unwrap_or_default();
    let mut all: Vec<(bool, Option<i32>, String)> = obs
        .members
        .iter()
        .map(|m| (m.arbiter, m.ordinal, m.name.clone()))
        .collect();
    let mut expected: Vec<(bool, Option<i32>, String)> = (0..sc.spec.nodes.max(1))
        .map(|i| (false, Some(i), names::data_pod(&cluster, i)))
        .collect();
    if sc.spec.arbiter.enabled {
        expected.push((
            true,
            None,
            format!("{}-0", names::arbiter_statefulset(&cluster)),
        ));
    }
    for e in expected {
        if !all.iter().any(|(_, _, n)| n == &e.2) {
            all.push(e);
        }
    }
    all.sort();
    all.into_iter().map(|(_, _, n)| n).collect()
}

/// How a member that is not the writable primary looks, for a message.
fn describe_member(m: &Member) -> String {
    match &m.node {
        None => format!("{} not answering", m.name),
        Some(n) => {
            let role = format!("{:?}", n.role).to_lowercase();
            if n.role == NodeRole::Primary && n.read_only {
                format!("{} {role} (read-only, term {})", m.name, n.term)
            } else {
                format!("{} {role}", m.name)
            }
        }
    }
}

/// The `WriteQuorum` condition: True when exactly one member reports role primary with
/// `readOnly` false and that primary can acknowledge writes (async mode, or its sync
/// write quorum is available, or it does not report one). Only what the nodes report
/// counts: pod readiness and the Lease say nothing about whether a write succeeds.
pub fn check_write_quorum(sc: &StudioCluster, obs: &Observed) -> WriteQuorumCheck {
    let writable: Vec<&Member> = obs
        .members
        .iter()
        .filter(|m| {
            m.node
                .as_ref()
                .is_some_and(|n| n.role == NodeRole::Primary && !n.read_only)
        })
        .collect();
    let primary = match writable.as_slice() {
        [] => {
            let lease = obs
                .lease_holder
                .as_deref()
                .map(|h| format!(" (Lease holder {h})"))
                .unwrap_or_default();
            let seen: Vec<String> = obs.members.iter().map(describe_member).collect();
            let seen = if seen.is_empty() {
                "no member pods".to_string()
            } else {
                seen.join(", ")
            };
            return WriteQuorumCheck {
                reason: WriteQuorumReason::NoWritablePrimary,
                message: format!(
                    "no writable primary: no member reports role primary with writes enabled{lease}; {seen}"
                ),
                primary: None,
                connected: None,
            };
        }
        [p] => *p,
        many => {
            let claims: Vec<String> = many
                .iter()
                .map(|m| {
                    let term = m.node.as_ref().map(|n| n.term).unwrap_or_default();
                    format!("{} (term {term})", m.name)
                })
                .collect();
            let lease = obs
                .lease_holder
                .as_deref()
                .map(|h| format!("; the Lease names {h}"))
                .unwrap_or_default();
            return WriteQuorumCheck {
                reason: WriteQuorumReason::MultiplePrimaries,
                message: format!(
                    "{} members claim to be a writable primary: {}{lease}. This should never happen (the election fences the old primary first): report it with the nodes' logs",
                    many.len(),
                    claims.join(", ")
                ),
                primary: None,
                connected: None,
            };
        }
    };
    let node = primary.node.as_ref();
    let quorum = node.and_then(|n| n.write_quorum.as_ref());
    let mode = node
        .map(|n| n.replication_mode.as_str())
        .filter(|m| !m.is_empty())
        .unwrap_or(sc.spec.replication.mode.as_str());
    let name = primary.name.clone();
    let Some(q) = quorum else {
        let how = if mode == ReplicationMode::Sync.as_str() {
            "sync write quorum not reported by this node version"
        } else {
            "async replication"
        };
        return WriteQuorumCheck {
            reason: WriteQuorumReason::Writable,
            message: format!("primary {name} accepts writes ({how})"),
            primary: Some(name),
            connected: None,
        };
    };
    let connected = q.connected.clone();
    if q.available {
        return WriteQuorumCheck {
            reason: WriteQuorumReason::Writable,
            message: format!(
                "primary {name} accepts writes: sync write quorum met ({} connected, {} needed)",
                connected.len(),
                q.needed
            ),
            primary: Some(name),
            connected: Some(connected),
        };
    }
    let missing: Vec<String> = known_members(sc, obs)
        .into_iter()
        .filter(|m| m != &name && !connected.contains(m))
        .collect();
    let missing = if missing.is_empty() {
        "every member the operator knows is connected".to_string()
    } else {
        format!("not connected: {}", missing.join(", "))
    };
    WriteQuorumCheck {
        reason: WriteQuorumReason::QuorumUnavailable,
        message: format!(
            "primary {name} needs {} connected replica(s) for sync writes, {} connected; {missing}{FOR_OPEN}{})",
            q.needed,
            connected.len(),
            fmt_duration(q.unavailable_for_ms)
        ),
        primary: Some(name),
        connected: Some(connected),
    }
}

/// An Event to emit because the `WriteQuorum` condition changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// The Event for a change of `WriteQuorum`, decided from the previous status in the
/// object (so an operator restart does not repeat it):
/// - `WriteQuorumLost` (Warning) when it turns False after True, or when it is False
///   on a cluster that had a primary but whose status never had the condition (an
///   operator upgrade);
/// - `WriteQuorumRestored` (Normal) when it turns True after False on a cluster that
///   had a primary (not when a new cluster's first quorum forms).
///
/// Nothing while it stays the same, or while a new cluster is created.
pub fn write_quorum_event(
    prev: Option<&StudioClusterStatus>,
    now: &WriteQuorumCheck,
) -> Option<QuorumEvent> {
    let prev_cond = prev.and_then(|p| {
        p.conditions
            .iter()
            .find(|c| c.type_ == conditions::WRITE_QUORUM)
    });
    let had_primary =
        prev.is_some_and(|p| p.current_primary.is_some() || p.last_failover.is_some());
    let before = prev_cond.map(|c| c.status.as_str());
    let lost = !now.ok()
        && match before {
            Some(s) => s == "True",
            None => had_primary,
        };
    let restored = now.ok() && before == Some("False") && had_primary;
    if lost {
        Some(QuorumEvent {
            warning: true,
            reason: write_quorum::EVENT_LOST,
            note: format!(
                "no write can succeed ({}): {}",
                now.reason.as_str(),
                now.message
            ),
        })
    } else if restored {
        Some(QuorumEvent {
            warning: false,
            reason: write_quorum::EVENT_RESTORED,
            note: format!("writes succeed again: {}", now.message),
        })
    } else {
        None
    }
}

/// `message` without the parts that change on every poll (" (for 12s)").
pub(super) fn without_durations(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(FOR_OPEN) {
        out.push_str(&rest[..i]);
        let after = &rest[i + FOR_OPEN.len()..];
        match after.find(')') {
            Some(j) => rest = &after[j + 1..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}
