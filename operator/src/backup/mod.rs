//! Base backups (issue 11): the StudioBackup and StudioScheduledBackup controllers and
//! the cluster-level upkeep of the archive (recoverability fields of the StudioCluster
//! status, retention).
//!
//! Files, one job each:
//! * pure decisions, unit-tested: [`select`] (which member takes a backup), [`decide`]
//!   (a StudioBackup's next step and status), [`retention`] (what to delete),
//!   [`schedule`] (what a schedule does now), [`manifest`] (the objects created);
//! * acting: [`studio_backup`] (StudioBackup controller), [`scheduled`]
//!   (StudioScheduledBackup controller), [`archive`] (recoverability and retention).
//!
//! Events (on the StudioBackup): `Started`, `Completed` (Normal), `Failed` (Warning).
//! On the StudioScheduledBackup: `BackupCreated` (Normal), `MissedRunSkipped`,
//! `InvalidSchedule` (Warning). On the StudioCluster: `BackupsPruned` (Normal),
//! `BackupPruneFailed` (Warning).

pub mod archive;
pub mod decide;
pub mod manifest;
pub mod retention;
pub mod schedule;
pub mod scheduled;
pub mod select;
pub mod studio_backup;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use studio_crds::{MemberStatus, StudioCluster, roles, secret_keys};
use tracing::warn;

use crate::controller::Context;
use crate::error::{Error, Result};
use crate::node_client::NodeClient;
use crate::plan::Member;

/// Shared state of the backup controllers.
pub struct BackupContext {
    /// The StudioCluster controller's context: the API client, Event recorder,
    /// metrics and the operator's mutual-TLS clients of TLS clusters.
    pub ctx: Arc<Context>,
    /// What was last announced per object (one Event per distinct message).
    announced: Mutex<HashMap<String, String>>,
}

impl BackupContext {
    pub fn new(ctx: Arc<Context>) -> Self {
        BackupContext {
            ctx,
            announced: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `message` is new for `key` (and remembers it).
    fn first_time(&self, key: &str, message: &str) -> bool {
        self.announced
            .lock()
            .map(|mut m| m.insert(key.to_string(), message.to_string()).as_deref() != Some(message))
            .unwrap_or(true)
    }

    fn forget(&self, key: &str) {
        if let Ok(mut m) = self.announced.lock() {
            m.remove(key);
        }
    }

    /// Publishes an Event about `obj` (the note also goes into the action, at most 128
    /// characters, so that distinct messages are not folded into one series).
    async fn event<K>(&self, obj: &K, type_: EventType, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let mut action = format!("{reason}: {note}");
        if action.len() > 128 {
            let mut end = 128;
            while !action.is_char_boundary(end) {
                end -= 1;
            }
            action.truncate(end);
        }
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action,
            secondary: None,
        };
        if let Err(e) = self.ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
            warn!(error = %e, reason, "cannot publish event");
        }
    }
}

/// Runs the backup controllers and the archive upkeep for one namespace (or all, with
/// `None`) until shutdown.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let bctx = Arc::new(BackupContext::new(ctx));
    tokio::select! {
        _ = async {
            futures::join!(
                studio_backup::run(bctx.clone(), namespace.clone()),
                scheduled::run(bctx.clone(), namespace.clone()),
            )
        } => {}
        _ = archive::run_periodically(bctx.clone(), namespace.clone()) => {}
    }
}

fn api<K>(c: &kube::Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match ns {
        Some(ns) => Api::namespaced(c.clone(), ns),
        None => Api::all(c.clone()),
    }
}

/// `namespace/name` of an object.
fn key<K: Resource>(o: &K) -> String {
    format!(
        "{}/{}",
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default()
    )
}

/// The client for calls to `sc`'s members: the operator's mutual-TLS client for a TLS
/// cluster (made by the StudioCluster controller; not there yet right after a start),
/// else plain HTTP with the cluster token from the cluster's Secret.
pub async fn nodes_for(ctx: &Context, sc: &StudioCluster) -> Result<NodeClient> {
    let ns = sc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    if sc.tls().is_some() {
        let k = format!("{ns}/{}", sc.name_any());
        return ctx
            .tls_clients
            .lock()
            .map_err(|_| Error::Poisoned)?
            .get(&k)
            .map(|c| c.client.clone())
            .ok_or_else(|| {
                Error::Waiting(format!(
                    "the operator's client certificate for {k} is not ready yet"
                ))
            });
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let name = crate::build::secret_name(sc);
    let secret = secrets.get_opt(&name).await?;
    let token = secret
        .and_then(|s| s.data)
        .and_then(|d| d.get(secret_keys::CLUSTER_TOKEN).cloned())
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
        .ok_or(Error::SecretKey(name, secret_keys::CLUSTER_TOKEN))?;
    Ok(ctx.nodes.clone().with_token(Some(token)))
}

/// A member of the cluster's status as the node client addresses it.
pub fn member(m: &MemberStatus) -> Member {
    Member {
        name: m.name.clone(),
        ordinal: None,
        arbiter: m.role == roles::ARBITER,
        role_label: Some(m.role.clone()),
        ready: m.ready,
        terminating: false,
        ip: m.pod_ip.clone(),
        revision: None,
        node: None,
    }
}

#[cfg(test)]
mod tests;
