//! Issue 9, the nemesis suite: a randomized schedule of faults, from a seed, against a
//! sync (K = 2) and an async operator-managed cluster (3 data nodes + arbiter, lease
//! 4 s) under three concurrent writers. Faults: a member isolated from everything; the
//! primary cut from its peers only; a member cut from the API server only; the members
//! split into two groups; a member's link flapping; SIGSTOP/SIGCONT; kill -9; pod
//! deletion; the kube-apiserver paused. Each is healed after 1–30 s; sometimes a second
//! fault overlaps the first. After each episode the writers get the bound (lease + 5 s)
//! to succeed again before the next one. The checkers are in `support/jepsen.rs`.
//!
//!   cargo test -p studio-e2e --test nemesis -- --test-threads=1 --nocapture
//!   NEMESIS_SEED=<seed> replays a schedule; NEMESIS_MINUTES=60 runs a soak (default
//!   1.5 minutes of faults per cluster).
//!
//! Pausing the API server disturbs every test on the cluster, so these tests hold the
//! harness's exclusive lock.

mod common;
#[path = "support/jepsen.rs"]
mod jepsen;

use std::time::{Duration, Instant};

use jepsen::{BOUND, Expect, Jepsen, seed};
use studio_e2e::{
    history::Rng,
    nemesis::{FaultId, Member},
};

/// Faults of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Isolate,
    CutPrimaryFromPeers,
    CutFromApi,
    Split,
    Flap,
    Freeze,
    Kill9,
    DeletePod,
    PauseApi,
}

const KINDS: [Kind; 9] = [
    Kind::Isolate,
    Kind::CutPrimaryFromPeers,
    Kind::CutFromApi,
    Kind::Split,
    Kind::Flap,
    Kind::Freeze,
    Kind::Kill9,
    Kind::DeletePod,
    Kind::PauseApi,
];

/// Which member a fault hits, resolved when it is injected.
#[derive(Debug, Clone, Copy)]
enum Who {
    Primary,
    /// The n-th of the other members (data nodes and arbiter), by name.
    Other(u64),
}

#[derive(Debug, Clone)]
struct Planned {
    kind: Kind,
    who: Who,
    /// Offset within its episode.
    at: Duration,
    lasts: Duration,
    /// Flap: down, up, times.
    flap: (Duration, Duration, u32),
    /// Split: which of the 4 members (by name order) go to the first group.
    split_mask: u64,
}

/// One fault, or two overlapping.
type Episode = Vec<Planned>;

fn plan(rng: &mut Rng) -> Planned {
    let kind = *rng.pick(&KINDS).unwrap_or(&Kind::Isolate);
    let who = if rng.chance(0.5) {
        Who::Primary
    } else {
        Who::Other(rng.range(0, 2))
    };
    let (down, up, times) = (
        Duration::from_secs(rng.range(1, 3)),
        Duration::from_secs(rng.range(1, 3)),
        rng.range(2, 5) as u32,
    );
    let lasts = match kind {
        Kind::Flap => (down + up) * times,
        _ => Duration::from_secs(rng.range(1, 30)),
    };
    Planned {
        kind,
        who,
        at: Duration::ZERO,
        lasts,
        flap: (down, up, times),
        // 1..=14: never all four members in one group.
        split_mask: rng.range(1, 14),
    }
}

/// The schedule: episodes until `total` of fault time; 30% of them overlap a second
/// fault (never with an API pause, which is always alone).
fn schedule(seed: u64, total: Duration) -> Vec<Episode> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut used = Duration::ZERO;
    while used < total {
        let first = plan(&mut rng);
        let mut ep = vec![first.clone()];
        if first.kind != Kind::PauseApi && rng.chance(0.3) {
            let mut second = plan(&mut rng);
            if second.kind != Kind::PauseApi {
                second.at = Duration::from_secs(rng.range(1, first.lasts.as_secs().max(1)));
                ep.push(second);
            }
        }
        used += ep.iter().map(|p| p.at + p.lasts).max().unwrap_or_default();
        out.push(ep);
    }
    out
}

