//! `scripts/cluster-down.sh` leaves nothing of ours behind: no process (control plane,
//! provisioner, and the real node's containerd, kubelet, kube-proxy, registry and
//! containers), no network namespace, veth, bridge, mount, cgroup or nft table.
//!
//! The suite runs a whole cluster of its own (`cluster-up`, a pod, `cluster-down`) in a
//! sandbox: a network namespace and a mount namespace with a private `/run` (where `ip
//! netns` keeps its names), with its own `STUDIO_CLUSTER_DIR`. So it never touches the
//! shared cluster the other suites use, and it checks the scripts exactly as a user runs
//! them. It is not part of `cargo test` (see Cargo.toml); run it with
//! `cargo test -p studio-e2e --test teardown`.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use studio_harness::{Cluster, cluster_paths, wait_for};
use tokio::{io::AsyncWriteExt, process::Command};

/// A network + mount namespace kept alive by a `sleep` process, entered with nsenter.
struct Sandbox {
    holder: std::process::Child,
    cluster: Cluster,
}

impl Sandbox {
    async fn start(mut cluster: Cluster, dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let ready = dir.join("sandbox-ready");
        let _ = std::fs::remove_file(&ready);
        let holder = std::process::Command::new("unshare")
            .args([
                "--mount",
                "--net",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
            ])
            .arg(
                "mount -t tmpfs studio-sandbox /run && ip link set lo up && touch \"$0\" \
                 && exec sleep 3600",
            )
            .arg(&ready)
            .stdin(Stdio::null())
            .spawn()
            .context("starting the sandbox (unshare)")?;
        cluster.kubeconfig = dir.join("kubeconfig");
        cluster.dir = dir;
        let sandbox = Sandbox { holder, cluster };
        wait_for(
            "the sandbox namespaces",
            Duration::from_secs(10),
            || async {
                if ready.exists() {
                    Ok(())
                } else {
                    bail!("{} does not exist yet", ready.display())
                }
            },
        )
        .await?;
        Ok(sandbox)
    }

    /// A command that runs inside the sandbox with the cluster's environment.
    fn command(&self, program: impl AsRef<Path>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.holder.id().to_string())
            .args(["-m", "-n", "--"])
            .arg(program.as_ref())
            .env("STUDIO_CLUSTER_DIR", &self.cluster.dir)
            .env("STUDIO_CP_BIN", &self.cluster.cp_bin)
            .env("STUDIO_TARGET_DIR", &self.cluster.target_dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    fn script(&self, name: &str) -> Command {
        self.command(self.cluster.repo.join("scripts").join(name))
    }

    fn kubectl(&self) -> Command {
        let mut cmd = self.command(self.cluster.tool("kubectl"));
        cmd.arg("--kubeconfig")
            .arg(&self.cluster.kubeconfig)
            .arg("--request-timeout=20s");
        cmd
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Whatever happened, leave no cluster running in the sandbox.
        let _ = std::process::Command::new("nsenter")
            .arg("-t")
            .arg(self.holder.id().to_string())
            .args(["-m", "-n", "--"])
            .arg(self.cluster.repo.join("scripts/cluster-down.sh"))
            .env("STUDIO_CLUSTER_DIR", &self.cluster.dir)
            .stdout(Stdio::null())
            .status();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Runs a command with a time limit; returns its stdout, or an error with its output.
async fn run(what: &str, mut cmd: Command, limit: Duration) -> anyhow::Result<String> {
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .with_context(|| format!("{what}: no answer within {}s", limit.as_secs()))?
        .with_context(|| format!("{what}: cannot run"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    Ok(stdout)
}

/// Is the process gone (no such pid, or a zombie waiting for its parent)?
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// Live processes whose command line mentions `dir` (everything cluster-up starts names
/// a file in its cluster directory).
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(&needle) && !gone(pid) && !cmdline.starts_with("nsenter") {
            out.push(format!("{pid}: {}", cmdline.trim()));
        }
    }
    out
}

fn pid_files(run: &Path) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(run).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "pid")
            && let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(pid) = text.trim().parse::<i32>()
        {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((name, pid));
        }
    }
    out
}

/// A container on the Node real-1 (containerd): the image real-node-up imports.
const REAL_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: real-victim
spec:
  terminationGracePeriodSeconds: 5
  nodeSelector: {kubernetes.io/hostname: real-1}
  containers:
  - name: app
    image: studio.local/busybox:1
    imagePullPolicy: Never
    command: [sleep, "3600"]
"#;

