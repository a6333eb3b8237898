//! A Jepsen-style history of a cluster under faults (issue 9): several concurrent
//! clients write unique keys through the `-primary` Service's endpoint (its ready
//! EndpointSlice address, as a user's client would reach it), every operation recorded
//! as invoke + ok / fail / unknown with times; meanwhile every member's
//! `/api/v1/cluster/status` and the StudioCluster's Ready condition are polled. The
//! checkers are pure functions of the recorded [`History`] (plus [`lost_writes`] and
//! [`digests`], which read the cluster after the final heal).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use k8s_openapi::api::{core::v1::Pod, discovery::v1::EndpointSlice};
use kube::{
    Api,
    api::{DynamicObject, ListParams},
};
use serde_json::{Value, json};

use crate::{name, pod_ip, ready_endpoints};

/// The port every node listens on.
pub const NODE_PORT: u16 = 8080;
/// With spec.tls: the nodes' internal routes' own port (members and the operator).
pub const INTERNAL_PORT: u16 = 8081;

/// How an operation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Acknowledged (200/201): it must survive.
    Ok,
    /// Refused for sure (an HTTP error answer, or the connection was never made).
    Fail(String),
    /// Timed out or the connection broke after the request was sent: it may or may not
    /// have happened.
    Unknown(String),
}

/// One write: which client, which key, to whom, when it was invoked and completed.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub key: String,
    pub target: Ipv4Addr,
    pub invoke: Instant,
    pub complete: Instant,
    pub outcome: Outcome,
}

/// One poll of a member's cluster status.
#[derive(Debug, Clone)]
pub struct MemberSample {
    pub member: String,
    pub sent: Instant,
    pub recv: Instant,
    /// None: unreachable or unparsable.
    pub state: Option<MemberState>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemberState {
    pub role: String,
    pub read_only: bool,
    pub term: u64,
}

impl MemberState {
    pub fn writable_primary(&self) -> bool {
        self.role == "primary" && !self.read_only
    }
}

/// One poll of the StudioCluster's Ready condition (None: the API did not answer).
#[derive(Debug, Clone)]
pub struct ReadySample {
    pub at: Instant,
    pub ready: Option<bool>,
}

/// What the recorder needs to know about the cluster.
pub struct RecorderConfig {
    /// StudioCluster name (labels `studio.cms.io/cluster=<name>`, Service
    /// `<name>-primary`).
    pub cluster: String,
    pub clients: usize,
    /// Keys are `<prefix>/c<client>-<n>`.
    pub prefix: String,
    /// How to reach the nodes (scheme, clients, a user JWT allowed to write).
    pub access: NodeAccess,
    pub pods: Api<Pod>,
    pub slices: Api<EndpointSlice>,
    /// The StudioCluster objects' API (None: no Ready condition to poll).
    pub clusters: Option<Api<DynamicObject>>,
}

#[derive(Default)]
struct Shared {
    ops: Mutex<Vec<Op>>,
    members: Mutex<Vec<MemberSample>>,
    ready: Mutex<Vec<ReadySample>>,
    target: Mutex<Vec<Ipv4Addr>>,
    member_ips: Mutex<Vec<(String, Ipv4Addr)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running writers and pollers.
pub struct Recorder {
    pub start: Instant,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Everything recorded.
#[derive(Debug, Clone)]
pub struct History {
    pub start: Instant,
    pub ops: Vec<Op>,
    pub members: Vec<MemberSample>,
    pub ready: Vec<ReadySample>,
}

/// How the harness reaches a cluster's nodes, as a user and as a member would.
#[derive(Clone)]
pub struct NodeAccess {
    /// `https` for a cluster with spec.tls, else `http`.
    pub scheme: &'static str,
    /// Trusts the cluster CA (with TLS); presents no client certificate.
    pub user: reqwest::Client,
    /// Presents a member certificate (with TLS) for internal routes; otherwise `user`.
    pub member: reqwest::Client,
    /// A user JWT (editor role).
    pub jwt: String,
    /// Without TLS: the cluster token internal routes take instead of a certificate.
    pub cluster_token: Option<String>,
    /// Where internal routes are served: [`INTERNAL_PORT`] with TLS, else [`NODE_PORT`].
    pub internal_port: u16,
}

impl NodeAccess {
    pub fn url(&self, ip: Ipv4Addr, path: &str) -> String {
        format!("{}://{ip}:{NODE_PORT}{path}", self.scheme)
    }

