//! Shared by `partitions.rs` and `nemesis.rs` (issue 9): an operator-managed
//! StudioCluster (3 data nodes + arbiter, lease 4 s like the shipped example), a
//! [`Recorder`] writing through the `-primary` Service's endpoint, a [`Nemesis`], and
//! [`Jepsen::finish`], which heals everything and runs every checker:
//!
//! - safety: no acknowledged write lost (async: on the final primary or in a member's
//!   quarantine); never two members certainly writable primaries at once (from polls of
//!   every member's status every 250 ms); after the final heal every member's digest
//!   equals the primary's within 30 s;
//! - liveness: after each heal that leaves no fault active, a write invoked after the
//!   heal is acknowledged within lease + 5 s (checked when the schedule left that much
//!   quiet time); the StudioCluster did not say Ready for longer than the operator's
//!   reaction time while no write could be acknowledged for longer than a probe
//!   interval.
//!
//! The seed is printed at the start and in every failure message; a failure prints the
//! members' logs (and the harness dumps the namespace).
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use k8s_openapi::api::{core::v1::Pod, discovery::v1::EndpointSlice};
use kube::Api;
use serde_json::json;
use studio_e2e::{
    history::{self, Gap, History, NodeAccess, Recorder, RecorderConfig, member_state},
    is_ready, name,
    nemesis::{FaultRecord, Member, Nemesis},
};
use studio_harness::{TestEnv, wait_for};

use crate::common::*;

/// The election lease of the test clusters (the shipped example's).
pub const LEASE: Duration = Duration::from_secs(4);
/// The bound of issue 9: writes succeed again within lease + 5 s.
pub const BOUND: Duration = LEASE.saturating_add(Duration::from_secs(5));
/// The nodes' readiness probe period (operator/src/build.rs).
pub const PROBE: Duration = Duration::from_secs(2);
/// How long the status may lag what the nodes can do: the operator re-reads a healthy
/// cluster every 5 s, plus one Ready poll.
pub const STATUS_REACTION: Duration = Duration::from_secs(6);
/// After the final heal, every member's journal reaches the primary's position within
/// this (issue 9's bound).
pub const CONVERGE: Duration = Duration::from_secs(30);

/// How long hashing every member's store may take: 30 s plus 1 s per 5,000 acknowledged
/// writes (a debug build hashes roughly that much per second per member, 4 members).
fn digest_budget(acked: usize) -> Duration {
    Duration::from_secs(30 + (acked / 5_000) as u64)
}

