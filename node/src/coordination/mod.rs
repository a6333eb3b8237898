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
//! - Switchover: [`switchover`] (the `ADMIN_SWITCHOVER` route and SIGTERM) stops
//!   writes, waits for the target to hold everything and hands it the Lease; the target
//!   sees it through its Lease watch.

pub mod election;
mod kubeapi;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use studio_crds::node_api::{self, AdminResponse, NodeRole, PositionAnswer, PositionRequest};
use studio_crds::{labels, names, roles as role_values};
use tokio::sync::Notify;

use crate::cluster::WriteFence;
use crate::config::{Config, ReplicationMode, RoleArg};
use crate::replication::Replication;
use crate::replication::roles;
use crate::replication::switchover::{self as handover, InProgress, SwitchoverError, Target};
use election::{Decision, Heard, HolderPod, Observed, Policy, Pos, Timing};

/// Keys of the bootstrap ConfigMap.
pub const BOOTSTRAP_CLUSTER_ID: &str = "clusterId";
pub const BOOTSTRAP_CREATED_BY: &str = "createdBy";

/// Kubernetes-mode settings, from the pod spec (env) and flags.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster: String,
    pub namespace: String,
    pub pod_name: String,
    pub port: u16,
    pub timing: Timing,
    pub policy: Policy,
    /// M: members holding the journal (data nodes + arbiter); None = from the
    /// StatefulSets.
    pub members: Option<usize>,
    pub arbiter: bool,
    /// K in sync mode.
    pub sync_k: Option<u32>,
}

impl Settings {
    pub fn from_config(c: &Config) -> anyhow::Result<Settings> {
        let cluster = c
            .cluster
            .clone()
            .filter(|s| !s.is_empty())
            .context("Kubernetes mode needs the cluster name (STUDIO_CLUSTER or --cluster); use --standalone or --follow outside Kubernetes")?;
        let namespace = c
            .namespace
            .clone()
            .filter(|s| !s.is_empty())
            .context("Kubernetes mode needs POD_NAMESPACE (downward API) or --namespace")?;
        let timing = Timing {
            lease_duration: c.lease_duration,
            renew_deadline: c.renew_deadline,
            retry_period: c.retry_period,
        };
        timing.validate().map_err(anyhow::Error::msg)?;
        let policy = Policy::parse(
            c.election_priorities.as_deref(),
            c.eligible_pattern.as_deref(),
        )
        .map_err(anyhow::Error::msg)?;
        Ok(Settings {
            cluster,
            namespace,
            pod_name: c.node_id(),
            port: c.listen.port(),
            timing,
            policy,
            members: c.members.map(|m| m as usize),
            arbiter: c.role == Some(RoleArg::Arbiter),
            sync_k: match c.replication_mode {
                ReplicationMode::Sync if c.sync_replicas > 0 => Some(c.sync_replicas),
                _ => None,
            },
        })
    }
}

/// Back-off of the pod and Lease watches: 200 ms doubling up to 1.5 s, plus backon's
/// jitter (up to the same again), so at most 3 s. kube-runtime's default (client-go's
/// reflector: up to 30 s) meant a node could wait ~25 s after a 30 s API outage before
/// it saw the Lease again (measured 26.7 s once); a few nodes retrying every few
/// seconds is nothing for the API server.
fn watch_backoff() -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_millis(1500))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .into()
}

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
    pods: reflector::Store<Pod>,
    pods_synced: AtomicBool,
    /// The Lease as last observed, and when it last changed (local clock).
    lease: Mutex<Option<Observed>>,
    lease_synced: AtomicBool,
    /// The holder named by the Lease and since when (local clock).
    holder_since: Mutex<Option<(String, Instant)>>,
    lease_first_seen: AtomicBool,
    /// resourceVersion of a Lease naming this node that predates this process: its
    /// previous incarnation is dead (we are running), so that holding proves nothing.
    stale_self: Mutex<Option<String>>,
    wake: Notify,
    /// Some(term) while acting as primary.
    primary_term: Mutex<Option<u64>>,
    /// Start time of the last successful acquisition or renewal.
    last_renew: Mutex<Option<Instant>>,
    shutting_down: AtomicBool,
    /// Serialises Lease writes (renewal, acquisition, hand-over).
    lease_op: tokio::sync::Mutex<()>,
    cluster_id: Mutex<Option<String>>,
    /// Since when the lease has looked free (relaxes rank deference).
    free_since: Mutex<Option<Instant>>,
    members_cache: Mutex<Option<(usize, Instant)>>,
    pods_high_water: Mutex<usize>,
    notes: Mutex<BTreeMap<&'static str, String>>,
    /// Position polls of an election: short timeouts (the election budget).
    http: reqwest::Client,
}

