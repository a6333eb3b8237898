//! Benchmark of the operator (issue 5, BENCHMARKS.md) on the real local cluster:
//!
//! 1. **Object creation latency**: `--samples` single-node StudioClusters applied one at a
//!    time (server-side apply), each measured from the apply request to the moment a
//!    watch on the API has seen every owned object: ServiceAccount, Role and RoleBinding
//!    `<c>-node`, Secret `<c>-auth`, Services `<c>-nodes`, `<c>-primary`, `<c>-replicas`,
//!    StatefulSet `<c>`, PodDisruptionBudget `<c>` (9 objects). Each sample is deleted,
//!    and gone, before the next one is applied. Reports p50/p99 (nearest rank).
//! 2. **Scale**: `--clusters` single-node StudioClusters applied at once in a fresh
//!    namespace; time until every one has condition Ready=True for its generation, while
//!    the RSS (VmRSS) of the operator's processes and of the nodes' processes is sampled
//!    every `--rss-interval-ms` (a pod's processes are those in its CNI network
//!    namespace, found by `studio_harness::pod_netns`).
//! 3. **Cleanup**: deletes the StudioClusters and both namespaces and waits until gone.
//!
//! The operator is the helm release `studio-operator` in `studio-system` that
//! `scripts/demo.sh` and the operator e2e tests install; it is reused when deployed with a
//! leader, else installed the same way (under the e2e tests' install lock).
//!
//! `cargo run -p studio-e2e --bin operator-bench -- --clusters 100 --samples 20`

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Debug,
    os::unix::fs::MetadataExt,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail, ensure};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::serde::de::DeserializeOwned;
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::StatefulSet,
        core::v1::{Namespace, Pod, Secret, Service, ServiceAccount},
        policy::v1::PodDisruptionBudget,
        rbac::v1::{Role, RoleBinding},
    },
};
use kube::{
    Api, Client, Resource,
    api::{
        ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams,
        PostParams,
    },
    runtime::watcher,
};
use serde_json::{Value, json};
use studio_e2e::real_node::Images;
use studio_e2e::{OPERATOR_NS, RELEASE, operator_leader};
use studio_harness::{Cluster, pod_netns, unique_name, wait_for};
use tokio::{sync::mpsc, task::JoinHandle};

const FIELD_MANAGER: &str = "operator-bench";
const BENCH_LABEL: &str = "studio.cms.io/bench";

#[derive(Parser, Debug)]
#[command(
    about = "Operator benchmark: CR → owned objects latency; N single-node clusters → Ready, with the operator's RSS"
)]
struct Args {
    /// Single-node StudioClusters applied at once in the scale phase (0 skips it).
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    /// StudioClusters applied one at a time for the object-creation latency (0 skips it).
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// Prefix of the namespaces the bench creates (`<prefix>-objects-…`, `<prefix>-scale-…`).
    #[arg(long, default_value = "opbench")]
    namespace_prefix: String,
    /// spec.storage.size of every cluster.
    #[arg(long, default_value = "16Mi")]
    storage: String,
    /// Bound on one sample: apply → all owned objects seen.
    #[arg(long, default_value_t = 60)]
    object_timeout_secs: u64,
    /// Bound on the scale phase: apply → every cluster Ready.
    #[arg(long, default_value_t = 1200)]
    ready_timeout_secs: u64,
    /// Bound on the cleanup: everything deleted and gone.
    #[arg(long, default_value_t = 600)]
    cleanup_timeout_secs: u64,
    /// Concurrent apply requests in the scale phase.
    #[arg(long, default_value_t = 25)]
    apply_concurrency: usize,
    /// RSS sampling period.
    #[arg(long, default_value_t = 1000)]
    rss_interval_ms: u64,
    /// Seconds of RSS sampling after the last cluster became Ready ("final" is the last sample).
    #[arg(long, default_value_t = 15)]
    settle_secs: u64,
}

fn studio_resource() -> ApiResource {
    ApiResource {
        group: "studio.cms.io".into(),
        version: "v1alpha1".into(),
        api_version: "studio.cms.io/v1alpha1".into(),
        kind: "StudioCluster".into(),
        plural: "studioclusters".into(),
    }
}

