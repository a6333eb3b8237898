//! The pod view: the cluster's pods as the pod watch reflects them (addresses,
//! arbiters, the holder's container state), the number of members M, the position
//! poll of an election and the best replica to hand over to.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, ObjectRef};
use studio_crds::node_api::{self, Campaign, NodeRole, PositionAnswer, PositionRequest};
use studio_crds::{labels, names, roles as role_values};

use super::election::{self, Heard, HolderPod, Pos};
use super::{Coordinator, kubeapi, lock};
use crate::replication::switchover as handover;

/// The cluster's pods (the reflector store the pod watch fills) and what is derived
/// from them.
pub(super) struct PodView {
    pub(super) store: reflector::Store<Pod>,
    /// The pod watch has listed once.
    pub(super) synced: AtomicBool,
    members_cache: Mutex<Option<(usize, Instant)>>,
    high_water: Mutex<usize>,
}

impl PodView {
    pub(super) fn new(store: reflector::Store<Pod>) -> PodView {
        PodView {
            store,
            synced: AtomicBool::new(false),
            members_cache: Mutex::new(None),
            high_water: Mutex::new(0),
        }
    }
}

impl Coordinator {
    pub(super) fn pod(&self, name: &str) -> Option<Arc<Pod>> {
        self.pods
            .store
            .get(&ObjectRef::new(name).within(&self.s.namespace))
    }

    pub(super) fn url_of(&self, p: &Pod) -> Option<String> {
        let ip = p.status.as_ref()?.pod_ip.as_ref()?;
        if ip.is_empty() {
            return None;
        }
        Some(crate::replication::base_url(self.s.scheme, ip, self.s.port))
    }

    pub(super) fn is_arbiter_pod(p: &Pod) -> bool {
        let l = p.metadata.labels.as_ref();
        l.and_then(|l| l.get(labels::COMPONENT))
            .is_some_and(|v| v == studio_crds::components::ARBITER)
            || kubeapi::role_label(p) == Some(role_values::ARBITER)
    }

    pub(super) fn holder_pod(&self, name: &str) -> HolderPod {
        if !self.pods.synced.load(Ordering::SeqCst) {
            return HolderPod::Unknown;
        }
        let Some(p) = self.pod(name) else {
            return HolderPod::Gone;
        };
        let statuses = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        let all_running = statuses
            .iter()
            .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
        let started_at = statuses
            .iter()
            .filter_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.clone())
            .filter_map(|t| kubeapi::to_chrono(t.0))
            .max();
        HolderPod::Present {
            all_running,
            has_status: !statuses.is_empty(),
            started_at,
        }
    }

    pub(super) async fn members(&self) -> usize {
        if let Some(m) = self.s.members {
            return m;
        }
        if let Some((m, at)) = *lock(&self.pods.members_cache)
            && at.elapsed() < Duration::from_secs(10)
        {
            return m;
        }
        let mut total = 0usize;
        let mut ok = true;
        for sts in [
            names::statefulset(&self.s.cluster),
            names::arbiter_statefulset(&self.s.cluster),
        ] {
            match self.statefulsets.get_opt(&sts).await {
                Ok(Some(s)) => {
                    total += s.spec.and_then(|s| s.replicas).unwrap_or(1).max(0) as usize
                }
                Ok(None) => {}
                Err(e) => {
                    ok = false;
                    self.warn(
                        "members",
                        kubeapi::explain(&e, "get", "statefulsets.apps", &self.s.namespace),
                    );
                }
            }
        }
        // Without the StatefulSets (e.g. no `get` on them): the most pods of the cluster
        // this process has seen at once (a deleted pod still counts).
        let pods = self.pods.store.state().len();
        let seen = {
            let mut hw = lock(&self.pods.high_water);
            *hw = (*hw).max(pods);
            *hw
        };
        let m = if ok && total > 0 { total } else { seen.max(1) };
        *lock(&self.pods.members_cache) = Some((m, Instant::now()));
        m
    }

    /// Asks every member for its position and a promise of `term`, bound to the
    /// campaign replacing the Lease at `lease_version`.
    pub(super) async fn poll_positions(
        &self,
        term: u64,
        lease_version: Option<String>,
    ) -> Vec<Heard> {
        let bootstrap_id = lock(&self.cluster_id).clone();
        let targets: Vec<(String, String, bool)> = self
            .pods
            .store
            .state()
            .iter()
            .filter_map(|p| {
                let name = p.metadata.name.clone()?;
                if name == self.me() || p.metadata.deletion_timestamp.is_some() {
                    return None;
                }
                Some((name, self.url_of(p)?, Self::is_arbiter_pod(p)))
            })
            .collect();
        let calls = targets.into_iter().map(|(name, url, arbiter)| {
            let req = self.state.internal(
                self.http
                    .post(format!("{url}{}", node_api::ELECTION_POSITION))
                    .json(&PositionRequest {
                        term,
                        campaign: Some(Campaign {
                            lease_version: lease_version.clone(),
                        }),
                    }),
            );
            let bootstrap_id = bootstrap_id.clone();
            async move {
                let resp = req.send().await.ok()?;
                if !resp.status().is_success() {
                    tracing::debug!(peer = %name, status = %resp.status(), "position request refused");
                    return None;
                }
                let a: PositionAnswer = resp.json().await.ok()?;
                Some(Heard {
                    name,
                    pos: Pos {
                        term: a.term,
                        seq: a.seq,
                    },
                    of_cluster: a.cluster_id.is_some() && a.cluster_id == bootstrap_id,
                    arbiter: arbiter || a.role == NodeRole::Arbiter,
                    url: Some(url),
                })
            }
        });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The most advanced eligible data node other than this one (for SIGTERM).
    pub(super) async fn best_replica(&self) -> Option<String> {
        let cands: Vec<(String, String)> = self
            .pods
            .store
            .state()
            .iter()
            .filter(|p| !Self::is_arbiter_pod(p) && p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| Some((p.metadata.name.clone()?, self.url_of(p)?)))
            .filter(|(n, _)| n != self.me() && self.s.policy.refuses(n, false).is_none())
            .collect();
        let statuses = futures::future::join_all(cands.into_iter().map(|(n, u)| async move {
            let s = handover::status_of(&self.state, &u).await?;
            Some((n, s))
        }))
        .await;
        statuses
            .into_iter()
            .flatten()
            .filter(|(_, s)| s.cluster_id.is_some())
            .max_by_key(|(n, s)| {
                (
                    Pos {
                        term: s.last_term,
                        seq: s.seq,
                    },
                    self.s.policy.priority(n),
                    std::cmp::Reverse(election::ordinal(n).unwrap_or(u32::MAX)),
                )
            })
            .map(|(n, _)| n)
    }
}
