//! Every write of the Lease: acquisition, renewal, the hand-over to a switchover's
//! target, and the re-read after a conflict. Writes carry a resourceVersion
//! precondition, are bounded by the renew deadline and are serialised by `lease_op`.

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use studio_crds::labels;

use super::election::Observed;
use super::{Coordinator, kubeapi};

impl Coordinator {
    pub(super) async fn acquire(&self, obs: Option<&Observed>, term: u64) -> anyhow::Result<()> {
        let _g = self.lease_op.lock().await;
        let prev = obs.and_then(|o| o.record.holder.clone());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.lease_name()),
                resource_version: obs.and_then(|o| o.record.resource_version.clone()),
                labels: Some(BTreeMap::from([(
                    labels::CLUSTER.to_string(),
                    self.s.cluster.clone(),
                )])),
                ..Default::default()
            },
            spec: Some(kubeapi::lease_spec(
                self.me(),
                term,
                self.s.timing.lease_seconds(),
            )),
        };
        let started = Instant::now();
        let r = match obs {
            Some(_) => {
                tokio::time::timeout(
                    self.s.timing.renew_deadline,
                    self.leases
                        .replace(&self.lease_name(), &PostParams::default(), &lease),
                )
                .await
            }
            None => {
                tokio::time::timeout(
                    self.s.timing.renew_deadline,
                    self.leases.create(&PostParams::default(), &lease),
                )
                .await
            }
        };
        let verb = if obs.is_some() { "update" } else { "create" };
        match r {
            Ok(Ok(l)) => {
                self.set_renewed(started);
                self.observe(Some(&l));
                tracing::info!(term, previous = ?prev, "acquired the Lease");
                drop(_g);
                self.become_primary(term, prev).await
            }
            Ok(Err(e)) if kubeapi::is_status(&e, 409) => {
                tracing::info!(term, "another node changed the Lease first");
                self.refresh_lease().await;
                Ok(())
            }
            Ok(Err(e)) => Err(anyhow::anyhow!(kubeapi::explain(
                &e,
                verb,
                "leases.coordination.k8s.io",
                &self.s.namespace
            ))),
            Err(_) => Err(anyhow::anyhow!("{verb} of the Lease timed out")),
        }
    }

    /// One renewal attempt gives up after this long, so that after a network blip
    /// the next attempt (a quarter retry period later, on a fresh connection rather
    /// than one stuck in TCP back-off) can still land before the renew deadline; the
    /// deadline itself is enforced by the fence. 1.5 retry periods leave a loaded API
    /// server time to answer.
    fn renew_attempt_timeout(&self) -> std::time::Duration {
        let t = self.s.timing;
        (t.retry_period * 3 / 2)
            .max(std::time::Duration::from_secs(1))
            .min(t.renew_deadline)
    }

    /// Reads the Lease (bounded by the renew deadline). Returns whether it could.
    pub(super) async fn refresh_lease(&self) -> bool {
        let read = tokio::time::timeout(
            self.s.timing.renew_deadline,
            self.leases.get_opt(&self.lease_name()),
        )
        .await;
        match read {
            Ok(Ok(l)) => {
                self.observe(l.as_ref());
                true
            }
            Ok(Err(e)) => {
                self.warn(
                    "lease-get",
                    kubeapi::explain(&e, "get", "leases.coordination.k8s.io", &self.s.namespace),
                );
                false
            }
            Err(_) => {
                self.warn("lease-get", "reading the Lease timed out".into());
                false
            }
        }
    }

    /// Gives the Lease up (no holder, same term) so that the members that can form a
    /// write quorum elect one of themselves at once instead of waiting for expiry.
    pub(super) async fn release_lease(&self) -> bool {
        let timeout = self.s.timing.renew_deadline;
        self.rewrite_own_lease("release", timeout, |spec| {
            spec.holder_identity = None;
            spec.renew_time = None;
        })
        .await
    }

    /// Renews the Lease (keeping holder and term, or moving the term to `bump`).
    /// Returns whether it succeeded.
    pub(super) async fn renew(&self, bump: Option<u64>) -> bool {
        let lease_seconds = self.s.timing.lease_seconds();
        self.rewrite_own_lease("renew", self.renew_attempt_timeout(), |spec| {
            spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                k8s_openapi::jiff::Timestamp::now(),
            ));
            spec.lease_duration_seconds = Some(lease_seconds);
            if let Some(t) = bump {
                spec.lease_transitions = Some(t.min(i32::MAX as u64) as i32);
            }
        })
        .await
    }

    /// Writes back the Lease this node holds, changed by `change`, with the observed
    /// resourceVersion as precondition and at most `timeout`. A success counts as a
    /// renewal; a conflict re-reads the Lease. Returns whether it succeeded.
    async fn rewrite_own_lease(
        &self,
        what: &'static str,
        timeout: std::time::Duration,
        change: impl FnOnce(&mut k8s_openapi::api::coordination::v1::LeaseSpec),
    ) -> bool {
        let _g = self.lease_op.lock().await;
        let Some(o) = self.lease_now() else {
            return false;
        };
        if o.record.holder.as_deref() != Some(self.me()) {
            return false;
        }
        let Some(mut l) = self.lease_template(&o) else {
            return false;
        };
        if let Some(spec) = l.spec.as_mut() {
            change(spec);
        }
        let started = Instant::now();
        let r = tokio::time::timeout(
            timeout,
            self.leases
                .replace(&self.lease_name(), &PostParams::default(), &l),
        )
        .await;
        match r {
            Ok(Ok(l)) => {
                if l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.me()) {
                    self.set_renewed(started);
                }
                self.observe(Some(&l));
                true
            }
            Ok(Err(e)) if kubeapi::is_status(&e, 409) => {
                drop(_g);
                self.refresh_lease().await;
                false
            }
            Ok(Err(e)) => {
                self.warn(
                    what,
                    kubeapi::explain(
                        &e,
                        "update",
                        "leases.coordination.k8s.io",
                        &self.s.namespace,
                    ),
                );
                false
            }
            Err(_) => {
                self.warn(what, format!("{what}: the Lease update timed out"));
                false
            }
        }
    }

    /// The Lease object as last observed, to write back with its resourceVersion.
    fn lease_template(&self, o: &Observed) -> Option<Lease> {
        let r = &o.record;
        let mut spec = kubeapi::lease_spec(
            r.holder.as_deref()?,
            r.transitions,
            self.s.timing.lease_seconds(),
        );
        spec.acquire_time = r.acquire_time.and_then(kubeapi::micro_time);
        Some(Lease {
            metadata: ObjectMeta {
                name: Some(self.lease_name()),
                resource_version: r.resource_version.clone(),
                labels: Some(BTreeMap::from([(
                    labels::CLUSTER.to_string(),
                    self.s.cluster.clone(),
                )])),
                ..Default::default()
            },
            spec: Some(spec),
        })
    }

    /// Gives the Lease to `name` at `term + 1` (resourceVersion precondition; bounded
    /// by the renew deadline, so the fence cannot outlive the call).
    pub(super) async fn give_lease(&self, name: &str, term: u64) -> Result<u64, String> {
        let _g = self.lease_op.lock().await;
        let explain = |e: &kube::Error, verb: &str| {
            kubeapi::explain(e, verb, "leases.coordination.k8s.io", &self.s.namespace)
        };
        let deadline = self.s.timing.renew_deadline;
        let l = tokio::time::timeout(deadline, self.leases.get(&self.lease_name()))
            .await
            .map_err(|_| "reading the Lease timed out".to_string())?
            .map_err(|e| explain(&e, "get"))?;
        let rec = kubeapi::record_of(&l);
        if rec.holder.as_deref() != Some(self.me()) || rec.transitions != term {
            return Err("this node no longer holds the Lease".into());
        }
        let mut new = l.clone();
        new.metadata.managed_fields = None;
        new.spec = Some(kubeapi::lease_spec(
            name,
            term + 1,
            self.s.timing.lease_seconds(),
        ));
        let l = tokio::time::timeout(
            deadline,
            self.leases
                .replace(&self.lease_name(), &PostParams::default(), &new),
        )
        .await
        .map_err(|_| "updating the Lease timed out".to_string())?
        .map_err(|e| explain(&e, "update"))?;
        self.observe(Some(&l));
        Ok(term + 1)
    }
}
