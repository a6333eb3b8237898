//! Fault injection for the end-to-end suites (issue 9): ONE API through which every test
//! cuts, freezes and kills members, so that the node runtime underneath (the real node:
//! containerd containers, each pod in its CNI network namespace on the bridge
//! `studiorn0`; the control plane at 10.213.0.2) can change without touching the tests.
//! Only this file (and `studio_harness::runtime`) knows about network namespaces,
//! routes and pids.
//!
//! - [`Member`]: a pod as the nemesis sees it (name, address, where its processes live),
//!   captured when the fault is injected.
//! - [`Nemesis`]: `isolate` (link down), `cut_between`, `cut_from_api`, `cut_from_peers`,
//!   `split`, `flap`, `freeze`/`thaw`, `kill9`, `delete_pod`, `pause_api`/`resume_api`.
//!   Every reversible fault is registered and returns a [`FaultId`]; [`Nemesis::heal`]
//!   undoes one, [`Nemesis::heal_all`] undoes every fault still active, and dropping
//!   the `Nemesis` heals everything too, so a failing (or panicking) test never leaves a
//!   cut route, a down link or a frozen process behind.
//! - [`Nemesis::journal`]: what was injected and healed, with times, for the checkers.
//!
//! Mechanisms, all with `ip` from iproute2 (no iptables on the test machines): a full cut
//! is `ip link set eth0 down` in the pod's namespace (its routes are saved first and put
//! back after `up`, since the kernel drops the default route with the link); a cut
//! between two members is a blackhole route to the other's address in each namespace
//! (both directions); the API server is cut with blackhole routes to 10.213.0.2 and to
//! the `kubernetes` Service's ClusterIP;
//! freezing is SIGSTOP/SIGCONT of the pod's processes; the API server is paused with
//! SIGSTOP of `kube-apiserver` (allowed only to a test holding the harness's exclusive
//! lock, see [`Nemesis::with_api_pause`]).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::DeleteParams};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use studio_harness::{Cluster, netns_pids, pod_netns, run_in_netns};

use crate::{name, pod_ip};

/// The API server's address as pods see it.
pub const API_SERVER: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
/// The `kubernetes` Service's ClusterIP (first address of scripts/lib-cluster.sh's
/// SERVICE_CIDR): what pods on the real node dial (the kubelet's
/// KUBERNETES_SERVICE_HOST); kube-proxy translates it only after the packet left the
/// pod, so a cut needs a route for this address as well.
pub const API_SERVICE: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 1);

/// A member of a cluster as the nemesis sees it: a snapshot of its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub ip: Ipv4Addr,
    /// The pod's network namespace (runtime specific, see `studio_harness::runtime`).
    netns: PathBuf,
}

impl Member {
    /// The member behind a running pod (None without address or network namespace).
    pub fn of(pod: &Pod) -> Option<Member> {
        Some(Member {
            name: name(pod),
            ip: pod_ip(pod)?,
            netns: pod_netns(pod).ok()?,
        })
    }
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.ip)
    }
}

/// Identifies one injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FaultId(pub u64);

/// One entry of the nemesis's journal.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub id: FaultId,
    /// `isolate`, `cut-between`, `cut-from-api`, `cut-from-peers`, `split`, `flap`,
    /// `freeze`, `kill9`, `delete-pod`, `pause-api`.
    pub kind: &'static str,
    /// What it hit, e.g. `studio-0 (10.213.1.4)`.
    pub target: String,
    pub injected: Instant,
    /// When it was undone (instantaneous faults: kill9, delete-pod, are healed at once).
    pub healed: Option<Instant>,
}

/// How to undo a fault.
#[derive(Debug, Clone)]
enum Undo {
    /// `ip link set eth0 up`, then put back the saved routes.
    LinkUp { netns: PathBuf, routes: Vec<String> },
    /// Delete blackhole routes: (netns, address).
    Routes(Vec<(PathBuf, Ipv4Addr)>),
    /// SIGCONT these processes.
    Cont(Vec<i32>),
    /// SIGCONT the API server.
    ResumeApi(i32),
}