fn studio_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &studio_resource())
}

/// The pushed studio-node image (images.env), set once by `main`.
static NODE_IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn cluster_object(name: &str, storage: &str) -> anyhow::Result<DynamicObject> {
    let image = NODE_IMAGE
        .get()
        .ok_or_else(|| anyhow!("the node image is not known yet"))?;
    serde_json::from_value(json!({
        "apiVersion": "studio.cms.io/v1alpha1",
        "kind": "StudioCluster",
        "metadata": {"name": name, "labels": {BENCH_LABEL: "true"}},
        "spec": {
            "nodes": 1,
            "image": image,
            "storage": {"size": storage, "pvcRetention": "Delete"}
        }
    }))
    .context("building a StudioCluster")
}

async fn apply_cluster(api: &Api<DynamicObject>, name: &str, storage: &str) -> anyhow::Result<()> {
    let obj = cluster_object(name, storage)?;
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .with_context(|| format!("applying studiocluster/{name}"))?;
    Ok(())
}

/// The 9 objects the operator owns for a single-node cluster without arbiter, as
/// `Kind/name`.
fn expected_objects(c: &str) -> BTreeSet<String> {
    [
        format!("ServiceAccount/{c}-node"),
        format!("Role/{c}-node"),
        format!("RoleBinding/{c}-node"),
        format!("Secret/{c}-auth"),
        format!("Service/{c}-nodes"),
        format!("Service/{c}-primary"),
        format!("Service/{c}-replicas"),
        format!("StatefulSet/{c}"),
        format!("PodDisruptionBudget/{c}"),
    ]
    .into_iter()
    .collect()
}

// ---------------------------------------------------------------------------------------
// Operator install

