//! `studio-kubelet`: a process kubelet for Studio's test control plane.
//!
//! It plays the kubelet for one or more Nodes of a real kube-apiserver, with no
//! container runtime: every container of a pod bound to one of its Nodes runs as a
//! local process inside the pod's own network namespace.
//!
//! # Rules (documented here, relied upon by tests)
//! - **Image → binary** ([`image`]): the last path segment of the image repository,
//!   tag and digest ignored, names a file in `--bin-dir`
//!   (`ghcr.io/x/studio-node:v2` → `$bin_dir/studio-node`). An unmapped image leaves
//!   the container waiting with reason `ErrImageNeverPull` and a message naming the rule.
//!   `command[0]` replaces the binary only if it is an absolute path that exists, or if
//!   its file name exists in `--bin-dir`; otherwise it is taken as the image's own
//!   entrypoint and dropped (`command[1..]` and `args` still apply). `$(VAR)` expands.
//! - **Env** ([`env`](mod@env)): literal values, `fieldRef` (metadata.name/namespace/uid/
//!   labels['x']/annotations['x'], spec.nodeName, spec.serviceAccountName,
//!   status.podIP, status.hostIP), `secretKeyRef`, `configMapKeyRef`, `envFrom`
//!   (optional flags honoured). Added: `KUBECONFIG` (per-pod kubeconfig with the pod's
//!   ServiceAccount token), `KUBERNETES_SERVICE_HOST`/`_PORT` (from `--api-server`),
//!   `HOSTNAME`, `HOME`, `PATH`, `STUDIO_ROOT`, `STUDIO_MOUNT_<VOLUME>`. The
//!   kubelet's own environment is never inherited.
//! - **Volumes** ([`volumes`]): no mount namespaces; every `mountPath` standing as a
//!   whole path in args, command and env values is rewritten to the volume's host
//!   directory (`--data-dir=/data` → `--data-dir=<state>/volumes/pvc-<uid>`), see the
//!   module. Secret/ConfigMap/projected/downwardAPI volumes are written in the real
//!   kubelet's AtomicWriter layout (`key -> ..data/key`, `..data -> ..<timestamp>`)
//!   and resynced every `--volume-resync-seconds` (10 s): a changed Secret or
//!   ConfigMap appears in running pods through an atomic swap of `..data`.
//! - **PVCs**: `<cluster dir>/volumes/pvc-<pvc-uid>`, a `local` PV made by
//!   `studio-provisioner` (tests/provisioner, its own process); survives pod restarts and re-creation, removed with the
//!   PVC.
//! - **Network** ([`network`]): netns `studio-pod-<8 hex of uid>`, veth
//!   `sv<8 hex>` on the bridge, `eth0` with an address from the pod CIDR (from x.y.1.1),
//!   default route via the gateway. Containers run via `ip netns exec`, each in its own
//!   process group. `hostNetwork: true` pods run in the root netns with podIP = hostIP.
//! - **One per machine**: the kubelet owns every `studio-pod-*` netns and `sv*` veth
//!   (it removes leftovers at start), so a second instance refuses to start while the
//!   pid in `--lock-file` is a live `studio-kubelet`.
//! - **Not supported**: sidecar init containers (`restartPolicy: Always` on an init
//!   container run as plain init containers), lifecycle hooks, gRPC probes, resource
//!   limits, `kubectl exec`/`attach`/`port-forward`, `kubectl logs --previous`.
//! - **Restarts** ([`pod`]): per restartPolicy, back-off 1 s doubling to 30 s (reset
//!   after 60 s of running). Probes: httpGet/tcpSocket from the root netns to the pod
//!   IP, exec inside the pod netns; readiness drives Ready, liveness/startup failures
//!   kill and restart.
//! - **Status**: patched (merge, status subresource) within ~20 ms of any change;
//!   Events (Started, Killing, BackOff, Unhealthy, Failed) are posted best-effort.
//! - **Nodes** ([`node`]): registered, status and Lease renewed every 10 s; the
//!   `node.kubernetes.io/not-ready` taint the API server adds at creation is lifted
//!   (the test cluster runs no node lifecycle controller).
//! - **Kubelet restart**: leftovers (netns, veths, their processes) are removed and the
//!   pods still bound are started again, keeping their pod IPs. SIGTERM/SIGINT stop
//!   every pod (2 s grace) and remove its netns before exit.
//! - **Logs**: `<state-dir>/pods/<namespace>_<pod>_<uid>/<container>.log`
//!   (stdout+stderr, appended across restarts, kept after the pod is deleted), also
//!   served on `https://<host-ip>:10250` so `kubectl logs` works ([`server`]).
//! - **Deletion**: SIGTERM to the process group, wait the grace period, SIGKILL, remove
//!   the netns, then delete the pod with grace 0.

