//! Support for the operator's end-to-end suites (issue 5): the operator installed once
//! with helm from `charts/`, StudioClusters applied with kubectl, their status, the
//! nodes' content API with a user JWT, a write load, and a recorder of pod events.
//!
//! The operator is cluster-scoped (it watches every namespace), so there is exactly one
//! install, release `studio-operator` in namespace `studio-system` (the same as
//! `scripts/demo.sh`): [`operator`] installs or upgrades it once per test process under a
//! file lock (test binaries run in parallel).
//!
//! Everything runs as it ships: the operator and every StudioCluster's pods run on the
//! real node (`real-1`: the upstream kubelet, containerd, runc) from the images `make
//! images` pushed to the local registry, pinned by digest (`<cluster dir>/images.env`);
//! a new build means new digests, so `helm upgrade` rolls the operator onto it.
#![allow(dead_code)]

pub mod jwt;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Event, Pod, Secret},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, ListParams},
    runtime::{WatchStreamExt, watcher},
};
use reqwest::Method;
use serde_json::{Value, json};
use studio_e2e::history::NodeAccess;
use studio_e2e::real_node::{Images, real_node_placement, retagged};
use studio_e2e::{is_ready, name, pod_ip, ready_endpoints, restart_count};
use studio_harness::{Cluster, TestEnv, join, wait_for};
use tokio::sync::{OnceCell, RwLock};

/// Namespace and release name of the one operator install.
pub use studio_e2e::{OPERATOR_NS, RELEASE, operator_leader};
/// The pushed images, read by [`operator`] from `images.env`.
static IMAGES: std::sync::OnceLock<Images> = std::sync::OnceLock::new();

/// What an image accessor answers before [`operator`] read `images.env`: pods on it fail
/// to pull with this name, which says what to do.
const NO_IMAGES: &str = "run-make-images-first.invalid/studio-node:missing";

/// The studio-node image by digest, as `make images` pushed it.
pub fn node_image() -> &'static str {
    IMAGES.get().map(|i| i.node.as_str()).unwrap_or(NO_IMAGES)
}

/// The same image under another tag: another `spec.image` (a rolling upgrade), the same
/// digest.
pub fn node_image_v2() -> &'static str {
    static V2: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V2.get_or_init(|| retagged(node_image(), "v2"))
}

/// The pushed images (after [`operator`]).
pub fn images() -> anyhow::Result<&'static Images> {
    IMAGES
        .get()
        .ok_or_else(|| anyhow!("images.env not read yet: call common::operator() first"))
}
pub const NODE_PORT: u16 = 8080;
/// The 3 + arbiter example, as shipped for real clusters.
pub const EXAMPLE: &str = "examples/three-nodes-arbiter-sync.yaml";

pub const ROLE: &str = "studio.cms.io/role";
pub const CLUSTER: &str = "studio.cms.io/cluster";

/// First start of a cluster's pods (scheduling, claims, process start, election); the
/// acceptance bound (60 s from the pods' start to Ready) is asserted separately.
pub const START: Duration = Duration::from_secs(180);

/// Tests that disturb the operator itself (killing its leader) take this exclusively;
/// every other test holds it shared, so their timings are not skewed by a take-over.
pub static OPERATOR_GATE: RwLock<()> = RwLock::const_new(());

static INSTALLED: OnceCell<()> = OnceCell::const_new();

