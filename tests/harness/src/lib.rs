//! Test support for the suites that run against the local cluster (DESIGN.md section 6).
//!
//! - [`cluster`] makes sure the local cluster is up, once per test process: it runs
//!   `scripts/cluster-up.sh`, which is idempotent and serialises concurrent callers with
//!   a file lock (test binaries and threads race), so a running cluster costs ~0.2 s.
//! - [`TestEnv`] gives each test a fresh namespace and a kube [`Client`] bound to the
//!   test's runtime. Finish a passing test with [`TestEnv::pass`], which deletes the
//!   namespace; a test that fails (error or panic) keeps it, and prints the namespace's
//!   pods, events and container logs.
//! - [`wait_for`] polls a condition with a timeout; on timeout the error says what was
//!   last observed.
//! - [`pod_logs`], [`pod_pids`], [`kubectl`], [`http`]: reading container log files,
//!   finding a pod's processes, running kubectl with the admin kubeconfig, HTTP to pods.
//! - [`s3::S3Server`]: a real S3 server (versitygw) that the test process and the pods
//!   reach, for the backup tests.
//!
//! Environment: `STUDIO_CLUSTER_DIR` (default `<repo>/.cache/cluster`), `STUDIO_CP_BIN`
//! (default: the output of `scripts/build-controlplane.sh`), `STUDIO_TARGET_DIR`
//! (default `<repo>/target/debug`; must hold the built `studio-*` binaries).

use std::{
    fmt::Display,
    future::Future,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

pub mod runtime;
pub mod s3;

pub use runtime::{REAL_NODE, REAL_NODE_TAINT, netns_pids, pod_netns, pod_pids, run_in_netns};

/// Where the local cluster lives and the tools to reach it.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The repository root.
    pub repo: PathBuf,
    /// `STUDIO_CLUSTER_DIR`.
    pub dir: PathBuf,
    /// The admin kubeconfig (`<dir>/kubeconfig`).
    pub kubeconfig: PathBuf,
    /// The workspace's built binaries (`studio-provisioner`, `kubectl-studio`, ...).
    pub target_dir: PathBuf,
    /// The control-plane binaries (`kubectl`, `helm`, ...).
    pub cp_bin: PathBuf,
}

impl Cluster {
    /// A control-plane binary, e.g. `kubectl` or `helm`.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.cp_bin.join(name)
    }

    /// The pid of a running control-plane component started by `cluster-up`
    /// (`etcd`, `kube-apiserver`, ...), from its pid file.
    pub fn component_pid(&self, name: &str) -> anyhow::Result<i32> {
        let f = self.dir.join("run").join(format!("{name}.pid"));
        let pid =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        pid.trim()
            .parse()
            .with_context(|| format!("{} holds {pid:?}", f.display()))
    }

    /// A kube client for the admin kubeconfig, bound to the calling runtime.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .context("loading the admin kubeconfig")?;
        Client::try_from(config).context("building a kube client")
    }
}

