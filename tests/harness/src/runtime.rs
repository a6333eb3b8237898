//! A pod's processes and network namespace on the local cluster's Node `real-1`
//! (containerd: container PIDs from its task list, the CNI netns pinned under
//! containerd's state dir). Fault injection (kill -9, SIGSTOP, network cuts) goes
//! through these.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::{Cluster, cluster};

/// The Node run by the real kubelet (containerd + runc), see `scripts/real-node-up.sh`.
pub const REAL_NODE: &str = "real-1";
/// A taint key tolerated by the suites' pods (the Node has no taint since it is the only
/// one; the toleration is kept so a tainted dedicated node works the same).
pub const REAL_NODE_TAINT: &str = "studio.cms.io/real-node";

/// containerd's socket of the real node.
pub fn containerd_socket(c: &Cluster) -> PathBuf {
    c.dir.join("real-node/containerd/containerd.sock")
}

/// Where containerd pins the pods' network namespaces (`netns_mounts_under_state_dir`).
fn real_node_netns_dir(c: &Cluster) -> PathBuf {
    c.dir
        .join("real-node/containerd/state/io.containerd.grpc.v1.cri/netns")
}

/// The status of container `container` of `pod`.
pub fn container_status<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)
}

/// The containerd ID of container `container` of `pod`, from its status.
pub fn container_id(pod: &Pod, container: &str) -> anyhow::Result<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("?");
    let id = container_status(pod, container)
        .and_then(|c| c.container_id.clone())
        .ok_or_else(|| anyhow!("{pod_name} has no {container} container id"))?;
    id.strip_prefix("containerd://")
        .map(String::from)
        .ok_or_else(|| anyhow!("container id {id} of {pod_name} is not containerd's"))
}

/// containerd's running tasks on the real node: (container ID, PID).
fn containerd_tasks(c: &Cluster) -> anyhow::Result<Vec<(String, i32)>> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(containerd_socket(c))
        .args(["-n", "k8s.io", "tasks", "ls"])
        .output()
        .context("running ctr tasks ls")?;
    ensure!(
        out.status.success(),
        "ctr tasks ls: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // TASK PID STATUS, after a header line.
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next()?.to_string();
            let pid = f.next()?.parse().ok()?;
            (f.next() == Some("RUNNING")).then_some((id, pid))
        })
        .collect())
}

/// The PID (in the host's PID namespace) of container `container` of a pod on the
/// real node.
pub fn container_pid(c: &Cluster, pod: &Pod, container: &str) -> anyhow::Result<i32> {
    let id = container_id(pod, container)?;
    containerd_tasks(c)?
        .into_iter()
        .find(|(t, _)| *t == id)
        .map(|(_, pid)| pid)
        .ok_or_else(|| anyhow!("containerd has no running task {id}"))
}

/// The processes of a pod's containers (not the sandbox's pause process: killing that
/// would replace the whole sandbox, which is a different fault).
pub fn pod_pids(pod: &Pod) -> anyhow::Result<Vec<i32>> {
    let c = cluster()?;
    let ids: Vec<String> = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|cs| cs.container_id.as_deref()?.strip_prefix("containerd://"))
        .map(String::from)
        .collect();
    Ok(containerd_tasks(c)?
        .into_iter()
        .filter(|(id, _)| ids.contains(id))
        .map(|(_, pid)| pid)
        .collect())
}

/// The file of a pod's network namespace (it lives as long as the pod's sandbox, across
/// container restarts).
pub fn pod_netns(pod: &Pod) -> anyhow::Result<PathBuf> {
    let c = cluster()?;
    let pid = pod_pids(pod)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no running container in the pod"))?;
    let want = std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .with_context(|| format!("reading the netns of pid {pid}"))?;
    let dir = real_node_netns_dir(c);
    for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = e?.path();
        if let Ok(m) = std::fs::metadata(&path)
            && (m.dev(), m.ino()) == (want.dev(), want.ino())
        {
            return Ok(path);
        }
    }
    bail!("no netns under {} is the one of pid {pid}", dir.display())
}

/// Every container process whose network namespace is `netns` (the sandbox's `pause`
/// process is left out: killing it replaces the whole sandbox).
pub fn netns_pids(netns: &Path) -> anyhow::Result<Vec<i32>> {
    let want = std::fs::metadata(netns)
        .with_context(|| format!("Cannot open network namespace {}", netns.display()))?;
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc")
        .context("listing /proc")?
        .flatten()
    {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        // Processes come and go while we look: skip the ones gone.
        if let Ok(m) = std::fs::metadata(e.path().join("ns/net"))
            && (m.dev(), m.ino()) == (want.dev(), want.ino())
            && !is_pause(&e.path())
        {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// The sandbox image's process (`/pause`, tests/realnode/pause.c).
fn is_pause(proc_dir: &Path) -> bool {
    std::fs::read_link(proc_dir.join("exe")).is_ok_and(|exe| exe == Path::new("/pause"))
}

/// `program args…` run inside the network namespace `netns` (nsenter); error with its
/// stderr when it fails.
pub fn run_in_netns(netns: &Path, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg("--")
        .arg(program)
        .args(args)
        .output()
        .context("running nsenter")?;
    ensure!(
        out.status.success(),
        "{program} {} in {}: {}",
        args.join(" "),
        netns.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