/// Runs helm with the admin kubeconfig; returns stdout or an error with stderr.
pub fn helm<I, S>(cluster: &Cluster, args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().into()).collect();
    let out = Command::new(cluster.tool("helm"))
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .context("running helm")?;
    if !out.status.success() {
        bail!(
            "helm {:?} failed ({}): {}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The local cluster with the operator installed from `charts/studio-operator` and a
/// leader elected.
pub async fn operator() -> anyhow::Result<&'static Cluster> {
    let cluster = studio_harness::cluster()?;
    INSTALLED
        .get_or_try_init(|| install(cluster))
        .await
        .context("installing the operator with helm")?;
    Ok(cluster)
}

async fn install(c: &'static Cluster) -> anyhow::Result<()> {
    let images = Images::load(c)?;
    let _ = IMAGES.set(images);
    // One installer at a time across test processes (helm refuses concurrent upgrades).
    let lock_path = c.dir.join("studio-operator-e2e.lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
        .await
        .context("waiting for the install lock")?
        .context("locking the install lock")
        .and_then(|lock| install_locked(c).map(|()| drop(lock)))?;
    wait_for_operator_leader(c).await?;
    Ok(())
}

/// `helm upgrade --install` of the operator release from `chart` (a directory or a
/// packaged .tgz), with the pushed operator image on the real node, waiting until it is
/// ready.
pub fn helm_upgrade_operator(c: &Cluster, chart: &Path) -> anyhow::Result<String> {
    let image = Images::load(c)?.operator;
    let (repository, digest) = image
        .split_once('@')
        .ok_or_else(|| anyhow!("operator image {image} has no digest"))?;
    // `make images` also pushes the tag (STUDIO_IMAGE_TAG, default dev): a chart older
    // than `image.digest` (helm.rs upgrades from 0.1.0) pulls by tag.
    let tag = std::env::var("STUDIO_IMAGE_TAG").unwrap_or_else(|_| "dev".into());
    let values = serde_json::to_string(&json!({
        "image": {"repository": repository, "digest": digest, "tag": tag},
        "nodeSelector": real_node_placement()["nodeSelector"],
        "tolerations": real_node_placement()["tolerations"],
    }))?;
    let file = c.dir.join("studio-operator-e2e-values.json");
    std::fs::write(&file, values).with_context(|| format!("writing {}", file.display()))?;
    helm(
        c,
        [
            "upgrade".as_ref(),
            "--install".as_ref(),
            RELEASE.as_ref(),
            chart.as_os_str(),
            "--namespace".as_ref(),
            OPERATOR_NS.as_ref(),
            "--create-namespace".as_ref(),
            "-f".as_ref(),
            file.as_os_str(),
            "--wait".as_ref(),
            "--timeout".as_ref(),
            "180s".as_ref(),
        ],
    )
}

fn install_locked(c: &Cluster) -> anyhow::Result<()> {
    let started = Instant::now();
    // No CRD workaround: the chart's pre-install/pre-upgrade hook applies the CRD of
    // the operator build under test (Helm alone installs crds/ only when absent). A new
    // build has a new digest, so the upgrade rolls the Deployment onto it.
    helm_upgrade_operator(c, &c.repo.join("charts/studio-operator"))?;
    eprintln!(
        "[operator] helm release {RELEASE} in {OPERATOR_NS} ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn wait_for_operator_leader(c: &Cluster) -> anyhow::Result<String> {
    let client = c.client().await?;
    wait_for(
        "the operator's leader (Lease studio-operator held by a Ready pod)",
        Duration::from_secs(90),
        || operator_leader(&client),
    )
    .await
}

/// A test's namespace with the operator installed; holds the operator gate shared.
pub struct OpEnv {
    pub env: TestEnv,
    _gate: tokio::sync::RwLockReadGuard<'static, ()>,
}

impl OpEnv {
    pub async fn new(test: &str) -> anyhow::Result<OpEnv> {
        operator().await?;
        let gate = OPERATOR_GATE.read().await;
        Ok(OpEnv {
            env: TestEnv::new(test).await?,
            _gate: gate,
        })
    }

    pub async fn pass(self) -> anyhow::Result<()> {
        remove_scratch(&self.env);
        self.env.pass().await
    }
}

impl std::ops::Deref for OpEnv {
    type Target = TestEnv;
    fn deref(&self) -> &TestEnv {
        &self.env
    }
}

/// The StudioCluster resource, read as dynamic objects.
pub fn studio_resource() -> ApiResource {
    ApiResource {
        group: "studio.cms.io".into(),
        version: "v1alpha1".into(),
        api_version: "studio.cms.io/v1alpha1".into(),
        kind: "StudioCluster".into(),
        plural: "studioclusters".into(),
    }
}

pub fn studio_api(env: &TestEnv) -> Api<DynamicObject> {
    Api::namespaced_with(env.client.clone(), &env.ns, &studio_resource())
}

fn scratch_dir(env: &TestEnv) -> PathBuf {
    std::env::temp_dir().join(format!("studio-e2e-{}", env.ns))
}

/// Removes the test's scratch directory (manifests it applied).
pub fn remove_scratch(env: &TestEnv) {
    let _ = std::fs::remove_dir_all(scratch_dir(env));
}

/// Writes `text` to a file of the test's scratch directory and returns its path.
pub fn scratch_file(env: &TestEnv, file: &str, text: &str) -> anyhow::Result<PathBuf> {
    let dir = scratch_dir(env);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(file);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `kubectl apply -f` of a manifest in the test's namespace.
pub fn apply(env: &TestEnv, file: &str, manifest: &str) -> anyhow::Result<String> {
    let path = scratch_file(env, file, manifest)?;
    env.kubectl(["apply".as_ref(), "-f".as_ref(), path.as_os_str()])
}

/// The shipped 3 + arbiter example on the pushed image and the real node.
pub fn example_manifest(repo: &Path) -> anyhow::Result<String> {
    mapped_example(repo, EXAMPLE)
}

/// A shipped example (`examples/...`) with the pushed image, placed on the real node
/// (the example must not set `spec.pod` itself).
pub fn mapped_example(repo: &Path, example: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(repo.join(example))
        .with_context(|| format!("reading {example}"))?;
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("  image:") {
                found = true;
                format!(
                    "  image: {}\n  pod: {}",
                    node_image(),
                    real_node_placement()
                )
            } else {
                l.to_string()
            }
        })
        .collect();
    ensure!(found, "{example} has no spec.image line");
    Ok(out.join("\n") + "\n")
}

/// A StudioCluster in the example's shape (3 nodes + arbiter, sync, K = 2, fast
/// election, TLS), with `patch` merged into its spec (JSON merge: null removes).
pub fn cluster_manifest(name: &str, patch: Value) -> String {
    let mut spec = json!({
        "nodes": 3,
        "image": node_image(),
        "pod": real_node_placement(),
        "tls": {"enabled": true},
        "arbiter": {"enabled": true},
        "storage": {"size": "1Gi", "pvcRetention": "Delete"},
        "replication": {"mode": "sync", "syncReplicas": 2},
        "coordinatorMode": "CUD",
        "election": {"leaseDurationSeconds": 6, "renewDeadlineSeconds": 4, "retryPeriodSeconds": 1}
    });
    merge(&mut spec, &patch);
    json!({
        "apiVersion": "studio.cms.io/v1alpha1",
        "kind": "StudioCluster",
        "metadata": {"name": name},
        "spec": spec
    })
    .to_string()
}

/// RFC 7386 JSON merge.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// What `status` says, reduced to what tests assert.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub generation: i64,
    pub observed_generation: i64,
    pub phase: String,
    pub message: String,
    pub ready: bool,
    pub ready_nodes: i64,
    pub current_primary: Option<String>,
    pub members: Vec<Value>,
    pub last_failover: Value,
    pub ready_since: Option<String>,
}

impl Status {
    pub fn of(obj: &DynamicObject) -> Status {
        let st = &obj.data["status"];
        let ready_cond = st["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready");
        Status {
            generation: obj.metadata.generation.unwrap_or(0),
            observed_generation: st["observedGeneration"].as_i64().unwrap_or(-1),
            phase: st["phase"].as_str().unwrap_or("").into(),
            message: st["message"].as_str().unwrap_or("").into(),
            ready: ready_cond.is_some_and(|c| c["status"] == "True"),
            ready_nodes: st["readyNodes"].as_i64().unwrap_or(0),
            current_primary: st["currentPrimary"].as_str().map(String::from),
            members: st["members"].as_array().cloned().unwrap_or_default(),
            last_failover: st["lastFailover"].clone(),
            ready_since: ready_cond
                .and_then(|c| c["lastTransitionTime"].as_str())
                .map(String::from),
        }
    }

    /// Ready for the current generation.
    pub fn ready_now(&self) -> bool {
        self.ready && self.observed_generation == self.generation && self.phase == "Ready"
    }

    pub fn summary(&self) -> String {
        format!(
            "phase={} ready={} readyNodes={} primary={} observedGeneration={}/{} message={:?}",
            self.phase,
            self.ready,
            self.ready_nodes,
            self.current_primary.as_deref().unwrap_or("-"),
            self.observed_generation,
            self.generation,
            self.message
        )
    }
}

pub async fn status(env: &TestEnv, name: &str) -> anyhow::Result<Status> {
    let obj = studio_api(env)
        .get(name)
        .await
        .with_context(|| format!("get studiocluster {name}"))?;
    Ok(Status::of(&obj))
}

/// Waits until the cluster is Ready for its current generation with `nodes` ready data
/// nodes; returns the status.
pub async fn wait_ready(
    env: &TestEnv,
    name: &str,
    nodes: i64,
    timeout: Duration,
) -> anyhow::Result<Status> {
    wait_for(
        &format!("studiocluster/{name} Ready with {nodes} ready nodes"),
        timeout,
        || async {
            let s = status(env, name).await?;
            if s.ready_now() && s.ready_nodes == nodes && s.current_primary.is_some() {
                Ok(s)
            } else {
                bail!("{}", s.summary())
            }
        },
    )
    .await
}

/// The pods of a cluster (data nodes and arbiter), sorted by name.
pub async fn cluster_pods(env: &TestEnv, cluster: &str) -> anyhow::Result<Vec<Pod>> {
    let mut list = env
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("{CLUSTER}={cluster}")))
        .await
        .context("listing the cluster's pods")?
        .items;
    list.sort_by_key(name);
    Ok(list)
}

