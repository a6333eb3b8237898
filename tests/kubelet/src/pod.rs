//! The pod worker: one task per pod, from sandbox to deletion.
//!
//! Restart back-off: 1 s after the first exit, doubling to 30 s (configurable), reset
//! once a container has run for 60 s. The real kubelet uses 10 s → 5 min; ours is
//! shorter so tests finish quickly.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Probe, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::env::{self, PodFacts, Sources};
use crate::image;
use crate::ipam::{Cidr, Ipam};
use crate::network;
use crate::probes::{self, ProbeCounter, ProbeTiming};
use crate::status::{ConditionClock, ContainerRt, PodRt, RunState, Terminated, build_status};
use crate::token::{self, PodIdentity, TokenTarget};
use crate::volumes::{self, Mount};

/// Kubelet-wide settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub nodes: Vec<String>,
    pub api_server: String,
    pub api_host: String,
    pub api_port: u16,
    pub ca_file: PathBuf,
    pub bridge: String,
    pub gateway: Ipv4Addr,
    pub host_ip: Ipv4Addr,
    pub cidr: Cidr,
    pub bin_dir: PathBuf,
    pub state_dir: PathBuf,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How often secret/configMap/downwardAPI/projected volumes are resynced.
    pub volume_resync: Duration,
}

/// State shared by all pod workers.
pub struct Shared {
    pub client: Client,
    pub settings: Settings,
    pub ipam: Mutex<Ipam>,
}

impl Shared {
    fn ipam(&self) -> std::sync::MutexGuard<'_, Ipam> {
        self.ipam.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a pod worker stops its containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// deletionTimestamp set: graceful stop, then complete the deletion.
    Delete,
    /// The pod is gone from the API (or no longer ours).
    Removed,
    /// The kubelet is shutting down.
    Kubelet,
}

fn deleting(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

async fn wait_stop(
    pod_rx: &mut watch::Receiver<Option<Pod>>,
    kstop: &mut watch::Receiver<bool>,
) -> Stop {
    loop {
        if *kstop.borrow() {
            return Stop::Kubelet;
        }
        {
            let cur = pod_rx.borrow();
            match &*cur {
                None => return Stop::Removed,
                Some(p) if deleting(p) => return Stop::Delete,
                _ => {}
            }
        }
        tokio::select! {
            r = pod_rx.changed() => if r.is_err() { return Stop::Removed },
            r = kstop.changed() => if r.is_err() { return Stop::Kubelet },
        }
    }
}

/// Directory of a pod's state: `<state-dir>/pods/<namespace>_<pod>_<uid>`.
pub fn pod_dir(state_dir: &Path, pod: &Pod) -> PathBuf {
    state_dir.join("pods").join(format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("unnamed"),
        pod.metadata.uid.as_deref().unwrap_or("nouid")
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Init,
    Main,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RestartMode {
    Always,
    OnFailure,
    Never,
}

impl RestartMode {
    fn of(policy: &str) -> Self {
        match policy {
            "Never" => RestartMode::Never,
            "OnFailure" => RestartMode::OnFailure,
            _ => RestartMode::Always,
        }
    }
    fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartMode::Always => true,
            RestartMode::OnFailure => exit_code != 0,
            RestartMode::Never => false,
        }
    }
}

/// What container tasks of one pod share.
struct PodCtx {
    sh: Arc<Shared>,
    /// `namespace/name`, for logs.
    label: String,
    pod_rx: watch::Receiver<Option<Pod>>,
    rt: Arc<Mutex<PodRt>>,
    notify: Arc<Notify>,
    short: String,
    netns: String,
    pod_ip: Ipv4Addr,
    pod_dir: PathBuf,
    volume_dirs: HashMap<String, PathBuf>,
    kubeconfig: PathBuf,
}

impl PodCtx {
    fn update<R>(
        &self,
        kind: Kind,
        idx: usize,
        f: impl FnOnce(&mut ContainerRt) -> R,
    ) -> Option<R> {
        let r = {
            let mut rt = self.rt.lock().unwrap_or_else(|e| e.into_inner());
            let list = match kind {
                Kind::Init => &mut rt.init,
                Kind::Main => &mut rt.main,
            };
            list.get_mut(idx).map(f)
        };
        self.notify.notify_one();
        r
    }

    fn pod(&self) -> Option<Pod> {
        self.pod_rx.borrow().clone()
    }

    fn event(&self, container: &str, type_: &str, reason: &str, message: &str) {
        if let Some(p) = self.pod() {
            crate::events::emit(&self.sh.client, &p, Some(container), type_, reason, message);
        }
    }
}

/// A prepared launch of a container.
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    workdir: PathBuf,
}

async fn fetch_sources(
    client: &Client,
    ns: &str,
    container: &Container,
) -> Result<Sources, String> {
    let (secrets, cms) = env::referenced(container);
    let mut src = Sources::default();
    for s in secrets {
        let v = Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(&s)
            .await
            .map_err(|e| format!("getting secret {s:?}: {e}"))?;
        let data = v.map(|sec| {
            sec.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect()
        });
        src.secrets.insert(s, data);
    }
    for c in cms {
        let v = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get_opt(&c)
            .await
            .map_err(|e| format!("getting configmap {c:?}: {e}"))?;
        let data = v.map(|cm| {
            let mut d = cm.data.unwrap_or_default();
            for (k, b) in cm.binary_data.unwrap_or_default() {
                d.insert(k, String::from_utf8_lossy(&b.0).into_owned());
            }
            d
        });
        src.config_maps.insert(c, data);
    }
    Ok(src)
}