    /// A user request (bearer JWT) with its own timeout.
    pub fn as_user(
        &self,
        method: reqwest::Method,
        ip: Ipv4Addr,
        path: &str,
        timeout: Duration,
    ) -> reqwest::RequestBuilder {
        self.user
            .request(method, self.url(ip, path))
            .bearer_auth(&self.jwt)
            .timeout(timeout)
    }

    /// A GET as a member (certificate, or the cluster token), on the internal port.
    pub fn as_member(
        &self,
        ip: Ipv4Addr,
        path: &str,
        timeout: Duration,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}://{ip}:{}{path}", self.scheme, self.internal_port);
        let req = self.member.get(url).timeout(timeout);
        match &self.cluster_token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }
}

/// A member's cluster status.
pub async fn member_state(access: &NodeAccess, ip: Ipv4Addr) -> anyhow::Result<MemberState> {
    let v: Value = access
        .as_user(
            reqwest::Method::GET,
            ip,
            "/api/v1/cluster/status",
            Duration::from_secs(1),
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(MemberState {
        role: v["role"].as_str().unwrap_or_default().to_string(),
        read_only: v["readOnly"].as_bool().unwrap_or(true),
        term: v["term"].as_u64().unwrap_or(0),
    })
}

impl Recorder {
    /// Starts the endpoint tracker, the member and Ready pollers and `clients` writers.
    pub fn start(cfg: RecorderConfig) -> anyhow::Result<Recorder> {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let mut tasks = Vec::new();
        let start = Instant::now();
        // The -primary Service's ready endpoints.
        {
            let (stop, shared, slices) = (stop.clone(), shared.clone(), cfg.slices.clone());
            let svc = format!("{}-primary", cfg.cluster);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let r = tokio::time::timeout(
                        Duration::from_secs(2),
                        ready_endpoints(&slices, &svc),
                    )
                    .await;
                    // An unanswered API keeps the last known endpoints (as kube-proxy would).
                    if let Ok(Ok(eps)) = r {
                        *lock(&shared.target) = eps.into_iter().collect();
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }));
        }
        // The members' addresses.
        {
            let (stop, shared, pods) = (stop.clone(), shared.clone(), cfg.pods.clone());
            let selector = format!("studio.cms.io/cluster={}", cfg.cluster);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let r = tokio::time::timeout(
                        Duration::from_secs(2),
                        pods.list(&ListParams::default().labels(&selector)),
                    )
                    .await;
                    if let Ok(Ok(list)) = r {
                        *lock(&shared.member_ips) = list
                            .items
                            .iter()
                            .filter_map(|p| Some((name(p), pod_ip(p)?)))
                            .collect();
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }));
        }
        // Every member's status, every 250 ms.
        {
            let (stop, shared) = (stop.clone(), shared.clone());
            let access = cfg.access.clone();
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let members = lock(&shared.member_ips).clone();
                    let polls = members.into_iter().map(|(m, ip)| {
                        let access = &access;
                        async move {
                            let sent = Instant::now();
                            let state = member_state(access, ip).await.ok();
                            MemberSample {
                                member: m,
                                sent,
                                recv: Instant::now(),
                                state,
                            }
                        }
                    });
                    let samples = futures::future::join_all(polls).await;
                    lock(&shared.members).extend(samples);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }));
        }
        // The StudioCluster's Ready condition, every 500 ms.
        if let Some(api) = cfg.clusters.clone() {
            let (stop, shared, c) = (stop.clone(), shared.clone(), cfg.cluster.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let at = Instant::now();
                    let ready =
                        match tokio::time::timeout(Duration::from_secs(2), api.get(&c)).await {
                            Ok(Ok(obj)) => Some(
                                obj.data["status"]["conditions"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .any(|c| c["type"] == "Ready" && c["status"] == "True"),
                            ),
                            _ => None,
                        };
                    lock(&shared.ready).push(ReadySample { at, ready });
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }));
        }
        // The writers.
        for i in 0..cfg.clients {
            let (stop, shared) = (stop.clone(), shared.clone());
            let (access, prefix) = (cfg.access.clone(), cfg.prefix.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let targets = lock(&shared.target).clone();
                    if targets.is_empty() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    let ip = targets[(i + n as usize) % targets.len()];
                    n += 1;
                    let key = format!("{prefix}/c{i}-{n}");
                    let invoke = Instant::now();
                    let path = format!("/api/v1/content/{key}");
                    let r = access
                        .as_user(reqwest::Method::PUT, ip, &path, Duration::from_secs(5))
                        .json(&json!({"type": "e2e", "properties": {"value": key}}))
                        .send()
                        .await;
                    let outcome = match r {
                        Ok(resp) if resp.status().is_success() => Outcome::Ok,
                        Ok(resp) => {
                            let code = resp.status().as_u16();
                            let body = resp.text().await.unwrap_or_default();
                            Outcome::Fail(format!("HTTP {code}: {}", truncate(&body, 160)))
                        }
                        Err(e) if e.is_connect() => Outcome::Fail(format!("connect: {e}")),
                        Err(e) => Outcome::Unknown(format!("{e}")),
                    };
                    let ok = outcome == Outcome::Ok;
                    lock(&shared.ops).push(Op {
                        client: i,
                        key,
                        target: ip,
                        invoke,
                        complete: Instant::now(),
                        outcome,
                    });
                    let pause = if ok { 20 } else { 50 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }));
        }
        Ok(Recorder {
            start,
            stop,
            shared,
            tasks,
        })
    }

    /// A copy of what was recorded so far.
    pub fn snapshot(&self) -> History {
        History {
            start: self.start,
            ops: lock(&self.shared.ops).clone(),
            members: lock(&self.shared.members).clone(),
            ready: lock(&self.shared.ready).clone(),
        }
    }

    /// Stops every task; returns the history.
    pub async fn stop(mut self) -> History {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        self.snapshot()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    let t: String = s.chars().take(n).collect();
    t.replace('\n', " ")
}