pub fn role_of(pod: &Pod) -> String {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ROLE))
        .cloned()
        .unwrap_or_default()
}

pub fn image_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

pub fn is_arbiter(cluster: &str, pod: &str) -> bool {
    pod.starts_with(&format!("{cluster}-arbiter-"))
}

/// Holder of the cluster's election Lease.
pub async fn lease_holder(env: &TestEnv, cluster: &str) -> anyhow::Result<Option<String>> {
    Ok(env
        .api::<Lease>()
        .get_opt(&format!("{cluster}-primary"))
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

/// Checks that status, Lease, role labels and the -primary/-replicas Services agree on
/// one primary, with every data node Ready; returns the primary's name and address.
pub async fn roles_agree(
    env: &TestEnv,
    cluster: &str,
    nodes: usize,
) -> anyhow::Result<(String, Ipv4Addr)> {
    let st = status(env, cluster).await?;
    ensure!(st.ready_now(), "not Ready: {}", st.summary());
    let primary = st
        .current_primary
        .clone()
        .ok_or_else(|| anyhow!("status.currentPrimary is empty"))?;
    let holder = lease_holder(env, cluster).await?;
    ensure!(
        holder.as_deref() == Some(primary.as_str()),
        "Lease {cluster}-primary held by {holder:?}, status.currentPrimary {primary}"
    );
    let pods = cluster_pods(env, cluster).await?;
    let data: Vec<&Pod> = pods
        .iter()
        .filter(|p| !is_arbiter(cluster, &name(p)))
        .collect();
    ensure!(
        data.len() == nodes && data.iter().all(|p| is_ready(p)),
        "data pods: [{}]",
        join(
            data.iter()
                .map(|p| format!("{} ready={}", name(p), is_ready(p)))
        )
    );
    let labelled: Vec<String> = pods
        .iter()
        .filter(|p| role_of(p) == "primary")
        .map(name)
        .collect();
    ensure!(
        labelled == vec![primary.clone()],
        "pods labelled primary: {labelled:?}, status.currentPrimary {primary}"
    );
    for p in &pods {
        let want = if is_arbiter(cluster, &name(p)) {
            "arbiter"
        } else if name(p) == primary {
            "primary"
        } else {
            "replica"
        };
        ensure!(
            role_of(p) == want,
            "pod {} is labelled {:?}, expected {want}",
            name(p),
            role_of(p)
        );
    }
    let ip_of = |n: &str| pods.iter().find(|p| name(p) == n).and_then(pod_ip);
    let primary_ip = ip_of(&primary).ok_or_else(|| anyhow!("{primary} has no IP"))?;
    let slices: Api<EndpointSlice> = env.api();
    let behind_primary = ready_endpoints(&slices, &format!("{cluster}-primary")).await?;
    ensure!(
        behind_primary == BTreeSet::from([primary_ip]),
        "Service {cluster}-primary has ready endpoints {behind_primary:?}, expected {primary_ip} ({primary})"
    );
    let replica_ips: BTreeSet<Ipv4Addr> = data
        .iter()
        .filter(|p| name(p) != primary)
        .filter_map(|p| pod_ip(p))
        .collect();
    let behind_replicas = ready_endpoints(&slices, &format!("{cluster}-replicas")).await?;
    ensure!(
        behind_replicas == replica_ips,
        "Service {cluster}-replicas has ready endpoints {behind_replicas:?}, expected {replica_ips:?}"
    );
    Ok((primary, primary_ip))
}

/// Events about the StudioCluster `cluster`, as (reason, message), oldest first.
pub async fn cluster_events(env: &TestEnv, cluster: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut list: Vec<Event> = env
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .context("listing events")?
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("StudioCluster")
                && e.involved_object.name.as_deref() == Some(cluster)
        })
        .collect();
    list.sort_by_key(|e| {
        e.event_time
            .as_ref()
            .map(|t| t.0)
            .or(e.last_timestamp.as_ref().map(|t| t.0))
    });
    Ok(list
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect())
}

