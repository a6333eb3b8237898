//! The StudioCluster controller: read → validate → build → apply → status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use studio_crds::{
    FIELD_MANAGER, FINALIZER, FailoverRecord, Phase, PvcRetention, StudioCluster,
    StudioClusterStatus, SwitchoverRecord, annotations, conditions, labels, names, restore,
    secret_keys,
};
use tracing::{info, warn};

use crate::build::network_policy::{self, OperatorPeer};
use crate::build::{self, Owned};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::node_client::{NodeClient, SWITCHOVER_TIMEOUT};
use crate::plan::switchover_record;
use crate::plan::{self, Observed, Plan, Reason, Step};
use crate::upgrade;

mod execute;
mod recovery;
mod secret;
mod status;
mod storage;
mod tls;

use self::execute::execute;
use self::secret::ensure_secret;
use self::status::{patch_status, update_status};
use self::storage::grow_storage;
use self::tls::ensure_tls;

/// A cluster's primary as our last status update saw it, with its last change.
#[derive(Clone, Debug)]
pub struct SeenPrimary {
    pub primary: String,
    pub last_failover: Option<FailoverRecord>,
}

/// Shared state of the reconcilers.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub nodes: NodeClient,
    /// Switchovers this operator started: cluster key → (target, when), so that the
    /// resulting change of primary is recorded as a switchover, not a failover.
    pub switchovers: Mutex<HashMap<String, (String, Instant)>>,
    /// Consecutive failures per cluster, for the back-off.
    pub failures: Mutex<HashMap<String, u32>>,
    /// When each cluster's status was last written.
    pub status_writes: Mutex<HashMap<String, Instant>>,
    /// What the last status update of each cluster saw: its primary and last change of
    /// primary. Fresher than the StudioCluster in the controller's cache, whose status
    /// can lag behind our own last write: without this, a switchover already recorded
    /// was seen again and recorded a second time as a failover.
    pub last_primary: Mutex<HashMap<String, SeenPrimary>>,
    /// Label repairs seen but not yet done: cluster key → (repairs, first seen).
    pub pending_repairs: Mutex<HashMap<String, (Vec<plan::LabelRepair>, Instant)>>,
    /// The `WriteQuorum` status our last status write of each cluster carried. Events
    /// are decided from the status in the object; this only keeps a cached object that
    /// lags behind our own write from announcing the same change twice.
    pub written_quorum: Mutex<HashMap<String, &'static str>>,
    /// With spec.tls: the operator's mutual-TLS client per cluster (see `tls.rs`).
    pub tls_clients: Mutex<HashMap<String, tls::ClusterClient>>,
    /// With spec.tls: why a cluster's certificates are not there yet, as last announced
    /// (one Event per distinct reason).
    pub tls_pending: Mutex<HashMap<String, String>>,
    /// Where the operator's own pods run, for the NetworkPolicy of TLS clusters
    /// (`None`: not known, no policy is created).
    pub operator_peer: Option<OperatorPeer>,
    /// Backup Events (archiving, restore, recovery source) last announced per
    /// `<cluster key>/<topic>`: like `written_quorum`, keeps a cached object that lags
    /// behind our own status write from announcing the same change twice.
    pub announced: Mutex<HashMap<String, String>>,
}

/// Minimum interval between status writes that only move journal positions.
pub const POSITIONS_REFRESH: Duration = Duration::from_secs(10);

/// How long a role label must disagree with the Lease before the operator rewrites it.
pub const REPAIR_GRACE: Duration = Duration::from_secs(5);

/// How often a Ready cluster is looked at again. A lost write quorum changes nothing
/// the controller watches (pods stay ready), so this bounds how long the status can
/// say Ready while no write succeeds.
pub const HEALTHY_POLL: Duration = Duration::from_secs(10);

/// How often a cluster where no write can succeed (WriteQuorum False) is polled, so
/// that its status recovers within seconds once writes work again.
pub const NO_WRITES_POLL: Duration = Duration::from_secs(3);

impl Context {
    /// The operator's own namespace and pod labels (see `operator_peer`).
    pub fn with_operator_peer(mut self, peer: Option<OperatorPeer>) -> Self {
        self.operator_peer = peer;
        self
    }