/// A stretch of time without any acknowledged write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gap {
    pub from: Instant,
    pub to: Instant,
}

impl Gap {
    pub fn len(&self) -> Duration {
        self.to.saturating_duration_since(self.from)
    }
    pub fn is_empty(&self) -> bool {
        self.len().is_zero()
    }
}

impl History {
    pub fn secs(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.start).as_secs_f64()
    }

    pub fn acked(&self) -> impl Iterator<Item = &Op> {
        self.ops.iter().filter(|o| o.outcome == Outcome::Ok)
    }

    /// (ok, fail, unknown).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for o in &self.ops {
            match o.outcome {
                Outcome::Ok => c.0 += 1,
                Outcome::Fail(_) => c.1 += 1,
                Outcome::Unknown(_) => c.2 += 1,
            }
        }
        c
    }

    /// The stretches within [from, to] between consecutive acknowledgements (and from
    /// `from` to the first, from the last to `to`).
    pub fn gaps(&self, from: Instant, to: Instant) -> Vec<Gap> {
        let mut acks: Vec<Instant> = self
            .acked()
            .map(|o| o.complete)
            .filter(|t| *t >= from && *t <= to)
            .collect();
        acks.sort();
        let mut out = Vec::new();
        let mut prev = from;
        for t in acks {
            out.push(Gap { from: prev, to: t });
            prev = t;
        }
        out.push(Gap { from: prev, to });
        out
    }

    /// The longest stretch without an acknowledged write within [from, to].
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Gap {
        self.gaps(from, to)
            .into_iter()
            .max_by_key(|g| g.len())
            .unwrap_or(Gap { from, to })
    }

    /// The operations in flight during `gap`, one line each (for failure reports): what
    /// the writers were waiting on while nothing was acknowledged.
    pub fn ops_during(&self, gap: &Gap) -> Vec<String> {
        self.ops
            .iter()
            .filter(|o| o.complete >= gap.from && o.invoke <= gap.to)
            .map(|o| {
                format!(
                    "client {} -> {} invoked {:.1}s completed {:.1}s: {}",
                    o.client,
                    o.target,
                    self.secs(o.invoke),
                    self.secs(o.complete),
                    match &o.outcome {
                        Outcome::Ok => "ok".to_string(),
                        Outcome::Fail(s) => format!("fail {}", truncate(s, 100)),
                        Outcome::Unknown(s) => format!("unknown {}", truncate(s, 100)),
                    }
                )
            })
            .collect()
    }

    /// How long after `t` the first write invoked at or after `t` was acknowledged.
    pub fn recovery_after(&self, t: Instant) -> Option<Duration> {
        self.acked()
            .filter(|o| o.invoke >= t)
            .map(|o| o.complete.duration_since(t))
            .min()
    }

    /// The most frequent failure answers (for reports).
    pub fn failure_summary(&self, n: usize) -> Vec<(String, usize)> {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for o in &self.ops {
            let msg = match &o.outcome {
                Outcome::Ok => continue,
                Outcome::Fail(s) => format!("fail {}", truncate(s, 100)),
                Outcome::Unknown(s) => format!("unknown {}", truncate(s, 60)),
            };
            *m.entry(msg).or_default() += 1;
        }
        let mut v: Vec<(String, usize)> = m.into_iter().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v.truncate(n);
        v
    }

    /// Intervals during which a member certainly was a writable primary: a run of
    /// consecutive successful polls saying so in one term, from the answer of the first
    /// to the sending of the last (an unreachable or other answer ends the run).
    pub fn writable_intervals(&self) -> BTreeMap<String, Vec<(Instant, Instant, u64)>> {
        let mut by_member: BTreeMap<String, Vec<&MemberSample>> = BTreeMap::new();
        for s in &self.members {
            by_member.entry(s.member.clone()).or_default().push(s);
        }
        let mut out: BTreeMap<String, Vec<(Instant, Instant, u64)>> = BTreeMap::new();
        for (m, mut samples) in by_member {
            samples.sort_by_key(|s| s.sent);
            let mut run: Option<(Instant, Instant, u64)> = None;
            for s in samples {
                match &s.state {
                    Some(st) if st.writable_primary() => match &mut run {
                        Some((_, last, term)) if *term == st.term => *last = s.sent,
                        _ => {
                            if let Some(r) = run.take() {
                                out.entry(m.clone()).or_default().push(r);
                            }
                            run = Some((s.recv, s.sent, st.term));
                        }
                    },
                    _ => {
                        if let Some(r) = run.take() {
                            out.entry(m.clone()).or_default().push(r);
                        }
                    }
                }
            }
            if let Some(r) = run {
                out.entry(m.clone()).or_default().push(r);
            }
        }
        out
    }

    /// Times when two members were certainly writable primaries at once.
    pub fn writable_overlaps(&self) -> Vec<String> {
        let iv = self.writable_intervals();
        let members: Vec<&String> = iv.keys().collect();
        let mut out = Vec::new();
        for (i, a) in members.iter().enumerate() {
            for b in members.iter().skip(i + 1) {
                for (af, at, aterm) in &iv[*a] {
                    for (bf, bt, bterm) in &iv[*b] {
                        let from = (*af).max(*bf);
                        let to = (*at).min(*bt);
                        if from < to {
                            out.push(format!(
                                "{a} (term {aterm}) and {b} (term {bterm}) both writable primaries from {:.2}s to {:.2}s",
                                self.secs(from),
                                self.secs(to)
                            ));
                        }
                    }
                }
            }
        }
        out
    }

    /// The longest time the StudioCluster said Ready=True while no write had been
    /// acknowledged for longer than `probe` (within [from, to], ignoring stretches
    /// without writes that touch one of `exclude`, e.g. an API server pause during
    /// which no status can be written); with when it was.
    pub fn ready_while_unwritable(
        &self,
        from: Instant,
        to: Instant,
        probe: Duration,
        exclude: &[Gap],
    ) -> (Duration, Option<Gap>) {
        let mut worst = (Duration::ZERO, None);
        for g in self.gaps(from, to) {
            if g.len() <= probe || exclude.iter().any(|x| x.from < g.to && g.from < x.to) {
                continue;
            }
            let w_from = g.from + probe;
            let mut run: Option<(Instant, Instant)> = None;
            let mut samples: Vec<&ReadySample> = self
                .ready
                .iter()
                .filter(|s| s.at >= w_from && s.at <= g.to)
                .collect();
            samples.sort_by_key(|s| s.at);
            for s in samples {
                if s.ready == Some(true) {
                    run = Some(match run {
                        Some((f, _)) => (f, s.at),
                        None => (s.at, s.at),
                    });
                    if let Some((f, t)) = run
                        && t - f > worst.0
                    {
                        worst = (t - f, Some(Gap { from: f, to: t }));
                    }
                } else {
                    run = None;
                }
            }
        }
        worst
    }

    /// The member that was last seen a writable primary.
    pub fn last_writable(&self) -> Option<String> {
        self.members
            .iter()
            .filter(|s| s.state.as_ref().is_some_and(MemberState::writable_primary))
            .max_by_key(|s| s.sent)
            .map(|s| s.member.clone())
    }
}