/// The fault injector of one test. Heals everything it did when dropped.
pub struct Nemesis {
    cluster: &'static Cluster,
    api_pause_allowed: bool,
    start: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: u64,
    active: Vec<(FaultId, Undo)>,
    journal: Vec<FaultRecord>,
}

fn ip_in(netns: &Path, args: &[&str]) -> anyhow::Result<()> {
    run_in_netns(netns, "ip", args).map(drop)
}

fn ip_out(netns: &Path, args: &[&str]) -> anyhow::Result<String> {
    run_in_netns(netns, "ip", args)
}

/// Errors that mean the thing to undo no longer exists (the pod was deleted, its
/// namespace removed, the process gone): the fault is gone with it.
fn vanished(e: &anyhow::Error) -> bool {
    let s = format!("{e:#}");
    s.contains("Cannot open network namespace")
        || s.contains("No such file")
        || s.contains("No such process")
        || s.contains("ESRCH")
        || s.contains("Cannot find device")
}

fn signal_all(pids: &[i32], sig: Signal) -> anyhow::Result<()> {
    for p in pids {
        match kill(Pid::from_raw(*p), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => bail!("kill -{sig:?} {p}: {e}"),
        }
    }
    Ok(())
}

fn undo(u: &Undo) -> anyhow::Result<()> {
    let ok_if_vanished = |r: anyhow::Result<()>| match r {
        Err(e) if !vanished(&e) => Err(e),
        _ => Ok(()),
    };
    match u {
        Undo::LinkUp { netns, routes } => {
            ok_if_vanished(ip_in(netns, &["link", "set", "eth0", "up"]))?;
            for r in routes {
                let args: Vec<&str> = std::iter::once("route")
                    .chain(std::iter::once("replace"))
                    .chain(r.split_whitespace())
                    .collect();
                ok_if_vanished(ip_in(netns, &args))?;
            }
            Ok(())
        }
        Undo::Routes(list) => {
            let mut first_err = None;
            for (netns, to) in list {
                let r = ip_in(netns, &["route", "del", "blackhole", &format!("{to}/32")]);
                if let Err(e) = ok_if_vanished(r)
                    && first_err.is_none()
                {
                    first_err = Some(e);
                }
            }
            first_err.map_or(Ok(()), Err)
        }
        Undo::Cont(pids) => signal_all(pids, Signal::SIGCONT),
        Undo::ResumeApi(pid) => signal_all(&[*pid], Signal::SIGCONT),
    }
}

impl Nemesis {
    /// A nemesis for the local cluster; it may not pause the API server.
    pub fn new(cluster: &'static Cluster) -> Nemesis {
        Nemesis {
            cluster,
            api_pause_allowed: false,
            start: Instant::now(),
            state: Mutex::new(State::default()),
        }
    }

    /// A nemesis that may also pause the API server: only for a test that holds the
    /// cluster exclusively (`TestEnv::new_exclusive`), since every other test would see
    /// the outage.
    pub fn with_api_pause(cluster: &'static Cluster) -> Nemesis {
        let mut n = Nemesis::new(cluster);
        n.api_pause_allowed = true;
        n
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self, what: &str) {
        eprintln!(
            "[nemesis +{:.1}s] {what}",
            self.start.elapsed().as_secs_f64()
        );
    }

    /// Registers an injected fault (`undo` None: nothing to undo).
    fn record(&self, kind: &'static str, target: String, undo: Option<Undo>) -> FaultId {
        let mut st = self.state();
        st.next += 1;
        let id = FaultId(st.next);
        let now = Instant::now();
        st.journal.push(FaultRecord {
            id,
            kind,
            target: target.clone(),
            injected: now,
            healed: if undo.is_none() { Some(now) } else { None },
        });
        if let Some(u) = undo {
            st.active.push((id, u));
        }
        drop(st);
        self.log(&format!("{kind} {target} [fault {}]", id.0));
        id
    }