/// Resolves program, env and mounts. Errors are (reason, message) for a waiting state.
async fn prepare_launch(ctx: &PodCtx, container: &Container) -> Result<Launch, (String, String)> {
    let cfg = &ctx.sh.settings;
    let pod = ctx
        .pod()
        .ok_or_else(|| ("PodRemoved".to_string(), "pod is gone".to_string()))?;
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let image_name = container.image.clone().unwrap_or_default();
    let program = image::resolve_program(
        &cfg.bin_dir,
        &image_name,
        container.command.as_deref().unwrap_or(&[]),
        container.args.as_deref().unwrap_or(&[]),
        |p| p.is_file(),
    )
    .map_err(|m| (image::REASON_UNMAPPED.to_string(), m))?;
    // The namespace may have vanished (removed by hand or by another program): make
    // it again, with the same address, before starting anything in it.
    if !ctx.netns.is_empty() && !Path::new("/run/netns").join(&ctx.netns).exists() {
        tracing::warn!(netns = %ctx.netns, "pod network namespace vanished; recreating it");
        network::setup(
            &ctx.short,
            ctx.pod_ip,
            cfg.cidr.prefix,
            cfg.gateway,
            &cfg.bridge,
        )
        .await
        .map_err(|e| ("CreateContainerError".to_string(), format!("network: {e}")))?;
    }
    let config_err = |m: String| ("CreateContainerConfigError".to_string(), m);
    let sources = fetch_sources(&ctx.sh.client, &ns, container)
        .await
        .map_err(config_err)?;
    let facts = PodFacts {
        pod_ip: ctx.pod_ip.to_string(),
        host_ip: cfg.host_ip.to_string(),
    };
    let resolved = env::resolve_env(&pod, container, &facts, &sources).map_err(config_err)?;
    let mounts: Vec<Mount> =
        volumes::container_mounts(container, &ctx.volume_dirs).map_err(config_err)?;
    let root = ctx.pod_dir.join("rootfs").join(&container.name);
    volumes::build_root(&root, &mounts).map_err(config_err)?;

    let vars = resolved.as_map();
    let args: Vec<String> = program
        .args
        .iter()
        .map(|a| volumes::substitute(&env::expand(a, &vars), &mounts))
        .collect();
    let mut envl = env::EnvList::default();
    envl.set(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
    );
    envl.set("HOSTNAME", pod.metadata.name.clone().unwrap_or_default());
    envl.set("HOME", root.display().to_string());
    envl.set("KUBERNETES_SERVICE_HOST", cfg.api_host.clone());
    envl.set("KUBERNETES_SERVICE_PORT", cfg.api_port.to_string());
    envl.set("KUBERNETES_SERVICE_PORT_HTTPS", cfg.api_port.to_string());
    envl.set("KUBECONFIG", ctx.kubeconfig.display().to_string());
    envl.set("STUDIO_ROOT", root.display().to_string());
    for m in &mounts {
        envl.set(
            &env::mount_env_name(&m.volume),
            m.host_path.display().to_string(),
        );
    }
    for (k, v) in resolved.iter() {
        envl.set(k, volumes::substitute(v, &mounts));
    }
    let workdir = match container.working_dir.as_deref().filter(|w| !w.is_empty()) {
        Some(w) => {
            let mapped = PathBuf::from(volumes::substitute(w, &mounts));
            if mapped.is_dir() {
                mapped
            } else {
                root.clone()
            }
        }
        None => root.clone(),
    };
    Ok(Launch {
        program: program.path,
        args,
        env: envl.into_vec(),
        workdir,
    })
}

fn signal_group(pid: i32, sig: Signal) {
    if pid > 1 {
        let _ = killpg(Pid::from_raw(pid), sig);
    }
}

/// SIGTERM to the process group, wait up to `grace`, SIGKILL.
async fn terminate(
    child: &mut tokio::process::Child,
    pid: i32,
    grace: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    signal_group(pid, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(r) => {
            signal_group(pid, Signal::SIGKILL);
            r
        }
        Err(_) => {
            signal_group(pid, Signal::SIGKILL);
            child.wait().await
        }
    }
}

fn grace_of(pod: Option<&Pod>) -> Duration {
    let secs = pod
        .and_then(|p| {
            p.metadata.deletion_grace_period_seconds.or(p
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
        })
        .unwrap_or(30)
        .max(0);
    Duration::from_secs(secs as u64)
}

/// Sleeps `d` unless a stop is requested first (returns true if stopped).
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<Option<Duration>>) -> bool {
    if stop.borrow().is_some() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        r = stop.wait_for(|s| s.is_some()) => { let _ = r; true }
    }
}