    pub fn new(client: Client, reporter: Reporter, metrics: Arc<Metrics>) -> Self {
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            nodes: NodeClient::new(),
            switchovers: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            pending_repairs: Mutex::new(HashMap::new()),
            last_primary: Mutex::new(HashMap::new()),
            status_writes: Mutex::new(HashMap::new()),
            written_quorum: Mutex::new(HashMap::new()),
            tls_clients: Mutex::new(HashMap::new()),
            tls_pending: Mutex::new(HashMap::new()),
            operator_peer: None,
            announced: Mutex::new(HashMap::new()),
        }
    }

    /// The client for calls to `sc`'s nodes: mutual TLS when spec.tls is on (an
    /// unusable plain client until its certificates exist), plain HTTP otherwise.
    /// `token`: the cluster token, presented to clusters without TLS.
    pub fn nodes_for(&self, sc: &StudioCluster, token: Option<&str>) -> NodeClient {
        if sc.tls().is_none() {
            return self.nodes.clone().with_token(token.map(str::to_string));
        }
        self.tls_clients
            .lock()
            .ok()
            .and_then(|m| m.get(&key(sc)).map(|c| c.client.clone()))
            .unwrap_or_else(|| self.nodes.clone())
    }

    async fn event(&self, sc: &StudioCluster, type_: EventType, reason: &str, note: String) {
        // kube's Recorder folds events with the same (type, reason, action, object) into
        // one series that keeps the first note, so "restarting studio-2" then
        // "restarting studio-1" would show only the first. The note goes into the action
        // (at most 128 characters) so that only identical messages are counted as a
        // series, as client-go's aggregation does.
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
        if let Err(e) = self.recorder.publish(&ev, &sc.object_ref(&())).await {
            warn!(error = %e, reason, "cannot publish event");
        }
    }
}

fn key(sc: &StudioCluster) -> String {
    format!("{}/{}", sc.namespace().unwrap_or_default(), sc.name_any())
}

/// Runs the controller for one namespace (or all, with `None`) until shutdown.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    fn api<K>(c: &Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        match ns {
            Some(ns) => Api::namespaced(c.clone(), ns),
            None => Api::all(c.clone()),
        }
    }
    let managed = watcher::Config::default().labels(&format!(
        "{}={}",
        labels::APP_MANAGED_BY,
        labels::MANAGED_BY_VALUE
    ));
    let pods = watcher::Config::default().labels(labels::CLUSTER);
    Controller::new(
        api::<StudioCluster>(&client, &namespace),
        watcher::Config::default(),
    )
    .owns(api::<StatefulSet>(&client, &namespace), managed.clone())
    .owns(api::<Service>(&client, &namespace), managed.clone())
    .owns(api::<Secret>(&client, &namespace), managed.clone())
    .owns(api::<ServiceAccount>(&client, &namespace), managed.clone())
    .owns(api::<Role>(&client, &namespace), managed.clone())
    .owns(api::<RoleBinding>(&client, &namespace), managed.clone())
    .owns(api::<PodDisruptionBudget>(&client, &namespace), managed)
    .watches(api::<Pod>(&client, &namespace), pods, |pod: Pod| {
        let cluster = pod.labels().get(labels::CLUSTER).cloned();
        let ns = pod.namespace();
        cluster.into_iter().map(move |c| {
            let r = ObjectRef::<StudioCluster>::new(&c);
            match &ns {
                Some(ns) => r.within(ns),
                None => r,
            }
        })
    })
    .shutdown_on_signal()
    .run(reconcile, error_policy, ctx)
    .for_each(|res| async move {
        match res {
            Ok((obj, _)) => tracing::debug!(cluster = %obj, "reconciled"),
            Err(e) => tracing::debug!(error = %e, "reconcile failed"),
        }
    })
    .await;
}