impl WriteFence for Coordinator {
    /// Only as primary with a Lease renewed within the renew deadline and no
    /// hand-over in progress.
    fn may_write(&self) -> bool {
        self.fence_ok()
    }
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
pub async fn start(state: &Replication) -> anyhow::Result<(Arc<Coordinator>, Vec<Task>)> {
    use futures::FutureExt;
    let s = Settings::from_config(&state.config)?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster config)")?;
    let ns = s.namespace.clone();
    let (pods, writer) = reflector::store::<Pod>();
    let http = reqwest::Client::builder()
        .no_proxy()
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
        pods,
        pods_synced: AtomicBool::new(false),
        lease: Mutex::new(None),
        lease_synced: AtomicBool::new(false),
        holder_since: Mutex::new(None),
        lease_first_seen: AtomicBool::new(false),
        stale_self: Mutex::new(None),
        wake: Notify::new(),
        primary_term: Mutex::new(None),
        last_renew: Mutex::new(None),
        shutting_down: AtomicBool::new(false),
        lease_op: tokio::sync::Mutex::new(()),
        cluster_id: Mutex::new(None),
        free_since: Mutex::new(None),
        members_cache: Mutex::new(None),
        pods_high_water: Mutex::new(0),
        notes: Mutex::new(BTreeMap::new()),
        http,
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
    /// On SIGTERM: a primary hands the Lease to the most advanced replica (bounded), so
    /// deleting its pod costs well under a second of writes. Returns when done; the
    /// server ends the replication streams only after it (the target catches up
    /// through them).
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.hand_over_on_shutdown().await;
    }

    fn handing_over(&self) -> bool {
        self.state.repl.switching.load(Ordering::SeqCst)
    }
}

impl Coordinator {
    async fn hand_over_on_shutdown(&self) {
        let c = self;
        if c.acting_term().is_none() {
            return;
        }
        let started = Instant::now();
        match c.best_replica().await {
            Some(target) => {
                tracing::info!(%target, "shutting down as primary: switching over");
                match c.switchover(&target, Duration::from_secs(3)).await {
                    Ok(r) => {
                        tracing::info!(%target, ms = started.elapsed().as_millis() as u64, message = %r.message, "switchover on shutdown done")
                    }
                    Err(e) => {
                        tracing::warn!(%target, error = %e, "switchover on shutdown failed; the Lease will expire")
                    }
                }
            }
            None => {
                tracing::warn!("shutting down as primary with no eligible replica to hand over to");
            }
        }
        // Whatever happened, this process takes no more writes.
        c.set_primary(None);
        let _ = roles::demote(&c.state, None).await;
    }
}

impl Coordinator {
    fn note(&self, key: &'static str, msg: String) {
        let mut n = lock(&self.notes);
        if n.get(key) != Some(&msg) {
            tracing::info!(topic = key, "{msg}");
            n.insert(key, msg);
        }
    }

    fn warn(&self, key: &'static str, msg: String) {
        let mut n = lock(&self.notes);
        if n.get(key) != Some(&msg) {
            tracing::warn!(topic = key, "{msg}");
            n.insert(key, msg);
        }
    }

