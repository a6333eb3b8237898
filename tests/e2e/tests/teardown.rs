//! `scripts/cluster-down.sh` leaves nothing of ours behind: no process (control plane,
//! kubelet, pods), no network namespace, veth or bridge.
//!
//! This suite takes the shared local cluster down: run it after the other suites (the
//! Makefile runs it last, on its own). A later suite starts the cluster again through
//! the harness.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use studio_e2e::{describe, is_ready, pod_ip, testapp_pod};
use studio_harness::{TestEnv, pod_netns, pod_pids, wait_for};

/// Is the process gone (no such pid, or a zombie waiting for its parent)?
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
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

fn command_output(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running {cmd}"))?;
    ensure!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Processes whose executable is one of the control-plane binaries.
fn control_plane_processes(cp_bin: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(exe) = std::fs::read_link(entry.path().join("exe"))
            && exe.parent() == Some(cp_bin)
            && !gone(pid)
        {
            out.push(format!("{pid} {}", exe.display()));
        }
    }
    out
}

#[tokio::test]
async fn cluster_down_leaves_no_process_netns_veth_or_bridge() -> anyhow::Result<()> {
    let env = TestEnv::new("teardown").await?;
    let cluster = env.cluster;

    // A running pod, so that there are pod processes, a pod netns and a veth to remove.
    let pods = env.api::<Pod>();
    pods.create(&PostParams::default(), &testapp_pod("victim", "default")?)
        .await
        .context("creating the pod")?;
    let pod = wait_for("the pod to be Ready", Duration::from_secs(120), || async {
        let p = pods.get("victim").await?;
        if is_ready(&p) && pod_ip(&p).is_some() {
            Ok(p)
        } else {
            bail!("{}", describe(&p))
        }
    })
    .await?;
    let pod_processes = pod_pids(&pod)?;
    ensure!(!pod_processes.is_empty(), "the pod has no process");
    let netns = pod_netns(&pod).context("pod without uid")?;
    let components = pid_files(&cluster.dir.join("run"));
    ensure!(
        components.iter().any(|(n, _)| n == "kube-apiserver"),
        "no pid file of the API server in {}: {components:?}",
        cluster.dir.join("run").display()
    );
    env.pass_without_cleanup();

    let script = cluster.repo.join("scripts/cluster-down.sh");
    let status = Command::new(&script)
        .env("STUDIO_CLUSTER_DIR", &cluster.dir)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(status.success(), "{} failed: {status}", script.display());

    let mut left = Vec::new();
    for (name, pid) in &components {
        if !gone(*pid) {
            left.push(format!("process {name} (pid {pid})"));
        }
    }
    for pid in &pod_processes {
        if !gone(*pid) {
            left.push(format!("pod process {pid} (was in {netns})"));
        }
    }
    left.extend(
        control_plane_processes(&cluster.cp_bin)
            .into_iter()
            .map(|p| format!("control-plane process {p}")),
    );
    for line in command_output("ip", &["netns", "list"])?.lines() {
        if line.starts_with("studio-") {
            left.push(format!("netns {line}"));
        }
    }
    for line in command_output("ip", &["-o", "link", "show"])?.lines() {
        let name = line
            .split(": ")
            .nth(1)
            .and_then(|n| n.split('@').next())
            .unwrap_or_default();
        let pod_veth = name.len() == 10
            && name.starts_with("sv")
            && name[2..].chars().all(|c| c.is_ascii_hexdigit());
        if name.starts_with("studio") || pod_veth {
            left.push(format!("link {name}"));
        }
    }
    ensure!(left.is_empty(), "cluster-down left: {left:?}");

    // Running it again is harmless.
    let status = Command::new(&script)
        .env("STUDIO_CLUSTER_DIR", &cluster.dir)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(status.success(), "a second cluster-down failed: {status}");
    Ok(())
}