/// Waits until an Event with `reason` about the StudioCluster `cluster` exists and
/// returns its message. The operator writes the status and then records the Event, so
/// a test that saw a condition change must wait for the Event rather than list once.
pub async fn wait_cluster_event(
    env: &TestEnv,
    cluster: &str,
    reason: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    wait_for(&format!("an Event {reason}"), timeout, || async {
        let events = cluster_events(env, cluster).await?;
        events
            .iter()
            .find(|(r, _)| r == reason)
            .map(|(_, m)| m.clone())
            .ok_or_else(|| anyhow!("no {reason} Event yet: {events:?}"))
    })
    .await
}

/// A client of the nodes' content API holding a user JWT signed with the cluster's
/// generated Secret.
#[derive(Clone)]
pub struct Content {
    pub http: reqwest::Client,
    pub token: String,
    /// `https` for a cluster with spec.tls (its CA trusted), else `http`.
    pub scheme: &'static str,
}

/// A client of a cluster's nodes: with TLS (Secret `<cluster>-tls` exists) it trusts
/// only the cluster CA and, as members and the operator do, checks the chain and not
/// the name (pods are reached by IP). `identity`: a client certificate to present.
pub async fn node_client(
    env: &TestEnv,
    cluster: &str,
    identity: Option<reqwest::Identity>,
) -> anyhow::Result<(reqwest::Client, &'static str)> {
    let b = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(8));
    let tls = env
        .api::<Secret>()
        .get_opt(&format!("{cluster}-tls"))
        .await
        .with_context(|| format!("get secret {cluster}-tls"))?;
    let Some(tls) = tls else {
        return Ok((b.build()?, "http"));
    };
    let ca = tls
        .data
        .unwrap_or_default()
        .get("ca.crt")
        .map(|b| b.0.clone())
        .ok_or_else(|| anyhow!("Secret {cluster}-tls has no ca.crt"))?;
    let mut b = b
        .use_rustls_tls()
        .tls_info(true)
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .danger_accept_invalid_hostnames(true);
    if let Some(id) = identity {
        b = b.identity(id);
    }
    Ok((b.build()?, "https"))
}

