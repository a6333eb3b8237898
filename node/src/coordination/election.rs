//! The pure rules of the election (DESIGN.md section 4): lease expiry on locally observed
//! time, eligibility, the safety rule's quorum, the choice among candidates, proof of
//! death. No I/O here: everything is unit-tested with a fake clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// Lease timing (client-go semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a candidate must observe no change of the record before the lease is
    /// free.
    pub lease_duration: Duration,
    /// A primary that could not renew for this long turns read-only and steps down.
    pub renew_deadline: Duration,
    /// How often the holder renews and candidates retry.
    pub retry_period: Duration,
}

impl Timing {
    /// client-go's constraints: renew deadline below the lease duration, and above
    /// 1.2 × the retry period (so a few renewals can fail before the deadline).
    pub fn validate(&self) -> Result<(), String> {
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "the renew deadline ({:?}) must be shorter than the lease duration ({:?})",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.mul_f64(1.2) >= self.renew_deadline {
            return Err(format!(
                "the renew deadline ({:?}) must exceed 1.2 × the retry period ({:?})",
                self.renew_deadline, self.retry_period
            ));
        }
        if self.retry_period.is_zero() {
            return Err("the retry period must be above zero".into());
        }
        Ok(())
    }

    /// `leaseDurationSeconds` written on the Lease (rounded up to whole seconds).
    pub fn lease_seconds(&self) -> i32 {
        let ms = self.lease_duration.as_millis();
        ms.div_ceil(1000).clamp(1, i32::MAX as u128) as i32
    }
}

/// The part of the Lease record the election reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseRecord {
    pub holder: Option<String>,
    /// `leaseTransitions`: the term of the current holder.
    pub transitions: u64,
    /// `leaseDurationSeconds` as written by the holder.
    pub duration_seconds: Option<i32>,
    pub resource_version: Option<String>,
    pub acquire_time: Option<DateTime<Utc>>,
    pub renew_time: Option<DateTime<Utc>>,
}

/// A Lease record as this node observed it, and when (local monotonic clock): the
/// client-go rule is that only the local time since the record last *changed* counts,
/// never the timestamps written in it by another node's clock.
#[derive(Debug, Clone)]
pub struct Observed {
    pub record: LeaseRecord,
    pub observed_at: Instant,
}

impl Observed {
    /// Records `record` seen at `now`: the observation time moves only when the record
    /// changed (any field, as client-go compares the whole record).
    pub fn update(prev: Option<&Observed>, record: LeaseRecord, now: Instant) -> Observed {
        match prev {
            Some(p) if p.record == record => p.clone(),
            _ => Observed {
                record,
                observed_at: now,
            },
        }
    }

    /// Whether the lease is free: no holder, or no change observed for a full lease
    /// duration (the longer of ours and the one the holder wrote).
    pub fn expired(&self, now: Instant, ours: Duration) -> bool {
        if self.record.holder.as_deref().is_none_or(str::is_empty) {
            return true;
        }
        let theirs = self
            .record
            .duration_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(ours);
        now.saturating_duration_since(self.observed_at) >= ours.max(theirs)
    }
}

/// Election settings from the pod spec: priorities per pod name (default 1; 0 never
/// becomes primary) and an optional pod-name pattern.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub priorities: BTreeMap<String, i32>,
    pub pattern: Option<regex::Regex>,
}