    /// Adds blackhole routes (netns → address), registering what was added so far even
    /// when a later one fails.
    fn blackholes(
        &self,
        kind: &'static str,
        target: String,
        pairs: Vec<(PathBuf, Ipv4Addr)>,
    ) -> anyhow::Result<FaultId> {
        let mut added = Vec::new();
        for (netns, to) in pairs {
            let r = ip_in(&netns, &["route", "add", "blackhole", &format!("{to}/32")]);
            match r {
                Ok(()) => added.push((netns, to)),
                // The same route from an overlapping fault: already cut.
                Err(e) if format!("{e:#}").contains("File exists") => {}
                Err(e) => {
                    let _ = undo(&Undo::Routes(added));
                    return Err(e.context(format!("{kind} {target}")));
                }
            }
        }
        Ok(self.record(kind, target, Some(Undo::Routes(added))))
    }

    /// Cuts every network path of `m` (link down): it reaches no one and no one (not
    /// even its kubelet's probes or the test) reaches it.
    pub fn isolate(&self, m: &Member) -> anyhow::Result<FaultId> {
        let routes: Vec<String> = ip_out(&m.netns, &["route", "show"])?
            .lines()
            .filter(|l| !l.contains("proto kernel") && !l.starts_with("blackhole"))
            .map(str::to_string)
            .collect();
        ip_in(&m.netns, &["link", "set", "eth0", "down"])
            .with_context(|| format!("isolating {m}"))?;
        let netns = m.netns.clone();
        Ok(self.record(
            "isolate",
            m.to_string(),
            Some(Undo::LinkUp { netns, routes }),
        ))
    }

    /// Cuts `a` and `b` from each other, both directions; both still reach everyone else.
    pub fn cut_between(&self, a: &Member, b: &Member) -> anyhow::Result<FaultId> {
        self.blackholes(
            "cut-between",
            format!("{a} | {b}"),
            vec![(a.netns.clone(), b.ip), (b.netns.clone(), a.ip)],
        )
    }

    /// Cuts `m` from the API server only (members, kubelet, clients still reach it).
    pub fn cut_from_api(&self, m: &Member) -> anyhow::Result<FaultId> {
        self.blackholes(
            "cut-from-api",
            m.to_string(),
            vec![
                (m.netns.clone(), API_SERVER),
                (m.netns.clone(), API_SERVICE),
            ],
        )
    }

    /// Cuts `m` from every other member of `members` (both directions); it still
    /// reaches the API server and clients still reach it.
    pub fn cut_from_peers(&self, m: &Member, members: &[Member]) -> anyhow::Result<FaultId> {
        let mut pairs = Vec::new();
        for p in members.iter().filter(|p| p.name != m.name) {
            pairs.push((m.netns.clone(), p.ip));
            pairs.push((p.netns.clone(), m.ip));
        }
        self.blackholes("cut-from-peers", m.to_string(), pairs)
    }

    /// Splits the members into groups that reach each other only within a group (both
    /// directions; the API server stays reachable from every group).
    pub fn split(&self, groups: &[Vec<Member>]) -> anyhow::Result<FaultId> {
        let mut pairs = Vec::new();
        for (i, g) in groups.iter().enumerate() {
            for other in groups.iter().skip(i + 1) {
                for a in g {
                    for b in other {
                        pairs.push((a.netns.clone(), b.ip));
                        pairs.push((b.netns.clone(), a.ip));
                    }
                }
            }
        }
        let target = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect::<Vec<_>>()
            .join(" | ");
        self.blackholes("split", target, pairs)
    }

    /// Takes `m`'s link down for `down`, up for `up`, `times` times (a flapping port).
    /// Returns once the link is up after the last flap; each down period is journaled
    /// as a `flap` fault.
    pub async fn flap(
        &self,
        m: &Member,
        down: Duration,
        up: Duration,
        times: u32,
    ) -> anyhow::Result<()> {
        for i in 0..times {
            let id = self.isolate(m)?;
            self.relabel(id, "flap");
            tokio::time::sleep(down).await;
            self.heal(id)?;
            if i + 1 < times {
                tokio::time::sleep(up).await;
            }
        }
        Ok(())
    }

    fn relabel(&self, id: FaultId, kind: &'static str) {
        if let Some(r) = self.state().journal.iter_mut().find(|r| r.id == id) {
            r.kind = kind;
        }
    }

