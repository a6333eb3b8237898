//! Pure day-2 decisions: how many data pods the StatefulSet should have now, which
//! role labels disagree with the Lease, and the one disruptive step (switchover or pod
//! restart) to take next for a user switchover, a scale-down or a rolling upgrade.
//!
//! The reconciler gathers an [`Observed`] snapshot, asks [`plan`] what to do, does it,
//! and comes back: at most one disruptive step per reconcile, so every step starts
//! from fresh facts.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use studio_crds::node_api::{ClusterStatus, NodeRole};
use studio_crds::{
    Phase, PrimaryUpdateStrategy, ReplicationMode, StudioCluster, StudioClusterStatus, annotations,
    components, conditions, labels, names, roles, write_quorum,
};

mod archiving;
mod status;
mod steps;
pub mod switchover_record;
mod write_quorum_check;
pub use archiving::*;
pub use status::*;
use steps::{best_candidate, upgrade_step, user_switchover};
pub use write_quorum_check::*;

/// A replica more than this many journal entries behind the primary is not "caught up"
/// for a switchover or before the next restart of a rolling upgrade.
pub const MAX_CATCH_UP_LAG: u64 = 1000;

/// One pod of the cluster, reduced to what decisions need.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub ordinal: Option<i32>,
    pub arbiter: bool,
    /// The `studio.cms.io/role` label.
    pub role_label: Option<String>,
    pub ready: bool,
    pub terminating: bool,
    pub ip: Option<String>,
    /// The pod's `controller-revision-hash`.
    pub revision: Option<String>,
    /// What the node itself reports on `/api/v1/cluster/status`, if it answered.
    pub node: Option<ClusterStatus>,
}

impl Member {
    pub fn from_pod(pod: &Pod, cluster: &str) -> Option<Member> {
        let name = pod.metadata.name.clone()?;
        let labels_map = pod.metadata.labels.clone().unwrap_or_default();
        let arbiter =
            labels_map.get(labels::COMPONENT).map(String::as_str) == Some(components::ARBITER);
        let ordinal = if arbiter {
            None
        } else {
            name.strip_prefix(cluster)
                .and_then(|r| r.strip_prefix('-'))
                .and_then(|o| o.parse::<i32>().ok())
        };
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .map(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            .unwrap_or(false);
        Some(Member {
            name,
            ordinal,
            arbiter,
            role_label: labels_map.get(labels::ROLE).cloned(),
            ready,
            terminating: pod.metadata.deletion_timestamp.is_some(),
            ip: status
                .and_then(|s| s.pod_ip.clone())
                .filter(|ip| !ip.is_empty()),
            revision: labels_map.get(labels::CONTROLLER_REVISION_HASH).cloned(),
            node: None,
        })
    }

    /// Journal position reported by the node (seq, term).
    pub fn position(&self) -> Option<(u64, u64)> {
        self.node.as_ref().map(|n| (n.seq, n.last_term))
    }

    /// Labelled primary or saying so itself: never delete such a pod.
    pub fn looks_primary(&self) -> bool {
        self.role_label.as_deref() == Some(roles::PRIMARY) || self.reports_primary()
    }

    pub fn reports_primary(&self) -> bool {
        self.node
            .as_ref()
            .map(|n| n.role == NodeRole::Primary)
            .unwrap_or(false)
    }
}

/// What the reconciler saw, as plain data.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Data pods and the arbiter pod.
    pub members: Vec<Member>,
    /// `spec.replicas` of the existing data StatefulSet.
    pub sts_replicas: Option<i32>,
    /// `status.updateRevision` of the data StatefulSet.
    pub update_revision: Option<String>,
    /// `status.updateRevision` of the arbiter StatefulSet.
    pub arbiter_update_revision: Option<String>,
    /// `spec.holderIdentity` of the `<name>-primary` Lease.
    pub lease_holder: Option<String>,
    /// The cluster has had a primary before (so missing one now is degradation, not
    /// creation).
    pub had_primary: bool,
    /// The phase the previous status recorded: a restart the operator ordered
    /// (upgrade, scale) is still that operation until the pod is ready again.
    pub prev_phase: Option<Phase>,
    /// The studio-node image of the data StatefulSet's template.
    pub sts_image: Option<String>,
    /// The studio-node image of the arbiter StatefulSet's template.
    pub arbiter_sts_image: Option<String>,
    /// A StatefulSet has a template change its controller has not observed yet
    /// (`status.observedGeneration` < `metadata.generation`): its `updateRevision` is
    /// stale, so which pods are outdated is not known yet.
    pub templates_pending: bool,
    /// How the image rollout in progress runs (see `crate::upgrade`).
    pub upgrade_kind: Option<studio_crds::UpgradeKind>,
}