/// How the harness reaches `cluster`'s nodes as a user (an editor JWT) and as a member:
/// with TLS the members' own certificate from Secret `<cluster>-tls` (it is issued for
/// client auth too), without TLS the cluster token from `<cluster>-auth`.
pub async fn node_access(env: &TestEnv, cluster: &str) -> anyhow::Result<NodeAccess> {
    let content = Content::new(env, cluster).await?;
    let tls = env
        .api::<Secret>()
        .get_opt(&format!("{cluster}-tls"))
        .await
        .with_context(|| format!("get secret {cluster}-tls"))?;
    let (member, cluster_token) = match tls {
        Some(s) => {
            let data = s.data.unwrap_or_default();
            let pem = |k: &str| {
                data.get(k)
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .ok_or_else(|| anyhow!("Secret {cluster}-tls has no {k}"))
            };
            let identity = reqwest::Identity::from_pem(
                format!("{}\n{}", pem("tls.crt")?, pem("tls.key")?).as_bytes(),
            )?;
            (node_client(env, cluster, Some(identity)).await?.0, None)
        }
        None => {
            let token = auth_secret_value(env, cluster, "cluster-token").await?;
            (content.http.clone(), Some(token))
        }
    };
    let internal_port = if cluster_token.is_none() {
        studio_e2e::history::INTERNAL_PORT
    } else {
        studio_e2e::history::NODE_PORT
    };
    Ok(NodeAccess {
        internal_port,
        scheme: content.scheme,
        user: content.http,
        member,
        jwt: content.token,
        cluster_token,
    })
}