/// Runs the probes of one container run.
async fn probe_loop(
    ctx: Arc<PodCtx>,
    kind: Kind,
    idx: usize,
    container: Container,
    env: Vec<(String, String)>,
    kill_tx: mpsc::Sender<String>,
) {
    let target = probes::Target {
        pod_ip: ctx.pod_ip,
        netns: &ctx.netns,
        container: &container,
        env: &env,
        bin_dir: &ctx.sh.settings.bin_dir,
    };
    if let Some(p) = &container.startup_probe {
        let t = ProbeTiming::of(p);
        tokio::time::sleep(t.initial_delay).await;
        let mut counter = ProbeCounter::new(&t);
        let mut tick = probe_ticker(t.period);
        loop {
            tick.tick().await;
            let r = probes::run_once(p, &target, t.timeout).await;
            match counter.record(r.is_ok()) {
                Some(true) => break,
                Some(false) => {
                    let _ = kill_tx
                        .send(format!(
                            "Startup probe failed: {}",
                            r.err().unwrap_or_default()
                        ))
                        .await;
                    return;
                }
                None => {}
            }
        }
        let has_readiness = container.readiness_probe.is_some();
        ctx.update(kind, idx, |c| {
            c.started = true;
            if !has_readiness {
                c.ready = true;
            }
        });
    }
    let readiness = async {
        let Some(p) = &container.readiness_probe else {
            return;
        };
        let t = ProbeTiming::of(p);
        tokio::time::sleep(t.initial_delay).await;
        let mut was: Option<bool> = None;
        let mut counter = ProbeCounter::new(&t);
        let mut tick = probe_ticker(t.period);
        loop {
            tick.tick().await;
            let r = probes::run_once(p, &target, t.timeout).await;
            if let Err(e) = &r {
                tracing::debug!(pod = %ctx.label, container = %container.name, error = %e, "readiness probe failed");
            }
            if let Some(v) = counter.record(r.is_ok()) {
                tracing::info!(pod = %ctx.label, container = %container.name, ready = v, "readiness changed");
                // Only a ready container turning unready is news (not the start-up).
                if let (false, Some(true), Err(e)) = (v, was, &r) {
                    ctx.event(
                        &container.name,
                        "Warning",
                        "Unhealthy",
                        &format!("Readiness probe failed: {e}"),
                    );
                }
                was = Some(v);
                ctx.update(kind, idx, |c| c.ready = v);
            }
        }
    };
    let liveness = async {
        let Some(p) = &container.liveness_probe else {
            return;
        };
        let t = ProbeTiming::of(p);
        tokio::time::sleep(t.initial_delay).await;
        let mut counter = ProbeCounter::new(&t);
        let mut tick = probe_ticker(t.period);
        loop {
            tick.tick().await;
            let r = probes::run_once(p, &target, t.timeout).await;
            if counter.record(r.is_ok()) == Some(false) {
                let _ = kill_tx
                    .send(format!(
                        "Liveness probe failed: {}",
                        r.err().unwrap_or_default()
                    ))
                    .await;
                return;
            }
        }
    };
    tokio::join!(readiness, liveness);
}

/// Probes run on a fixed period, like the kubelet's ticker: a probe that takes its whole
/// timeout does not push the next one back (a period of "sleep after the probe" would
/// drift into lock-step with a link flapping at probe duration + period and fail every
/// probe); missed ticks are dropped, not bunched.
fn probe_ticker(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick
}

fn open_log(path: &Path) -> std::io::Result<(Stdio, Stdio)> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let f2 = f.try_clone()?;
    Ok((Stdio::from(f), Stdio::from(f2)))
}

fn probe_grace(p: Option<&Probe>, pod_grace: Duration) -> Duration {
    p.and_then(|p| p.termination_grace_period_seconds)
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(pod_grace)
}