impl Policy {
    /// Parses `STUDIO_ELECTION_PRIORITIES` (`name=prio,name=prio`) and
    /// `STUDIO_ELIGIBLE_PATTERN`.
    pub fn parse(priorities: Option<&str>, pattern: Option<&str>) -> Result<Policy, String> {
        let mut map = BTreeMap::new();
        for part in priorities
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (name, prio) = part
                .split_once('=')
                .ok_or_else(|| format!("election priority {part:?} is not name=number"))?;
            let prio: i32 = prio
                .trim()
                .parse()
                .map_err(|_| format!("election priority {part:?} is not name=number"))?;
            map.insert(name.trim().to_string(), prio);
        }
        let pattern = match pattern.map(str::trim).filter(|p| !p.is_empty()) {
            Some(p) => Some(
                regex::Regex::new(p)
                    .map_err(|e| format!("invalid eligible pod-name pattern {p:?}: {e}"))?,
            ),
            None => None,
        };
        Ok(Policy {
            priorities: map,
            pattern,
        })
    }

    pub fn priority(&self, name: &str) -> i32 {
        self.priorities.get(name).copied().unwrap_or(1)
    }

    /// Why `name` may never be primary under these settings, if so.
    pub fn refuses(&self, name: &str, arbiter: bool) -> Option<String> {
        if arbiter {
            return Some("an arbiter never becomes primary".into());
        }
        if self.priority(name) <= 0 {
            return Some(format!("{name} has election priority 0"));
        }
        if let Some(p) = &self.pattern
            && !p.is_match(name)
        {
            return Some(format!("{name} does not match the eligible pattern {p}"));
        }
        None
    }
}

/// The StatefulSet ordinal of a pod name (`studio-2` → 2).
pub fn ordinal(name: &str) -> Option<u32> {
    name.rsplit_once('-')?.1.parse().ok()
}

/// A journal position compared the Raft way: last term, then last seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub term: u64,
    pub seq: u64,
}

/// A member's answer to a position request (or this node's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    pub name: String,
    pub pos: Pos,
    /// Holds a repository of this cluster (its cluster id is the bootstrap record's).
    pub of_cluster: bool,
    pub arbiter: bool,
    /// Base URL to pull from.
    pub url: Option<String>,
}

/// What a candidate should do after polling the members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Take the Lease.
    Acquire,
    /// Another eligible data node is more advanced or ranks better: let it win.
    Defer { to: String, why: String },
    /// The most advanced member cannot be primary (arbiter, priority 0): pull the
    /// missing entries from it first.
    CatchUp { from: String, url: Option<String> },
    /// Too few members answered to be sure every acknowledged write is here.
    NoQuorum { heard: usize, needed: usize },
    /// This node may not be primary.
    Ineligible(String),
}

/// The safety rule: with M members holding the journal and a sync write quorum K (an
/// acknowledged write is on K+1 members), a candidate must hear M−K members, itself
/// included, since (K+1) + (M−K) > M. In async mode (None) one answer (its own) is
/// enough: it takes the best of what it can reach.
pub fn needed(members: usize, sync_k: Option<u32>) -> usize {
    match sync_k {
        Some(k) => members.saturating_sub(k as usize).max(1),
        None => 1,
    }
}

/// Decides whether `me` may take the Lease, given the members that answered (`peers`,
/// not including `me`). `rank_strict`: defer to a better-ranked equally advanced peer
/// (turned off once such a peer failed to act for a while).
pub fn decide(
    me: &Heard,
    peers: &[Heard],
    members: usize,
    sync_k: Option<u32>,
    policy: &Policy,
    rank_strict: bool,
) -> Decision {
    if let Some(why) = policy.refuses(&me.name, me.arbiter) {
        return Decision::Ineligible(why);
    }
    if !me.of_cluster {
        return Decision::Ineligible("no repository of this cluster yet (waiting to clone)".into());
    }
    let need = needed(members, sync_k);
    let heard = 1 + peers.len();
    if heard < need {
        return Decision::NoQuorum {
            heard,
            needed: need,
        };
    }
    let eligible = |h: &Heard| h.of_cluster && policy.refuses(&h.name, h.arbiter).is_none();
    // The most advanced member; among equals prefer an eligible one.
    let best = peers
        .iter()
        .filter(|h| h.of_cluster)
        .max_by_key(|h| (h.pos, eligible(h)));
    if let Some(b) = best
        && b.pos > me.pos
    {
        if eligible(b) {
            return Decision::Defer {
                to: b.name.clone(),
                why: format!("it is more advanced ({:?} > {:?})", b.pos, me.pos),
            };
        }
        return Decision::CatchUp {
            from: b.name.clone(),
            url: b.url.clone(),
        };
    }
    if rank_strict {
        let rank = |h: &Heard| {
            (
                std::cmp::Reverse(policy.priority(&h.name)),
                ordinal(&h.name).unwrap_or(u32::MAX),
                h.name.clone(),
            )
        };
        if let Some(better) = peers
            .iter()
            .filter(|h| eligible(h) && h.pos == me.pos)
            .min_by_key(|h| rank(h))
            && rank(better) < rank(me)
        {
            return Decision::Defer {
                to: better.name.clone(),
                why: "equally advanced and ranks higher (priority, then lowest ordinal)".into(),
            };
        }
    }
    Decision::Acquire
}