    fn acting_term(&self) -> Option<u64> {
        *lock(&self.primary_term)
    }

    fn set_primary(&self, t: Option<u64>) {
        *lock(&self.primary_term) = t;
    }

    fn renewed_within(&self, d: Duration) -> bool {
        lock(&self.last_renew).is_some_and(|t| t.elapsed() < d)
    }

    fn fence_ok(&self) -> bool {
        self.acting_term().is_some()
            && !self.handing_over()
            && self.renewed_within(self.s.timing.renew_deadline)
    }

    fn me(&self) -> &str {
        &self.s.pod_name
    }

    fn lease_name(&self) -> String {
        names::primary_lease(&self.s.cluster)
    }

    fn lease_now(&self) -> Option<Observed> {
        lock(&self.lease).clone()
    }

    /// Records an observation of the Lease (from the watch or our own calls).
    fn observe(&self, l: Option<&Lease>) {
        let now = Instant::now();
        let mut g = lock(&self.lease);
        match l {
            Some(l) => {
                let rec = kubeapi::record_of(l);
                if !self.lease_first_seen.swap(true, Ordering::SeqCst)
                    && rec.holder.as_deref() == Some(self.me())
                    && self.acting_term().is_none()
                {
                    tracing::info!(
                        term = rec.transitions,
                        "the Lease names this pod from a previous run: that process is gone, so the Lease is free"
                    );
                    *lock(&self.stale_self) = rec.resource_version.clone();
                }
                // Ignore an older resourceVersion arriving late from the watch.
                if let (Some(old), Some(new)) = (
                    g.as_ref()
                        .and_then(|o| o.record.resource_version.as_deref())
                        .and_then(|v| v.parse::<u64>().ok()),
                    rec.resource_version
                        .as_deref()
                        .and_then(|v| v.parse::<u64>().ok()),
                ) && new < old
                {
                    return;
                }
                {
                    let mut hs = lock(&self.holder_since);
                    if hs.as_ref().map(|(n, _)| Some(n)) != Some(rec.holder.as_ref()) {
                        *hs = rec.holder.clone().map(|h| (h, now));
                    }
                }
                *g = Some(Observed::update(g.as_ref(), rec, now));
            }
            None => {
                self.lease_first_seen.store(true, Ordering::SeqCst);
                *g = None;
            }
        }
        drop(g);
        self.wake.notify_one();
    }

    fn pod(&self, name: &str) -> Option<Arc<Pod>> {
        self.pods
            .get(&ObjectRef::new(name).within(&self.s.namespace))
    }

    fn url_of(&self, p: &Pod) -> Option<String> {
        let ip = p.status.as_ref()?.pod_ip.as_ref()?;
        if ip.is_empty() {
            return None;
        }
        Some(crate::replication::base_url(ip, self.s.port))
    }

    fn is_arbiter_pod(p: &Pod) -> bool {
        let l = p.metadata.labels.as_ref();
        l.and_then(|l| l.get(labels::COMPONENT))
            .is_some_and(|v| v == studio_crds::components::ARBITER)
            || kubeapi::role_label(p) == Some(role_values::ARBITER)
    }