/// The life of one container: start, watch, restart with back-off, stop.
async fn run_container(
    ctx: Arc<PodCtx>,
    kind: Kind,
    idx: usize,
    container: Container,
    mode: RestartMode,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let base = ctx.sh.settings.backoff_base;
    let max = ctx.sh.settings.backoff_max;
    let mut backoff = base;
    let name = container.name.clone();
    let pod_label = ctx
        .pod()
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.unwrap_or_default(),
                p.metadata.name.unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let mut first = true;
    let mut last_failure: Option<String> = None;
    loop {
        if stop.borrow().is_some() {
            return;
        }
        if !first {
            ctx.update(kind, idx, |c| c.restart_count += 1);
        }
        let launch = match prepare_launch(&ctx, &container).await {
            Ok(l) => l,
            Err((reason, message)) => {
                if last_failure.as_ref() != Some(&message) {
                    tracing::warn!(pod = %pod_label, container = %name, %reason, %message, "container cannot start");
                    ctx.event(
                        &name,
                        "Warning",
                        "Failed",
                        &format!("Error: {reason}: {message}"),
                    );
                    last_failure = Some(message.clone());
                }
                ctx.update(kind, idx, |c| {
                    if !first {
                        c.restart_count -= 1;
                    }
                    c.state = RunState::Waiting {
                        reason,
                        message: Some(message),
                    };
                    c.ready = false;
                });
                if sleep_or_stop(Duration::from_secs(2), &mut stop).await {
                    return;
                }
                continue;
            }
        };
        let log_path = ctx.pod_dir.join(format!("{name}.log"));
        let spawned = open_log(&log_path).and_then(|(out, err)| {
            let mut cmd = network::command_in(&ctx.netns, &launch.program);
            cmd.args(&launch.args)
                .env_clear()
                .envs(launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .current_dir(&launch.workdir)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0)
                .kill_on_drop(true);
            cmd.spawn()
        });
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(pod = %pod_label, container = %name, error = %e, "spawn failed");
                ctx.update(kind, idx, |c| {
                    if !first {
                        c.restart_count -= 1;
                    }
                    c.state = RunState::Waiting {
                        reason: "RunContainerError".to_string(),
                        message: Some(format!("starting {}: {e}", launch.program.display())),
                    };
                    c.ready = false;
                });
                if sleep_or_stop(backoff, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        first = false;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let started_at = Utc::now();
        let container_id = format!(
            "studio://{}-{}-{}",
            ctx.short,
            name,
            started_at.timestamp_millis()
        );
        let image_id = image::image_id(&launch.program);
        let has_startup = container.startup_probe.is_some();
        let has_readiness = container.readiness_probe.is_some();
        last_failure = None;
        tracing::info!(pod = %pod_label, container = %name, pid, program = %launch.program.display(), "container started");
        ctx.event(
            &name,
            "Normal",
            "Started",
            &format!("Started container {name} ({})", launch.program.display()),
        );
        ctx.update(kind, idx, |c| {
            c.state = RunState::Running { started_at };
            c.container_id = Some(container_id.clone());
            c.image_id = image_id.clone();
            c.started = !has_startup;
            c.ready = !has_startup && !has_readiness && kind == Kind::Main;
        });
        let (kill_tx, mut kill_rx) = mpsc::channel::<String>(1);
        let probe_task: Option<JoinHandle<()>> = (kind == Kind::Main).then(|| {
            tokio::spawn(probe_loop(
                ctx.clone(),
                kind,
                idx,
                container.clone(),
                launch.env.clone(),
                kill_tx,
            ))
        });
        let pod_grace = grace_of(ctx.pod().as_ref());
        let mut message = None;
        let mut stopped = false;
        enum Ev {
            Exited(std::io::Result<std::process::ExitStatus>),
            Kill(String),
            Stop(Duration),
        }
        let killed = async {
            match kill_rx.recv().await {
                Some(m) => m,
                // The probes ended without asking for a kill: never fires.
                None => std::future::pending().await,
            }
        };
        let ev = tokio::select! {
            r = child.wait() => Ev::Exited(r),
            msg = killed => Ev::Kill(msg),
            g = stop.wait_for(|s| s.is_some()) => Ev::Stop(g.map(|g| g.unwrap_or(pod_grace)).unwrap_or(pod_grace)),
        };
        let result = match ev {
            Ev::Exited(r) => r,
            Ev::Kill(msg) => {
                tracing::info!(pod = %pod_label, container = %name, %msg, "killing container");
                ctx.event(&name, "Warning", "Unhealthy", &msg);
                ctx.event(
                    &name,
                    "Normal",
                    "Killing",
                    &format!("Container {name} failed a probe, will be restarted"),
                );
                let g = probe_grace(container.liveness_probe.as_ref(), pod_grace);
                message = Some(msg);
                terminate(&mut child, pid, g).await
            }
            Ev::Stop(g) => {
                stopped = true;
                ctx.event(
                    &name,
                    "Normal",
                    "Killing",
                    &format!("Stopping container {name}"),
                );
                terminate(&mut child, pid, g).await
            }
        };
        // Whatever the main process left in its group dies with it.
        signal_group(pid, Signal::SIGKILL);
        if let Some(t) = probe_task {
            t.abort();
        }
        let finished_at = Utc::now();
        let (exit_code, signal) = match &result {
            Ok(st) => {
                use std::os::unix::process::ExitStatusExt;
                match (st.code(), st.signal()) {
                    (Some(c), _) => (c, None),
                    (None, Some(s)) => (128 + s, Some(s)),
                    _ => (-1, None),
                }
            }
            Err(_) => (-1, None),
        };
        tracing::info!(pod = %pod_label, container = %name, exit_code, "container exited");
        let term = Terminated {
            exit_code,
            signal,
            reason: if exit_code == 0 {
                "Completed".to_string()
            } else {
                "Error".to_string()
            },
            message,
            started_at: Some(started_at),
            finished_at,
            container_id: Some(container_id),
        };
        if stopped || stop.borrow().is_some() {
            ctx.update(kind, idx, |c| {
                c.state = RunState::Terminated(term);
                c.ready = false;
                c.done = true;
            });
            return;
        }
        if !mode.restarts(exit_code) {
            ctx.update(kind, idx, |c| {
                c.state = RunState::Terminated(term);
                // Like the real kubelet: a completed init container reports ready.
                c.ready = kind == Kind::Init && exit_code == 0;
                c.done = true;
            });
            return;
        }
        if (finished_at - started_at).num_seconds() >= 60 {
            backoff = base;
        }
        let wait = backoff;
        ctx.event(
            &name,
            "Warning",
            "BackOff",
            &format!(
                "Back-off {}s restarting exited container {name} (exit code {exit_code})",
                wait.as_secs_f64()
            ),
        );
        ctx.update(kind, idx, |c| {
            c.last_state = Some(term);
            c.state = RunState::Waiting {
                reason: "CrashLoopBackOff".to_string(),
                message: Some(format!(
                    "back-off {}s restarting failed container={name}",
                    wait.as_secs_f64()
                )),
            };
            c.ready = false;
            c.started = false;
        });
        if sleep_or_stop(wait, &mut stop).await {
            return;
        }
        backoff = (backoff * 2).min(max);
    }
}

struct Sandbox {
    short: String,
    netns: String,
    ip: Ipv4Addr,
    volume_dirs: HashMap<String, PathBuf>,
    /// Handed to the volume resync task once the sandbox is up.
    synced_volumes: Vec<volumes::SyncedVolume>,
    kubeconfig: PathBuf,
    token_tasks: Vec<JoinHandle<()>>,
}

async fn setup_sandbox(sh: &Arc<Shared>, pod: &Pod, dir: &Path) -> Result<Sandbox, String> {
    let cfg = &sh.settings;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let short = network::short_id(&uid);
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let netns = if host_network {
        String::new()
    } else {
        network::netns_name(&short)
    };
    let preferred = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        .filter(|ip| cfg.cidr.contains(*ip));
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let ip = if host_network {
        cfg.host_ip
    } else {
        let ip = sh
            .ipam()
            .allocate(&uid, preferred)
            .ok_or_else(|| "pod CIDR exhausted".to_string())?;
        network::setup(&short, ip, cfg.cidr.prefix, cfg.gateway, &cfg.bridge)
            .await
            .map_err(|e| format!("network: {e}"))?;
        ip
    };

    let facts = PodFacts {
        pod_ip: ip.to_string(),
        host_ip: cfg.host_ip.to_string(),
    };
    let prepared = volumes::prepare(&sh.client, pod, dir, &facts).await?;
    let mut targets = prepared.tokens;
    let token_file = dir.join("token");
    targets.insert(
        0,
        TokenTarget {
            path: token_file.clone(),
            audiences: Vec::new(),
            expiration_seconds: 3600,
        },
    );
    let id = PodIdentity {
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string()),
        pod_name: pod.metadata.name.clone().unwrap_or_default(),
        pod_uid: uid.clone(),
    };
    let lifetimes = token::write_initial(&sh.client, &id, &targets).await?;
    let kubeconfig = dir.join("kubeconfig");
    token::write_private(
        &kubeconfig,
        token::kubeconfig_yaml(&cfg.api_server, &cfg.ca_file, &token_file, &id.namespace)
            .as_bytes(),
    )?;
    let token_tasks = targets
        .into_iter()
        .zip(lifetimes)
        .map(|(t, life)| tokio::spawn(token::refresh_loop(sh.client.clone(), id.clone(), t, life)))
        .collect();
    Ok(Sandbox {
        short,
        netns,
        ip,
        volume_dirs: prepared.dirs,
        synced_volumes: prepared.synced,
        kubeconfig,
        token_tasks,
    })
}