/// What the API shows of the Lease holder's pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolderPod {
    /// The pod store is synced and has no such pod.
    Gone,
    /// Not known yet (store not synced).
    Unknown,
    Present {
        /// Every container is in state `running`.
        all_running: bool,
        /// Has container statuses at all.
        has_status: bool,
        /// Latest `running.startedAt` of its containers.
        started_at: Option<DateTime<Utc>>,
    },
}

/// Proof that the holder can no longer write (DESIGN "proof of death"): its pod is
/// gone, a container is not running (terminated, or waiting to restart), or it started
/// after the holder took the Lease (it restarted since). A pod merely NotReady proves
/// nothing.
pub fn proof_of_death(pod: &HolderPod, acquired: Option<DateTime<Utc>>) -> Option<&'static str> {
    match pod {
        HolderPod::Gone => Some("the holder's pod is gone"),
        HolderPod::Unknown => None,
        HolderPod::Present {
            all_running,
            has_status,
            started_at,
        } => {
            if *has_status && !all_running {
                return Some("the holder's container is not running");
            }
            if let (Some(s), Some(a)) = (started_at, acquired)
                // startedAt has whole-second precision: only a later second proves it.
                && s.timestamp() > a.timestamp()
            {
                return Some("the holder's container restarted after taking the Lease");
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(name: &str, term: u64, seq: u64) -> Heard {
        Heard {
            name: name.into(),
            pos: Pos { term, seq },
            of_cluster: true,
            arbiter: false,
            url: Some(format!("http://{name}")),
        }
    }

    fn timing() -> Timing {
        Timing {
            lease_duration: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(3),
            retry_period: Duration::from_millis(500),
        }
    }

    #[test]
    fn timing_rules() {
        assert!(timing().validate().is_ok());
        let mut t = timing();
        t.renew_deadline = Duration::from_secs(4);
        assert!(t.validate().is_err());
        let mut t = timing();
        t.retry_period = Duration::from_millis(2600);
        assert!(t.validate().is_err());
        assert_eq!(timing().lease_seconds(), 4);
        let mut t = timing();
        t.lease_duration = Duration::from_millis(4500);
        assert_eq!(t.lease_seconds(), 5);
    }

    #[test]
    fn expiry_uses_local_observation_time_only() {
        let t0 = Instant::now();
        let rec = LeaseRecord {
            holder: Some("a".into()),
            transitions: 3,
            duration_seconds: Some(4),
            resource_version: Some("10".into()),
            // A holder clock far in the past must not matter.
            renew_time: DateTime::from_timestamp(0, 0),
            ..Default::default()
        };
        let o = Observed::update(None, rec.clone(), t0);
        let d = Duration::from_secs(4);
        assert!(!o.expired(t0, d));
        assert!(!o.expired(t0 + Duration::from_millis(3999), d));
        assert!(o.expired(t0 + Duration::from_secs(4), d));
        // The same record seen again does not reset the clock...
        let o2 = Observed::update(Some(&o), rec.clone(), t0 + Duration::from_secs(3));
        assert!(o2.expired(t0 + Duration::from_secs(4), d));
        // ...a renewal (new resourceVersion) does.
        let mut renewed = rec;
        renewed.resource_version = Some("11".into());
        let o3 = Observed::update(Some(&o2), renewed, t0 + Duration::from_secs(3));
        assert!(!o3.expired(t0 + Duration::from_secs(4), d));
        assert!(o3.expired(t0 + Duration::from_secs(7), d));
    }

    #[test]
    fn expiry_honours_the_longer_duration_and_empty_holder() {
        let t0 = Instant::now();
        let rec = LeaseRecord {
            holder: Some("a".into()),
            duration_seconds: Some(15),
            ..Default::default()
        };
        let o = Observed::update(None, rec, t0);
        assert!(!o.expired(t0 + Duration::from_secs(5), Duration::from_secs(4)));
        assert!(o.expired(t0 + Duration::from_secs(15), Duration::from_secs(4)));
        let free = Observed::update(None, LeaseRecord::default(), t0);
        assert!(free.expired(t0, Duration::from_secs(4)));
        let empty = Observed::update(
            None,
            LeaseRecord {
                holder: Some(String::new()),
                ..Default::default()
            },
            t0,
        );
        assert!(empty.expired(t0, Duration::from_secs(4)));
    }

    #[test]
    fn quorum_math() {
        // 3 data + 1 arbiter, K=1: acknowledged on 2 of 4, so hear 3.
        assert_eq!(needed(4, Some(1)), 3);
        // K=2: on 3 of 4, so hear 2: 3 + 2 > 4.
        assert_eq!(needed(4, Some(2)), 2);
        assert_eq!(needed(3, Some(1)), 2);
        assert_eq!(needed(1, Some(0)), 1);
        assert_eq!(needed(4, None), 1);
        assert_eq!(needed(2, Some(5)), 1);
        // The intersection property itself, for every small M and K.
        for m in 1..8usize {
            for k in 0..m as u32 {
                let n = needed(m, Some(k));
                assert!((k as usize + 1) + n > m, "m={m} k={k}");
            }
        }
    }

    #[test]
    fn eligibility() {
        let p = Policy::parse(Some("s-0=0, s-1=5"), None).expect("parse");
        assert!(p.refuses("s-0", false).is_some());
        assert!(p.refuses("s-1", false).is_none());
        assert!(p.refuses("s-2", false).is_none());
        assert!(p.refuses("s-2", true).is_some());
        let p = Policy::parse(None, Some("^s-[01]$")).expect("parse");
        assert!(p.refuses("s-1", false).is_none());
        assert!(p.refuses("s-2", false).is_some());
        assert!(Policy::parse(Some("bad"), None).is_err());
        assert!(Policy::parse(None, Some("(")).is_err());
        let me = heard("s-2", 1, 1);
        assert!(matches!(
            decide(&me, &[], 1, None, &p, true),
            Decision::Ineligible(_)
        ));
        let mut empty = heard("s-0", 0, 0);
        empty.of_cluster = false;
        assert!(matches!(
            decide(&empty, &[], 1, None, &Policy::default(), true),
            Decision::Ineligible(_)
        ));
    }

    #[test]
    fn quorum_is_required() {
        let p = Policy::default();
        let me = heard("s-1", 2, 10);
        assert_eq!(
            decide(&me, &[heard("s-2", 2, 9)], 4, Some(1), &p, true),
            Decision::NoQuorum {
                heard: 2,
                needed: 3
            }
        );
        let mut arb = heard("s-arbiter-0", 2, 10);
        arb.arbiter = true;
        assert_eq!(
            decide(&me, &[heard("s-2", 2, 9), arb], 4, Some(1), &p, true),
            Decision::Acquire
        );
    }

    #[test]
    fn most_advanced_wins_term_before_seq() {
        let p = Policy::default();
        // Higher term beats a longer log of an older term.
        let me = heard("s-0", 3, 5);
        let d = decide(&me, &[heard("s-1", 2, 50)], 2, Some(1), &p, true);
        assert_eq!(d, Decision::Acquire);
        let me = heard("s-1", 2, 50);
        let d = decide(&me, &[heard("s-0", 3, 5)], 2, Some(1), &p, true);
        assert!(matches!(d, Decision::Defer { ref to, .. } if to == "s-0"));
    }

    #[test]
    fn arbiter_ahead_means_catch_up() {
        let p = Policy::default();
        let me = heard("s-1", 2, 10);
        let mut arb = heard("s-arbiter-0", 2, 12);
        arb.arbiter = true;
        let d = decide(&me, &[heard("s-2", 2, 10), arb], 4, Some(1), &p, true);
        assert!(matches!(d, Decision::CatchUp { ref from, .. } if from == "s-arbiter-0"));
        // A priority-0 node ahead: catch up too.
        let p0 = Policy::parse(Some("s-2=0"), None).expect("parse");
        let d = decide(&me, &[heard("s-2", 2, 11)], 2, Some(1), &p0, true);
        assert!(matches!(d, Decision::CatchUp { ref from, .. } if from == "s-2"));
    }

    #[test]
    fn ties_break_by_priority_then_lowest_ordinal() {
        let p = Policy::default();
        let me = heard("s-2", 2, 10);
        let d = decide(&me, &[heard("s-1", 2, 10)], 2, Some(1), &p, true);
        assert!(matches!(d, Decision::Defer { ref to, .. } if to == "s-1"));
        let me1 = heard("s-1", 2, 10);
        assert_eq!(
            decide(&me1, &[heard("s-2", 2, 10)], 2, Some(1), &p, true),
            Decision::Acquire
        );
        // s-10 sorts after s-2 by ordinal, not by string.
        let me10 = heard("s-10", 2, 10);
        let d = decide(&me10, &[heard("s-2", 2, 10)], 2, Some(1), &p, true);
        assert!(matches!(d, Decision::Defer { ref to, .. } if to == "s-2"));
        // Priority first.
        let pr = Policy::parse(Some("s-2=9"), None).expect("parse");
        assert_eq!(
            decide(&me, &[heard("s-1", 2, 10)], 2, Some(1), &pr, true),
            Decision::Acquire
        );
        // A better-ranked peer that is not eligible does not hold us back.
        let p0 = Policy::parse(Some("s-1=0"), None).expect("parse");
        assert_eq!(
            decide(&me, &[heard("s-1", 2, 10)], 2, Some(1), &p0, true),
            Decision::Acquire
        );
        // Without strict ranking (the better peer did not act), take it.
        assert_eq!(
            decide(&me, &[heard("s-1", 2, 10)], 2, Some(1), &p, false),
            Decision::Acquire
        );
        // An empty peer (no repository of this cluster) does not count as ahead.
        let mut empty = heard("s-0", 9, 99);
        empty.of_cluster = false;
        assert_eq!(
            decide(&me1, &[empty], 2, Some(1), &p, true),
            Decision::Acquire
        );
    }

    #[test]
    fn proof_of_death_rules() {
        let acquired = DateTime::from_timestamp(1_000, 500_000_000);
        assert!(proof_of_death(&HolderPod::Gone, acquired).is_some());
        assert!(proof_of_death(&HolderPod::Unknown, acquired).is_none());
        // Running (even NotReady) since before the acquisition: no proof.
        let alive = HolderPod::Present {
            all_running: true,
            has_status: true,
            started_at: DateTime::from_timestamp(900, 0),
        };
        assert!(proof_of_death(&alive, acquired).is_none());
        // Same second as the acquisition: not enough.
        let same = HolderPod::Present {
            all_running: true,
            has_status: true,
            started_at: DateTime::from_timestamp(1_000, 0),
        };
        assert!(proof_of_death(&same, acquired).is_none());
        let restarted = HolderPod::Present {
            all_running: true,
            has_status: true,
            started_at: DateTime::from_timestamp(1_002, 0),
        };
        assert!(proof_of_death(&restarted, acquired).is_some());
        let crashed = HolderPod::Present {
            all_running: false,
            has_status: true,
            started_at: None,
        };
        assert!(proof_of_death(&crashed, acquired).is_some());
        let pending = HolderPod::Present {
            all_running: false,
            has_status: false,
            started_at: None,
        };
        assert!(proof_of_death(&pending, acquired).is_none());
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal("studio-2"), Some(2));
        assert_eq!(ordinal("my-cluster-arbiter-0"), Some(0));
        assert_eq!(ordinal("x"), None);
    }
}