/// What became of the acknowledged writes.
#[derive(Debug, Default)]
pub struct LostReport {
    pub checked: usize,
    /// Acknowledged, absent on the final primary, found in a member's quarantine.
    pub quarantined: Vec<String>,
    /// Acknowledged and gone: neither on the final primary nor (when allowed) in a
    /// quarantine.
    pub lost: Vec<String>,
}

/// The quarantine list of a member, as JSON text.
pub async fn quarantine(access: &NodeAccess, ip: Ipv4Addr) -> anyhow::Result<String> {
    let resp = access
        .as_member(ip, "/internal/v1/admin/quarantine", Duration::from_secs(10))
        .send()
        .await?;
    ensure!(resp.status().is_success(), "quarantine: {}", resp.status());
    Ok(resp.text().await?)
}

/// Reads every acknowledged key back from the final primary; a key absent there counts
/// as quarantined when `quarantine_ok` (async mode) and some member's quarantine holds
/// it, as lost otherwise.
pub async fn lost_writes(
    h: &History,
    access: &NodeAccess,
    primary: Ipv4Addr,
    members: &[Ipv4Addr],
    quarantine_ok: bool,
) -> anyhow::Result<LostReport> {
    let keys: Vec<String> = h.acked().map(|o| o.key.clone()).collect();
    let mut absent = Vec::new();
    for chunk in keys.chunks(16) {
        let gets = chunk.iter().map(|k| {
            let path = format!("/api/v1/content/{k}");
            async move {
                let r = access
                    .as_user(
                        reqwest::Method::GET,
                        primary,
                        &path,
                        Duration::from_secs(10),
                    )
                    .send()
                    .await
                    .with_context(|| format!("GET {k} from the primary {primary}"))?;
                anyhow::Ok((k.clone(), r.status().as_u16()))
            }
        });
        for r in futures::future::join_all(gets).await {
            let (k, code) = r?;
            match code {
                200 => {}
                404 => absent.push(k),
                c => anyhow::bail!("GET {k} from the primary {primary}: HTTP {c}"),
            }
        }
    }
    let mut report = LostReport {
        checked: keys.len(),
        ..Default::default()
    };
    if absent.is_empty() {
        return Ok(report);
    }
    let mut quarantines = String::new();
    if quarantine_ok {
        for ip in members {
            if let Ok(q) = quarantine(access, *ip).await {
                quarantines.push_str(&q);
            }
        }
    }
    for k in absent {
        if quarantine_ok && quarantines.contains(&format!("{k}\"")) {
            report.quarantined.push(k);
        } else {
            report.lost.push(k);
        }
    }
    Ok(report)
}