fn seed_container(
    c: &Container,
    prev: Option<&k8s_openapi::api::core::v1::ContainerStatus>,
) -> ContainerRt {
    let mut rt = ContainerRt::new(&c.name, c.image.as_deref().unwrap_or(""));
    if let Some(p) = prev {
        let ran = p
            .state
            .as_ref()
            .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
            || p.last_state
                .as_ref()
                .is_some_and(|s| s.terminated.is_some());
        // A container that ran before a kubelet restart is restarted: count it.
        rt.restart_count = p.restart_count + i32::from(ran);
    }
    rt
}

fn initial_rt(pod: &Pod, host_ip: Ipv4Addr) -> PodRt {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let find = |list: &Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>, name: &str| {
        list.iter().flatten().find(|s| s.name == name).cloned()
    };
    PodRt {
        init: spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| seed_container(c, find(&status.init_container_statuses, &c.name).as_ref()))
            .collect(),
        main: spec
            .containers
            .iter()
            .map(|c| seed_container(c, find(&status.container_statuses, &c.name).as_ref()))
            .collect(),
        pod_ip: None,
        host_ip: Some(host_ip),
        start_time: Some(
            status
                .start_time
                .map(|t| crate::status::from_k8s(t.0))
                .unwrap_or_else(Utc::now),
        ),
        init_done: spec.init_containers.as_ref().is_none_or(|v| v.is_empty()),
    }
}

/// Patches pod status whenever `notify` fires and the status changed.
async fn status_loop(
    client: Client,
    mut pod_rx: watch::Receiver<Option<Pod>>,
    rt: Arc<Mutex<PodRt>>,
    notify: Arc<Notify>,
) {
    let mut clock = ConditionClock::default();
    let mut seeded = false;
    let mut last: Option<serde_json::Value> = None;
    loop {
        notify.notified().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Some(pod) = pod_rx.borrow_and_update().clone() else {
            return;
        };
        if !seeded {
            clock.seed(pod.status.as_ref());
            seeded = true;
        }
        let status = {
            let rt = rt.lock().unwrap_or_else(|e| e.into_inner());
            build_status(&pod, &rt, &mut clock, Utc::now())
        };
        let Ok(value) = serde_json::to_value(&status) else {
            continue;
        };
        if last.as_ref() == Some(&value) {
            continue;
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        match api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": value })),
            )
            .await
        {
            Ok(_) => last = Some(value),
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "patching pod status; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                notify.notify_one();
            }
        }
    }
}

/// Deletes the pod object with grace 0 (the final step of a graceful deletion).
async fn complete_deletion(client: &Client, pod: &Pod) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    for attempt in 0..20u64 {
        match api.delete(&name, &dp).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{ns}/{name}"), "deletion completed");
                return;
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "completing deletion; retrying");
                tokio::time::sleep(Duration::from_millis(500 * (attempt + 1).min(6))).await;
            }
        }
    }
}

/// Removes a pod's directory except its container logs.
fn clean_pod_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "log") {
            continue;
        }
        let r = if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if let Err(err) = r {
            tracing::warn!(path = %p.display(), error = %err, "cleaning pod directory");
        }
    }
}