    fn holder_pod(&self, name: &str) -> HolderPod {
        if !self.pods_synced.load(Ordering::SeqCst) {
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

    async fn watch_pods(self: Arc<Self>, writer: reflector::store::Writer<Pod>) {
        let cfg =
            watcher::Config::default().labels(&format!("{}={}", labels::CLUSTER, self.s.cluster));
        let stream = watcher(self.pods_api.clone(), cfg)
            .backoff(watch_backoff())
            .reflect(writer);
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::InitDone) => {
                    self.pods_synced.store(true, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(e) => self.warn(
                    "watch-pods",
                    format!(
                        "watching pods failed: {e} (the node needs list and watch on pods; see examples/node-rbac.yaml)"
                    ),
                ),
            }
            self.wake.notify_one();
        }
    }

    async fn watch_lease(self: Arc<Self>) {
        let cfg =
            watcher::Config::default().fields(&format!("metadata.name={}", self.lease_name()));
        let stream = watcher(self.leases.clone(), cfg).backoff(watch_backoff());
        futures::pin_mut!(stream);
        let mut seen_in_init = false;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Init) => seen_in_init = false,
                Ok(watcher::Event::InitApply(l)) => {
                    seen_in_init = true;
                    self.observe(Some(&l));
                }
                Ok(watcher::Event::InitDone) => {
                    if !seen_in_init {
                        self.observe(None);
                    }
                    self.lease_synced.store(true, Ordering::SeqCst);
                }
                Ok(watcher::Event::Apply(l)) => self.observe(Some(&l)),
                Ok(watcher::Event::Delete(_)) => self.observe(None),
                Err(e) => self.warn(
                    "watch-lease",
                    format!(
                        "watching the Lease failed: {e} (the node needs list and watch on leases.coordination.k8s.io; see examples/node-rbac.yaml)"
                    ),
                ),
            }
        }
    }

    /// Demotes a primary the moment its last renewal is older than the renew deadline
    /// (before any other node can consider the lease expired).
    async fn fence_watchdog(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.acting_term().is_some() && !self.renewed_within(self.s.timing.renew_deadline) {
                tracing::error!(
                    renew_deadline = ?self.s.timing.renew_deadline,
                    "could not renew the Lease within the renew deadline: read-only now, stepping down"
                );
                self.step_down().await;
            }
        }
    }

    async fn run(self: Arc<Self>) -> Result<(), String> {
        // Bootstrap first: nothing else makes sense without the cluster id.
        loop {
            match self.bootstrap().await {
                Ok(id) => {
                    *lock(&self.cluster_id) = Some(id);
                    break;
                }
                // The supervisor stops the process with this message.
                Err(BootstrapError::Fatal(msg)) => return Err(msg),
                Err(BootstrapError::Retry(msg)) => self.note("bootstrap", msg),
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.s.timing.retry_period) => {}
            }
        }
        loop {
            if let Err(e) = self.step().await {
                self.warn("step", format!("{e:#}"));
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.s.timing.retry_period) => {}
            }
        }
    }

    async fn bootstrap(&self) -> Result<String, BootstrapError> {
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
                        // We created the record but died before recording the id.
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

    /// One round of the state machine.
    async fn step(&self) -> anyhow::Result<()> {
        if !self.lease_synced.load(Ordering::SeqCst) {
            return Ok(());
        }
        let obs = self.lease_now();
        let holder = obs.as_ref().and_then(|o| o.record.holder.clone());
        let me_holds = holder.as_deref() == Some(self.me());
        let stale_self = me_holds
            && obs.as_ref().and_then(|o| o.record.resource_version.clone())
                == *lock(&self.stale_self);
        if self.handing_over() {
            // The switchover in progress steps down and follows by itself; keep the
            // Lease meanwhile.
            if self.acting_term().is_some()
                && me_holds
                && !self.renewed_within(self.s.timing.retry_period.mul_f64(0.9))
            {
                self.renew(None).await;
            }
            return Ok(());
        }
        if self.acting_term().is_some() {
            if !me_holds {
                tracing::warn!(holder = ?holder, "the Lease names another holder: stepping down");
                self.step_down().await;
            } else if !self.renewed_within(self.s.timing.retry_period.mul_f64(0.9)) {
                self.renew(None).await;
            }
        } else if me_holds && !stale_self && !self.shutting_down.load(Ordering::SeqCst) {
            // Handed to us (switchover), or acquired but not yet promoted.
            self.take_over().await?;
        }
        if self.acting_term().is_none() {
            if let (Some(h), false) = (&holder, me_holds) {
                let held_for = match &*lock(&self.holder_since) {
                    Some((n, t)) if n == h => t.elapsed(),
                    _ => Duration::ZERO,
                };
                self.follow(h, held_for).await;
            }
            if !self.s.arbiter
                && !self.shutting_down.load(Ordering::SeqCst)
                && (!me_holds || stale_self)
            {
                match self.lease_free(obs.as_ref(), stale_self) {
                    Some(reason) => {
                        let since = *lock(&self.free_since).get_or_insert_with(Instant::now);
                        self.campaign(obs.as_ref(), &reason, since).await?;
                    }
                    None => *lock(&self.free_since) = None,
                }
            }
        }
        self.reconcile_label().await;
        Ok(())
    }

    /// Why the Lease may be taken now, if it may.
    fn lease_free(&self, obs: Option<&Observed>, stale_self: bool) -> Option<String> {
        let Some(o) = obs else {
            return Some("there is no Lease yet".into());
        };
        if stale_self {
            return Some("this pod's previous process held it".into());
        }
        if o.expired(Instant::now(), self.s.timing.lease_duration) {
            return Some(match &o.record.holder {
                Some(h) => {
                    format!("the Lease of {h} expired (no renewal observed for a lease duration)")
                }
                None => "the Lease has no holder".into(),
            });
        }
        let h = o.record.holder.as_deref()?;
        election::proof_of_death(&self.holder_pod(h), o.record.acquire_time)
            .map(|r| format!("proof of death of {h}: {r}"))
    }

    async fn members(&self) -> usize {
        if let Some(m) = self.s.members {
            return m;
        }
        if let Some((m, at)) = *lock(&self.members_cache)
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
        let pods = self.pods.state().len();
        let seen = {
            let mut hw = lock(&self.pods_high_water);
            *hw = (*hw).max(pods);
            *hw
        };
        let m = if ok && total > 0 { total } else { seen.max(1) };
        *lock(&self.members_cache) = Some((m, Instant::now()));
        m
    }

    /// Polls the members' positions (each promises `term`), then applies the safety
    /// rule; acquires the Lease if it says so.
    async fn campaign(
        &self,
        obs: Option<&Observed>,
        reason: &str,
        free_since: Instant,
    ) -> anyhow::Result<()> {
        let bootstrap_id = lock(&self.cluster_id).clone();
        let mine = self.state.store.call(|s| s.cluster_id()).await?;
        let of_cluster = mine.is_some() && mine == bootstrap_id;
        if let Some(why) = self.s.policy.refuses(self.me(), self.s.arbiter) {
            self.note(
                "campaign",
                format!("the Lease is free ({reason}) but {why}"),
            );
            return Ok(());
        }
        if !of_cluster {
            self.note(
                "campaign",
                format!(
                    "the Lease is free ({reason}) but this node has no data of the cluster yet"
                ),
            );
            return Ok(());
        }
        // Every candidate that saw the same Lease promises the same term: the one the
        // winner of the resourceVersion race writes (term == leaseTransitions).
        let t0 = match obs {
            Some(o) => o.record.transitions + 1,
            None => roles::known_term(&self.state) + 1,
        };
        let peers = self.poll_positions(t0).await;
        let pos = roles::position_promise(&self.state, t0 - 1).await;
        let me = Heard {
            name: self.me().to_string(),
            pos: Pos {
                term: pos.term,
                seq: pos.seq,
            },
            of_cluster,
            arbiter: false,
            url: None,
        };
        let members = self.members().await;
        let strict = free_since.elapsed() < self.s.timing.lease_duration;
        let d = election::decide(&me, &peers, members, self.s.sync_k, &self.s.policy, strict);
        match d {
            Decision::Acquire => {
                let heard_max = peers.iter().map(|h| h.pos.term).max().unwrap_or(0);
                let term = t0.max(heard_max + 1).max(pos.term + 1);
                tracing::info!(
                    term, %reason, seq = pos.seq, last_term = pos.term, heard = peers.len() + 1, members,
                    "the Lease is free and this node is the most advanced eligible member: acquiring"
                );
                self.acquire(obs, term).await
            }
            Decision::Defer { to, why } => {
                self.note(
                    "campaign",
                    format!("the Lease is free ({reason}); deferring to {to}: {why}"),
                );
                Ok(())
            }
            Decision::CatchUp { from, url } => {
                self.note(
                    "campaign",
                    format!("the Lease is free ({reason}); {from} is more advanced but cannot be primary: pulling its entries first"),
                );
                let target = peers
                    .iter()
                    .find(|h| h.name == from)
                    .map(|h| h.pos)
                    .unwrap_or_default();
                if let Some(u) = url {
                    let target = crate::storage::Position {
                        seq: target.seq,
                        term: target.term,
                    };
                    match crate::replication::follower::catch_up(&self.state, &u, target).await {
                        Ok(n) => {
                            tracing::info!(from = %from, entries = n, "caught up with the most advanced member")
                        }
                        Err(e) => self.warn(
                            "catch-up",
                            format!("pulling entries from {from} failed: {e:#}"),
                        ),
                    }
                    // Decide again at once with the new position.
                    self.wake.notify_one();
                }
                Ok(())
            }
            Decision::NoQuorum { heard, needed } => {
                self.warn(
                    "campaign",
                    format!(
                        "the Lease is free ({reason}) but only {heard} of {members} members answered, {needed} needed to be sure no acknowledged write is lost: no automatic failover"
                    ),
                );
                Ok(())
            }
            Decision::Ineligible(why) => {
                self.note(
                    "campaign",
                    format!("the Lease is free ({reason}) but {why}"),
                );
                Ok(())
            }
        }
    }

    async fn poll_positions(&self, term: u64) -> Vec<Heard> {
        let bootstrap_id = lock(&self.cluster_id).clone();
        let targets: Vec<(String, String, bool)> = self
            .pods
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
                    .json(&PositionRequest { term }),
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

    async fn acquire(&self, obs: Option<&Observed>, term: u64) -> anyhow::Result<()> {
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
                *lock(&self.last_renew) = Some(started);
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

    async fn refresh_lease(&self) {
        match self.leases.get_opt(&self.lease_name()).await {
            Ok(l) => self.observe(l.as_ref()),
            Err(e) => self.warn(
                "lease-get",
                kubeapi::explain(&e, "get", "leases.coordination.k8s.io", &self.s.namespace),
            ),
        }
    }

    /// Renews the Lease (keeping holder and term, or moving the term to `bump`).
    /// Returns whether it succeeded.
    async fn renew(&self, bump: Option<u64>) -> bool {
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
            spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                k8s_openapi::jiff::Timestamp::now(),
            ));
            spec.lease_duration_seconds = Some(self.s.timing.lease_seconds());
            if let Some(t) = bump {
                spec.lease_transitions = Some(t.min(i32::MAX as u64) as i32);
            }
        }
        let started = Instant::now();
        let r = tokio::time::timeout(
            self.s.timing.renew_deadline,
            self.leases
                .replace(&self.lease_name(), &PostParams::default(), &l),
        )
        .await;
        match r {
            Ok(Ok(l)) => {
                *lock(&self.last_renew) = Some(started);
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
                    "renew",
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
                self.warn("renew", "renewing the Lease timed out".into());
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

    /// The Lease names us but we do not act as primary yet (handed over by a
    /// switchover, or a promotion that failed half-way): renew, then promote.
    async fn take_over(&self) -> anyhow::Result<()> {
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
        let prev = self
            .pods
            .state()
            .iter()
            .filter(|p| kubeapi::role_label(p) == Some(role_values::PRIMARY))
            .filter_map(|p| p.metadata.name.clone())
            .find(|n| n != self.me());
        self.become_primary(o.record.transitions, prev).await
    }

    /// Relabels every other primary-labelled pod (and the previous holder) `replica`,
    /// promotes, then labels this pod `primary`.
    async fn become_primary(&self, mut term: u64, prev: Option<String>) -> anyhow::Result<()> {
        let mut others: Vec<String> = self
            .pods
            .state()
            .iter()
            .filter(|p| kubeapi::role_label(p) == Some(role_values::PRIMARY))
            .filter_map(|p| p.metadata.name.clone())
            .filter(|n| n != self.me())
            .collect();
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

    async fn step_down(&self) {
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
    async fn follow(&self, holder: &str, held_for: Duration) {
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
    async fn reconcile_label(&self) {
        let desired = if self.fence_ok() {
            role_values::PRIMARY
        } else if self.s.arbiter {
            role_values::ARBITER
        } else {
            role_values::REPLICA
        };
        let Some(p) = self.pod(self.me()) else { return };
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

    /// The most advanced eligible data node other than this one (for SIGTERM).
    async fn best_replica(&self) -> Option<String> {
        let cands: Vec<(String, String)> = self
            .pods
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

    /// Planned hand-over to `target` (pod name or base URL) through the Lease: the
    /// shared switchover (`replication::switchover::run`) with [`LeaseTransfer`].
    pub async fn switchover(
        &self,
        target: &str,
        timeout: Duration,
    ) -> Result<AdminResponse, SwitchoverError> {
        let bad = SwitchoverError::BadTarget;
        if self.acting_term().is_none() {
            return Err(SwitchoverError::NotPrimary);
        }
        let target_t = target.trim().trim_end_matches('/');
        let pod = self
            .pods
            .state()
            .into_iter()
            .find(|p| {
                p.metadata.name.as_deref() == Some(target_t)
                    || self.url_of(p).as_deref() == Some(target_t)
            })
            .ok_or_else(|| bad(format!("no pod {target_t:?} in cluster {}", self.s.cluster)))?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        if name == self.me() {
            return Err(bad(format!("{name} is already the primary")));
        }
        if let Some(why) = self.s.policy.refuses(&name, Self::is_arbiter_pod(&pod)) {
            return Err(bad(format!("{name} cannot become primary: {why}")));
        }
        let url = self
            .url_of(&pod)
            .ok_or_else(|| bad(format!("{name} has no pod IP yet")))?;
        // Also closes the fence and keeps the election loop from stepping down.
        let _busy = InProgress::begin(&self.state.repl.switching)?;
        let target = Target { name, url };
        let done = handover::run(&self.state, &target, timeout, &LeaseTransfer(self)).await?;
        self.set_primary(None);
        if let Err(e) =
            kubeapi::label_pod(&self.pods_api, self.me(), role_values::REPLICA, None).await
        {
            self.warn(
                "label",
                kubeapi::explain(&e, "patch", "pods", &self.s.namespace),
            );
        }
        Ok(done)
    }

    /// Gives the Lease to `name` at `term + 1` (resourceVersion precondition; bounded
    /// by the renew deadline, so the fence cannot outlive the call).
    async fn give_lease(&self, name: &str, term: u64) -> Result<u64, String> {
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

/// The Kubernetes-mode hand-over: the Lease moves to the target, which promotes
/// itself when its watch sees it.
struct LeaseTransfer<'a>(&'a Coordinator);

impl handover::Transfer for LeaseTransfer<'_> {
    async fn transfer(&self, target: &Target, term: u64) -> Result<u64, String> {
        let c = self.0;
        let term = c.acting_term().unwrap_or(term);
        c.give_lease(&target.name, term).await
    }
}

enum BootstrapError {
    /// Refuse to run (data of another cluster).
    Fatal(String),
    /// Not possible yet; try again.
    Retry(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_retry_within_three_seconds_forever() {
        let delays: Vec<Duration> = watch_backoff().take(200).collect();
        assert_eq!(delays.len(), 200, "the back-off must never give up");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(3)),
            "{delays:?}"
        );
        assert!(delays[0] < Duration::from_millis(401), "{delays:?}");
    }
}