/// Injects a fault; returns what to heal (None: kill -9 / deletion, healed by waiting
/// for the pod to come back; flap: done when it returns).
async fn inject(j: &mut Jepsen, p: &Planned) -> anyhow::Result<(Option<FaultId>, Option<String>)> {
    let members = j.members().await?;
    // Under an overlapping fault there may be no writable primary: then the first member
    // stands in for it.
    let primary = match j.primary_within(Duration::from_secs(5)).await {
        Ok(p) => p,
        Err(_) => members
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("the cluster has no member"))?,
    };
    let others: Vec<Member> = members
        .iter()
        .filter(|m| m.name != primary.name)
        .cloned()
        .collect();
    let target = match p.who {
        Who::Primary => primary.clone(),
        Who::Other(n) => others
            .get(n as usize % others.len().max(1))
            .cloned()
            .unwrap_or_else(|| primary.clone()),
    };
    if j.first_fault.is_none() {
        j.first_fault = Some(Instant::now());
    }
    let n = &j.nemesis;
    Ok(match p.kind {
        Kind::Isolate => (Some(n.isolate(&target)?), None),
        Kind::CutPrimaryFromPeers => (Some(n.cut_from_peers(&primary, &members)?), None),
        Kind::CutFromApi => (Some(n.cut_from_api(&target)?), None),
        Kind::Split => {
            let in_a = |i: usize| p.split_mask & (1 << i) != 0;
            let pick = |first: bool| -> Vec<Member> {
                members
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| in_a(*i) == first)
                    .map(|(_, m)| m.clone())
                    .collect()
            };
            let (a, b) = (pick(true), pick(false));
            (Some(n.split(&[a, b])?), None)
        }
        Kind::Flap => {
            let (down, up, times) = p.flap;
            n.flap(&target, down, up, times).await?;
            (None, None)
        }
        Kind::Freeze => (Some(n.freeze(&target)?), None),
        Kind::Kill9 => {
            n.kill9(&target)?;
            (None, Some(target.name.clone()))
        }
        Kind::DeletePod => {
            n.delete_pod(&j.pods, &target).await?;
            (None, Some(target.name.clone()))
        }
        Kind::PauseApi => (Some(n.pause_api()?), None),
    })
}

async fn run_episode(j: &mut Jepsen, ep: &Episode) -> anyhow::Result<()> {
    let t0 = Instant::now();
    // (heal at, fault) in time order; a pod to wait for after kill -9 / deletion.
    let mut heals: Vec<(Instant, FaultId)> = Vec::new();
    let mut back: Vec<String> = Vec::new();
    for p in ep {
        if let Some(left) = (t0 + p.at).checked_duration_since(Instant::now()) {
            // Heal what is due before this injection.
            heals.sort_by_key(|(t, _)| *t);
            while let Some((t, id)) = heals.first().copied() {
                if t > t0 + p.at {
                    break;
                }
                if let Some(d) = t.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(d).await;
                }
                j.nemesis.heal(id)?;
                heals.remove(0);
            }
            if let Some(d) = (t0 + p.at).checked_duration_since(Instant::now()) {
                tokio::time::sleep(d.min(left)).await;
            }
        }
        let (id, pod) = inject(j, p).await?;
        if let Some(id) = id {
            heals.push((Instant::now() + p.lasts, id));
        }
        back.extend(pod);
    }
    heals.sort_by_key(|(t, _)| *t);
    for (t, id) in heals {
        if let Some(d) = t.checked_duration_since(Instant::now()) {
            tokio::time::sleep(d).await;
        }
        j.nemesis.heal(id)?;
    }
    let healed = Instant::now();
    for pod in back {
        j.wait_back(&pod).await?;
    }
    // Give the writers the bound to succeed before the next episode (the liveness
    // check judges every heal followed by that much quiet time).
    let quiet = healed + BOUND + Duration::from_secs(1);
    if let Some(d) = quiet.checked_duration_since(Instant::now()) {
        tokio::time::sleep(d).await;
    }
    Ok(())
}

async fn nemesis(test: &str, cluster: &str, async_mode: bool) -> anyhow::Result<()> {
    let seed = seed();
    let minutes: f64 = std::env::var("NEMESIS_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(1.5);
    let total = Duration::from_secs_f64(minutes * 60.0);
    let plan = schedule(seed, total);
    eprintln!(
        "[nemesis] seed {seed}: {} episodes for {minutes} minute(s) of faults: {:?}",
        plan.len(),
        plan.iter()
            .map(|ep| ep
                .iter()
                .map(|p| format!("{:?}/{:?} {}s", p.kind, p.who, p.lasts.as_secs()))
                .collect::<Vec<_>>()
                .join(" + "))
            .collect::<Vec<_>>()
    );
    let mut j = Jepsen::start(test, cluster, async_mode, true, seed).await?;
    let r = async {
        for ep in &plan {
            run_episode(&mut j, ep).await?;
        }
        anyhow::Ok(())
    }
    .await;
    j.finish(
        r,
        Expect {
            max_gap_from: None,
            observe_after_heal: Duration::from_secs(5),
        },
    )
    .await
}

#[tokio::test]
async fn randomized_faults_against_a_sync_cluster() -> anyhow::Result<()> {
    nemesis("nemesis-sync", "nsync", false).await
}

#[tokio::test]
async fn randomized_faults_against_an_async_cluster() -> anyhow::Result<()> {
    nemesis("nemesis-async", "nasync", true).await
}

#[test]
fn a_seed_gives_one_schedule_with_overlaps_and_every_fault_kind() {
    let a = schedule(7, Duration::from_secs(180));
    let b = schedule(7, Duration::from_secs(180));
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    let mut kinds = std::collections::BTreeSet::new();
    let mut overlapping = 0;
    for seed in 0..50 {
        for ep in schedule(seed, Duration::from_secs(180)) {
            overlapping += usize::from(ep.len() > 1);
            for p in &ep {
                assert!(p.lasts >= Duration::from_secs(1) && p.lasts <= Duration::from_secs(45));
                kinds.insert(format!("{:?}", p.kind));
            }
        }
    }
    assert_eq!(kinds.len(), KINDS.len(), "{kinds:?}");
    assert!(overlapping > 0);
}
