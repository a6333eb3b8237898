//! The pure decision: how an image whose schema revision is known is rolled onto data
//! at the members' revisions. The rule mirrors the nodes' replication handshake
//! (`a.min <= b.rev && b.min <= a.rev`): mixed revisions are allowed exactly when the
//! nodes themselves would replicate across them.

use studio_crds::UpgradeKind;
use studio_crds::node_api::ClusterStatus;

/// What `studio-node --version --json` of an image says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRevision {
    pub schema_revision: u32,
    pub min_compatible_revision: u32,
}

/// The schema revisions the members report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRevisions {
    /// The lowest revision any member's data is at.
    pub lowest: u32,
    /// The highest revision any member's data is at.
    pub highest: u32,
    /// The highest "oldest revision I replicate with" among the members.
    pub strictest_min_compatible: u32,
}

impl DataRevisions {
    /// From the members that answered; `None` when none did (the data's revision is
    /// unknown, so nothing may be decided). Nodes from before revisions report 0: their
    /// data is revision 1.
    pub fn of<'a>(nodes: impl IntoIterator<Item = &'a ClusterStatus>) -> Option<Self> {
        nodes
            .into_iter()
            .map(|n| (n.schema_revision.max(1), n.min_compatible_revision.max(1)))
            .fold(None, |acc: Option<DataRevisions>, (rev, min)| {
                Some(match acc {
                    None => DataRevisions {
                        lowest: rev,
                        highest: rev,
                        strictest_min_compatible: min,
                    },
                    Some(d) => DataRevisions {
                        lowest: d.lowest.min(rev),
                        highest: d.highest.max(rev),
                        strictest_min_compatible: d.strictest_min_compatible.max(min),
                    },
                })
            })
    }
}

/// How to roll an image at `target` onto data at `data`, and why (for status and
/// Events).
pub fn decide(image: &str, data: DataRevisions, target: ImageRevision) -> (UpgradeKind, String) {
    let rev = target.schema_revision;
    if rev < data.highest {
        return (
            UpgradeKind::Refused,
            format!(
                "downgrade refused: the data is at schema revision {}, {image} writes revision {rev} and cannot open it; set spec.image back or restore a backup taken before the upgrade",
                data.highest
            ),
        );
    }
    if target.min_compatible_revision > rev {
        return (
            UpgradeKind::Refused,
            format!(
                "{image} reports minCompatibleRevision {} above its own schema revision {rev}: not a valid build",
                target.min_compatible_revision
            ),
        );
    }
    if rev == data.lowest && rev == data.highest {
        return (
            UpgradeKind::Online,
            format!(
                "online upgrade to {image} (schema revision {rev} unchanged): one member at a time, the primary last by switchover"
            ),
        );
    }
    let new_follows_old = target.min_compatible_revision <= data.lowest;
    let old_follow_new = data.strictest_min_compatible <= rev;
    if new_follows_old && old_follow_new {
        return (
            UpgradeKind::Compatible,
            format!(
                "online upgrade to {image}: schema revision {} → {rev} is compatible (old members replicate with it); replicas first, the primary last by switchover",
                data.lowest
            ),
        );
    }
    (
        UpgradeKind::Offline,
        format!(
            "offline upgrade to {image}: schema revision {} → {rev} is incompatible (oldest it replicates with: {}); writes stop while every member restarts and migrates its data, then resume",
            data.lowest, target.min_compatible_revision
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(lowest: u32, highest: u32, min: u32) -> DataRevisions {
        DataRevisions {
            lowest,
            highest,
            strictest_min_compatible: min,
        }
    }

    fn image(rev: u32, min: u32) -> ImageRevision {
        ImageRevision {
            schema_revision: rev,
            min_compatible_revision: min,
        }
    }

    #[test]
    fn the_same_revision_is_an_online_upgrade() {
        assert_eq!(
            decide("i", data(1, 1, 1), image(1, 1)).0,
            UpgradeKind::Online
        );
    }

    #[test]
    fn an_additive_revision_is_compatible() {
        assert_eq!(
            decide("i", data(1, 1, 1), image(2, 1)).0,
            UpgradeKind::Compatible
        );
    }

    #[test]
    fn a_revision_old_members_cannot_follow_is_offline() {
        let (kind, why) = decide("i", data(1, 1, 1), image(2, 2));
        assert_eq!(kind, UpgradeKind::Offline);
        assert!(why.contains("1 → 2"), "{why}");
    }

    #[test]
    fn a_downgrade_below_the_data_is_refused_naming_both_revisions() {
        let (kind, why) = decide("studio-node:v1", data(2, 2, 2), image(1, 1));
        assert_eq!(kind, UpgradeKind::Refused);
        assert!(
            why.contains("revision 2") && why.contains("studio-node:v1 writes revision 1"),
            "{why}"
        );
    }

    #[test]
    fn a_downgrade_is_refused_even_if_only_one_member_is_ahead() {
        // A compatible upgrade half done, then spec.image set back: the upgraded
        // member's data cannot be opened by the old build.
        assert_eq!(
            decide("i", data(1, 2, 1), image(1, 1)).0,
            UpgradeKind::Refused
        );
    }

    #[test]
    fn old_members_that_no_longer_accept_the_target_make_it_offline() {
        // The target (3, still replicating with 1) is compatible unless a running
        // member refuses revision 3 (its minimum is above 3).
        assert_eq!(
            decide("i", data(2, 2, 2), image(3, 1)).0,
            UpgradeKind::Compatible
        );
        assert_eq!(
            decide("i", data(2, 2, 3), image(3, 1)).0,
            UpgradeKind::Compatible
        );
        assert_eq!(
            decide("i", data(2, 2, 4), image(3, 1)).0,
            UpgradeKind::Offline
        );
    }

    #[test]
    fn an_invalid_build_is_refused() {
        assert_eq!(
            decide("i", data(1, 1, 1), image(2, 3)).0,
            UpgradeKind::Refused
        );
    }

    #[test]
    fn data_revisions_treat_pre_revision_nodes_as_revision_one() -> serde_json::Result<()> {
        let node = |rev: u32, min: u32| -> serde_json::Result<ClusterStatus> {
            serde_json::from_value(serde_json::json!({
                "clusterId": null, "nodeId": "n", "role": "replica", "term": 1, "seq": 1,
                "schemaRevision": rev, "minCompatibleRevision": min,
            }))
        };
        let (a, b) = (node(0, 0)?, node(2, 1)?);
        assert_eq!(DataRevisions::of([&a, &b]), Some(data(1, 2, 1)));
        assert_eq!(DataRevisions::of(std::iter::empty()), None);
        Ok(())
    }
}
