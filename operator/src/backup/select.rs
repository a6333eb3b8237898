//! Which member takes a base backup (pure): from the members the cluster's status
//! lists, by `spec.backup.target` (or the StudioBackup's override).

use studio_crds::{BackupTarget, MemberStatus, roles};

/// The member chosen, with why (for the StudioBackup's message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub member: String,
    pub pod_ip: String,
    pub why: String,
}

/// A member that can take a backup without touching the primary: ready, with an
/// address and a reported lag, and not known to be cut off from the primary (in sync
/// mode `quorumConnected: false`).
fn standby(m: &MemberStatus) -> bool {
    (m.role == roles::REPLICA || m.role == roles::ARBITER)
        && m.ready
        && m.pod_ip.is_some()
        && m.lag.is_some()
        && m.quorum_connected != Some(false)
}

/// `prefer-standby`: the connected replica or arbiter with the smallest lag (on a tie
/// the arbiter, which serves no clients, then by name); the primary only when no such
/// member exists. `primary`: the primary only. `Err` says why no member can.
pub fn choose(members: &[MemberStatus], target: BackupTarget) -> Result<Choice, String> {
    let primary = members
        .iter()
        .find(|m| m.role == roles::PRIMARY && m.ready && m.pod_ip.is_some());
    if target == BackupTarget::PreferStandby {
        let best = members.iter().filter(|m| standby(m)).min_by(|a, b| {
            (a.lag, a.role != roles::ARBITER, &a.name).cmp(&(
                b.lag,
                b.role != roles::ARBITER,
                &b.name,
            ))
        });
        if let (Some(m), Some(ip)) = (best, best.and_then(|m| m.pod_ip.clone())) {
            return Ok(Choice {
                member: m.name.clone(),
                pod_ip: ip,
                why: format!("{} {} (lag {})", m.role, m.name, m.lag.unwrap_or_default()),
            });
        }
    }
    match primary {
        Some(p) => Ok(Choice {
            member: p.name.clone(),
            pod_ip: p.pod_ip.clone().unwrap_or_default(),
            why: match target {
                BackupTarget::Primary => format!("primary {} (target primary)", p.name),
                BackupTarget::PreferStandby => format!(
                    "primary {} (no ready, connected replica or arbiter)",
                    p.name
                ),
            },
        }),
        None if members.is_empty() => Err("the cluster's status lists no members yet".to_string()),
        None => Err(match target {
            BackupTarget::Primary => "the cluster has no ready primary".to_string(),
            BackupTarget::PreferStandby => {
                "no ready member can take it (no connected replica or arbiter, no ready primary)"
                    .to_string()
            }
        }),
    }
}

/// Members that can answer a status or list request (any ready member with an
/// address), `first` (the one taking the backup) first.
pub fn answerers<'a>(members: &'a [MemberStatus], first: Option<&str>) -> Vec<&'a MemberStatus> {
    let mut v: Vec<&MemberStatus> = members
        .iter()
        .filter(|m| m.pod_ip.is_some() && (m.ready || Some(m.name.as_str()) == first))
        .collect();
    v.sort_by_key(|m| {
        (
            Some(m.name.as_str()) != first,
            m.role != roles::PRIMARY,
            m.name.clone(),
        )
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(
        name: &str,
        role: &str,
        ready: bool,
        lag: Option<i64>,
        connected: Option<bool>,
    ) -> MemberStatus {
        MemberStatus {
            name: name.into(),
            role: role.into(),
            ready,
            lag,
            quorum_connected: connected,
            pod_ip: Some(format!("10.0.0.{}", name.len())),
            ..Default::default()
        }
    }

    #[test]
    fn prefers_the_least_lagging_connected_standby() {
        let ms = vec![
            m("c-0", "primary", true, Some(0), None),
            m("c-1", "replica", true, Some(5), Some(true)),
            m("c-2", "replica", true, Some(2), Some(true)),
            m("c-3", "replica", true, Some(0), Some(false)),
            m("c-4", "replica", false, Some(0), None),
        ];
        let c = choose(&ms, BackupTarget::PreferStandby).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.member, "c-2");
        assert!(c.why.contains("lag 2"), "{}", c.why);
    }

    #[test]
    fn on_a_tie_the_arbiter_wins_and_async_members_count_as_connected() {
        let ms = vec![
            m("c-0", "primary", true, Some(0), None),
            m("c-1", "replica", true, Some(0), None),
            m("c-arbiter-0", "arbiter", true, Some(0), None),
        ];
        let c = choose(&ms, BackupTarget::PreferStandby).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.member, "c-arbiter-0");
    }

    #[test]
    fn the_primary_only_when_no_standby_can_or_when_asked() {
        let ms = vec![
            m("c-0", "primary", true, Some(0), None),
            m("c-1", "replica", true, None, None),
            m("c-2", "replica", false, Some(0), None),
        ];
        let c = choose(&ms, BackupTarget::PreferStandby).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.member, "c-0");
        assert!(c.why.contains("no ready, connected"), "{}", c.why);
        let all = vec![
            m("c-0", "primary", true, Some(0), None),
            m("c-1", "replica", true, Some(0), None),
        ];
        let c = choose(&all, BackupTarget::Primary).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.member, "c-0");
    }

    #[test]
    fn no_member_is_an_error_that_says_why() {
        assert!(choose(&[], BackupTarget::PreferStandby).is_err_and(|e| e.contains("no members")));
        let ms = vec![m("c-0", "primary", false, Some(0), None)];
        assert!(choose(&ms, BackupTarget::Primary).is_err_and(|e| e.contains("no ready primary")));
        assert!(choose(&ms, BackupTarget::PreferStandby).is_err());
    }

    #[test]
    fn answerers_start_with_the_taking_member_then_the_primary() {
        let ms = vec![
            m("c-1", "replica", true, Some(0), None),
            m("c-0", "primary", true, Some(0), None),
            m("c-2", "replica", false, Some(0), None),
        ];
        let names: Vec<&str> = answerers(&ms, Some("c-2"))
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["c-2", "c-0", "c-1"]);
        let names: Vec<&str> = answerers(&ms, None)
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["c-0", "c-1"]);
    }
}