fn repo_root() -> PathBuf {
    // tests/harness → repository root.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Paths of the local cluster, from the environment and the repository layout, without
/// starting anything.
pub fn cluster_paths() -> anyhow::Result<Cluster> {
    let repo = repo_root()
        .canonicalize()
        .context("locating the repository root")?;
    let dir = env_path("STUDIO_CLUSTER_DIR").unwrap_or_else(|| repo.join(".cache/cluster"));
    let target_dir = env_path("STUDIO_TARGET_DIR").unwrap_or_else(|| repo.join("target/debug"));
    let cp_bin = match env_path("STUDIO_CP_BIN") {
        Some(p) => p,
        None => {
            let script = repo.join("scripts/build-controlplane.sh");
            let out = Command::new(&script)
                .stderr(Stdio::inherit())
                .output()
                .with_context(|| format!("running {}", script.display()))?;
            if !out.status.success() {
                bail!(
                    "{} failed ({}); set STUDIO_CP_BIN to a directory with the binaries",
                    script.display(),
                    out.status
                );
            }
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    Ok(Cluster {
        kubeconfig: dir.join("kubeconfig"),
        repo,
        dir,
        target_dir,
        cp_bin,
    })
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The local cluster, started by `scripts/cluster-up.sh` if it is not running. Runs the
/// script at most once per process; the script itself is idempotent and locked.
pub fn cluster() -> anyhow::Result<&'static Cluster> {
    CLUSTER
        .get_or_init(|| start_cluster().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("the local cluster is not available: {e}"))
}

fn start_cluster() -> anyhow::Result<Cluster> {
    let c = cluster_paths()?;
    for bin in ["studio-provisioner"] {
        if !c.target_dir.join(bin).is_file() {
            bail!(
                "{} is missing: build the workspace's binaries first (cargo build --workspace --bins)",
                c.target_dir.join(bin).display()
            );
        }
    }
    let script = c.repo.join("scripts/cluster-up.sh");
    let out = Command::new(&script)
        .env("STUDIO_CLUSTER_DIR", &c.dir)
        .env("STUDIO_CP_BIN", &c.cp_bin)
        .env("STUDIO_TARGET_DIR", &c.target_dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): see its messages above and the logs in {}",
            script.display(),
            out.status,
            c.dir.join("logs").display()
        );
    }
    Ok(c)
}

/// Runs kubectl with the admin kubeconfig; returns its stdout, or an error with its
/// stderr.
pub fn kubectl<I, S>(cluster: &Cluster, args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().into()).collect();
    let out = Command::new(cluster.tool("kubectl"))
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .arg("--request-timeout=20s")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {:?} failed ({}): {}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `check` every 100 ms until it returns `Ok`, for at most `timeout`. An `Err`
/// from `check` means "not yet" and says what was observed; on timeout the returned
/// error names `what` and the last observation.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let start = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let remaining = timeout.saturating_sub(start.elapsed());
        let observed =
            match tokio::time::timeout(remaining.max(Duration::from_millis(100)), check()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => format!("{e:#}"),
                Err(_) => "the check itself did not finish in time".to_string(),
            };
        if start.elapsed() >= timeout {
            bail!(
                "timed out after {:.1}s waiting for {what} ({attempts} checks); last observed: {observed}",
                timeout.as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The container log files of a pod (all its incarnations, oldest first), from the real
/// kubelet's `<real-node>/pod-logs/<namespace>_<pod>_<uid>/<container>/<restart>.log`.
pub fn pod_log_files(cluster: &Cluster, namespace: &str, pod: &str) -> Vec<PathBuf> {
    let prefix = format!("{namespace}_{pod}_");
    let mut dirs: Vec<(SystemTime, PathBuf)> =
        std::fs::read_dir(cluster.dir.join("real-node/pod-logs"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| {
                let t = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(UNIX_EPOCH);
                (t, e.path())
            })
            .collect();
    dirs.sort();
    let mut files = Vec::new();
    for (_, dir) in dirs {
        // One directory per container.
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .flat_map(|p| {
                if p.is_dir() {
                    std::fs::read_dir(&p)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path())
                        .collect()
                } else {
                    vec![p]
                }
            })
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        files.extend(logs);
    }
    files
}

/// The last `lines` lines of each container log of a pod, with a header per file.
pub fn pod_logs(cluster: &Cluster, namespace: &str, pod: &str, lines: usize) -> String {
    let mut out = String::new();
    for f in pod_log_files(cluster, namespace, pod) {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| format!("(unreadable: {e})"));
        let all: Vec<&str> = text.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        out.push_str(&format!(
            "----- {} (last {} lines)\n",
            f.display(),
            tail.len()
        ));
        for l in tail {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// An HTTP client for talking to pods: no proxy, short timeouts.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .build()
        .context("building an HTTP client")
}

/// One HTTP request; returns the status code and the body.
pub async fn http(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<String>,
) -> anyhow::Result<(u16, String)> {
    let mut req = client.request(method.clone(), url);
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .await
        .with_context(|| format!("reading the body of {method} {url}"))?;
    Ok((status, text))
}

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A namespace name: `<prefix>-<unique suffix>`, a valid DNS label.
pub fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = NS_COUNTER.fetch_add(1, Ordering::SeqCst);
    let clean: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    format!(
        "{}-{:x}{:x}{n}",
        clean.trim_matches('-'),
        std::process::id() & 0xfff,
        nanos & 0xfffff
    )
}

/// A test's namespace and client. Call [`TestEnv::pass`] at the end of a passing test;
/// if the value is dropped without it (an error returned with `?`, or a panic), the
/// namespace is kept and its pods, events and container logs are printed.
pub struct TestEnv {
    pub client: Client,
    pub ns: String,
    pub cluster: &'static Cluster,
    passed: bool,
    /// Held for the test's life: shared by ordinary tests, exclusive for a test that
    /// disturbs the whole cluster (see [`TestEnv::new_exclusive`]).
    _cluster_lock: std::fs::File,
}

/// Takes `<cluster dir>/e2e.lock` shared or exclusive (a blocking flock, off the
/// runtime's threads).
async fn cluster_lock(cluster: &Cluster, exclusive: bool) -> anyhow::Result<std::fs::File> {
    let path = cluster.dir.join("e2e.lock");
    tokio::task::spawn_blocking(move || {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if exclusive { f.lock() } else { f.lock_shared() }
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(f)
    })
    .await
    .context("the lock task failed")?
}

impl TestEnv {
    /// Ensures the cluster is up, creates a fresh namespace named after `test` and waits
    /// for its `default` ServiceAccount (pods are refused without it).
    pub async fn new(test: &str) -> anyhow::Result<Self> {
        Self::create(test, false).await
    }

    /// Like [`TestEnv::new`], for a test that disturbs the whole cluster (e.g. freezes
    /// the API server): waits until no other test of any process runs, and keeps them
    /// waiting until this one ends.
    pub async fn new_exclusive(test: &str) -> anyhow::Result<Self> {
        Self::create(test, true).await
    }

    async fn create(test: &str, exclusive: bool) -> anyhow::Result<Self> {
        let cluster = cluster()?;
        let lock = cluster_lock(cluster, exclusive).await?;
        let client = cluster.client().await?;
        let ns = unique_name(test);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("studio.cms.io/test".to_string(), "true".to_string());
        namespaces
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(ns.clone()),
                        labels: Some(labels),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("creating namespace {ns}"))?;
        let env = TestEnv {
            client,
            ns,
            cluster,
            passed: false,
            _cluster_lock: lock,
        };
        let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &env.ns);
        wait_for(
            &format!("the default ServiceAccount of namespace {}", env.ns),
            Duration::from_secs(30),
            || async {
                sas.get("default")
                    .await
                    .context("get serviceaccount default")
            },
        )
        .await?;
        eprintln!("[harness] test namespace {}", env.ns);
        Ok(env)
    }

    /// An API handle for namespaced objects of this test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// kubectl with the admin kubeconfig in this test's namespace.
    pub fn kubectl<I, S>(&self, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["-n".into(), self.ns.clone().into()];
        all.extend(args.into_iter().map(|a| a.as_ref().into()));
        kubectl(self.cluster, all)
    }

    /// The last `lines` lines of each container log of a pod of this namespace.
    pub fn pod_logs(&self, pod: &str, lines: usize) -> String {
        pod_logs(self.cluster, &self.ns, pod, lines)
    }

    /// Marks the test as passed and deletes its namespace (without waiting for it).
    pub async fn pass(mut self) -> anyhow::Result<()> {
        self.passed = true;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .delete(&self.ns, &DeleteParams::background())
            .await
            .with_context(|| format!("deleting namespace {}", self.ns))?;
        Ok(())
    }

    /// Marks the test as passed without deleting its namespace: for a test that takes
    /// the cluster down itself.
    pub fn pass_without_cleanup(mut self) {
        self.passed = true;
    }

    /// Prints what a person debugging a failure wants to see: objects, events, logs.
    pub fn dump(&self) {
        eprintln!(
            "[harness] ===== namespace {} kept for inspection (kubeconfig {}) =====",
            self.ns,
            self.cluster.kubeconfig.display()
        );
        print_section(
            "objects",
            self.kubectl([
                "get",
                "pods,pvc,services,endpointslices,statefulsets",
                "-o",
                "wide",
            ]),
        );
        print_section(
            "events",
            self.kubectl(["get", "events", "--sort-by=.lastTimestamp"]),
        );
        let pods = self
            .kubectl(["get", "pods", "-o", "name"])
            .unwrap_or_default();
        for pod in pods.lines().filter_map(|l| l.strip_prefix("pod/")) {
            eprint!("{}", self.pod_logs(pod, 40));
        }
        let kubelet_log = self.cluster.dir.join("logs/kubelet.log");
        if let Ok(text) = std::fs::read_to_string(&kubelet_log) {
            let mine: Vec<&str> = text.lines().filter(|l| l.contains(&self.ns)).collect();
            eprintln!(
                "----- {} (last 30 lines about {})",
                kubelet_log.display(),
                self.ns
            );
            for l in &mine[mine.len().saturating_sub(30)..] {
                eprintln!("{l}");
            }
        }
        eprintln!("[harness] ===== end of namespace {} =====", self.ns);
    }
}

fn print_section(title: &str, r: anyhow::Result<String>) {
    match r {
        Ok(s) => eprintln!("----- {title}\n{s}"),
        Err(e) => eprintln!("----- {title}: {e:#}"),
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if !self.passed {
            self.dump();
        }
    }
}

/// Formats a list of displayable things as `a, b, c`.
pub fn join<T: Display>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