/// GET `path` from every member (as a member) and summarise each answer.
async fn from_each_member(
    access: &NodeAccess,
    members: &[(String, Ipv4Addr)],
    path: &str,
    timeout: Duration,
    summarise: fn(&Value) -> String,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (m, ip) in members {
        let v: Value = access
            .as_member(*ip, path, timeout)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("{path} of {m}"))?
            .json()
            .await
            .with_context(|| format!("{path} of {m}"))?;
        out.insert(m.clone(), summarise(&v));
    }
    Ok(out)
}

/// Every member's journal position (`seq@last_term`, from the cheap status route): the
/// members have converged when these agree; the digests then prove the content does.
pub async fn positions(
    access: &NodeAccess,
    members: &[(String, Ipv4Addr)],
) -> anyhow::Result<BTreeMap<String, String>> {
    from_each_member(
        access,
        members,
        "/api/v1/cluster/status",
        Duration::from_secs(5),
        |v| {
            format!(
                "{}@{}",
                v["seq"].as_u64().unwrap_or(0),
                v["lastTerm"].as_u64().unwrap_or(0)
            )
        },
    )
    .await
}

/// Every member's content digest. Hashing the whole store takes time proportional to
/// the data (seconds per 100k writes in a debug build), hence the caller's `timeout`.
pub async fn digests(
    access: &NodeAccess,
    members: &[(String, Ipv4Addr)],
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, String>> {
    from_each_member(access, members, "/internal/v1/admin/digest", timeout, |v| {
        format!(
            "{} @ seq {}",
            v["digest"].as_str().unwrap_or("?"),
            v["seq"].as_u64().unwrap_or(0)
        )
    })
    .await
}

/// Do all the digests agree (ignoring the position suffix)?
pub fn digests_agree(d: &BTreeMap<String, String>) -> bool {
    let set: BTreeSet<&str> = d
        .values()
        .map(|v| v.split(" @ ").next().unwrap_or(v))
        .collect();
    set.len() <= 1
}

/// A small deterministic generator (splitmix64) for nemesis schedules: the same seed
/// gives the same schedule.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi] (inclusive).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        if v.is_empty() {
            None
        } else {
            v.get(self.range(0, v.len() as u64 - 1) as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(
        start: Instant,
        m: &str,
        at_ms: u64,
        writable: Option<bool>,
        term: u64,
    ) -> MemberSample {
        let sent = start + Duration::from_millis(at_ms);
        MemberSample {
            member: m.into(),
            sent,
            recv: sent + Duration::from_millis(5),
            state: writable.map(|w| MemberState {
                role: if w {
                    "primary".into()
                } else {
                    "replica".into()
                },
                read_only: !w,
                term,
            }),
        }
    }

    fn op(start: Instant, invoke_ms: u64, complete_ms: u64, ok: bool) -> Op {
        Op {
            client: 0,
            key: format!("k{invoke_ms}"),
            target: Ipv4Addr::LOCALHOST,
            invoke: start + Duration::from_millis(invoke_ms),
            complete: start + Duration::from_millis(complete_ms),
            outcome: if ok {
                Outcome::Ok
            } else {
                Outcome::Unknown("timeout".into())
            },
        }
    }

    fn history(start: Instant) -> History {
        History {
            start,
            ops: Vec::new(),
            members: Vec::new(),
            ready: Vec::new(),
        }
    }

    #[test]
    fn overlapping_writable_primaries_are_found_and_handovers_are_not() {
        let start = Instant::now();
        let mut h = history(start);
        // a writable 0..1000 (term 1), b writable from 1250 (term 2): a clean handover.
        for t in (0..=1000).step_by(250) {
            h.members.push(sample(start, "a", t, Some(true), 1));
        }
        h.members.push(sample(start, "a", 1250, Some(false), 2));
        for t in (1250..=2000).step_by(250) {
            h.members.push(sample(start, "b", t, Some(true), 2));
        }
        assert!(
            h.writable_overlaps().is_empty(),
            "{:?}",
            h.writable_overlaps()
        );
        // a back as writable 1500..2000 in term 1 while b is: a violation.
        for t in (1500..=2000).step_by(250) {
            h.members.push(sample(start, "a", t, Some(true), 1));
        }
        assert_eq!(
            h.writable_overlaps().len(),
            1,
            "{:?}",
            h.writable_overlaps()
        );
    }

    #[test]
    fn an_unreachable_poll_ends_a_writable_run() {
        let start = Instant::now();
        let mut h = history(start);
        h.members.push(sample(start, "a", 0, Some(true), 1));
        h.members.push(sample(start, "a", 250, None, 1));
        h.members.push(sample(start, "a", 5000, Some(true), 1));
        h.members.push(sample(start, "b", 1000, Some(true), 2));
        h.members.push(sample(start, "b", 2000, Some(true), 2));
        assert!(h.writable_overlaps().is_empty());
    }

    #[test]
    fn gaps_recovery_and_ready_while_unwritable() {
        let start = Instant::now();
        let mut h = history(start);
        h.ops.push(op(start, 0, 100, true));
        h.ops.push(op(start, 200, 5200, false));
        h.ops.push(op(start, 5300, 9000, true));
        h.ops.push(op(start, 9100, 9200, true));
        let end = start + Duration::from_millis(10_000);
        let g = h.longest_gap(start, end);
        assert_eq!(g.len(), Duration::from_millis(8900));
        assert_eq!(
            h.recovery_after(start + Duration::from_millis(5000)),
            Some(Duration::from_millis(4000))
        );
        assert_eq!(h.recovery_after(start + Duration::from_millis(9500)), None);
        for t in (0..10_000).step_by(500) {
            h.ready.push(ReadySample {
                at: start + Duration::from_millis(t),
                ready: Some(t < 6000),
            });
        }
        // The gap 100..9000; after a 2 s probe interval Ready was True 2100..5500.
        let (worst, _) = h.ready_while_unwritable(start, end, Duration::from_secs(2), &[]);
        assert_eq!(worst, Duration::from_millis(3000));
        let excluded = [Gap {
            from: start + Duration::from_millis(3000),
            to: end,
        }];
        let (worst, _) = h.ready_while_unwritable(start, end, Duration::from_secs(2), &excluded);
        assert_eq!(worst, Duration::ZERO);
    }

    #[test]
    fn the_generator_is_deterministic() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        for _ in 0..100 {
            let x = a.range(1, 30);
            assert_eq!(x, b.range(1, 30));
            assert!((1..=30).contains(&x));
        }
    }
}