    /// SIGSTOPs every process of `m` until [`Nemesis::thaw`] (or a heal).
    pub fn freeze(&self, m: &Member) -> anyhow::Result<FaultId> {
        let pids = netns_pids(&m.netns)?;
        ensure!(!pids.is_empty(), "no process runs for {m}");
        signal_all(&pids, Signal::SIGSTOP).with_context(|| format!("freezing {m}"))?;
        Ok(self.record("freeze", m.to_string(), Some(Undo::Cont(pids))))
    }

    /// SIGCONTs a member frozen by [`Nemesis::freeze`].
    pub fn thaw(&self, id: FaultId) -> anyhow::Result<()> {
        self.heal(id)
    }

    /// SIGKILLs every process of `m` (the kubelet restarts the container).
    pub fn kill9(&self, m: &Member) -> anyhow::Result<FaultId> {
        let pids = netns_pids(&m.netns)?;
        ensure!(!pids.is_empty(), "no process runs for {m}");
        signal_all(&pids, Signal::SIGKILL).with_context(|| format!("killing {m}"))?;
        Ok(self.record("kill9", m.to_string(), None))
    }

    /// Deletes `m`'s pod (graceful: the controller re-creates it).
    pub async fn delete_pod(&self, pods: &Api<Pod>, m: &Member) -> anyhow::Result<FaultId> {
        pods.delete(&m.name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting pod {}", m.name))?;
        Ok(self.record("delete-pod", m.to_string(), None))
    }

    /// Freezes the kube-apiserver (every request to it hangs) until
    /// [`Nemesis::resume_api`] or a heal.
    pub fn pause_api(&self) -> anyhow::Result<FaultId> {
        ensure!(
            self.api_pause_allowed,
            "pause_api needs Nemesis::with_api_pause in a test holding the cluster exclusively"
        );
        let pid = self.cluster.component_pid("kube-apiserver")?;
        signal_all(&[pid], Signal::SIGSTOP).context("pausing kube-apiserver")?;
        Ok(self.record(
            "pause-api",
            format!("kube-apiserver (pid {pid})"),
            Some(Undo::ResumeApi(pid)),
        ))
    }

    /// Resumes the API server paused by [`Nemesis::pause_api`].
    pub fn resume_api(&self, id: FaultId) -> anyhow::Result<()> {
        self.heal(id)
    }

    /// Undoes one fault (a no-op when it is no longer active).
    pub fn heal(&self, id: FaultId) -> anyhow::Result<()> {
        let mut st = self.state();
        let Some(at) = st.active.iter().position(|(i, _)| *i == id) else {
            return Ok(());
        };
        let (_, u) = st.active.remove(at);
        let r = undo(&u);
        let now = Instant::now();
        let mut target = String::new();
        if let Some(rec) = st.journal.iter_mut().find(|r| r.id == id) {
            rec.healed = Some(now);
            target = format!("{} {}", rec.kind, rec.target);
        }
        drop(st);
        match &r {
            Ok(()) => self.log(&format!("healed {target} [fault {}]", id.0)),
            Err(e) => self.log(&format!("FAILED to heal {target} [fault {}]: {e:#}", id.0)),
        }
        r
    }

    /// Undoes every active fault, newest first; returns the first error after trying
    /// them all.
    pub fn heal_all(&self) -> anyhow::Result<()> {
        let ids: Vec<FaultId> = self.state().active.iter().rev().map(|(i, _)| *i).collect();
        let mut first = None;
        for id in ids {
            if let Err(e) = self.heal(id)
                && first.is_none()
            {
                first = Some(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Faults still active.
    pub fn active(&self) -> Vec<FaultId> {
        self.state().active.iter().map(|(i, _)| *i).collect()
    }

    /// Everything injected so far, in order.
    pub fn journal(&self) -> Vec<FaultRecord> {
        self.state().journal.clone()
    }
}

impl Drop for Nemesis {
    fn drop(&mut self) {
        if let Err(e) = self.heal_all() {
            eprintln!("[nemesis] healing on drop: {e:#}");
        }
    }
}

/// A member from a pod, or an error naming it.
pub fn member(pod: &Pod) -> anyhow::Result<Member> {
    Member::of(pod).ok_or_else(|| anyhow!("pod {} has no address or uid yet", name(pod)))
}