/// One key of the cluster's generated Secret `<cluster>-auth`, as trimmed text.
async fn auth_secret_value(env: &TestEnv, cluster: &str, key: &str) -> anyhow::Result<String> {
    let secret = env
        .api::<Secret>()
        .get(&format!("{cluster}-auth"))
        .await
        .with_context(|| format!("get secret {cluster}-auth"))?;
    secret
        .data
        .unwrap_or_default()
        .get(key)
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
        .ok_or_else(|| anyhow!("Secret {cluster}-auth has no {key}"))
}

impl Content {
    pub async fn new(env: &TestEnv, cluster: &str) -> anyhow::Result<Content> {
        let key = auth_secret_value(env, cluster, "jwt-key").await?;
        let (http, scheme) = node_client(env, cluster, None).await?;
        Ok(Content {
            http,
            token: jwt::token(key.as_bytes(), "e2e", &["editor"]),
            scheme,
        })
    }

    pub async fn request(
        &self,
        method: Method,
        ip: Ipv4Addr,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, String)> {
        let url = format!("{}://{ip}:{NODE_PORT}/api/v1/content/{path}", self.scheme);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await.unwrap_or_default()))
    }

    /// PUT an item; Ok when the node acknowledged it (200/201).
    pub async fn put(&self, ip: Ipv4Addr, path: &str, value: &str) -> anyhow::Result<()> {
        let (code, body) = self
            .request(
                Method::PUT,
                ip,
                path,
                Some(json!({"type": "e2e", "properties": {"value": value}})),
            )
            .await?;
        ensure!(
            code == 200 || code == 201,
            "PUT {path}: HTTP {code}: {body}"
        );
        Ok(())
    }

    /// GET an item's `value` property (None when 404).
    pub async fn get(&self, ip: Ipv4Addr, path: &str) -> anyhow::Result<Option<String>> {
        let (code, body) = self.request(Method::GET, ip, path, None).await?;
        match code {
            200 => {
                let v: Value = serde_json::from_str(&body).context("parsing the item")?;
                Ok(v["properties"]["value"].as_str().map(String::from))
            }
            404 => Ok(None),
            _ => bail!("GET {path}: HTTP {code}: {body}"),
        }
    }
}

/// The Ready primary's address (the pod labelled primary), if any.
pub async fn primary_ip(env: &TestEnv, cluster: &str) -> anyhow::Result<Option<Ipv4Addr>> {
    Ok(cluster_pods(env, cluster)
        .await?
        .iter()
        .find(|p| role_of(p) == "primary" && is_ready(p) && p.metadata.deletion_timestamp.is_none())
        .and_then(pod_ip))
}

