//! Bootstrap: the ConfigMap `<cluster>-bootstrap`, created atomically by exactly one
//! eligible empty node, holds the cluster id. Other empty nodes follow the primary and
//! clone; data of another cluster id is refused.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use studio_crds::node_api::{RestorePhase, RestoreStatus};
use studio_crds::{labels, names};

use super::{Coordinator, kubeapi};

/// Keys of the bootstrap ConfigMap.
pub const BOOTSTRAP_CLUSTER_ID: &str = "clusterId";
pub const BOOTSTRAP_CREATED_BY: &str = "createdBy";

pub(super) enum BootstrapError {
    /// Refuse to run (data of another cluster).
    Fatal(String),
    /// Not possible yet; try again.
    Retry(String),
}

impl Coordinator {
    pub(super) async fn bootstrap(&self) -> Result<String, BootstrapError> {
        let store = &self.state.store;
        let mine = store
            .call(|s| s.cluster_id())
            .await
            .map_err(|e| BootstrapError::Retry(e.to_string()))?;
        let name = names::bootstrap_configmap(&self.s.cluster);
        let ns = &self.s.namespace;
        let existing =
            self.configmaps.get_opt(&name).await.map_err(|e| {
                BootstrapError::Retry(kubeapi::explain(&e, "get", "configmaps", ns))
            })?;
        if let Some(cm) = existing {
            let data = cm.data.unwrap_or_default();
            let Some(id) = data.get(BOOTSTRAP_CLUSTER_ID).cloned() else {
                return Err(BootstrapError::Fatal(format!(
                    "the bootstrap record {ns}/{name} has no {BOOTSTRAP_CLUSTER_ID}: refusing to guess the cluster id"
                )));
            };
            return match mine {
                Some(m) if m != id => Err(BootstrapError::Fatal(format!(
                    "this node's data (in {}) belongs to cluster id {m}, but cluster {} has id {id} \
                     (bootstrap record {ns}/{name}): refusing to join. Move that data away (or use a fresh volume) \
                     to let this node clone the cluster",
                    self.state.config.data_dir.display(),
                    self.s.cluster
                ))),
                Some(_) => Ok(id),
                None => {
                    if data.get(BOOTSTRAP_CREATED_BY).map(String::as_str) == Some(self.me()) {
                        // We created the record but died before recording the id (or
                        // before the restore finished: it starts over).
                        self.restore_if_asked().await?;
                        let i = id.clone();
                        store
                            .call(move |s| s.set_cluster_id(&i))
                            .await
                            .map_err(|e| BootstrapError::Retry(e.to_string()))?;
                        tracing::info!(cluster_id = %id, "bootstrap: adopting the cluster id this pod created");
                    } else {
                        tracing::info!(cluster_id = %id, "bootstrap: the cluster exists; this empty node waits for a primary and clones");
                    }
                    Ok(id)
                }
            };
        }
        let (id, fresh) = match &mine {
            Some(m) => (m.clone(), false),
            None => {
                if let Some(why) = self.s.policy.refuses(self.me(), self.s.arbiter) {
                    return Err(BootstrapError::Retry(format!(
                        "bootstrap: waiting for an eligible data node to create {name} ({why})"
                    )));
                }
                (uuid::Uuid::new_v4().to_string(), true)
            }
        };
        let mut data = BTreeMap::new();
        data.insert(BOOTSTRAP_CLUSTER_ID.to_string(), id.clone());
        data.insert(BOOTSTRAP_CREATED_BY.to_string(), self.me().to_string());
        data.insert("createdAt".to_string(), chrono::Utc::now().to_rfc3339());
        let mut lbl = BTreeMap::new();
        lbl.insert(labels::CLUSTER.to_string(), self.s.cluster.clone());
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(lbl),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        match self.configmaps.create(&PostParams::default(), &cm).await {
            Ok(_) => {
                if fresh {
                    self.restore_if_asked().await?;
                    let i = id.clone();
                    store
                        .call(move |s| s.set_cluster_id(&i))
                        .await
                        .map_err(|e| BootstrapError::Retry(e.to_string()))?;
                    tracing::info!(cluster_id = %id, record = %name, "bootstrap: this node created the bootstrap record and initialised the repository");
                } else {
                    tracing::warn!(cluster_id = %id, record = %name, "bootstrap: the record was missing; recreated it from this node's data");
                }
                Ok(id)
            }
            Err(e) if kubeapi::is_status(&e, 409) => Err(BootstrapError::Retry(
                "bootstrap: another node created the record first".into(),
            )),
            Err(e) => Err(BootstrapError::Retry(kubeapi::explain(
                &e,
                "create",
                "configmaps",
                ns,
            ))),
        }
    }

    /// With `spec.bootstrap.recovery`, the node that bootstraps the cluster restores
    /// the content first (the caller then gives it the new cluster id). A refusal is
    /// permanent: reported in the status, not retried.
    async fn restore_if_asked(&self) -> Result<(), BootstrapError> {
        let backups = &self.backups;
        let req = crate::backup::restore::Request::from_args(&self.state.config.backup)
            .map_err(|e| BootstrapError::Fatal(e.to_string()))?;
        let Some(req) = req else {
            return Ok(());
        };
        if let Some(done) = backups.restore_status()
            && done.phase == RestorePhase::Failed
        {
            return Err(BootstrapError::Retry(format!(
                "restore refused: {}",
                done.message
            )));
        }
        let outcome = crate::backup::restore::run(
            &self.state.store,
            backups,
            &req,
            &self.state.config.data_dir,
        )
        .await;
        match outcome {
            Ok(done) => {
                tracing::info!(message = %done.message, "restore completed");
                backups.set_restore(done);
                Ok(())
            }
            Err(e) => {
                let transient = e.is_transient();
                let message = e.to_string();
                tracing::error!(error = %message, transient, "restore failed");
                backups.set_restore(RestoreStatus {
                    phase: if transient {
                        RestorePhase::Running
                    } else {
                        RestorePhase::Failed
                    },
                    message: message.clone(),
                    backup_id: req.backup_id.clone(),
                    restored_seq: 0,
                });
                Err(BootstrapError::Retry(format!("restore: {message}")))
            }
        }
    }
}
