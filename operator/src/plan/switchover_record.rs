//! The switchover in progress, recorded in the status (`status.switchover`) so that a
//! new operator leader makes the same decisions as the one that started it: it does not
//! ask the primary again while the hand-over may still be under way, and it records the
//! resulting change of primary as a switchover, not a failover.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use studio_crds::SwitchoverRecord;

/// How long after it started a switchover still explains a change of primary to its
/// target (a hand-over takes seconds; a later change is a failover).
pub const EXPLAINS_FOR: Duration = Duration::from_secs(120);

/// A new record: `from` is asked to hand over to `to`.
pub fn start(from: &str, to: &str, reason: &str, now: Timestamp) -> SwitchoverRecord {
    SwitchoverRecord {
        from: from.to_string(),
        to: to.to_string(),
        reason: reason.to_string(),
        started: Time(now),
    }
}

fn age(rec: &SwitchoverRecord, now: Timestamp) -> Duration {
    let d = now.duration_since(rec.started.0);
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// The switchover to `to` was asked for less than `window` ago (the node may still be
/// handing over: do not ask again).
pub fn in_flight(
    rec: Option<&SwitchoverRecord>,
    to: &str,
    now: Timestamp,
    window: Duration,
) -> bool {
    rec.is_some_and(|r| r.to == to && age(r, now) < window)
}

/// A change of primary to `new` is the recorded switchover.
pub fn explains(rec: Option<&SwitchoverRecord>, new: &str, now: Timestamp) -> bool {
    rec.is_some_and(|r| r.to == new && age(r, now) < EXPLAINS_FOR)
}

/// The record to keep in the status: gone once its target is primary or it is too old
/// to explain anything.
pub fn carry(
    rec: Option<SwitchoverRecord>,
    primary: Option<&str>,
    now: Timestamp,
) -> Option<SwitchoverRecord> {
    rec.filter(|r| Some(r.to.as_str()) != primary && age(r, now) < EXPLAINS_FOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn a_recorded_switchover_is_in_flight_for_its_window_and_target_only() {
        let r = start("c-0", "c-1", "upgrade", at(0));
        let w = Duration::from_secs(35);
        assert!(in_flight(Some(&r), "c-1", at(10), w));
        assert!(!in_flight(Some(&r), "c-2", at(10), w));
        assert!(!in_flight(Some(&r), "c-1", at(40), w));
        assert!(!in_flight(None, "c-1", at(10), w));
    }

    #[test]
    fn a_change_to_the_target_soon_after_is_a_switchover_later_a_failover() {
        let r = start("c-0", "c-1", "requested", at(0));
        assert!(explains(Some(&r), "c-1", at(5)));
        assert!(!explains(Some(&r), "c-2", at(5)));
        assert!(!explains(Some(&r), "c-1", at(121)));
    }

    #[test]
    fn the_record_is_dropped_once_done_or_stale() {
        let r = start("c-0", "c-1", "scale-down", at(0));
        assert_eq!(carry(Some(r.clone()), Some("c-0"), at(3)), Some(r.clone()));
        assert_eq!(carry(Some(r.clone()), None, at(3)), Some(r.clone()));
        assert_eq!(carry(Some(r.clone()), Some("c-1"), at(3)), None);
        assert_eq!(carry(Some(r), Some("c-0"), at(200)), None);
    }
}