/// The studio-node image of a StatefulSet's pod template.
fn template_image(sts: &StatefulSet) -> Option<String> {
    sts.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == crate::build::CONTAINER)?
        .image
        .clone()
}

impl Observed {
    pub fn new(pods: &[Pod], cluster: &str) -> Self {
        let mut members: Vec<Member> = pods
            .iter()
            .filter_map(|p| Member::from_pod(p, cluster))
            .collect();
        members
            .sort_by(|a, b| (a.arbiter, a.ordinal, &a.name).cmp(&(b.arbiter, b.ordinal, &b.name)));
        Observed {
            members,
            ..Default::default()
        }
    }

    pub fn with_statefulsets(
        mut self,
        data: Option<&StatefulSet>,
        arbiter: Option<&StatefulSet>,
    ) -> Self {
        self.sts_replicas = data.and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas);
        self.update_revision = data
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.update_revision.clone());
        self.sts_image = data.and_then(template_image);
        self.arbiter_sts_image = arbiter.and_then(template_image);
        self.templates_pending = [data, arbiter].into_iter().flatten().any(|s| {
            let observed = s.status.as_ref().and_then(|st| st.observed_generation);
            observed < s.metadata.generation
        });
        self.arbiter_update_revision = arbiter
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.update_revision.clone());
        self
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    pub fn data(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| !m.arbiter)
    }

    /// The primary: the Lease holder when its pod exists, else the one pod labelled
    /// primary, else the one node reporting itself primary.
    pub fn primary(&self) -> Option<&Member> {
        if let Some(h) = &self.lease_holder
            && let Some(m) = self.data().find(|m| &m.name == h && !m.terminating)
        {
            return Some(m);
        }
        let labelled: Vec<&Member> = self
            .data()
            .filter(|m| m.role_label.as_deref() == Some(roles::PRIMARY) && !m.terminating)
            .collect();
        if labelled.len() == 1 {
            return Some(labelled[0]);
        }
        let reporting: Vec<&Member> = self
            .data()
            .filter(|m| m.reports_primary() && !m.terminating)
            .collect();
        if reporting.len() == 1 {
            Some(reporting[0])
        } else {
            None
        }
    }

    /// Whether a pod runs the latest template of its StatefulSet. Unknown revisions
    /// count as up to date (nothing to roll).
    pub fn up_to_date(&self, m: &Member) -> bool {
        let target = if m.arbiter {
            &self.arbiter_update_revision
        } else {
            &self.update_revision
        };
        match (target, &m.revision) {
            (Some(t), Some(r)) => t == r,
            _ => true,
        }
    }

    /// Entries `m` is behind the primary, when both positions are known.
    pub fn lag(&self, m: &Member) -> Option<u64> {
        let p = self.primary()?.node.as_ref()?;
        let n = m.node.as_ref()?;
        Some(p.seq.saturating_sub(n.seq))
    }

    fn caught_up(&self, m: &Member) -> bool {
        self.lag(m).map(|l| l <= MAX_CATCH_UP_LAG).unwrap_or(true)
    }
}

/// Why the operator switches the primary over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The user asked with the `studio.cms.io/switchover-to` annotation.
    User,
    /// The primary's pod is about to be removed by a scale-down.
    ScaleDown,
    /// Rolling upgrade: every replica is upgraded, the primary is next.
    Upgrade,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::User => "requested",
            Reason::ScaleDown => "scale-down",
            Reason::Upgrade => "upgrade",
        }
    }
}

/// The next disruptive step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ask the primary `from` to hand over to `to`.
    Switchover {
        from: String,
        to: String,
        reason: Reason,
    },
    /// Delete a pod so the StatefulSet recreates it from the new template.
    RestartPod { name: String, primary: bool },
    /// Offline upgrade: delete every outdated pod at once, so that no member of the
    /// old revision runs beside one of the new.
    RestartAll { names: Vec<String> },
    /// The user's switchover request cannot be honoured; drop it and say why.
    RejectSwitchover { target: String, why: String },
    /// The user's switchover request is already satisfied; drop it.
    SwitchoverDone { target: String },
}

/// A role label to rewrite so that it agrees with the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRepair {
    pub pod: String,
    pub role: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// `spec.replicas` to apply on the data StatefulSet.
    pub data_replicas: i32,
    pub step: Option<Step>,
    pub repairs: Vec<LabelRepair>,
    pub phase: Phase,
    pub message: String,
    /// Whether a write can succeed now (the `WriteQuorum` condition).
    pub write_quorum: WriteQuorumCheck,
    /// The reason of the conditions that say the cluster is not ready, when it is not
    /// the phase's own (`Restoring`, `RestoreFailed`, a recovery source not ready).
    pub reason: Option<&'static str>,
}