/// The seed: `NEMESIS_SEED`, or a fresh one.
pub fn seed() -> u64 {
    std::env::var("NEMESIS_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// What a test run records beyond the history: checks that failed, and numbers.
pub struct Jepsen {
    pub env: TestEnv,
    _gate: tokio::sync::RwLockReadGuard<'static, ()>,
    pub cluster: String,
    pub seed: u64,
    pub async_mode: bool,
    pub nemesis: Nemesis,
    pub recorder: Option<Recorder>,
    pub pods: Api<Pod>,
    access: NodeAccess,
    failures: Vec<String>,
    notes: Vec<String>,
    /// When the first fault was injected (checks of the status start there).
    pub first_fault: Option<Instant>,
}

/// What [`Jepsen::finish`] checks beyond the common checkers.
#[derive(Default)]
pub struct Expect {
    /// The longest stretch without an acknowledged write from this moment to the end
    /// must stay within [`BOUND`] (a single member's fault: the others can always form
    /// the write quorum).
    pub max_gap_from: Option<Instant>,
    /// Keep writing this long after the final heal before stopping (to see a cluster
    /// wedge after the member returns).
    pub observe_after_heal: Duration,
}

impl Jepsen {
    /// Deploys StudioCluster `cluster` (sync K = 2 or async) in a fresh namespace, waits
    /// for it to be Ready and starts the recorder. `exclusive`: hold the cluster alone
    /// (needed to pause the API server).
    pub async fn start(
        test: &str,
        cluster: &str,
        async_mode: bool,
        exclusive: bool,
        seed: u64,
    ) -> anyhow::Result<Jepsen> {
        eprintln!(
            "[jepsen] {test}: seed {seed} (replay with NEMESIS_SEED={seed}), cluster {cluster}, {} mode",
            if async_mode { "async" } else { "sync" }
        );
        operator().await?;
        let gate = OPERATOR_GATE.read().await;
        let env = if exclusive {
            TestEnv::new_exclusive(test).await?
        } else {
            TestEnv::new(test).await?
        };
        let replication = if async_mode {
            json!({"mode": "async", "syncReplicas": null})
        } else {
            json!({"mode": "sync", "syncReplicas": 2})
        };
        let manifest = cluster_manifest(
            cluster,
            json!({
                "replication": replication,
                "election": {"leaseDurationSeconds": 4, "renewDeadlineSeconds": 3, "retryPeriodSeconds": 1}
            }),
        );
        apply(&env, &format!("{cluster}.json"), &manifest)?;
        wait_ready(&env, cluster, 3, START).await?;
        wait_for("roles to agree", Duration::from_secs(60), || {
            roles_agree(&env, cluster, 3)
        })
        .await?;
        let access = node_access(&env, cluster).await?;
        let nemesis = if exclusive {
            Nemesis::with_api_pause(env.cluster)
        } else {
            Nemesis::new(env.cluster)
        };
        let recorder = Recorder::start(RecorderConfig {
            cluster: cluster.to_string(),
            clients: 3,
            prefix: "nemesis".into(),
            access: access.clone(),
            pods: env.api::<Pod>(),
            slices: env.api::<EndpointSlice>(),
            clusters: Some(studio_api(&env)),
        })?;
        let j = Jepsen {
            pods: env.api(),
            env,
            _gate: gate,
            cluster: cluster.to_string(),
            seed,
            async_mode,
            nemesis,
            recorder: Some(recorder),
            access,
            failures: Vec::new(),
            notes: Vec::new(),
            first_fault: None,
        };
        wait_for(
            "a first acknowledged write",
            Duration::from_secs(30),
            || async { j.history().acked().next().map(|_| ()).context("none yet") },
        )
        .await?;
        Ok(j)
    }

    /// The history so far.
    pub fn history(&self) -> History {
        self.recorder
            .as_ref()
            .map(Recorder::snapshot)
            .unwrap_or_else(|| History {
                start: Instant::now(),
                ops: Vec::new(),
                members: Vec::new(),
                ready: Vec::new(),
            })
    }

    pub fn secs(&self, t: Instant) -> f64 {
        self.recorder
            .as_ref()
            .map_or(0.0, |r| t.saturating_duration_since(r.start).as_secs_f64())
    }

    /// Every member (data nodes and arbiter) as its pod is now.
    pub async fn members(&self) -> anyhow::Result<Vec<Member>> {
        let pods = cluster_pods(&self.env, &self.cluster).await?;
        Ok(pods.iter().filter_map(Member::of).collect())
    }

    /// The member that reports itself a writable primary (waits up to 30 s).
    pub async fn primary(&self) -> anyhow::Result<Member> {
        self.primary_within(Duration::from_secs(30)).await
    }

    /// The member that reports itself a writable primary, waiting up to `timeout`.
    pub async fn primary_within(&self, timeout: Duration) -> anyhow::Result<Member> {
        wait_for("a writable primary", timeout, || async {
            for m in self.members().await? {
                if let Ok(s) = member_state(&self.access, m.ip).await
                    && s.writable_primary()
                {
                    return Ok(m);
                }
            }
            bail!("no member reports itself a writable primary")
        })
        .await
    }

    /// The data nodes other than `primary`.
    pub async fn replicas(&self, primary: &Member) -> anyhow::Result<Vec<Member>> {
        Ok(self
            .members()
            .await?
            .into_iter()
            .filter(|m| m.name != primary.name && !is_arbiter(&self.cluster, &m.name))
            .collect())
    }

    /// Waits until the member's pod is back Ready (after kill -9 or deletion).
    pub async fn wait_back(&self, m: &str) -> anyhow::Result<()> {
        wait_for(
            &format!("{m} back Ready"),
            Duration::from_secs(120),
            || async {
                let p = self.pods.get(m).await?;
                anyhow::ensure!(
                    is_ready(&p) && p.metadata.deletion_timestamp.is_none(),
                    "{m} not Ready"
                );
                Ok(())
            },
        )
        .await
    }

    /// Records a failed check (the test fails at [`Jepsen::finish`]).
    pub fn fail(&mut self, msg: String) {
        eprintln!("[jepsen] FAIL (seed {}): {msg}", self.seed);
        self.failures.push(msg);
    }

    pub fn note(&mut self, msg: String) {
        eprintln!("[jepsen] {msg}");
        self.notes.push(msg);
    }

    /// Checks that a write invoked after `t` is acknowledged within [`BOUND`],
    /// optionally by another member than `not`.
    pub fn check_resumed(&mut self, what: &str, t: Instant, not: Option<Ipv4Addr>) {
        let h = self.history();
        let first = h
            .acked()
            .filter(|o| o.invoke >= t && Some(o.target) != not)
            .map(|o| o.complete)
            .min();
        match first {
            Some(at) if at.duration_since(t) <= BOUND => self.note(format!(
                "{what}: writes resumed after {:.1}s",
                at.duration_since(t).as_secs_f64()
            )),
            Some(at) => self.fail(format!(
                "{what}: writes resumed only after {:.1}s (bound {}s)",
                at.duration_since(t).as_secs_f64(),
                BOUND.as_secs()
            )),
            None => self.fail(format!(
                "{what}: no write acknowledged since (for {:.1}s; bound {}s)",
                t.elapsed().as_secs_f64(),
                BOUND.as_secs()
            )),
        }
    }

    /// Heals everything, runs every checker, prints the numbers; fails (with the seed
    /// and the members' logs) when a check failed or `scenario` did.
    pub async fn finish(
        mut self,
        scenario: anyhow::Result<()>,
        expect: Expect,
    ) -> anyhow::Result<()> {
        if let Err(e) = &scenario {
            self.fail(format!("the scenario stopped: {e:#}"));
        }
        if let Err(e) = self.nemesis.heal_all() {
            self.fail(format!("healing: {e:#}"));
        }
        let healed = Instant::now();
        // Keep writing: until a write after the final heal succeeds (bounded), and the
        // extra observation time.
        let _ = wait_for(
            "a write after the final heal",
            BOUND + Duration::from_secs(20),
            || async {
                self.history()
                    .recovery_after(healed)
                    .map(|_| ())
                    .context("none yet")
            },
        )
        .await;
        let observe_until = healed + expect.observe_after_heal;
        if let Some(left) = observe_until.checked_duration_since(Instant::now()) {
            tokio::time::sleep(left).await;
        }
        let end = Instant::now();
        let h = match self.recorder.take() {
            Some(r) => r.stop().await,
            None => bail!("the recorder is gone"),
        };
        let journal = self.nemesis.journal();
        self.check_liveness(&h, &journal, healed, end);
        if let Some(from) = expect.max_gap_from {
            let g = h.longest_gap(from, end);
            let msg = format!(
                "longest stretch without an acknowledged write: {:.1}s (from {:.1}s to {:.1}s)",
                g.len().as_secs_f64(),
                h.secs(g.from),
                h.secs(g.to)
            );
            if g.len() > BOUND {
                for line in h.ops_during(&g).iter().take(40) {
                    eprintln!("[jepsen] during the gap: {line}");
                }
                self.fail(format!("{msg}, bound {}s", BOUND.as_secs()));
            } else {
                self.note(msg);
            }
        }
        // Status: not Ready while no write can succeed.
        let paused: Vec<Gap> = journal
            .iter()
            .filter(|r| r.kind == "pause-api")
            .map(|r| Gap {
                from: r.injected,
                to: r.healed.unwrap_or(end) + STATUS_REACTION,
            })
            .collect();
        let from = self.first_fault.unwrap_or(h.start);
        let (worst, when) = h.ready_while_unwritable(from, end, PROBE, &paused);
        let msg = format!(
            "longest time Ready=True while no write had succeeded for over {}s: {:.1}s{}",
            PROBE.as_secs(),
            worst.as_secs_f64(),
            when.map(|g| format!(" (from {:.1}s to {:.1}s)", h.secs(g.from), h.secs(g.to)))
                .unwrap_or_default()
        );
        if worst > STATUS_REACTION {
            self.fail(format!("{msg}; allowed {}s", STATUS_REACTION.as_secs()));
        } else {
            self.note(msg);
        }
        // Never two writable primaries.
        let overlaps = h.writable_overlaps();
        if !overlaps.is_empty() {
            self.fail(format!("two writable primaries: {}", overlaps.join("; ")));
        }
        // Convergence and lost writes, against the final primary.
        let lost = self.check_final_state(&h).await;
        let (ok, failed, unknown) = h.counts();
        let failures_seen = h.failure_summary(4);
        let journal_text: Vec<String> = journal
            .iter()
            .map(|r| {
                format!(
                    "{} {} at {:.1}s{}",
                    r.kind,
                    r.target,
                    h.secs(r.injected),
                    r.healed
                        .map(|t| format!(" healed {:.1}s", h.secs(t)))
                        .unwrap_or_default()
                )
            })
            .collect();
        eprintln!(
            "NEMESIS-RESULT test={} mode={} seed={} faults={} acked={ok} failed={failed} unknown={unknown} lost={} quarantined={} two-writable-primaries={} failures={}",
            self.env.ns,
            if self.async_mode { "async" } else { "sync" },
            self.seed,
            journal.len(),
            lost.0,
            lost.1,
            overlaps.len(),
            self.failures.len()
        );
        eprintln!("[jepsen] faults: {}", journal_text.join("; "));
        eprintln!("[jepsen] most frequent write errors: {failures_seen:?}");
        if self.failures.is_empty() {
            remove_scratch(&self.env);
            return self.env.pass().await;
        }
        for p in cluster_pods(&self.env, &self.cluster)
            .await
            .unwrap_or_default()
        {
            eprint!("{}", self.env.pod_logs(&name(&p), 150));
        }
        bail!(
            "seed {} (replay: NEMESIS_SEED={}): {} failed check(s):\n- {}",
            self.seed,
            self.seed,
            self.failures.len(),
            self.failures.join("\n- ")
        )
    }

    /// After each heal that leaves no other fault active (and for kill -9 / pod
    /// deletion, after the fault): a write invoked afterwards is acknowledged within
    /// [`BOUND`]. Heals followed by another fault within the bound are judged only when
    /// writes did resume before it.
    fn check_liveness(
        &mut self,
        h: &History,
        journal: &[FaultRecord],
        final_heal: Instant,
        end: Instant,
    ) {
        let mut worst: BTreeMap<&'static str, f64> = BTreeMap::new();
        let mut unmeasured: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut points: Vec<(Instant, &'static str, String)> = journal
            .iter()
            .filter_map(|r| r.healed.map(|t| (t, r.kind, r.target.clone())))
            .collect();
        points.push((final_heal, "final-heal", String::new()));
        for (t, kind, target) in points {
            let others_active = journal
                .iter()
                .any(|o| o.injected <= t && o.healed.is_none_or(|x| x > t));
            if others_active {
                continue;
            }
            let next_fault = journal
                .iter()
                .map(|o| o.injected)
                .filter(|x| *x > t)
                .min()
                .unwrap_or(end);
            let rec = h.recovery_after(t);
            let window = next_fault.saturating_duration_since(t);
            let judged = window > BOUND;
            // A heal whose next fault came before writes resumed measures that fault,
            // not this one (a flap healed at the instant a 2|2 split began once showed
            // up as a 23.5 s "flap" recovery): it is left out of the numbers too.
            let measured = judged || rec.is_some_and(|d| d <= window);
            if measured {
                let secs = rec.map_or(f64::INFINITY, |d| d.as_secs_f64());
                let e = worst.entry(kind).or_insert(0.0);
                *e = e.max(secs);
            } else {
                *unmeasured.entry(kind).or_insert(0) += 1;
            }
            match rec {
                Some(d) if d <= BOUND => {}
                _ if !judged => {}
                Some(d) => self.fail(format!(
                    "after healing {kind} {target} at {:.1}s the first write succeeded {:.1}s later (bound {}s)",
                    h.secs(t),
                    d.as_secs_f64(),
                    BOUND.as_secs()
                )),
                None => self.fail(format!(
                    "after healing {kind} {target} at {:.1}s no write succeeded any more ({:.1}s observed; bound {}s)",
                    h.secs(t),
                    end.saturating_duration_since(t).as_secs_f64(),
                    BOUND.as_secs()
                )),
            }
        }
        let per_kind: Vec<String> = worst
            .iter()
            .map(|(k, v)| {
                if v.is_finite() {
                    format!("{k}={v:.1}s")
                } else {
                    format!("{k}=never")
                }
            })
            .collect();
        eprintln!(
            "NEMESIS-RECOVERY seed={} worst write unavailability after a heal, per fault kind: {}",
            self.seed,
            per_kind.join(" ")
        );
        if !unmeasured.is_empty() {
            eprintln!(
                "NEMESIS-RECOVERY heals not measured (the next fault began before writes resumed): {unmeasured:?}"
            );
        }
    }

    /// Finds the final primary, waits for every member's digest to equal it, reads back
    /// every acknowledged write. Returns (lost, quarantined).
    async fn check_final_state(&mut self, h: &History) -> (usize, usize) {
        let primary = match self.primary().await {
            Ok(p) => p,
            Err(e) => {
                self.fail(format!("no writable primary after the final heal: {e:#}"));
                return (0, 0);
            }
        };
        let members: Vec<(String, Ipv4Addr)> = match self.members().await {
            Ok(m) => m.into_iter().map(|m| (m.name, m.ip)).collect(),
            Err(e) => {
                self.fail(format!("listing the members: {e:#}"));
                return (0, 0);
            }
        };
        // Convergence (the bound of issue 9) is the journals reaching the same position;
        // the digests then verify the content, with a budget that grows with the data
        // because hashing a store is linear in it.
        let t0 = Instant::now();
        let converged = wait_for(
            "every member's journal position to equal the primary's",
            CONVERGE,
            || async {
                let p = history::positions(&self.access, &members).await?;
                let distinct: std::collections::BTreeSet<&String> = p.values().collect();
                anyhow::ensure!(distinct.len() <= 1, "positions {p:?}");
                Ok(())
            },
        )
        .await;
        match converged {
            Ok(()) => self.note(format!(
                "every member reached the primary {}'s position {:.1}s after the writers stopped",
                primary.name,
                t0.elapsed().as_secs_f64()
            )),
            Err(e) => self.fail(format!("convergence: {e:#}")),
        }
        let budget = digest_budget(h.counts().0);
        let t1 = Instant::now();
        let verified = wait_for(
            "every member's digest to equal the primary's",
            budget,
            || async {
                let d = history::digests(&self.access, &members, budget).await?;
                anyhow::ensure!(history::digests_agree(&d), "digests {d:?}");
                Ok(())
            },
        )
        .await;
        match verified {
            Ok(()) => self.note(format!(
                "every member's content digest equals the primary's (verified in {:.1}s, budget {}s)",
                t1.elapsed().as_secs_f64(),
                budget.as_secs()
            )),
            Err(e) => self.fail(format!("digest verification: {e:#}")),
        }
        let ips: Vec<Ipv4Addr> = members.iter().map(|(_, ip)| *ip).collect();
        match history::lost_writes(h, &self.access, primary.ip, &ips, self.async_mode).await {
            Ok(r) => {
                if !r.lost.is_empty() {
                    self.fail(format!(
                        "{} of {} acknowledged writes lost (not on the final primary {}{}): {:?}",
                        r.lost.len(),
                        r.checked,
                        primary.name,
                        if self.async_mode {
                            " nor in a quarantine"
                        } else {
                            ""
                        },
                        &r.lost[..r.lost.len().min(20)]
                    ));
                }
                if !r.quarantined.is_empty() {
                    self.note(format!(
                        "{} acknowledged async writes are in a quarantine, not on the primary",
                        r.quarantined.len()
                    ));
                }
                (r.lost.len(), r.quarantined.len())
            }
            Err(e) => {
                self.fail(format!("reading the acknowledged writes back: {e:#}"));
                (0, 0)
            }
        }
    }
}