pub mod atomic_writer;
pub mod env;
pub mod events;
pub mod image;
pub mod ipam;
pub mod kubelet;
pub mod network;
pub mod node;
pub mod pod;
pub mod probes;
pub mod server;
pub mod status;
pub mod token;
pub mod volumes;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// Command-line flags.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "studio-kubelet",
    version,
    about = "A process kubelet: runs pods bound to its Nodes as local processes in network namespaces"
)]
pub struct Args {
    /// Kubeconfig the kubelet itself uses (needs rights over nodes, leases, pods,
    /// PVs/PVCs, storage classes, secrets, configmaps and serviceaccount tokens).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Comma-separated Node names this kubelet registers and serves.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// API server URL written into each pod's kubeconfig (reachable from pod netns).
    #[arg(long)]
    pub api_server: String,
    /// CA bundle of the API server, referenced by each pod's kubeconfig.
    #[arg(long)]
    pub ca_file: PathBuf,
    /// Existing bridge the pods' veths are attached to.
    #[arg(long, default_value = "studiobr0")]
    pub bridge: String,
    /// Pods' default gateway (the bridge's address in the root netns).
    #[arg(long, default_value = "10.213.0.1")]
    pub gateway: Ipv4Addr,
    /// Pod CIDR; pods get addresses from its second /24 on.
    #[arg(long, default_value = "10.213.0.0/16")]
    pub pod_cidr: String,
    /// Node InternalIP and pods' hostIP (defaults to the gateway).
    #[arg(long)]
    pub host_ip: Option<Ipv4Addr>,
    /// Directory holding the binaries images map to.
    #[arg(long)]
    pub bin_dir: PathBuf,
    /// Directory for pod state, logs and PVC data.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// CPU capacity each Node reports.
    #[arg(long, default_value = "8")]
    pub node_cpu: String,
    /// Memory capacity each Node reports.
    #[arg(long, default_value = "32Gi")]
    pub node_memory: String,
    /// Pod capacity each Node reports.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Node status/Lease heartbeat period in seconds.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_seconds: u64,
    /// First container restart back-off in milliseconds (doubles per restart).
    #[arg(long, default_value_t = 1000)]
    pub backoff_base_ms: u64,
    /// Maximum container restart back-off in seconds.
    #[arg(long, default_value_t = 30)]
    pub backoff_max_seconds: u64,
    /// How often secret, configMap, downwardAPI and projected volumes of running pods
    /// are compared with their sources and updated, in seconds.
    #[arg(long, default_value_t = volumes::DEFAULT_RESYNC_SECONDS)]
    pub volume_resync_seconds: u64,
    /// Port of the HTTPS log endpoint on the host IP (for `kubectl logs`); 0 disables it.
    #[arg(long, default_value_t = server::KUBELET_PORT)]
    pub kubelet_port: u16,
    /// Pid file that keeps a second kubelet from starting on this machine.
    #[arg(long, default_value = "/run/studio-kubelet.pid")]
    pub lock_file: PathBuf,
    /// Log as JSON lines instead of plain text (stderr either way).
    #[arg(long)]
    pub log_json: bool,
}