fn run_tool(c: &Cluster, tool: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(c.tool(tool))
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {tool}"))?;
    if !out.status.success() {
        bail!(
            "{tool} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Reuses the deployed release, else installs it like scripts/demo.sh (and the e2e
/// tests: CRD applied server-side first, under their install lock).
async fn ensure_operator(c: &'static Cluster, client: &Client) -> anyhow::Result<String> {
    let deployed = run_tool(
        c,
        "helm",
        &["status", RELEASE, "-n", OPERATOR_NS, "-o", "json"],
    )
    .ok()
    .and_then(|s| serde_json::from_str::<Value>(&s).ok())
    .is_some_and(|v| v["info"]["status"] == "deployed");
    if deployed && let Ok(leader) = operator_leader(client).await {
        eprintln!("[bench] reusing helm release {RELEASE} in {OPERATOR_NS}; leader {leader}");
        return Ok(leader);
    }
    eprintln!(
        "[bench] installing the operator: helm upgrade --install {RELEASE} charts/studio-operator -n {OPERATOR_NS}"
    );
    let lock_path = c.dir.join("studio-operator-e2e.lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
        .await
        .context("waiting for the install lock")?
        .context("locking the install lock")?;
    let crd = c
        .repo
        .join("charts/studio-operator/crds/studiocluster.yaml");
    let crd = crd.to_string_lossy();
    run_tool(
        c,
        "kubectl",
        &["apply", "--server-side", "--force-conflicts", "-f", &crd],
    )?;
    run_tool(
        c,
        "kubectl",
        &[
            "wait",
            "--for=condition=Established",
            "crd/studioclusters.studio.cms.io",
            "--timeout=60s",
        ],
    )?;
    let chart = c.repo.join("charts/studio-operator");
    // The operator as `make images` pushed it, pinned by digest.
    let image = Images::load(c)?.operator;
    let (repository, digest) = image
        .split_once('@')
        .ok_or_else(|| anyhow!("operator image {image} has no digest"))?;
    run_tool(
        c,
        "helm",
        &[
            "upgrade",
            "--install",
            RELEASE,
            &chart.to_string_lossy(),
            "--namespace",
            OPERATOR_NS,
            "--create-namespace",
            "--set",
            &format!("image.repository={repository}"),
            "--set",
            &format!("image.digest={digest}"),
            "--wait",
            "--timeout",
            "180s",
        ],
    )?;
    drop(lock);
    wait_for(
        "the operator's leader (Lease studio-operator held by a Ready pod)",
        Duration::from_secs(90),
        || operator_leader(client),
    )
    .await
}

// ---------------------------------------------------------------------------------------
// Namespaces

async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    labels: Some(BTreeMap::from([(
                        BENCH_LABEL.to_string(),
                        "true".to_string(),
                    )])),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    eprintln!("[bench] namespace {name}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Phase 1: apply → all owned objects exist

/// Watches `K` in `ns` and reports every object seen (`Kind/name`, when). Signals
/// `ready` once the initial list is done, so nothing created afterwards is missed.
fn watch_kind<K>(
    client: &Client,
    ns: &str,
    tx: mpsc::UnboundedSender<(String, Instant)>,
    ready: mpsc::UnboundedSender<String>,
) -> JoinHandle<()>
where
    K: Resource<Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let kind = K::kind(&Default::default()).to_string();
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        loop {
            match stream.next().await {
                None => return,
                Some(Ok(ev)) => match ev {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                        let name = o.meta().name.clone().unwrap_or_default();
                        if tx.send((format!("{kind}/{name}"), Instant::now())).is_err() {
                            return;
                        }
                    }
                    watcher::Event::InitDone => {
                        let _ = ready.send(kind.clone());
                    }
                    watcher::Event::Init | watcher::Event::Delete(_) => {}
                },
                Some(Err(e)) => {
                    eprintln!("[bench] watch {kind}: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    })
}

struct Sample {
    name: String,
    first: Duration,
    all: Duration,
    last_kind: String,
}

async fn phase_objects(client: &Client, ns: &str, args: &Args) -> anyhow::Result<Vec<Sample>> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (rtx, mut rrx) = mpsc::unbounded_channel();
    let watches = vec![
        watch_kind::<ServiceAccount>(client, ns, tx.clone(), rtx.clone()),
        watch_kind::<Role>(client, ns, tx.clone(), rtx.clone()),
        watch_kind::<RoleBinding>(client, ns, tx.clone(), rtx.clone()),
        watch_kind::<Secret>(client, ns, tx.clone(), rtx.clone()),
        watch_kind::<Service>(client, ns, tx.clone(), rtx.clone()),
        watch_kind::<StatefulSet>(client, ns, tx.clone(), rtx.clone()),
        watch_kind::<PodDisruptionBudget>(client, ns, tx.clone(), rtx.clone()),
    ];
    drop((tx, rtx));
    let result = async {
        let mut synced = BTreeSet::new();
        tokio::time::timeout(Duration::from_secs(30), async {
            while synced.len() < watches.len() {
                match rrx.recv().await {
                    Some(k) => {
                        synced.insert(k);
                    }
                    None => bail!("a watch ended before its initial list"),
                }
            }
            Ok(())
        })
        .await
        .map_err(|_| anyhow!("watches not synced after 30s (synced: {synced:?})"))??;

        let api = studio_api(client, ns);
        let mut seen: HashMap<String, Instant> = HashMap::new();
        let mut samples = Vec::new();
        for i in 0..args.samples {
            let name = format!("obj-{i}");
            let want = expected_objects(&name);
            let t0 = Instant::now();
            apply_cluster(&api, &name, &args.storage).await?;
            let deadline = t0 + Duration::from_secs(args.object_timeout_secs);
            loop {
                let missing: Vec<&String> =
                    want.iter().filter(|k| !seen.contains_key(*k)).collect();
                if missing.is_empty() {
                    break;
                }
                match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                    Ok(Some((k, at))) => {
                        seen.entry(k).or_insert(at);
                    }
                    Ok(None) => bail!("the object watches ended"),
                    Err(_) => bail!(
                        "sample {name}: owned objects still missing after {}s: {missing:?}",
                        args.object_timeout_secs
                    ),
                }
            }
            let times: Vec<(Duration, &String)> = want
                .iter()
                .filter_map(|k| seen.get(k).map(|at| (at.saturating_duration_since(t0), k)))
                .collect();
            let first = times.iter().map(|(d, _)| *d).min().unwrap_or_default();
            let (all, last) = times
                .iter()
                .max_by_key(|(d, _)| *d)
                .map(|(d, k)| (*d, (*k).clone()))
                .unwrap_or_default();
            eprintln!(
                "[bench] sample {}/{}: {name}: first object {:.0} ms, all 9 {:.0} ms (last {last})",
                i + 1,
                args.samples,
                ms(first),
                ms(all)
            );
            samples.push(Sample {
                name: name.clone(),
                first,
                all,
                last_kind: last,
            });
            // Delete it and wait until the StudioCluster is gone (the operator's finalizer
            // has run), so every sample starts from the same state.
            api.delete(&name, &DeleteParams::background())
                .await
                .with_context(|| format!("deleting studiocluster/{name}"))?;
            wait_for(
                &format!("studiocluster/{name} to be gone"),
                Duration::from_secs(args.object_timeout_secs),
                || async {
                    match api.get_opt(&name).await? {
                        None => Ok(()),
                        Some(_) => bail!("still there"),
                    }
                },
            )
            .await?;
        }
        Ok(samples)
    }
    .await;
    for w in watches {
        w.abort();
    }
    result
}

// ---------------------------------------------------------------------------------------
// RSS sampling

/// The network-namespace inode of a pod (see `studio_harness::runtime`).
fn netns_inode(pod: &Pod) -> Option<u64> {
    std::fs::metadata(pod_netns(pod).ok()?)
        .ok()
        .map(|m| m.ino())
}

/// Every readable process as (pid, network-namespace inode, VmRSS in KiB).
fn scan_processes() -> Vec<(i32, u64, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(link) = std::fs::read_link(entry.path().join("ns/net")) else {
            continue;
        };
        let Some(ino) = link
            .to_str()
            .and_then(|s| s.strip_prefix("net:["))
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        out.push((pid, ino, rss));
    }
    out
}

#[derive(Debug, Clone, Default)]
struct RssSample {
    at: Duration,
    /// Leader's pod name and RSS (KiB), summed over its processes.
    leader: Option<(String, u64)>,
    /// Every operator pod: name → RSS (KiB).
    operator: BTreeMap<String, u64>,
    /// Sum over the bench namespace's node pods' processes (KiB), and how many processes.
    nodes_kib: u64,
    node_procs: usize,
    node_pods: usize,
}

async fn rss_sample(
    client: &Client,
    bench_ns: &str,
    t0: Instant,
    leader_hint: &mut Option<String>,
) -> anyhow::Result<RssSample> {
    let op_pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NS);
    let op_pods = op_pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
        .await
        .context("listing the operator's pods")?
        .items;
    let node_pods: Api<Pod> = Api::namespaced(client.clone(), bench_ns);
    let node_pods = node_pods
        .list(&ListParams::default().labels("studio.cms.io/cluster"))
        .await
        .context("listing the node pods")?
        .items;
    if let Ok(l) = operator_leader(client).await {
        *leader_hint = Some(l);
    }
    let op_ns: HashMap<u64, String> = op_pods
        .iter()
        .filter_map(|p| netns_inode(p).map(|i| (i, studio_e2e::name(p))))
        .collect();
    let node_ns: BTreeSet<u64> = node_pods.iter().filter_map(netns_inode).collect();
    let procs = tokio::task::spawn_blocking(scan_processes)
        .await
        .context("scanning /proc")?;
    let mut s = RssSample {
        at: t0.elapsed(),
        node_pods: node_pods.len(),
        ..Default::default()
    };
    for (_, ino, rss) in procs {
        if let Some(pod) = op_ns.get(&ino) {
            *s.operator.entry(pod.clone()).or_insert(0) += rss;
        } else if node_ns.contains(&ino) {
            s.nodes_kib += rss;
            s.node_procs += 1;
        }
    }
    s.leader = leader_hint
        .as_ref()
        .and_then(|l| s.operator.get(l).map(|r| (l.clone(), *r)));
    Ok(s)
}

/// Samples RSS every `interval` until aborted.
fn start_rss_sampler(
    client: Client,
    bench_ns: String,
    t0: Instant,
    interval: Duration,
) -> (Arc<Mutex<Vec<RssSample>>>, JoinHandle<()>) {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let out = samples.clone();
    let task = tokio::spawn(async move {
        let mut leader = None;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match rss_sample(&client, &bench_ns, t0, &mut leader).await {
                Ok(s) => lock(&out).push(s),
                Err(e) => eprintln!("[bench] RSS sample failed: {e:#}"),
            }
        }
    });
    (samples, task)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------
// Phase 2: N clusters → all Ready

fn ready_now(obj: &DynamicObject) -> bool {
    let st = &obj.data["status"];
    let ready = st["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    let generation = obj.metadata.generation.unwrap_or(0);
    ready && st["observedGeneration"].as_i64() == Some(generation)
}

/// What the watch on the StudioClusters saw: Ready (for the current generation) per
/// cluster over time.
#[derive(Debug, Clone, Default)]
struct ReadyState {
    /// First time each cluster was Ready.
    first: BTreeMap<String, Duration>,
    /// Clusters Ready now.
    now: BTreeSet<String>,
    /// Ready → not Ready transitions.
    lost: usize,
    /// Most clusters Ready at the same moment, and when first reached.
    peak_now: (usize, Duration),
    /// First moment every cluster was Ready at the same time.
    all_at_once: Option<Duration>,
}

impl ReadyState {
    fn observe(&mut self, obj: &DynamicObject, at: Duration, total: usize) {
        let name = obj.metadata.name.clone().unwrap_or_default();
        if ready_now(obj) {
            self.first.entry(name.clone()).or_insert(at);
            self.now.insert(name);
        } else if self.now.remove(&name) {
            self.lost += 1;
        }
        if self.now.len() > self.peak_now.0 {
            self.peak_now = (self.now.len(), at);
        }
        if self.now.len() >= total && self.all_at_once.is_none() {
            self.all_at_once = Some(at);
        }
    }
}

struct ScaleResult {
    submitted: Duration,
    ready: BTreeMap<String, Duration>,
    all_ready: Option<Duration>,
    state: ReadyState,
    rss: Vec<RssSample>,
    pods_running: usize,
    error: Option<String>,
}

async fn phase_scale(client: &Client, ns: &str, args: &Args) -> anyhow::Result<ScaleResult> {
    let api = studio_api(client, ns);
    let names: Vec<String> = (0..args.clusters).map(|i| format!("c-{i:03}")).collect();
    let t0 = Instant::now();
    let (rss, sampler) = start_rss_sampler(
        client.clone(),
        ns.to_string(),
        t0,
        Duration::from_millis(args.rss_interval_ms.max(100)),
    );
    // Watch the clusters' status from before the first apply.
    let ready: Arc<Mutex<ReadyState>> = Arc::default();
    let r = ready.clone();
    let wapi = api.clone();
    let total = names.len();
    let watch = tokio::spawn(async move {
        let mut stream = watcher(wapi, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    lock(&r).observe(&o, t0.elapsed(), total);
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("[bench] watch studioclusters: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });

    let outcome = async {
        stream::iter(names.iter())
            .map(|n| apply_cluster(&api, n, &args.storage))
            .buffer_unordered(args.apply_concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        let submitted = t0.elapsed();
        eprintln!(
            "[bench] {} StudioClusters applied in {:.2}s",
            names.len(),
            submitted.as_secs_f64()
        );
        let deadline = Duration::from_secs(args.ready_timeout_secs);
        let mut last_report = Instant::now();
        let all_ready = loop {
            let (n, now) = {
                let st = lock(&ready);
                (st.first.len(), st.now.len())
            };
            if n >= names.len() {
                break Some(t0.elapsed());
            }
            if t0.elapsed() > deadline {
                break None;
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                let op = lock(&rss)
                    .last()
                    .and_then(|s| s.leader.clone())
                    .map(|(_, k)| format!("{:.1} MiB", mib(k)))
                    .unwrap_or_else(|| "?".into());
                eprintln!(
                    "[bench] t={:.0}s: {n}/{} have been Ready, {now} Ready now; operator leader RSS {op}",
                    t0.elapsed().as_secs_f64(),
                    names.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        anyhow::Ok((submitted, all_ready))
    }
    .await;
    let (submitted, all_ready, error) = match outcome {
        Ok((s, a)) => (
            s,
            a,
            a.is_none().then(|| {
                format!(
                    "not all Ready within {}s ({} of {})",
                    args.ready_timeout_secs,
                    lock(&ready).first.len(),
                    names.len()
                )
            }),
        ),
        Err(e) => (t0.elapsed(), None, Some(format!("{e:#}"))),
    };
    if all_ready.is_some() {
        eprintln!(
            "[bench] all Ready; sampling RSS for {}s more",
            args.settle_secs
        );
        tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    }
    sampler.abort();
    watch.abort();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods_running = pods
        .list(&ListParams::default().labels("studio.cms.io/cluster"))
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count()
        })
        .unwrap_or(0);
    let state = lock(&ready).clone();
    let rss = lock(&rss).clone();
    Ok(ScaleResult {
        submitted,
        ready: state.first.clone(),
        all_ready,
        state,
        rss,
        pods_running,
        error,
    })
}

// ---------------------------------------------------------------------------------------
// Phase 3: cleanup

async fn cleanup(
    client: &Client,
    namespaces: &[String],
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let dp = DeleteParams::background();
    for ns in namespaces {
        // The StudioClusters first, so the operator's finalizer runs while the namespace
        // is still active; then the namespace.
        let api = studio_api(client, ns);
        if let Err(e) = api.delete_collection(&dp, &ListParams::default()).await {
            eprintln!("[bench] deleting the StudioClusters of {ns}: {e}");
        }
    }
    for ns in namespaces {
        let api = studio_api(client, ns);
        let left = timeout.saturating_sub(t0.elapsed());
        let waited = wait_for(
            &format!("the StudioClusters of {ns} to be gone"),
            left,
            || async {
                let n = api.list(&ListParams::default()).await?.items.len();
                ensure!(n == 0, "{n} left");
                Ok(())
            },
        )
        .await;
        if let Err(e) = waited {
            eprintln!("[bench] {e:#}; deleting the namespace anyway");
        }
    }
    let namespaces_api: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces {
        match namespaces_api.delete(ns, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("deleting namespace {ns}")),
        }
    }
    for ns in namespaces {
        let left = timeout.saturating_sub(t0.elapsed());
        wait_for(&format!("namespace {ns} to be gone"), left, || async {
            match namespaces_api.get_opt(ns).await? {
                None => Ok(()),
                Some(n) => bail!(
                    "phase {}",
                    n.status.and_then(|s| s.phase).unwrap_or_default()
                ),
            }
        })
        .await?;
    }
    Ok(t0.elapsed())
}

// ---------------------------------------------------------------------------------------
// Report

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report_objects(samples: &[Sample]) -> String {
    let mut all: Vec<Duration> = samples.iter().map(|s| s.all).collect();
    let mut first: Vec<Duration> = samples.iter().map(|s| s.first).collect();
    all.sort();
    first.sort();
    let mut last_kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for s in samples {
        let kind = s.last_kind.split('/').next().unwrap_or("");
        *last_kinds.entry(kind).or_insert(0) += 1;
    }
    let mut out = String::new();
    out.push_str(&format!(
        "### CR applied → all owned objects exist ({} samples, one at a time)\n\n",
        samples.len()
    ));
    out.push_str("Counted (9): ServiceAccount, Role, RoleBinding `<c>-node`; Secret `<c>-auth`; Services `<c>-nodes`, `<c>-primary`, `<c>-replicas`; StatefulSet `<c>`; PodDisruptionBudget `<c>`. Clock: server-side apply request sent → the bench's watch on each kind has delivered the object.\n\n");
    out.push_str("| | p50 | p99 | min | max |\n|---|---|---|---|---|\n");
    for (label, v) in [("all 9 objects", &all), ("first object", &first)] {
        out.push_str(&format!(
            "| {label} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |\n",
            ms(percentile(v, 50.0)),
            ms(percentile(v, 99.0)),
            ms(v.first().copied().unwrap_or_default()),
            ms(v.last().copied().unwrap_or_default()),
        ));
    }
    out.push_str(&format!(
        "\np99 is nearest-rank (with {} samples: sorted value #{}). Last object to appear: {}.\n\nPer sample (ms, all 9): {}\n",
        samples.len(),
        ((0.99 * samples.len() as f64).ceil() as usize).max(1),
        last_kinds
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect::<Vec<_>>()
            .join(", "),
        samples
            .iter()
            .map(|s| format!("{}={:.0}", s.name, ms(s.all)))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    out
}

fn report_scale(n: usize, r: &ScaleResult, baseline: Option<&RssSample>) -> String {
    let mut times: Vec<Duration> = r.ready.values().copied().collect();
    times.sort();
    let mut out = String::new();
    out.push_str(&format!(
        "### {n} single-node StudioClusters applied at once → all Ready\n\n"
    ));
    match r.all_ready {
        Some(d) => out.push_str(&format!(
            "- **Time until every one of the {n} has been Ready: {:.1} s** (from the first apply request; all {n} applied after {:.2} s)\n",
            d.as_secs_f64(),
            r.submitted.as_secs_f64()
        )),
        None => out.push_str(&format!(
            "- **Not all Ready**: {} of {n} Ready ({})\n",
            r.ready.len(),
            r.error.as_deref().unwrap_or("")
        )),
    }
    if !times.is_empty() {
        out.push_str(&format!(
            "- Per cluster, apply → Ready: first {:.1} s, p50 {:.1} s, p99 {:.1} s, last {:.1} s\n",
            times[0].as_secs_f64(),
            percentile(&times, 50.0).as_secs_f64(),
            percentile(&times, 99.0).as_secs_f64(),
            times[times.len() - 1].as_secs_f64()
        ));
        let marks: Vec<String> = [10usize, 25, 50, 75, 90, 100]
            .iter()
            .map(|pc| {
                let k = ((pc * times.len()).div_ceil(100)).max(1);
                format!("{k} by {:.1} s", times[k - 1].as_secs_f64())
            })
            .collect();
        out.push_str(&format!("- Progress: {}\n", marks.join(", ")));
    }
    let st = &r.state;
    out.push_str(&format!(
        "- All {n} Ready at the same moment: {}; most at once: {} (first at {:.1} s); Ready at the end (after the settle period): {} of {n}; Ready → not Ready transitions: {}\n",
        st.all_at_once
            .map(|d| format!("at {:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "never during the run".into()),
        st.peak_now.0,
        st.peak_now.1.as_secs_f64(),
        st.now.len(),
        st.lost
    ));
    out.push_str(&format!(
        "- Node pods Running at the end: {}\n",
        r.pods_running
    ));
    let leaders: BTreeSet<&str> = r
        .rss
        .iter()
        .filter_map(|s| s.leader.as_ref().map(|(p, _)| p.as_str()))
        .collect();
    out.push_str(&format!(
        "- Operator leader(s) during the run: {}\n",
        leaders.into_iter().collect::<Vec<_>>().join(", ")
    ));
    let leader_peak = r
        .rss
        .iter()
        .filter_map(|s| s.leader.as_ref().map(|(p, k)| (*k, p.clone(), s.at)))
        .max_by_key(|(k, _, _)| *k);
    let leader_final = r.rss.iter().rev().find_map(|s| s.leader.clone());
    let any_op_peak = r
        .rss
        .iter()
        .flat_map(|s| s.operator.values().copied())
        .max()
        .unwrap_or(0);
    let nodes_peak = r.rss.iter().max_by_key(|s| s.nodes_kib);
    let nodes_final = r.rss.last();
    out.push_str(&format!(
        "\nRSS (VmRSS summed over a pod's processes, found by its network namespace; {} samples):\n\n| | before | peak | final |\n|---|---|---|---|\n",
        r.rss.len()
    ));
    let base_leader = baseline
        .and_then(|b| b.leader.as_ref())
        .map(|(p, k)| format!("{:.1} MiB ({p})", mib(*k)))
        .unwrap_or_else(|| "–".into());
    out.push_str(&format!(
        "| operator leader | {base_leader} | {} | {} |\n",
        leader_peak
            .map(|(k, p, at)| format!("{:.1} MiB ({p}, t={:.0} s)", mib(k), at.as_secs_f64()))
            .unwrap_or_else(|| "–".into()),
        leader_final
            .map(|(p, k)| format!("{:.1} MiB ({p})", mib(k)))
            .unwrap_or_else(|| "–".into()),
    ));
    let standby = |s: &RssSample| -> String {
        let leader = s.leader.as_ref().map(|(p, _)| p.as_str());
        s.operator
            .iter()
            .filter(|(p, _)| Some(p.as_str()) != leader)
            .map(|(p, k)| format!("{:.1} MiB ({p})", mib(*k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str(&format!(
        "| other operator pods (standby, or pods of a rollout) | {} | (any operator pod: {:.1} MiB) | {} |\n",
        baseline.map(standby).unwrap_or_default(),
        mib(any_op_peak),
        r.rss.last().map(standby).unwrap_or_default()
    ));
    out.push_str(&format!(
        "| node processes, total | – | {} | {} |\n",
        nodes_peak
            .map(|s| format!(
                "{:.1} MiB ({} processes of {} pods, t={:.0} s)",
                mib(s.nodes_kib),
                s.node_procs,
                s.node_pods,
                s.at.as_secs_f64()
            ))
            .unwrap_or_else(|| "–".into()),
        nodes_final
            .map(|s| format!(
                "{:.1} MiB ({} processes of {} pods; {:.1} MiB per pod)",
                mib(s.nodes_kib),
                s.node_procs,
                s.node_pods,
                if s.node_pods > 0 {
                    mib(s.nodes_kib) / s.node_pods as f64
                } else {
                    0.0
                }
            ))
            .unwrap_or_else(|| "–".into()),
    ));
    out
}

// ---------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        !args.namespace_prefix.is_empty(),
        "--namespace-prefix must not be empty"
    );
    let cluster = studio_harness::cluster()?;
    let client = cluster.client().await?;
    let leader = ensure_operator(cluster, &client).await?;
    let images = Images::load(cluster)?;
    let _ = NODE_IMAGE.set(images.node.clone());
    eprintln!(
        "[bench] operator leader {leader}; operator image {}; node image {}",
        images.operator, images.node
    );

    let mut namespaces = Vec::new();
    let run = async {
        if args.samples > 0 {
            let ns = unique_name(&format!("{}-objects", args.namespace_prefix));
            create_namespace(&client, &ns).await?;
            namespaces.push(ns.clone());
            let samples = phase_objects(&client, &ns, &args).await?;
            let text = report_objects(&samples);
            println!("{text}");
        }
        if args.clusters > 0 {
            let ns = unique_name(&format!("{}-scale", args.namespace_prefix));
            create_namespace(&client, &ns).await?;
            namespaces.push(ns.clone());
            let mut hint = None;
            let baseline = rss_sample(&client, &ns, Instant::now(), &mut hint)
                .await
                .ok();
            let r = phase_scale(&client, &ns, &args).await?;
            let text = report_scale(args.clusters, &r, baseline.as_ref());
            println!("{text}");
            if let Some(e) = r.error {
                bail!("scale phase: {e}");
            }
        }
        anyhow::Ok(())
    };
    let outcome = tokio::select! {
        r = run => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if let Err(e) = &outcome {
        eprintln!("[bench] error: {e:#}; cleaning up");
    }
    eprintln!("[bench] cleanup: deleting {}", namespaces.join(", "));
    let cleaned = cleanup(
        &client,
        &namespaces,
        Duration::from_secs(args.cleanup_timeout_secs),
    )
    .await;
    match &cleaned {
        Ok(d) => {
            let line = format!(
                "\nCleanup: every StudioCluster and the bench namespaces deleted and gone in {:.1} s.\n",
                d.as_secs_f64()
            );
            println!("{line}");
        }
        Err(e) => eprintln!("[bench] cleanup failed: {e:#}"),
    }
    outcome?;
    cleaned.map(|_| ())
}
