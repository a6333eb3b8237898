//! The node's role changes as the election decides them, and its pod's role label:
//! taking over a Lease that names it, becoming primary (relabelling every other
//! `primary` pod first), stepping down, following the holder, and keeping the label in
//! line with what the node is.

use std::time::Duration;

use studio_crds::roles as role_values;

use super::{Coordinator, kubeapi};
use crate::replication::roles;

impl Coordinator {
    /// The Lease names us but we do not act as primary yet (handed over by a
    /// switchover, or a promotion that failed half-way): renew, then promote.
    pub(super) async fn take_over(&self) -> anyhow::Result<()> {
        let Some(o) = self.lease_now() else {
            return Ok(());
        };
        tracing::info!(
            term = o.record.transitions,
            "the Lease names this node: taking over"
        );
        if !self.renew(None).await {
            return Ok(());
        }
        let prev = self.other_primary_labelled().into_iter().next();
        self.become_primary(o.record.transitions, prev).await
    }

    /// Pods other than this one labelled `primary`.
    fn other_primary_labelled(&self) -> Vec<String> {
        self.pods
            .store
            .state()
            .iter()
            .filter(|p| kubeapi::role_label(p) == Some(role_values::PRIMARY))
            .filter_map(|p| p.metadata.name.clone())
            .filter(|n| n != self.me())
            .collect()
    }

    /// Relabels every other primary-labelled pod (and the previous holder) `replica`,
    /// promotes, then labels this pod `primary`.
    pub(super) async fn become_primary(
        &self,
        mut term: u64,
        prev: Option<String>,
    ) -> anyhow::Result<()> {
        let mut others = self.other_primary_labelled();
        if let Some(p) = prev
            && p != self.me()
            && !others.contains(&p)
        {
            others.push(p);
        }
        for name in &others {
            match kubeapi::label_pod(&self.pods_api, name, role_values::REPLICA, None).await {
                Ok(()) => tracing::info!(pod = %name, "relabelled the previous primary replica"),
                Err(e) if kubeapi::is_status(&e, 404) => {}
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "cannot relabel {name} before taking writes: {}",
                        kubeapi::explain(&e, "patch", "pods", &self.s.namespace)
                    ));
                }
            }
        }
        let info = self.state.role.get();
        let seen = info.term.max(self.state.store.position().term);
        let promised = self.state.repl.promised_term();
        if term <= seen || term < promised {
            // This node saw or promised a higher term meanwhile: move the Lease's term
            // above it first (term == leaseTransitions always).
            let bumped = (seen + 1).max(promised);
            if !self.renew(Some(bumped)).await {
                anyhow::bail!("could not move the Lease to term {bumped}");
            }
            term = bumped;
        }
        self.set_primary(Some(term));
        if let Err(e) = roles::promote(&self.state, term, false).await {
            self.set_primary(None);
            anyhow::bail!("promotion to term {term} failed: {e}");
        }
        tracing::info!(
            term,
            seq = self.state.store.position().seq,
            "primary: taking writes"
        );
        if let Err(e) =
            kubeapi::label_pod(&self.pods_api, self.me(), role_values::PRIMARY, Some(term)).await
        {
            self.warn(
                "label",
                kubeapi::explain(&e, "patch", "pods", &self.s.namespace),
            );
        }
        Ok(())
    }

    pub(super) async fn step_down(&self) {
        if self.acting_term().is_none() {
            return;
        }
        self.set_primary(None);
        // Follow the new holder only once it serves (see `follow`), or the first
        // stream attempt fails and backs off.
        if let Err(e) = roles::demote(&self.state, None).await {
            tracing::warn!(error = %e, "demote failed");
        }
        if let Err(e) =
            kubeapi::label_pod(&self.pods_api, self.me(), role_values::REPLICA, None).await
        {
            self.warn(
                "label",
                kubeapi::explain(&e, "patch", "pods", &self.s.namespace),
            );
        }
    }

    /// Points replication at the holder's pod IP, once it serves as primary (it labels
    /// itself right after promoting; a holder that has not for a second is followed
    /// anyway, e.g. when it cannot patch its label).
    pub(super) async fn follow(&self, holder: &str, held_for: Duration) {
        let Some(pod) = self.pod(holder) else { return };
        if kubeapi::role_label(&pod) != Some(role_values::PRIMARY)
            && held_for < Duration::from_secs(1)
        {
            return;
        }
        let Some(url) = self.url_of(&pod) else {
            return;
        };
        if self.state.role.get().primary.as_deref() == Some(url.as_str()) {
            return;
        }
        match roles::follow(&self.state, &url, None).await {
            Ok(_) => self.note("follow", format!("following {holder} at {url}")),
            Err(e) => self.warn("follow", format!("cannot follow {holder} at {url}: {e}")),
        }
    }

    /// Keeps this pod's role label in line with what the node is.
    pub(super) async fn reconcile_label(&self) {
        // An acting primary keeps its label while fenced (it may renew and resume at
        // the same term); a new primary relabels it before taking writes.
        let desired = if self.acting_term().is_some() {
            role_values::PRIMARY
        } else if self.s.arbiter {
            role_values::ARBITER
        } else {
            role_values::REPLICA
        };
        let Some(p) = self.pod(self.me()) else { return };
        self.reconcile_quorum_annotation(&p).await;
        if kubeapi::role_label(&p) == Some(desired) {
            return;
        }
        let term = (desired == role_values::PRIMARY)
            .then(|| self.acting_term())
            .flatten();
        if let Err(e) = kubeapi::label_pod(&self.pods_api, self.me(), desired, term).await {
            self.warn(
                "label",
                kubeapi::explain(&e, "patch", "pods", &self.s.namespace),
            );
        }
    }

    /// Publishes on this pod whether it can take sync writes (see
    /// `annotations::WRITE_QUORUM`): the operator watches pods, so a lost quorum
    /// reaches the StudioCluster's status within a round trip, without polling.
    async fn reconcile_quorum_annotation(&self, p: &k8s_openapi::api::core::v1::Pod) {
        use studio_crds::annotations::WRITE_QUORUM;
        let available =
            crate::replication::quorum::write_quorum(&self.state).is_none_or(|q| q.available);
        let desired = if available {
            "available"
        } else {
            "unavailable"
        };
        if kubeapi::annotation(p, WRITE_QUORUM) == Some(desired) {
            return;
        }
        if let Err(e) =
            kubeapi::annotate_pod(&self.pods_api, self.me(), WRITE_QUORUM, desired).await
        {
            self.warn(
                "annotate",
                kubeapi::explain(&e, "patch", "pods", &self.s.namespace),
            );
        }
    }
}