fn split_server(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .with_context(|| format!("--api-server {url:?} must start with https:// or http://"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    match hostport.rsplit_once(':') {
        Some((h, p)) => Ok((
            h.trim_matches(['[', ']']).to_string(),
            p.parse().with_context(|| format!("port in {url:?}"))?,
        )),
        None => Ok((hostport.to_string(), 443)),
    }
}

async fn client_from(path: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .context("loading kubeconfig")?;
    kube::Client::try_from(cfg).context("building API client")
}

/// Is `pid` a live studio-kubelet other than us?
fn other_kubelet_alive(pid: u32) -> bool {
    pid != std::process::id()
        && std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().starts_with("studio-kubelet"))
            .unwrap_or(false)
}

/// Takes the machine-wide pid-file lock, or explains who holds it.
pub fn take_lock(path: &std::path::Path) -> anyhow::Result<()> {
    if let Ok(text) = std::fs::read_to_string(path)
        && let Ok(pid) = text.trim().parse::<u32>()
        && other_kubelet_alive(pid)
    {
        anyhow::bail!(
            "another studio-kubelet (pid {pid}, {}) is running on this machine; it owns the studio-pod-* \
             network namespaces, so only one may run",
            path.display()
        );
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing {}", path.display()))
}

fn release_lock(path: &std::path::Path) {
    if std::fs::read_to_string(path).is_ok_and(|t| t.trim() == std::process::id().to_string()) {
        let _ = std::fs::remove_file(path);
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => tracing::info!("SIGTERM received"),
                _ = i.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs the kubelet until SIGTERM/SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let cidr: ipam::Cidr = args
        .pod_cidr
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let (api_host, api_port) = split_server(&args.api_server)?;
    anyhow::ensure!(
        args.bin_dir.is_dir(),
        "--bin-dir {} is not a directory",
        args.bin_dir.display()
    );
    anyhow::ensure!(
        args.ca_file.is_file(),
        "--ca-file {} does not exist",
        args.ca_file.display()
    );
    std::fs::create_dir_all(args.state_dir.join("pods")).context("creating --state-dir")?;
    let client = client_from(&args.kubeconfig).await?;
    take_lock(&args.lock_file)?;

    tracing::info!("cleaning up leftovers of a previous run");
    network::cleanup_all().await;

    let settings = pod::Settings {
        nodes: args.nodes.clone(),
        api_server: args.api_server.clone(),
        api_host,
        api_port,
        ca_file: std::fs::canonicalize(&args.ca_file).unwrap_or(args.ca_file.clone()),
        bridge: args.bridge.clone(),
        gateway: args.gateway,
        host_ip: args.host_ip.unwrap_or(args.gateway),
        cidr,
        bin_dir: std::fs::canonicalize(&args.bin_dir).unwrap_or(args.bin_dir.clone()),
        state_dir: std::fs::canonicalize(&args.state_dir).unwrap_or(args.state_dir.clone()),
        backoff_base: Duration::from_millis(args.backoff_base_ms.max(1)),
        backoff_max: Duration::from_secs(args.backoff_max_seconds.max(1)),
        volume_resync: Duration::from_secs(args.volume_resync_seconds.max(1)),
    };
    let mut background = Vec::new();
    for n in &args.nodes {
        let info = node::NodeSpecInfo {
            name: n.clone(),
            host_ip: settings.host_ip.to_string(),
            cpu: args.node_cpu.clone(),
            memory: args.node_memory.clone(),
            max_pods: args.max_pods,
            kubelet_port: args.kubelet_port,
        };
        background.push(tokio::spawn(node::run(
            client.clone(),
            info,
            Duration::from_secs(args.heartbeat_seconds.max(1)),
        )));
    }
    if args.kubelet_port != 0 {
        background.push(tokio::spawn(server::run(
            settings.state_dir.clone(),
            settings.host_ip,
            args.kubelet_port,
        )));
    }
    let shared = Arc::new(pod::Shared {
        client,
        settings: settings.clone(),
        ipam: Mutex::new(ipam::Ipam::new(cidr)),
    });
    tracing::info!(nodes = ?settings.nodes, "studio-kubelet running");
    kubelet::run(shared, shutdown_signal()).await;
    for b in background {
        b.abort();
    }
    network::cleanup_all().await;
    release_lock(&args.lock_file);
    tracing::info!("studio-kubelet stopped");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn server_split() {
        assert_eq!(
            split_server("https://10.213.0.2:6443").unwrap(),
            ("10.213.0.2".to_string(), 6443)
        );
        assert_eq!(
            split_server("https://api.local/").unwrap(),
            ("api.local".to_string(), 443)
        );
        assert!(split_server("10.0.0.1:6443").is_err());
    }

    #[test]
    fn lock_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k.pid");
        // A stale pid (not a studio-kubelet) does not block.
        std::fs::write(&p, "1\n").unwrap();
        take_lock(&p).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap().trim(),
            std::process::id().to_string()
        );
        // Our own pid does not block either (re-entrant), and release removes it.
        take_lock(&p).unwrap();
        release_lock(&p);
        assert!(!p.exists());
        std::fs::write(&p, "garbage").unwrap();
        take_lock(&p).unwrap();
    }

    #[test]
    fn flags_parse() {
        let a = Args::try_parse_from([
            "studio-kubelet",
            "--kubeconfig",
            "/k",
            "--nodes",
            "local-1,local-2,local-3",
            "--api-server",
            "https://10.213.0.2:6443",
            "--ca-file",
            "/ca",
            "--bin-dir",
            "/b",
            "--state-dir",
            "/s",
        ])
        .unwrap();
        assert_eq!(a.nodes, vec!["local-1", "local-2", "local-3"]);
        assert_eq!(a.bridge, "studiobr0");
        assert_eq!(a.gateway, Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(a.volume_resync_seconds, 10);
        let b = Args::try_parse_from([
            "studio-kubelet",
            "--kubeconfig=/k",
            "--nodes=n",
            "--api-server=https://h:6443",
            "--ca-file=/ca",
            "--bin-dir=/b",
            "--state-dir=/s",
            "--volume-resync-seconds=3",
        ])
        .unwrap();
        assert_eq!(b.volume_resync_seconds, 3);
    }
}
