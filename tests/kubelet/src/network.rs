//! Per-pod network namespaces with the `ip` command.
//!
//! Pod with UID `u`: short id = first 8 hex digits of `u` (dashes removed); netns
//! `studio-pod-<short>`; veth `sv<short>` (host side, enslaved to the bridge) ↔
//! `sp<short>` (moved into the netns and renamed `eth0`); address from the pod CIDR
//! with the CIDR's prefix length, default route via the gateway, `lo` up.

use std::net::Ipv4Addr;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;

pub const NETNS_PREFIX: &str = "studio-pod-";

/// A command that runs `program` inside `netns` (`ip netns exec`), or directly when
/// `netns` is empty (hostNetwork pods).
pub fn command_in(netns: &str, program: &std::path::Path) -> Command {
    if netns.is_empty() {
        Command::new(program)
    } else {
        let mut c = Command::new("ip");
        c.arg("netns").arg("exec").arg(netns).arg(program);
        c
    }
}

pub fn short_id(uid: &str) -> String {
    let hex: String = uid
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect();
    format!("{hex:0<8}").to_ascii_lowercase()
}

pub fn netns_name(short: &str) -> String {
    format!("{NETNS_PREFIX}{short}")
}

pub fn veth_host(short: &str) -> String {
    format!("sv{short}")
}

fn veth_peer(short: &str) -> String {
    format!("sp{short}")
}

/// Is `name` one of our host-side veths (`sv` + 8 hex digits)?
pub fn is_our_veth(name: &str) -> bool {
    name.len() == 10
        && name.starts_with("sv")
        && name[2..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

async fn ip(args: &[&str]) -> Result<String, String> {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        Command::new("ip").args(args).output(),
    )
    .await
    .map_err(|_| format!("ip {} timed out", args.join(" ")))?
    .map_err(|e| format!("running ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub async fn list_netns() -> Vec<String> {
    match ip(&["netns", "list"]).await {
        Ok(out) => parse_netns_list(&out),
        Err(e) => {
            tracing::warn!(error = %e, "listing network namespaces");
            Vec::new()
        }
    }
}

fn parse_netns_list(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Kills every process inside a netns (processes outlive a deleted namespace).
pub async fn kill_netns_processes(ns: &str) {
    for round in 0..10 {
        let pids: Vec<i32> = match ip(&["netns", "pids", ns]).await {
            Ok(out) => out.lines().filter_map(|l| l.trim().parse().ok()).collect(),
            Err(_) => return,
        };
        if pids.is_empty() {
            return;
        }
        for pid in &pids {
            if *pid > 1 {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
        }
        tokio::time::sleep(Duration::from_millis(50 * (round + 1))).await;
    }
}

/// Creates the pod's namespace and veth; idempotent (re-creates from scratch).
pub async fn setup(
    short: &str,
    addr: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
    bridge: &str,
) -> Result<(), String> {
    let ns = netns_name(short);
    let host = veth_host(short);
    let peer = veth_peer(short);
    teardown(short).await;
    ip(&["link", "show", bridge])
        .await
        .map_err(|e| format!("bridge {bridge} is missing: {e}"))?;
    ip(&["netns", "add", &ns]).await?;
    ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]).await?;
    ip(&["link", "set", &peer, "netns", &ns]).await?;
    ip(&["link", "set", &host, "master", bridge]).await?;
    ip(&["link", "set", &host, "up"]).await?;
    ip(&["-n", &ns, "link", "set", "lo", "up"]).await?;
    ip(&["-n", &ns, "link", "set", &peer, "name", "eth0"]).await?;
    let cidr = format!("{addr}/{prefix}");
    ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]).await?;
    ip(&["-n", &ns, "link", "set", "eth0", "up"]).await?;
    ip(&[
        "-n",
        &ns,
        "route",
        "add",
        "default",
        "via",
        &gateway.to_string(),
    ])
    .await?;
    Ok(())
}

/// Kills whatever still runs in the namespace, then removes it and the veth.
pub async fn teardown(short: &str) {
    let ns = netns_name(short);
    if list_netns().await.iter().any(|n| n == &ns) {
        kill_netns_processes(&ns).await;
        if let Err(e) = ip(&["netns", "delete", &ns]).await {
            tracing::warn!(netns = %ns, error = %e, "deleting netns");
        }
    }
    let host = veth_host(short);
    if ip(&["link", "show", &host]).await.is_ok()
        && let Err(e) = ip(&["link", "delete", &host]).await
        && !e.contains("Cannot find device")
    {
        tracing::warn!(veth = %host, error = %e, "deleting veth");
    }
}

/// Removes every netns and veth of ours (leftovers of a previous run).
pub async fn cleanup_all() {
    for ns in list_netns().await {
        if let Some(short) = ns.strip_prefix(NETNS_PREFIX) {
            tracing::info!(netns = %ns, "removing leftover pod network namespace");
            teardown(short).await;
        }
    }
    match ip(&["-o", "link", "show"]).await {
        Ok(out) => {
            for name in parse_link_names(&out) {
                if is_our_veth(&name) {
                    tracing::info!(veth = %name, "removing leftover veth");
                    if let Err(e) = ip(&["link", "delete", &name]).await {
                        tracing::warn!(veth = %name, error = %e, "deleting leftover veth");
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing links"),
    }
}

fn parse_link_names(out: &str) -> Vec<String> {
    // "12: sv1234abcd@if11: <BROADCAST,...> ..."
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let s = short_id("5f0c3a2e-1b2c-4d5e-8f90-123456789abc");
        assert_eq!(s, "5f0c3a2e");
        assert_eq!(netns_name(&s), "studio-pod-5f0c3a2e");
        assert!(veth_host(&s).len() <= 15);
        assert!(is_our_veth(&veth_host(&s)));
        assert!(!is_our_veth("svc0"));
        assert!(!is_our_veth("studiobr0"));
        assert_eq!(short_id("ab"), "ab000000");
    }

    #[test]
    fn parsing() {
        assert_eq!(
            parse_netns_list("studio-pod-1 (id: 3)\nother\n"),
            vec!["studio-pod-1".to_string(), "other".to_string()]
        );
        let links = "1: lo: <LOOPBACK,UP> mtu 65536\n7: sv0011aabb@if6: <BROADCAST> mtu 1500 master studiobr0\n";
        assert_eq!(
            parse_link_names(links),
            vec!["lo".to_string(), "sv0011aabb".to_string()]
        );
    }
}