/// Runs one pod until it is deleted, removed, or the kubelet stops.
pub async fn run_pod(
    sh: Arc<Shared>,
    mut pod_rx: watch::Receiver<Option<Pod>>,
    mut kstop: watch::Receiver<bool>,
) {
    let Some(pod) = pod_rx.borrow_and_update().clone() else {
        return;
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let label = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    );
    if deleting(&pod) {
        // Nothing of ours runs (e.g. deleted while the kubelet was down).
        network::teardown(&network::short_id(&uid)).await;
        complete_deletion(&sh.client, &pod).await;
        return;
    }
    if terminal(&pod) {
        if wait_stop(&mut pod_rx, &mut kstop).await == Stop::Delete {
            let latest = pod_rx.borrow().clone();
            if let Some(p) = latest {
                complete_deletion(&sh.client, &p).await;
            }
        }
        return;
    }
    tracing::info!(pod = %label, %uid, "starting pod");
    let dir = pod_dir(&sh.settings.state_dir, &pod);
    let rt = Arc::new(Mutex::new(initial_rt(&pod, sh.settings.host_ip)));
    let notify = Arc::new(Notify::new());
    let status_task = tokio::spawn(status_loop(
        sh.client.clone(),
        pod_rx.clone(),
        rt.clone(),
        notify.clone(),
    ));
    notify.notify_one();

    // Sandbox: network, volumes, tokens. Retried until it works or the pod goes away.
    let mut last_sandbox_error: Option<String> = None;
    let sandbox = loop {
        let current = pod_rx.borrow().clone();
        let Some(current) = current else { break None };
        let attempt = tokio::select! {
            s = setup_sandbox(&sh, &current, &dir) => Some(s),
            _ = wait_stop(&mut pod_rx, &mut kstop) => None,
        };
        match attempt {
            Some(Ok(s)) => break Some(s),
            Some(Err(e)) => {
                if last_sandbox_error.as_ref() != Some(&e) {
                    tracing::warn!(pod = %label, error = %e, "pod sandbox not ready; retrying every 2s");
                    crate::events::emit(
                        &sh.client,
                        &current,
                        None,
                        "Warning",
                        "FailedCreatePodSandBox",
                        &e,
                    );
                    last_sandbox_error = Some(e.clone());
                }
                {
                    let mut guard = rt.lock().unwrap_or_else(|x| x.into_inner());
                    let r = &mut *guard;
                    for c in r.init.iter_mut().chain(r.main.iter_mut()) {
                        c.state = RunState::Waiting {
                            reason: "ContainerCreating".to_string(),
                            message: Some(e.clone()),
                        };
                    }
                }
                notify.notify_one();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = wait_stop(&mut pod_rx, &mut kstop) => {}
                }
            }
            None => break None,
        }
    };
    let Some(mut sandbox) = sandbox else {
        let stop = wait_stop(&mut pod_rx, &mut kstop).await;
        let latest = pod_rx.borrow().clone().unwrap_or(pod);
        finish(&sh, &uid, &dir, stop, latest, None, &status_task).await;
        return;
    };
    {
        let mut r = rt.lock().unwrap_or_else(|x| x.into_inner());
        r.pod_ip = Some(sandbox.ip);
    }
    notify.notify_one();
    tracing::info!(pod = %label, ip = %sandbox.ip, netns = %sandbox.netns, "pod sandbox ready");

    let ctx = Arc::new(PodCtx {
        sh: sh.clone(),
        label: label.clone(),
        pod_rx: pod_rx.clone(),
        rt: rt.clone(),
        notify: notify.clone(),
        short: sandbox.short.clone(),
        netns: sandbox.netns.clone(),
        pod_ip: sandbox.ip,
        pod_dir: dir.clone(),
        volume_dirs: sandbox.volume_dirs.clone(),
        kubeconfig: sandbox.kubeconfig.clone(),
    });
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = RestartMode::of(spec.restart_policy.as_deref().unwrap_or("Always"));
    let (stop_tx, stop_rx) = watch::channel::<Option<Duration>>(None);
    // Secret/configMap/downwardAPI/projected volumes follow their sources until the
    // pod stops (the same stop signal as the containers; awaited below).
    let mut resync = {
        let mut stop = stop_rx.clone();
        tokio::spawn(volumes::resync_loop(
            sh.client.clone(),
            pod_rx.clone(),
            PodFacts {
                pod_ip: sandbox.ip.to_string(),
                host_ip: sh.settings.host_ip.to_string(),
            },
            std::mem::take(&mut sandbox.synced_volumes),
            sh.settings.volume_resync,
            async move {
                let _ = stop.wait_for(|s| s.is_some()).await;
            },
        ))
    };
    let runner = {
        let ctx = ctx.clone();
        let rt = rt.clone();
        let notify = notify.clone();
        let stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let init_mode = if policy == RestartMode::Never {
                RestartMode::Never
            } else {
                RestartMode::OnFailure
            };
            for (i, c) in spec.init_containers.iter().flatten().enumerate() {
                run_container(
                    ctx.clone(),
                    Kind::Init,
                    i,
                    c.clone(),
                    init_mode,
                    stop_rx.clone(),
                )
                .await;
                let ok = {
                    let r = rt.lock().unwrap_or_else(|x| x.into_inner());
                    r.init.get(i).is_some_and(
                        |c| matches!(&c.state, RunState::Terminated(t) if t.exit_code == 0),
                    )
                };
                if !ok || stop_rx.borrow().is_some() {
                    return;
                }
            }
            {
                let mut r = rt.lock().unwrap_or_else(|x| x.into_inner());
                r.init_done = true;
            }
            notify.notify_one();
            let tasks: Vec<_> = spec
                .containers
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    run_container(
                        ctx.clone(),
                        Kind::Main,
                        i,
                        c.clone(),
                        policy,
                        stop_rx.clone(),
                    )
                })
                .collect();
            futures::future::join_all(tasks).await;
        })
    };
    let mut runner = runner;
    let mut network_up = true;
    let stop = tokio::select! {
        s = wait_stop(&mut pod_rx, &mut kstop) => s,
        _ = &mut runner => {
            tracing::info!(pod = %label, "all containers finished");
            network::teardown(&sandbox.short).await;
            network_up = false;
            wait_stop(&mut pod_rx, &mut kstop).await
        }
    };
    let latest = pod_rx.borrow().clone().unwrap_or(pod);
    let grace = match stop {
        Stop::Delete => grace_of(Some(&latest)),
        Stop::Removed | Stop::Kubelet => Duration::from_secs(2),
    };
    tracing::info!(pod = %label, ?stop, grace_secs = grace.as_secs(), "stopping pod");
    let _ = stop_tx.send(Some(grace));
    if !runner.is_finished()
        && tokio::time::timeout(grace + Duration::from_secs(15), &mut runner)
            .await
            .is_err()
    {
        tracing::warn!(pod = %label, "containers did not stop in time");
        runner.abort();
    }
    // The resync task saw the stop: it returns at once, or once the volume write in
    // progress is done (so nothing is written into the pod directory after `finish`
    // cleans it).
    if tokio::time::timeout(Duration::from_secs(10), &mut resync)
        .await
        .is_err()
    {
        tracing::warn!(pod = %label, "volume resync did not stop in time");
        resync.abort();
    }
    for t in &sandbox.token_tasks {
        t.abort();
    }
    if !network_up {
        finish(&sh, &uid, &dir, stop, latest, None, &status_task).await;
    } else {
        finish(
            &sh,
            &uid,
            &dir,
            stop,
            latest,
            Some(&sandbox.short),
            &status_task,
        )
        .await;
    }
}