/// A sequential writer through the primary: every acknowledged write is recorded; the
/// target is re-resolved from the role labels after an error.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub acked: Arc<Mutex<Vec<(String, String)>>>,
    pub errors: Arc<Mutex<Vec<(Instant, String)>>>,
    pub attempts: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub fn start(env: &TestEnv, cluster: &str, content: Content, prefix: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicU64::new(0));
        let pods: Api<Pod> = env.api();
        let (cluster, prefix) = (cluster.to_string(), prefix.to_string());
        let (s, a, e, n) = (
            stop.clone(),
            acked.clone(),
            errors.clone(),
            attempts.clone(),
        );
        let task = tokio::spawn(async move {
            let mut target: Option<Ipv4Addr> = None;
            let mut i = 0u64;
            while !s.load(Ordering::SeqCst) {
                if target.is_none() {
                    target = pods
                        .list(
                            &ListParams::default()
                                .labels(&format!("{CLUSTER}={cluster},{ROLE}=primary")),
                        )
                        .await
                        .ok()
                        .and_then(|l| {
                            l.items
                                .iter()
                                .find(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none())
                                .and_then(pod_ip)
                        });
                    if target.is_none() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
                let Some(ip) = target else { continue };
                i += 1;
                n.fetch_add(1, Ordering::SeqCst);
                let path = format!("{prefix}/w-{i}");
                let value = format!("v{i}");
                match content.put(ip, &path, &value).await {
                    Ok(()) => lock(&a).push((path, value)),
                    Err(err) => {
                        lock(&e).push((Instant::now(), format!("{ip}: {err:#}")));
                        target = None;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Load {
            stop,
            acked,
            errors,
            attempts,
            task,
        }
    }

    pub fn acked_count(&self) -> usize {
        lock(&self.acked).len()
    }

    /// Stops the writer; returns (acknowledged writes, errors).
    pub async fn stop(self) -> (Vec<(String, String)>, Vec<(Instant, String)>) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let acked = lock(&self.acked).clone();
        let errors = lock(&self.errors).clone();
        (acked, errors)
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits until every acknowledged write reads back, with its value, from the primary.
pub async fn verify_acked(
    env: &TestEnv,
    cluster: &str,
    content: &Content,
    acked: &[(String, String)],
) -> anyhow::Result<()> {
    let ip = wait_for("a Ready primary", Duration::from_secs(60), || async {
        primary_ip(env, cluster)
            .await?
            .ok_or_else(|| anyhow!("no Ready pod labelled primary"))
    })
    .await?;
    let mut missing = Vec::new();
    for (path, value) in acked {
        let got = content.get(ip, path).await?;
        if got.as_deref() != Some(value.as_str()) {
            missing.push(format!("{path}={value} read {got:?}"));
        }
    }
    ensure!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost on the primary {ip}: {}",
        missing.len(),
        acked.len(),
        missing
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(())
}

/// What happened to the cluster's pods, from a watch: deletions (with the role label at
/// the moment the pod was marked for deletion) and primary changes.
#[derive(Debug, Clone)]
pub enum PodEvent {
    Deleting {
        pod: String,
        role: String,
        image: String,
        at: Instant,
    },
    PrimaryLabel {
        pod: String,
        at: Instant,
    },
}

pub struct PodRecorder {
    pub events: Arc<Mutex<Vec<PodEvent>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodRecorder {
    pub fn start(env: &TestEnv, cluster: &str) -> PodRecorder {
        let events = Arc::new(Mutex::new(Vec::new()));
        let pods: Api<Pod> = env.api();
        let cfg = watcher::Config::default().labels(&format!("{CLUSTER}={cluster}"));
        let ev = events.clone();
        let task = tokio::spawn(async move {
            // uid → seen deleting; pod name → last known primary label holder.
            let mut deleting: BTreeSet<String> = BTreeSet::new();
            let mut primary: Option<String> = None;
            let mut stream = watcher(pods, cfg)
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(item) = stream.next().await {
                let Ok(pod) = item else { continue };
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let n = name(&pod);
                if pod.metadata.deletion_timestamp.is_some() && deleting.insert(uid) {
                    lock(&ev).push(PodEvent::Deleting {
                        pod: n.clone(),
                        role: role_of(&pod),
                        image: image_of(&pod),
                        at: Instant::now(),
                    });
                }
                if role_of(&pod) == "primary" && primary.as_deref() != Some(n.as_str()) {
                    primary = Some(n.clone());
                    lock(&ev).push(PodEvent::PrimaryLabel {
                        pod: n,
                        at: Instant::now(),
                    });
                }
            }
        });
        PodRecorder { events, task }
    }

    pub fn snapshot(&self) -> Vec<PodEvent> {
        lock(&self.events).clone()
    }
}

impl Drop for PodRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Patches a StudioCluster's spec with a JSON merge patch through kubectl (as a user).
pub fn patch_spec(env: &TestEnv, cluster: &str, patch: Value) -> anyhow::Result<String> {
    env.kubectl([
        "patch",
        "studiocluster",
        cluster,
        "--type",
        "merge",
        "-p",
        &json!({ "spec": patch }).to_string(),
    ])
}

/// Annotates a StudioCluster (as a user).
pub fn annotate(env: &TestEnv, cluster: &str, kv: &str) -> anyhow::Result<String> {
    env.kubectl([
        "annotate",
        "--overwrite",
        &format!("studiocluster/{cluster}"),
        kv,
    ])
}

/// A map of the cluster's pods: name → (uid, role label, ready).
pub async fn pod_table(
    env: &TestEnv,
    cluster: &str,
) -> anyhow::Result<BTreeMap<String, (String, String, bool)>> {
    Ok(cluster_pods(env, cluster)
        .await?
        .iter()
        .map(|p| {
            (
                name(p),
                (
                    p.metadata.uid.clone().unwrap_or_default(),
                    role_of(p),
                    is_ready(p),
                ),
            )
        })
        .collect())
}

/// Processes held with SIGSTOP; continued on drop.
pub struct Stopped(Vec<i32>);

impl Stopped {
    pub fn new(pids: Vec<i32>) -> anyhow::Result<Stopped> {
        ensure!(!pids.is_empty(), "no processes to stop");
        for pid in &pids {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGSTOP,
            )
            .with_context(|| format!("SIGSTOP {pid}"))?;
        }
        Ok(Stopped(pids))
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    }
}

/// Kills the operator's leader: SIGKILL (no graceful release of the Lease), then the
/// pod is force-deleted so that it is not restarted under the same identity and only
/// another replica can take over. Returns the old leader's pod name.
pub async fn kill_operator_leader(env: &TestEnv) -> anyhow::Result<String> {
    let ops: Api<Pod> = Api::namespaced(env.client.clone(), OPERATOR_NS);
    let leader = wait_for("the operator's leader", Duration::from_secs(60), || {
        operator_leader(&env.client)
    })
    .await?;
    let pids = studio_harness::pod_pids(&ops.get(&leader).await?)?;
    ensure!(!pids.is_empty(), "no processes found for {leader}");
    for pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    studio_harness::kubectl(
        env.cluster,
        [
            "-n",
            OPERATOR_NS,
            "delete",
            "pod",
            &leader,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ],
    )?;
    Ok(leader)
}

/// Waits until a pod other than `old` holds the operator's Lease; returns it.
pub async fn wait_new_operator_leader(env: &TestEnv, old: &str) -> anyhow::Result<String> {
    wait_for("a new operator leader", Duration::from_secs(90), || async {
        let l = operator_leader(&env.client).await?;
        ensure!(l != old, "still {old}");
        Ok(l)
    })
    .await
}

/// Waits until the operator Deployment has 2 Ready pods again (a standby for the next
/// leader loss).
pub async fn wait_operator_pods_ready(env: &TestEnv) -> anyhow::Result<()> {
    let ops: Api<Pod> = Api::namespaced(env.client.clone(), OPERATOR_NS);
    wait_for(
        "2 Ready operator pods",
        Duration::from_secs(120),
        || async {
            let pods = ops
                .list(
                    &ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")),
                )
                .await?
                .items;
            let ready: Vec<String> = pods
                .iter()
                .filter(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none())
                .map(|p| format!("{} restarts={}", name(p), restart_count(p)))
                .collect();
            ensure!(ready.len() == 2, "ready operator pods: {ready:?}");
            Ok(())
        },
    )
    .await
}
