//! Image changes across schema revisions (Gentics Mesh's online/offline distinction):
//! before the StatefulSets get a new `spec.image`, the operator learns the image's
//! schema revision ([`probe`]), compares it with the revision the members report and
//! decides ([`decide`]): the same revision or a compatible one rolls online (replicas
//! first, the primary last by switchover); an incompatible one rolls offline (every
//! member restarts at once, so no two revisions ever replicate); a downgrade below the
//! data is refused before any pod is touched. Until then the StatefulSets keep
//! `status.image`.

pub mod decide;
pub mod probe;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use studio_crds::{StudioCluster, StudioClusterStatus, UpgradeKind, UpgradeStatus, conditions};

use self::decide::{DataRevisions, ImageRevision};
use self::probe::Probe;
use crate::error::Result;
use crate::plan::Observed;

/// What this reconcile rolls.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// The image the StatefulSets are set to.
    pub image: String,
    /// The record for `status.upgrade`.
    pub upgrade: Option<UpgradeStatus>,
    /// How the rollout in progress runs (for the plan).
    pub kind: Option<UpgradeKind>,
    /// Why `spec.image` is not rolled yet (probing, refused): for the status message.
    pub held: Option<String>,
    /// An Event for a decision made in this reconcile: (warning, reason, note).
    pub event: Option<(bool, &'static str, String)>,
    /// Why the cluster cannot reach its spec without the user (the `Stalled`
    /// condition's reason and message).
    pub stalled: Option<(&'static str, String)>,
}

impl Gate {
    /// The cluster as the StatefulSets should see it: `spec.image` replaced by the
    /// image the gate lets through.
    pub fn apply_to(&self, sc: &StudioCluster) -> StudioCluster {
        let mut sc = sc.clone();
        sc.spec.image = self.image.clone();
        sc
    }
}

/// The image that runs now: `status.image`, else (a cluster from before this field)
/// the data StatefulSet's, else none (a new cluster).
fn running_image(sc: &StudioCluster, obs: &Observed) -> Option<String> {
    sc.status
        .as_ref()
        .and_then(|s| s.image.clone())
        .or_else(|| obs.sts_image.clone())
}

/// How the rollout of the image that runs goes on. Its kind matters only until every
/// member runs the target revision: a later template change (resources, say) is an
/// ordinary rolling restart, never an offline one.
fn rollout_kind(prev: Option<&UpgradeStatus>, obs: &Observed) -> Option<UpgradeKind> {
    let up = prev?;
    let rev = up.schema_revision?;
    let done = obs.members.iter().all(|m| {
        m.node
            .as_ref()
            .is_some_and(|n| i64::from(n.schema_revision.max(1)) == rev)
    });
    up.kind.filter(|_| !done)
}

/// Decides what to roll. `may_probe` false (a paused cluster) starts nothing.
pub async fn gate(
    client: &Client,
    sc: &StudioCluster,
    obs: &Observed,
    may_probe: bool,
) -> Result<Gate> {
    let desired = sc.spec.image.clone();
    let prev = sc
        .status
        .as_ref()
        .and_then(|s| s.upgrade.clone())
        .filter(|u| u.target_image == desired);
    let running = match running_image(sc, obs) {
        Some(r) if r != desired => r,
        // Nothing to change, or a new cluster: keep the record of this image's rollout.
        _ => {
            // A probe still running for an image spec.image no longer names.
            if let Some(u) = sc.status.as_ref().and_then(|s| s.upgrade.as_ref())
                && u.kind.is_none()
                && u.target_image != desired
                && may_probe
            {
                probe::cancel(client, sc, &u.target_image).await?;
            }
            return Ok(Gate {
                image: desired,
                kind: rollout_kind(prev.as_ref(), obs),
                upgrade: prev,
                held: None,
                event: None,
                stalled: None,
            });
        }
    };
    let hold = |upgrade: UpgradeStatus, event| {
        let held = upgrade.message.clone();
        let stalled = (upgrade.kind == Some(UpgradeKind::Refused))
            .then(|| ("UpgradeRefused", held.clone().unwrap_or_default()));
        Gate {
            image: running.clone(),
            upgrade: Some(upgrade),
            kind: None,
            held,
            event,
            stalled,
        }
    };
    // Decided before (the status write that moved status.image may have been lost).
    if let Some(u) = &prev
        && let Some(kind) = u.kind
    {
        if kind == UpgradeKind::Refused {
            return Ok(hold(u.clone(), None));
        }
        return Ok(Gate {
            image: desired,
            kind: Some(kind),
            upgrade: prev.clone(),
            held: None,
            event: None,
            stalled: None,
        });
    }
    let mut up = UpgradeStatus {
        target_image: desired.clone(),
        ..Default::default()
    };
    let known = prev.as_ref().and_then(|u| {
        Some(ImageRevision {
            schema_revision: u32::try_from(u.schema_revision?).ok()?,
            min_compatible_revision: u32::try_from(u.min_compatible_revision?).ok()?,
        })
    });
    let rev = match known {
        Some(r) => r,
        None if !may_probe => {
            up.message = Some(format!(
                "{desired} is not rolled while the cluster is paused"
            ));
            return Ok(hold(up, None));
        }
        None => match probe::probe(client, sc, &desired).await? {
            Probe::Pending(msg) => {
                up.message = Some(msg);
                return Ok(hold(up, None));
            }
            Probe::Failed(why) => {
                up.kind = Some(UpgradeKind::Refused);
                up.message = Some(format!("upgrade refused: {why}"));
                let note = up.message.clone().unwrap_or_default();
                return Ok(hold(up, Some((true, "UpgradeRefused", note))));
            }
            Probe::Stuck(why) => {
                up.message = Some(why.clone());
                let mut g = hold(up, None);
                g.stalled = Some(("ImageUnavailable", why));
                return Ok(g);
            }
            Probe::Done(r) => r,
        },
    };
    up.schema_revision = Some(i64::from(rev.schema_revision));
    up.min_compatible_revision = Some(i64::from(rev.min_compatible_revision));
    let silent: Vec<&str> = obs
        .members
        .iter()
        .filter(|m| !m.terminating && m.node.is_none())
        .map(|m| m.name.as_str())
        .collect();
    let data = DataRevisions::of(obs.members.iter().filter_map(|m| m.node.as_ref()));
    let data = match data {
        Some(d) if silent.is_empty() => d,
        _ => {
            up.message = Some(format!(
                "{desired} is at schema revision {}: waiting for every member to report the revision of its data{}",
                rev.schema_revision,
                if silent.is_empty() {
                    String::new()
                } else {
                    format!(" (no answer from {})", silent.join(", "))
                }
            ));
            return Ok(hold(up, None));
        }
    };
    let (kind, why) = decide::decide(&desired, data, rev);
    up.from_revision = Some(i64::from(data.lowest));
    up.kind = Some(kind);
    up.message = Some(why.clone());
    let event = match kind {
        UpgradeKind::Online => (false, "UpgradeOnline", why),
        UpgradeKind::Compatible => (false, "UpgradeCompatible", why),
        UpgradeKind::Offline => (true, "UpgradeOffline", why),
        UpgradeKind::Refused => (true, "UpgradeRefused", why),
    };
    if kind == UpgradeKind::Refused {
        return Ok(hold(up, Some(event)));
    }
    Ok(Gate {
        image: desired,
        upgrade: Some(up),
        kind: Some(kind),
        held: None,
        event: Some(event),
        stalled: None,
    })
}

/// An image change that cannot go on without the user (refused, or the image cannot
/// be pulled) stalls the cluster: kstatus `Stalled`, with the reason. `prev` keeps the
/// condition's transition time.
pub fn mark_stalled(conditions: &mut [Condition], gate: &Gate, prev: Option<&StudioClusterStatus>) {
    let Some((reason, message)) = &gate.stalled else {
        return;
    };
    let since = prev
        .into_iter()
        .flat_map(|p| p.conditions.iter())
        .find(|c| c.type_ == conditions::STALLED && c.status == "True")
        .map(|c| c.last_transition_time.clone());
    if let Some(c) = conditions
        .iter_mut()
        .find(|c| c.type_ == conditions::STALLED)
    {
        c.status = "True".into();
        c.reason = (*reason).into();
        c.message = message.clone();
        c.last_transition_time = since.unwrap_or_else(|| Time(Timestamp::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Member;
    use studio_crds::node_api::ClusterStatus;

    fn member(name: &str, rev: Option<u32>) -> Member {
        let node = rev.and_then(|r| {
            serde_json::from_value::<ClusterStatus>(serde_json::json!({
                "clusterId": null, "nodeId": name, "role": "replica", "term": 1, "seq": 1,
                "schemaRevision": r, "minCompatibleRevision": r,
            }))
            .ok()
        });
        Member {
            name: name.into(),
            ordinal: None,
            arbiter: false,
            role_label: None,
            ready: true,
            terminating: false,
            ip: None,
            revision: None,
            node,
        }
    }

    #[test]
    fn an_offline_rollout_stays_offline_until_every_member_runs_the_target_revision() {
        let up = UpgradeStatus {
            target_image: "i:2".into(),
            schema_revision: Some(2),
            kind: Some(UpgradeKind::Offline),
            ..Default::default()
        };
        let mut obs = Observed {
            members: vec![member("a", Some(1)), member("b", None)],
            ..Default::default()
        };
        assert_eq!(rollout_kind(Some(&up), &obs), Some(UpgradeKind::Offline));
        obs.members = vec![member("a", Some(2)), member("b", None)];
        assert_eq!(rollout_kind(Some(&up), &obs), Some(UpgradeKind::Offline));
        // Done: a later template change rolls as usual.
        obs.members = vec![member("a", Some(2)), member("b", Some(2))];
        assert_eq!(rollout_kind(Some(&up), &obs), None);
        assert_eq!(rollout_kind(None, &obs), None);
    }
}
