//! Coordination through the Kubernetes API (DESIGN.md section 4): the only layer of
//! the node that talks to Kubernetes.
//!
//! - Peers: a reflector on the pods labelled `studio.cms.io/cluster=<cluster>` (podIP,
//!   container state), never DNS.
//! - Bootstrap: the ConfigMap `<cluster>-bootstrap`, created atomically by exactly one
//!   eligible empty node, holds the cluster id. Other empty nodes follow the primary
//!   and clone; data of another cluster id is refused.
//! - Election: the Lease `<cluster>-primary` with client-go semantics (expiry judged
//!   on locally observed time since the record last changed; every write carries a
//!   resourceVersion precondition). The term is `leaseTransitions`. A candidate polls
//!   the members' positions (each promises to acknowledge nothing older, see
//!   [`POSITION_ROUTE`]) and applies the safety rule of [`election::decide`]. Proof of
//!   death (the holder's container not running / restarted, or its pod gone) skips the
//!   wait for expiry.
//! - Fencing: [`may_write`] is false unless the Lease was renewed within the renew
//!   deadline; a watchdog demotes a primary that missed it.
//! - Labels: the new primary relabels every other `primary` pod `replica` before it
//!   takes writes, then labels itself; a node stepping down relabels itself.
//! - Switchover: [`Coordinator::switchover`] (the `ADMIN_SWITCHOVER` route and
//!   SIGTERM) stops writes, waits for the target to hold everything and hands it the
//!   Lease; the target sees it through its Lease watch.
//!
//! Files, one job each: `settings` (flags and env), `watches` (pods and Lease),
//! `lease_view` (the Lease as observed), `members` (the pod view, M, position
//! polls), `lease_writes` (every write of the Lease), `bootstrap` (the cluster id),
//! `state` (the election's states and transition function, pure), `election_loop`
//! (the rounds and the campaign), `role_changes` (promotion, step-down, following,
//! the role label), `fencing` (the write fence and its watchdog), `switchover`
//! (hand-over through the Lease), `notes` (log de-duplication), [`election`] (the
//! pure rules) and `kubeapi` (Kubernetes object helpers).

mod bootstrap;
pub mod election;
mod election_loop;
mod fencing;
mod kubeapi;
mod lease_view;
mod lease_writes;
mod members;
mod notes;
mod role_changes;
mod settings;
mod state;
mod switchover;
mod watches;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::Api;
use kube::runtime::reflector;
use tokio::sync::Notify;

use crate::backup::Backups;
use crate::replication::Replication;

pub use bootstrap::{BOOTSTRAP_CLUSTER_ID, BOOTSTRAP_CREATED_BY};
pub use settings::Settings;

use fencing::Fence;
use lease_view::LeaseView;
use members::PodView;
use notes::Notes;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The coordination of one node (Kubernetes mode): election, fencing, labels,
/// switchover through the Lease.
pub struct Coordinator {
    state: Replication,
    s: Settings,
    pods_api: Api<Pod>,
    leases: Api<Lease>,
    configmaps: Api<ConfigMap>,
    statefulsets: Api<StatefulSet>,
    /// The cluster's pods (from the pod watch).
    pods: PodView,
    /// The Lease as observed (from the Lease watch and our own writes).
    view: LeaseView,
    wake: Notify,
    /// Whether this node acts as primary, and its last renewal.
    fence: Fence,
    shutting_down: AtomicBool,
    /// Serialises Lease writes (renewal, acquisition, hand-over).
    lease_op: tokio::sync::Mutex<()>,
    cluster_id: Mutex<Option<String>>,
    /// Since when the lease has looked free (relaxes rank deference).
    free_since: Mutex<Option<Instant>>,
    notes: Notes,
    /// Position polls of an election: short timeouts (the election budget).
    http: reqwest::Client,
    /// The restore a bootstrapping node runs (spec.bootstrap.recovery).
    backups: Arc<Backups>,
}

/// The long-running tasks of coordination, for the server's supervisor. The fence
/// watchdog among them: if it stopped, a primary could outlive its Lease.
pub type Task = (
    &'static str,
    futures::future::BoxFuture<'static, Result<(), String>>,
);

/// Starts Kubernetes mode: connects with the pod's ServiceAccount (KUBECONFIG or
/// in-cluster) and returns the coordinator with its tasks (watches, election loop,
/// fencing watchdog), which the caller runs under supervision.
pub async fn start(
    state: &Replication,
    backups: Arc<Backups>,
) -> anyhow::Result<(Arc<Coordinator>, Vec<Task>)> {
    use futures::FutureExt;
    let s = Settings::from_config(&state.config)?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster config)")?;
    let ns = s.namespace.clone();
    let (pods, writer) = reflector::store::<Pod>();
    let http = crate::replication::internal_client(state.tls.as_ref())?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_millis(1500))
        .build()
        .context("building the HTTP client")?;
    let c = Arc::new(Coordinator {
        state: state.clone(),
        pods_api: Api::namespaced(client.clone(), &ns),
        leases: Api::namespaced(client.clone(), &ns),
        configmaps: Api::namespaced(client.clone(), &ns),
        statefulsets: Api::namespaced(client.clone(), &ns),
        pods: PodView::new(pods),
        view: LeaseView::default(),
        wake: Notify::new(),
        fence: Fence::default(),
        shutting_down: AtomicBool::new(false),
        lease_op: tokio::sync::Mutex::new(()),
        cluster_id: Mutex::new(None),
        free_since: Mutex::new(None),
        notes: Notes::default(),
        http,
        backups,
        s,
    });
    tracing::info!(
        cluster = %c.s.cluster, namespace = %c.s.namespace, pod = %c.s.pod_name,
        lease_duration = ?c.s.timing.lease_duration, renew_deadline = ?c.s.timing.renew_deadline,
        retry_period = ?c.s.timing.retry_period, arbiter = c.s.arbiter, sync_k = ?c.s.sync_k,
        "Kubernetes mode: coordinating through the API"
    );
    let tasks: Vec<Task> = vec![
        ("watch-pods", c.clone().watch_pods(writer).map(Ok).boxed()),
        ("watch-lease", c.clone().watch_lease().map(Ok).boxed()),
        ("fence-watchdog", c.clone().fence_watchdog().map(Ok).boxed()),
        ("election", c.clone().run().boxed()),
    ];
    Ok((c, tasks))
}

impl Coordinator {
    fn me(&self) -> &str {
        &self.s.pod_name
    }
}