async fn kubectl_apply(sandbox: &Sandbox, manifest: &str) -> anyhow::Result<()> {
    let mut apply = sandbox.kubectl();
    apply
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = apply.spawn().context("kubectl apply")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(manifest.as_bytes()).await?;
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .context("kubectl apply did not finish")??;
    ensure!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The host PIDs of the real node's containers (`ctr tasks ls`).
async fn real_node_tasks(sandbox: &Sandbox) -> anyhow::Result<Vec<i32>> {
    let mut ctr = sandbox.command("ctr");
    ctr.arg("--address")
        .arg(
            sandbox
                .cluster
                .dir
                .join("real-node/containerd/containerd.sock"),
        )
        .args(["-n", "k8s.io", "tasks", "ls"]);
    Ok(run("ctr tasks ls", ctr, Duration::from_secs(20))
        .await?
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect())
}

/// The first path segment of a process's cgroup (v1 `memory` line): the kubelet's
/// cgroupRoot for a container of the real node.
fn cgroup_root(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find(|l| l.split(':').nth(1) == Some("memory"))
        .and_then(|l| l.split(':').nth(2))
        .and_then(|p| p.trim_start_matches('/').split('/').next())
        .map(String::from)
}

#[tokio::test]
async fn cluster_down_leaves_no_process_netns_veth_or_bridge() -> anyhow::Result<()> {
    let paths = cluster_paths()?;
    let dir = paths.repo.join(".cache/teardown-test");
    let sandbox = Sandbox::start(paths, dir).await?;
    let cluster = sandbox.cluster.clone();

    run(
        "cluster-up",
        sandbox.script("cluster-up.sh"),
        Duration::from_secs(300),
    )
    .await?;

    // A running pod, so that there are containers, a CNI netns, veths, mounts and cgroups
    // to remove.
    kubectl_apply(&sandbox, REAL_POD).await?;
    let mut wait = sandbox.kubectl();
    wait.args([
        "wait",
        "--for=condition=Ready",
        "pod/real-victim",
        "--timeout=120s",
    ]);
    run("waiting for the pod", wait, Duration::from_secs(130)).await?;
    let containers = real_node_tasks(&sandbox).await?;
    ensure!(
        containers.len() >= 2,
        "the real node runs {containers:?} (a sandbox and a container expected)"
    );
    let cgroups: Vec<String> = containers.iter().filter_map(|p| cgroup_root(*p)).collect();
    ensure!(
        cgroups.iter().any(|c| c.starts_with("studio-real-")),
        "the real node's containers are in cgroups {cgroups:?}"
    );
    let real_components = pid_files(&cluster.dir.join("real-node/run"));
    for c in ["containerd", "kubelet", "kube-proxy", "registry"] {
        ensure!(
            real_components.iter().any(|(n, _)| n == c),
            "no pid file of the real node's {c}: {real_components:?}"
        );
    }
    let components = pid_files(&cluster.dir.join("run"));
    for c in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "provisioner",
    ] {
        ensure!(
            components.iter().any(|(n, _)| n == c),
            "no pid file of {c} in {}: {components:?}",
            cluster.dir.join("run").display()
        );
    }

    run(
        "cluster-down",
        sandbox.script("cluster-down.sh"),
        Duration::from_secs(120),
    )
    .await?;

    let mut left = Vec::new();
    for (name, pid) in &components {
        if !gone(*pid) {
            left.push(format!("process {name} (pid {pid})"));
        }
    }
    for (name, pid) in &real_components {
        if !gone(*pid) {
            left.push(format!("real node process {name} (pid {pid})"));
        }
    }
    for pid in &containers {
        if !gone(*pid) {
            left.push(format!("real node container process {pid}"));
        }
    }
    for root in &cgroups {
        for h in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let d = h.path().join(root);
            if d.exists() {
                left.push(format!("cgroup {}", d.display()));
            }
        }
    }
    let mut mounts = sandbox.command("cat");
    mounts.arg("/proc/self/mounts");
    let needle = cluster.dir.to_string_lossy().into_owned();
    for line in run("reading the mounts", mounts, Duration::from_secs(10))
        .await?
        .lines()
    {
        if line
            .split_whitespace()
            .nth(1)
            .is_some_and(|m| m.starts_with(&needle))
        {
            left.push(format!("mount {line}"));
        }
    }
    // The kubelet's and kube-proxy's chains and rules, the real node's own table
    // (iptables-nft may keep its empty standard tables: no rule, nothing to remove).
    let mut nft = sandbox.command("nft");
    nft.args(["list", "ruleset"]);
    for line in run("nft list ruleset", nft, Duration::from_secs(10))
        .await?
        .lines()
    {
        if ["KUBE-", "CNI-", "kube-proxy", "studio"]
            .iter()
            .any(|n| line.contains(n))
        {
            left.push(format!("nft: {}", line.trim()));
        }
    }
    left.extend(
        processes_mentioning(&cluster.dir)
            .into_iter()
            .map(|p| format!("process {p}")),
    );
    let mut netns = sandbox.command("ip");
    netns.args(["netns", "list"]);
    for line in run("ip netns list", netns, Duration::from_secs(10))
        .await?
        .lines()
    {
        if line.starts_with("studio-") {
            left.push(format!("netns {line}"));
        }
    }
    let mut links = sandbox.command("ip");
    links.args(["-o", "link", "show"]);
    for line in run("ip link show", links, Duration::from_secs(10))
        .await?
        .lines()
    {
        let name = line
            .split(": ")
            .nth(1)
            .and_then(|n| n.split('@').next())
            .unwrap_or_default();
        if name != "lo" {
            left.push(format!("link {name}"));
        }
    }
    ensure!(left.is_empty(), "cluster-down left: {left:?}");

    // Running it again is harmless.
    run(
        "a second cluster-down",
        sandbox.script("cluster-down.sh"),
        Duration::from_secs(60),
    )
    .await?;
    Ok(())
}