async fn reconcile(sc: Arc<StudioCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let ns = sc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<StudioCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let k = key(&sc);
    let res = finalizer(&api, FINALIZER, sc, |ev| async {
        match ev {
            Finalizer::Apply(sc) => apply(sc, ctx.clone()).await,
            Finalizer::Cleanup(sc) => cleanup(sc, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .observe_reconcile(started.elapsed(), res.as_ref().err());
    if res.is_ok()
        && let Ok(mut f) = ctx.failures.lock()
    {
        f.remove(&k);
    }
    res
}

fn error_policy(sc: Arc<StudioCluster>, err: &Error, ctx: Arc<Context>) -> Action {
    let attempt = match ctx.failures.lock() {
        Ok(mut f) => {
            let n = f.entry(key(&sc)).or_insert(0);
            *n += 1;
            *n
        }
        Err(_) => 1,
    };
    match err.root() {
        Error::Waiting(why) => info!(cluster = %key(&sc), %why, "waiting"),
        e => warn!(cluster = %key(&sc), error = %e, attempt, "reconcile failed"),
    }
    Action::requeue(err.backoff(attempt))
}

/// Server-side apply of one object with the operator's field manager.
async fn ssa<K>(api: &Api<K>, obj: &K) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingField("metadata.name"))?;
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api.patch(&name, &pp, &Patch::Apply(obj)).await?)
}

async fn apply(sc: Arc<StudioCluster>, ctx: Arc<Context>) -> Result<Action> {
    let client = &ctx.client;
    let ns = sc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = sc.name_any();

    // Validate what the schema cannot.
    if let Err(why) = plan::validate(&sc) {
        ctx.event(&sc, EventType::Warning, "InvalidSpec", why.clone())
            .await;
        return invalid(client, &sc, why).await;
    }

    // Read.
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let data_sts = sts_api.get_opt(&names::statefulset(&name)).await?;
    let arbiter_sts = sts_api.get_opt(&names::arbiter_statefulset(&name)).await?;
    let pods = pod_api
        .list(&ListParams::default().labels(&format!("{}={}", labels::CLUSTER, name)))
        .await?;
    let lease = lease_api.get_opt(&names::primary_lease(&name)).await?;
    let mut obs = Observed::new(&pods.items, &name)
        .with_statefulsets(data_sts.as_ref(), arbiter_sts.as_ref());
    obs.lease_holder = lease
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty());
    // TLS material first: the calls to the nodes below need the operator's certificate.
    let tls = match ensure_tls(&ctx, &sc).await {
        Ok(t) => t,
        Err(Error::InvalidSpec(why)) => {
            ctx.event(&sc, EventType::Warning, "InvalidSpec", why.clone())
                .await;
            return invalid(client, &sc, why).await;
        }
        Err(e) => return Err(e),
    };
    // Credentials: generated once, never regenerated (the status calls
    // below present the cluster token to clusters without TLS).
    let token = match ensure_secret(&ctx, &sc).await {
        Ok(t) => t,
        Err(Error::InvalidSpec(why)) => return invalid(client, &sc, why).await,
        Err(Error::SecretKey(secret, key)) => {
            return invalid(client, &sc, format!("Secret {secret} lacks key {key}")).await;
        }
        Err(e) => return Err(e),
    };

    ctx.nodes_for(&sc, token.as_deref())
        .fill_status(&mut obs.members)
        .await;

    // Build and decide.
    obs.had_primary = sc
        .status
        .as_ref()
        .map(|s| s.current_primary.is_some() || s.last_failover.is_some())
        .unwrap_or(false);
    obs.prev_phase = sc.status.as_ref().and_then(|s| s.phase);
    // A new image is rolled only once its schema revision is known and allowed.
    let gate = upgrade::gate(client, &sc, &obs, !sc.spec.paused).await?;
    obs.upgrade_kind = gate.kind;
    if let Some((warning, reason, note)) = gate.event.clone() {
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.event(&sc, type_, reason, note).await;
    }
    let run = gate.apply_to(&sc);
    let mut plan = plan::plan(&run, &obs);
    if let Some(held) = &gate.held {
        plan.message = format!("{}; spec.image held back: {held}", plan.message);
    }
    if let Some(pending) = &tls.pending {
        plan.message = format!("{}; {pending}", plan.message);
    }
    if sc.spec.paused {
        update_status(&ctx, &sc, &obs, &plan, &gate, None).await?;
        let requeue = if plan.write_quorum.ok() {
            Duration::from_secs(60)
        } else {
            NO_WRITES_POLL
        };
        return Ok(Action::requeue(requeue));
    }

    // spec.bootstrap.recovery: no pods before the restore source is known (they would
    // bootstrap an empty cluster instead).
    let restore_env =
        match recovery::restore_settings(&ctx, &sc, data_sts.as_ref(), &pods.items).await? {
            Ok(env) => env,
            Err(u) => {
                plan.step = None;
                plan.phase = if u.permanent {
                    Phase::Invalid
                } else {
                    Phase::Creating
                };
                plan.reason = Some(if u.permanent {
                    restore::SOURCE_UNUSABLE
                } else {
                    restore::SOURCE_NOT_READY
                });
                plan.message = u.message;
                update_status(&ctx, &sc, &obs, &plan, &gate, None).await?;
                let again = if u.permanent { 60 } else { 10 };
                return Ok(Action::requeue(Duration::from_secs(again)));
            }
        };

    // A StatefulSet being re-created (storage growth) must be gone before it is applied
    // again: wait for the garbage collector to orphan its pods.
    let terminating = |s: &Option<StatefulSet>| {
        s.as_ref()
            .map(|s| s.metadata.deletion_timestamp.is_some())
            .unwrap_or(false)
    };
    if terminating(&data_sts) || (sc.spec.arbiter.enabled && terminating(&arbiter_sts)) {
        update_status(&ctx, &sc, &obs, &plan, &gate, None).await?;
        return Ok(Action::requeue(Duration::from_secs(2)));
    }

    // Storage growth: claims are patched and the StatefulSet re-created around its pods
    // (volumeClaimTemplates are immutable).
    let mut recreating = false;
    if let Some(sts) = &data_sts {
        recreating |= grow_storage(&ctx, &sc, sts).await?;
    }
    if let Some(sts) = &arbiter_sts
        && sc.spec.arbiter.enabled
    {
        recreating |= grow_storage(&ctx, &sc, sts).await?;
    }
    if recreating {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }

    // Apply.
    let owned = build::build_owned_with(&run, plan.data_replicas, &restore_env)?;
    apply_owned(client, &ns, &owned).await?;
    if let Some(peer) = &ctx.operator_peer
        && let Some(np) = network_policy::network_policy(&sc, peer)?
    {
        ssa(&Api::<NetworkPolicy>::namespaced(client.clone(), &ns), &np).await?;
    }
    if !sc.spec.arbiter.enabled && arbiter_sts.is_some() && !terminating(&arbiter_sts) {
        sts_api
            .delete(&names::arbiter_statefulset(&name), &DeleteParams::default())
            .await?;
        ctx.event(
            &sc,
            EventType::Normal,
            "ArbiterRemoved",
            "arbiter disabled: arbiter StatefulSet deleted".into(),
        )
        .await;
    }
    if let Some(current) = obs.sts_replicas
        && current != plan.data_replicas
    {
        ctx.event(
            &sc,
            EventType::Normal,
            "Scaling",
            format!(
                "data nodes {current} → {} (spec.nodes {})",
                plan.data_replicas, sc.spec.nodes
            ),
        )
        .await;
    }

    // Repair role labels that disagree with the Lease, once the disagreement has lasted
    // (the nodes flip labels themselves around every election; don't race them).
    let repair_now = {
        let mut pending = ctx.pending_repairs.lock().map_err(|_| Error::Poisoned)?;
        if plan.repairs.is_empty() {
            pending.remove(&key(&sc));
            false
        } else {
            match pending.get(&key(&sc)) {
                Some((r, since)) if r == &plan.repairs && since.elapsed() >= REPAIR_GRACE => {
                    pending.remove(&key(&sc));
                    true
                }
                Some((r, _)) if r == &plan.repairs => false,
                _ => {
                    pending.insert(key(&sc), (plan.repairs.clone(), Instant::now()));
                    false
                }
            }
        }
    };
    if repair_now {
        for r in &plan.repairs {
            let patch = json!({"metadata": {"labels": {labels::ROLE: r.role}}});
            pod_api
                .patch(&r.pod, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        ctx.event(
            &sc,
            EventType::Warning,
            "RoleLabelsRepaired",
            format!(
                "role labels disagreed with the Lease {}: {}",
                names::primary_lease(&name),
                plan::describe_repairs(&plan.repairs)
            ),
        )
        .await;
    }

    // The one disruptive step.
    let mut requeue = if !plan.repairs.is_empty() {
        REPAIR_GRACE
    } else if plan.phase == Phase::Ready {
        HEALTHY_POLL
    } else {
        Duration::from_secs(5)
    };
    if !plan.write_quorum.ok() {
        requeue = requeue.min(NO_WRITES_POLL);
    }
    if let Some(r) = tls.requeue {
        requeue = requeue.min(r);
    }
    let mut started = None;
    if let Some(step) = &plan.step {
        requeue = Duration::from_secs(2);
        started = execute(&ctx, &sc, &obs, step, token.as_deref()).await?;
    }
    if gate.held.is_some() && gate.upgrade.as_ref().and_then(|u| u.kind).is_none() {
        // Probing the new image: look again soon.
        requeue = requeue.min(Duration::from_secs(2));
    }

    update_status(&ctx, &sc, &obs, &plan, &gate, started).await?;
    Ok(Action::requeue(requeue))
}

/// Records a spec the operator cannot reconcile (phase Invalid, Stalled) and retries
/// slowly; a spec change reconciles at once.
async fn invalid(client: &Client, sc: &StudioCluster, why: String) -> Result<Action> {
    let mut conds = plan::conditions_for(sc, Phase::Invalid, &why, sc.status.as_ref());
    // ContinuousArchiving is about the running members, not the spec: kept as it was.
    conds.extend(
        sc.status
            .iter()
            .flat_map(|s| s.conditions.iter())
            .filter(|c| c.type_ == conditions::CONTINUOUS_ARCHIVING)
            .cloned(),
    );
    let status = StudioClusterStatus {
        observed_generation: sc.metadata.generation,
        phase: Some(Phase::Invalid),
        message: Some(why.clone()),
        conditions: conds,
        ..sc.status.clone().unwrap_or_default()
    };
    patch_status(client, sc, &status).await?;
    Ok(Action::requeue(Duration::from_secs(60)))
}

async fn apply_owned(client: &Client, ns: &str, o: &Owned) -> Result<()> {
    ssa(
        &Api::<ServiceAccount>::namespaced(client.clone(), ns),
        &o.service_account,
    )
    .await?;
    ssa(&Api::<Role>::namespaced(client.clone(), ns), &o.role).await?;
    ssa(
        &Api::<RoleBinding>::namespaced(client.clone(), ns),
        &o.role_binding,
    )
    .await?;
    let svc: Api<Service> = Api::namespaced(client.clone(), ns);
    for s in &o.services {
        ssa(&svc, s).await?;
    }
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    ssa(&sts, &o.statefulset).await?;
    if let Some(a) = &o.arbiter {
        ssa(&sts, a).await?;
    }
    ssa(
        &Api::<PodDisruptionBudget>::namespaced(client.clone(), ns),
        &o.pdb,
    )
    .await?;
    Ok(())
}

async fn cleanup(sc: Arc<StudioCluster>, ctx: Arc<Context>) -> Result<Action> {
    // Owned objects go through their owner references (garbage collector). What the
    // nodes created themselves (Lease, bootstrap record) is removed here, but only once
    // every pod has stopped: a node shutting down hands its Lease over and would
    // re-create it. Claims follow pvcRetention.
    let ns = sc
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = sc.name_any();
    let sts: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    for s in [names::statefulset(&name), names::arbiter_statefulset(&name)] {
        ignore_404(
            sts.delete(&s, &DeleteParams::background())
                .await
                .map(|_| ()),
        )?;
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!("{}={}", labels::CLUSTER, name);
    let left = pods.list(&ListParams::default().labels(&selector)).await?;
    if !left.items.is_empty() {
        return Err(Error::Waiting(format!(
            "deletion of {name}: waiting for {} pod(s) to stop",
            left.items.len()
        )));
    }
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    ignore_404(
        leases
            .delete(&names::primary_lease(&name), &DeleteParams::default())
            .await
            .map(|_| ()),
    )?;
    ignore_404(
        cms.delete(&names::bootstrap_configmap(&name), &DeleteParams::default())
            .await
            .map(|_| ()),
    )?;
    // spec.tls.issuerRef: the Certificates go with their owner; the Secrets cert-manager
    // wrote for them are not owned by the StudioCluster.
    if sc.tls().is_some_and(|t| t.issuer_ref.is_some()) {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        for s in [
            names::tls_secret(&name),
            names::operator_client_secret(&name),
        ] {
            ignore_404(
                secrets
                    .delete(&s, &DeleteParams::default())
                    .await
                    .map(|_| ()),
            )?;
        }
    }
    if sc.spec.storage.pvc_retention == PvcRetention::Delete {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        let lp = ListParams::default().labels(&selector);
        ignore_404(
            pvcs.delete_collection(&DeleteParams::default(), &lp)
                .await
                .map(|_| ()),
        )?;
    }
    ctx.metrics.forget_cluster(&ns, &name);
    if let Ok(mut m) = ctx.last_primary.lock() {
        m.remove(&key(&sc));
    }
    if let Ok(mut m) = ctx.status_writes.lock() {
        m.remove(&key(&sc));
    }
    if let Ok(mut m) = ctx.written_quorum.lock() {
        m.remove(&key(&sc));
    }
    if let Ok(mut m) = ctx.tls_clients.lock() {
        m.remove(&key(&sc));
    }
    if let Ok(mut m) = ctx.tls_pending.lock() {
        m.remove(&key(&sc));
    }
    if let Ok(mut m) = ctx.announced.lock() {
        let prefix = format!("{}/", key(&sc));
        m.retain(|k, _| !k.starts_with(&prefix));
    }
    ctx.event(
        &sc,
        EventType::Normal,
        "Deleted",
        format!("cluster {name} deleted: pods stopped, Lease and bootstrap record removed"),
    )
    .await;
    Ok(Action::await_change())
}

fn ignore_404(r: std::result::Result<(), kube::Error>) -> Result<()> {
    match r {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests;