async fn finish(
    sh: &Arc<Shared>,
    uid: &str,
    dir: &Path,
    stop: Stop,
    pod: Pod,
    short: Option<&str>,
    status_task: &JoinHandle<()>,
) {
    status_task.abort();
    if let Some(short) = short {
        network::teardown(short).await;
    } else {
        network::teardown(&network::short_id(uid)).await;
    }
    match stop {
        Stop::Delete => {
            sh.ipam().release(uid);
            clean_pod_dir(dir);
            complete_deletion(&sh.client, &pod).await;
        }
        Stop::Removed => {
            sh.ipam().release(uid);
            clean_pod_dir(dir);
        }
        Stop::Kubelet => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn restart_modes() {
        assert!(RestartMode::of("Always").restarts(0));
        assert!(RestartMode::of("OnFailure").restarts(1));
        assert!(!RestartMode::of("OnFailure").restarts(0));
        assert!(!RestartMode::of("Never").restarts(1));
    }

    #[test]
    fn seeding_from_previous_status() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u",
                         "deletionGracePeriodSeconds": 5},
            "spec": {"containers": [{"name": "a", "image": "x/studio-testapp:1"}, {"name": "b"}],
                     "initContainers": [{"name": "i"}], "terminationGracePeriodSeconds": 9},
            "status": {"startTime": "2026-01-01T00:00:00Z",
                       "containerStatuses": [{"name": "a", "image": "x", "imageID": "", "ready": true,
                                              "restartCount": 2, "state": {"running": {}}}]}
        }))
        .unwrap();
        let rt = initial_rt(&pod, Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(rt.main[0].restart_count, 3);
        assert_eq!(rt.main[1].restart_count, 0);
        assert_eq!(rt.init.len(), 1);
        assert!(!rt.init_done);
        assert_eq!(
            rt.start_time.unwrap().to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        assert_eq!(grace_of(Some(&pod)), Duration::from_secs(5));
        assert_eq!(grace_of(None), Duration::from_secs(30));
        let d = pod_dir(Path::new("/s"), &pod);
        assert_eq!(d, Path::new("/s/pods/n_p_u"));
    }

    #[test]
    fn pod_dir_cleanup_keeps_logs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("app.log"), b"hello").unwrap();
        std::fs::write(d.path().join("token"), b"t").unwrap();
        std::fs::create_dir_all(d.path().join("volumes/v")).unwrap();
        clean_pod_dir(d.path());
        assert!(d.path().join("app.log").exists());
        assert!(!d.path().join("token").exists());
        assert!(!d.path().join("volumes").exists());
    }

    /// A pod context that needs no API server and no root: host network, no volumes.
    fn offline_ctx(dir: &Path, pod: Pod) -> (Arc<PodCtx>, Arc<Mutex<PodRt>>) {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let settings = Settings {
            nodes: vec!["local-1".into()],
            api_server: "https://127.0.0.1:6443".into(),
            api_host: "127.0.0.1".into(),
            api_port: 6443,
            ca_file: dir.join("ca.crt"),
            bridge: "none".into(),
            gateway: Ipv4Addr::new(10, 213, 0, 1),
            host_ip: Ipv4Addr::LOCALHOST,
            cidr: "10.213.0.0/16".parse().unwrap(),
            bin_dir: dir.join("bin"),
            state_dir: dir.to_path_buf(),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
            volume_resync: Duration::from_secs(10),
        };
        let cidr = settings.cidr;
        let sh = Arc::new(Shared {
            client,
            settings,
            ipam: Mutex::new(Ipam::new(cidr)),
        });
        let rt = Arc::new(Mutex::new(initial_rt(&pod, Ipv4Addr::LOCALHOST)));
        let (_tx, rx) = watch::channel(Some(pod));
        std::mem::forget(_tx);
        let pod_dir = dir.join("pod");
        std::fs::create_dir_all(&pod_dir).unwrap();
        let ctx = Arc::new(PodCtx {
            sh,
            label: "ns/p".into(),
            pod_rx: rx,
            rt: rt.clone(),
            notify: Arc::new(Notify::new()),
            short: "0000test".into(),
            netns: String::new(),
            pod_ip: Ipv4Addr::LOCALHOST,
            pod_dir,
            volume_dirs: HashMap::new(),
            kubeconfig: dir.join("kubeconfig"),
        });
        (ctx, rt)
    }

    fn one_container_pod(policy: &str, container: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "0000test-0000"},
            "spec": {"restartPolicy": policy, "containers": [container]}
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, c)
    }

    async fn until(
        what: &str,
        rt: &Arc<Mutex<PodRt>>,
        f: impl Fn(&ContainerRt) -> bool,
    ) -> ContainerRt {
        for _ in 0..200 {
            {
                let r = rt.lock().unwrap();
                if f(&r.main[0]) {
                    return r.main[0].clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let r = rt.lock().unwrap();
        panic!("timed out waiting for {what}: {:?}", r.main[0]);
    }

    #[tokio::test]
    async fn exiting_containers_restart_with_backoff_and_append_logs() {
        let dir = tempfile::tempdir().unwrap();
        let (pod, c) = one_container_pod(
            "OnFailure",
            json!({"name": "c", "image": "x/sh", "command": ["/bin/sh", "-c", "echo run $POD; exit 3"],
                   "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}),
        );
        let (ctx, rt) = offline_ctx(dir.path(), pod);
        let (stop_tx, stop_rx) = watch::channel(None);
        let task = tokio::spawn(run_container(
            ctx.clone(),
            Kind::Main,
            0,
            c,
            RestartMode::OnFailure,
            stop_rx,
        ));
        let seen = until("two restarts", &rt, |c| c.restart_count >= 2).await;
        assert_eq!(seen.last_state.as_ref().map(|t| t.exit_code), Some(3));
        stop_tx.send(Some(Duration::from_millis(100))).unwrap();
        task.await.unwrap();
        let log = std::fs::read_to_string(ctx.pod_dir.join("c.log")).unwrap();
        assert!(log.matches("run p").count() >= 3, "log: {log:?}");
        let r = rt.lock().unwrap();
        assert!(!r.main[0].ready);
    }

    #[tokio::test]
    async fn never_policy_completes_and_pod_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let (pod, c) = one_container_pod(
            "Never",
            json!({"name": "c", "image": "x/sh", "command": ["/bin/true"]}),
        );
        let (ctx, rt) = offline_ctx(dir.path(), pod.clone());
        let (_stop_tx, stop_rx) = watch::channel(None);
        run_container(ctx, Kind::Main, 0, c, RestartMode::Never, stop_rx).await;
        let r = rt.lock().unwrap().clone();
        assert!(r.main[0].done);
        assert_eq!(r.main[0].restart_count, 0);
        let status = build_status(&pod, &r, &mut ConditionClock::default(), Utc::now());
        assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let (pod, c) = one_container_pod(
            "Always",
            json!({"name": "c", "image": "x/sh", "command": ["/bin/sh", "-c", "trap '' TERM; echo up; while :; do sleep 0.1; done"]}),
        );
        let (ctx, rt) = offline_ctx(dir.path(), pod);
        let (stop_tx, stop_rx) = watch::channel(None);
        let task = tokio::spawn(run_container(
            ctx.clone(),
            Kind::Main,
            0,
            c,
            RestartMode::Always,
            stop_rx,
        ));
        until("running", &rt, |c| {
            matches!(c.state, RunState::Running { .. })
        })
        .await;
        // Let the shell install its trap.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t0 = std::time::Instant::now();
        stop_tx.send(Some(Duration::from_millis(500))).unwrap();
        task.await.unwrap();
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(450),
            "stopped after {took:?}: SIGTERM was not ignored?"
        );
        let r = rt.lock().unwrap().clone();
        match &r.main[0].state {
            RunState::Terminated(t) => assert_eq!((t.exit_code, t.signal), (137, Some(9))),
            other => panic!("unexpected state {other:?}"),
        }
    }

    #[tokio::test]
    async fn failing_liveness_probe_restarts_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let (pod, c) = one_container_pod(
            "Always",
            json!({"name": "c", "image": "x/sh", "command": ["/bin/sh", "-c", "sleep 30"],
                   "livenessProbe": {"exec": {"command": ["/bin/false"]}, "periodSeconds": 1, "failureThreshold": 1,
                                     "terminationGracePeriodSeconds": 1}}),
        );
        let (ctx, rt) = offline_ctx(dir.path(), pod);
        let (stop_tx, stop_rx) = watch::channel(None);
        let task = tokio::spawn(run_container(
            ctx,
            Kind::Main,
            0,
            c,
            RestartMode::Always,
            stop_rx,
        ));
        let seen = until("a liveness restart", &rt, |c| c.restart_count >= 1).await;
        let last = seen.last_state.unwrap();
        assert!(
            last.message
                .unwrap_or_default()
                .contains("Liveness probe failed")
        );
        stop_tx.send(Some(Duration::from_millis(100))).unwrap();
        task.await.unwrap();
    }
}