/// Decides what to do next. Pure: same inputs, same plan.
///
/// When no write can succeed ([`check_write_quorum`] fails), a cluster that would
/// otherwise be `Ready` is `Degraded` instead, with the reason as its message. A
/// member's restore at bootstrap shows as [`apply_restore`] says.
pub fn plan(sc: &StudioCluster, obs: &Observed) -> Plan {
    let mut p = plan_steps(sc, obs);
    apply_restore(&mut p, check_restore(obs).as_ref());
    let wq = &p.write_quorum;
    if !wq.ok() {
        match p.phase {
            Phase::Ready => {
                p.phase = Phase::Degraded;
                p.message = wq.message.clone();
            }
            Phase::Degraded if !p.message.contains(&wq.message) => {
                p.message = format!("{}; {}", p.message, wq.message);
            }
            // An operation under way (creating, scaling, upgrading, paused, waiting for
            // the user) keeps its phase and message; Ready and WriteQuorum say why no
            // write succeeds.
            _ => {}
        }
    }
    p
}

fn plan_steps(sc: &StudioCluster, obs: &Observed) -> Plan {
    let write_quorum = check_write_quorum(sc, obs);
    let desired = sc.spec.nodes.max(1);
    let current = obs.sts_replicas.unwrap_or(desired);
    let primary = obs.primary().map(|m| m.name.clone());
    let repairs = label_repairs(obs);
    let mut data_replicas = desired;
    let mut step = None;
    let mut phase = None;
    let mut message = String::new();

    if sc.spec.paused {
        return Plan {
            data_replicas: current,
            step: None,
            repairs: vec![],
            phase: Phase::Paused,
            message: "reconciliation paused (spec.paused)".into(),
            write_quorum,
            reason: None,
        };
    }

    // 1. A user's switchover request.
    let requested = sc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::SWITCHOVER_TO))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if let Some(target) = requested {
        step = Some(user_switchover(obs, primary.as_deref(), &target, desired));
        if matches!(step, Some(Step::Switchover { .. })) {
            phase = Some(Phase::Upgrading);
            message = format!("switching the primary over to {target}");
        }
    }

    // 2. Scale-down: never remove the primary's pod while it is primary.
    if desired < current {
        let primary_removed = primary
            .as_deref()
            .and_then(|p| obs.member(p))
            .and_then(|m| m.ordinal)
            .map(|o| o >= desired)
            .unwrap_or(false);
        if primary_removed {
            data_replicas = current;
            if step.is_none() {
                let from = primary.clone().unwrap_or_default();
                match best_candidate(
                    obs,
                    |m| m.ordinal.map(|o| o < desired).unwrap_or(false),
                    Some(&from),
                ) {
                    Some(to) => {
                        message = format!(
                            "switching the primary {from} over to {to} before scaling down to {desired}"
                        );
                        step = Some(Step::Switchover {
                            from,
                            to,
                            reason: Reason::ScaleDown,
                        });
                    }
                    None => {
                        message = format!(
                            "scale-down to {desired} waits: no ready, caught-up replica among the remaining pods to take over from {from}"
                        )
                    }
                }
            }
        } else if let Some(m) = obs
            .data()
            .find(|m| m.ordinal.is_some_and(|o| o >= desired) && m.looks_primary())
        {
            // The Lease has moved but the old primary has not dropped its label yet (the
            // new primary relabels it before taking writes): removing it now would
            // delete a pod that Services still route writes to.
            data_replicas = current;
            if message.is_empty() {
                message = format!(
                    "scale-down to {desired} waits for {} to drop the primary role",
                    m.name
                );
            }
        } else if message.is_empty() {
            message = format!("scaling down from {current} to {desired} nodes");
        }
        phase.get_or_insert(Phase::Scaling);
    } else if desired > current {
        message = format!("scaling up from {current} to {desired} nodes");
        phase = Some(Phase::Scaling);
    }

    // 3. Rolling upgrade (only once the pod count is settled).
    if step.is_none() && desired == current {
        let (s, p, msg) = upgrade_step(sc, obs, primary.as_deref());
        if let Some(p) = p {
            step = s;
            phase = Some(p);
            message = msg;
        }
    }

    let ready = obs.data().filter(|m| m.ready && !m.terminating).count() as i32;
    let arbiter_missing =
        sc.spec.arbiter.enabled && !obs.members.iter().any(|m| m.arbiter && m.ready);
    let phase = phase.unwrap_or_else(|| {
        if primary.is_none() {
            if obs.had_primary {
                message = "no primary: waiting for an election".into();
                Phase::Degraded
            } else {
                message = "waiting for the first primary".into();
                Phase::Creating
            }
        } else if let Some(p) = primary
            .as_deref()
            .and_then(|p| obs.member(p))
            .filter(|m| m.node.as_ref().is_some_and(|n| n.role != NodeRole::Primary))
        {
            // The Lease names a node that says it is not primary: nobody takes writes.
            message = format!(
                "no writable primary: the Lease holder {} reports role {}",
                p.name,
                p.node
                    .as_ref()
                    .map(|n| format!("{:?}", n.role).to_lowercase())
                    .unwrap_or_default()
            );
            Phase::Degraded
        } else if ready < desired || arbiter_missing {
            message = format!("{ready} of {desired} data nodes ready");
            let unready: Vec<&str> = obs
                .data()
                .filter(|m| !m.ready || m.terminating)
                .map(|m| m.name.as_str())
                .collect();
            if !unready.is_empty() {
                message.push_str(&format!(" ({} not ready)", unready.join(", ")));
            }
            if arbiter_missing {
                message.push_str(", arbiter not ready");
            }
            if !obs.had_primary {
                Phase::Creating
            } else if let Some(p @ (Phase::Upgrading | Phase::Scaling)) = obs.prev_phase {
                p
            } else if obs.data().count() < desired as usize {
                Phase::Scaling
            } else {
                Phase::Degraded
            }
        } else {
            message = format!(
                "{ready} of {desired} data nodes ready, primary {}",
                primary.clone().unwrap_or_default()
            );
            Phase::Ready
        }
    });
    Plan {
        data_replicas,
        step,
        repairs,
        phase,
        message,
        write_quorum,
        reason: None,
    }
}

/// Role labels that disagree with the Lease and with what the nodes report. Only
/// disagreements the nodes themselves would not fix are repaired: a pod labelled
/// primary that neither holds the Lease nor reports primary becomes `replica`; the
/// Lease holder that reports primary but lacks the label gets it.
pub fn label_repairs(obs: &Observed) -> Vec<LabelRepair> {
    let Some(holder) = obs.lease_holder.as_deref() else {
        return vec![];
    };
    let mut out = vec![];
    for m in obs.data() {
        if m.terminating {
            continue;
        }
        let labelled_primary = m.role_label.as_deref() == Some(roles::PRIMARY);
        if m.name != holder && labelled_primary && !m.reports_primary() {
            out.push(LabelRepair {
                pod: m.name.clone(),
                role: roles::REPLICA,
            });
        }
        if m.name == holder && !labelled_primary && m.reports_primary() {
            out.push(LabelRepair {
                pod: m.name.clone(),
                role: roles::PRIMARY,
            });
        }
    }
    out
}

/// Settings that, when given as a map of pod → value, must name pods of the cluster.
pub fn validate(sc: &StudioCluster) -> Result<(), String> {
    let name = sc.metadata.name.as_deref().unwrap_or_default();
    if let Some(p) = &sc.spec.election.priorities {
        let unknown: Vec<&String> = p
            .keys()
            .filter(|k| {
                k.strip_prefix(name)
                    .and_then(|r| r.strip_prefix('-'))
                    .and_then(|o| o.parse::<i32>().ok())
                    .is_none()
            })
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "spec.election.priorities names pods that are not data nodes of {name}: {unknown:?}"
            ));
        }
        let eligible =
            (0..sc.spec.nodes).any(|i| p.get(&format!("{name}-{i}")).copied().unwrap_or(1) > 0);
        if !eligible {
            return Err(
                "spec.election.priorities leaves no data node eligible to become primary".into(),
            );
        }
    }
    if name.len() > 50 {
        return Err(
            "metadata.name must be at most 50 characters (pod and Service names derive from it)"
                .into(),
        );
    }
    Ok(())
}

/// Map of pod name → role label changes for an Event message.
pub fn describe_repairs(r: &[LabelRepair]) -> String {
    let m: BTreeMap<&str, &str> = r.iter().map(|r| (r.pod.as_str(), r.role)).collect();
    m.iter()
        .map(|(p, r)| format!("{p}→{r}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bytes of a Kubernetes quantity such as `10Gi`, `500M`, `1.5Gi` or `1e9` (storage
/// sizes; `None` when it does not parse).
pub fn quantity_bytes(q: &str) -> Option<u128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let mult: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    let bytes = (n * mult).ceil();
    if bytes.is_finite() && bytes >= 0.0 {
        Some(bytes as u128)
    } else {
        None
    }
}
