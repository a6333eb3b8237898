//! StudioScheduledBackup: what to do now (pure). Everything is derived from the spec,
//! the schedule's creation time, the StudioBackups it created (read from the API, so a
//! status that lags behind cannot make it run twice) and the time now.
//!
//! * `immediate`: one run at once when the schedule has never run.
//! * On the cron schedule (UTC): the latest occurrence since the last run is run, if it
//!   is at most `startingDeadlineSeconds` old; older ones are skipped, so however long
//!   the operator was away, at most one missed run is caught up.
//! * After failed runs, the schedule gives way to a back-off: the next attempt comes
//!   `60 s · 2^(failures − 1)` after the last one, capped at the schedule's period, so a
//!   run of failures never produces a burst (and never runs less often than the
//!   schedule would).
//! * One run at a time: while the last StudioBackup is not finished nothing is created.
//! * `suspend`: nothing is created.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// First wait after a failed run; doubled with every further failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(60);
/// Look again at least this often (clock steps, missed watch events).
pub const MAX_REQUEUE: Duration = Duration::from_secs(15 * 60);
/// While a run is in progress, look again this often (its changes also wake us).
pub const RUNNING_POLL: Duration = Duration::from_secs(30);

/// A cron expression of 5 fields (`minute hour day-of-month month day-of-week`), or 6
/// with seconds first. `Err` is a message for the user.
pub fn parse(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if fields != 5 && fields != 6 {
        return Err(format!(
            "schedule {expr:?} has {fields} fields: use 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("schedule {expr:?}: {e}"))
}

/// How a run of the schedule ended (from its StudioBackup's phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Pending, Running or no status yet.
    Active,
    Completed,
    Failed,
}

/// A StudioBackup the schedule created.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub name: String,
    /// The time it was created for (its name's stamp).
    pub scheduled_at: DateTime<Utc>,
    pub outcome: Outcome,
    /// When it completed (for `lastSuccessfulTime`).
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub schedule: &'a str,
    pub suspend: bool,
    pub immediate: bool,
    pub starting_deadline_seconds: i64,
    pub created: DateTime<Utc>,
    /// Any order.
    pub runs: &'a [Run],
    pub now: DateTime<Utc>,
}

/// Why a run is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Immediate,
    Scheduled,
    /// A run missed (the operator away, suspended) within the starting deadline.
    CatchUp,
    /// A retry after failures (back-off).
    Retry,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Immediate => "immediate",
            Why::Scheduled => "scheduled",
            Why::CatchUp => "catch-up of a missed run",
            Why::Retry => "retry after failures",
        }
    }
}

/// Where the schedule stands (the `Ready` condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Scheduled,
    Suspended,
    /// The last run is not finished.
    Running(String),
    /// The last run(s) failed: waiting for the back-off.
    BackingOff,
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Create a run stamped with this time.
    pub create: Option<(DateTime<Utc>, Why)>,
    /// The next run after this one (None: suspended, invalid, or running).
    pub next: Option<DateTime<Utc>>,
    /// Look again after this long (None: only on a change).
    pub requeue: Option<Duration>,
    pub state: State,
    pub consecutive_failures: i32,
    pub last_schedule: Option<DateTime<Utc>>,
    pub last_successful: Option<DateTime<Utc>>,
    pub last_backup: Option<String>,
    /// A missed run too old to be caught up.
    pub skipped: Option<DateTime<Utc>>,
}

fn to_std(d: chrono::TimeDelta) -> Duration {
    d.to_std().unwrap_or(Duration::ZERO)
}

/// The gap between the two occurrences after `at` (the schedule's period there).
pub fn period(cron: &Cron, at: DateTime<Utc>) -> Option<Duration> {
    let a = cron.find_next_occurrence(&at, false).ok()?;
    let b = cron.find_next_occurrence(&a, false).ok()?;
    Some(to_std(b - a))
}

/// The wait after `failures` failed runs in a row.
pub fn backoff(failures: i32, period: Duration) -> Duration {
    let exp = failures.saturating_sub(1).clamp(0, 30) as u32;
    let wait = BACKOFF_BASE.saturating_mul(2u32.saturating_pow(exp));
    wait.min(period.max(Duration::from_secs(1)))
}

pub fn decide(input: &Input) -> Decision {
    let mut runs: Vec<&Run> = input.runs.iter().collect();
    runs.sort_by(|a, b| {
        b.scheduled_at
            .cmp(&a.scheduled_at)
            .then(b.name.cmp(&a.name))
    });
    let failures = runs
        .iter()
        .take_while(|r| r.outcome == Outcome::Failed)
        .count() as i32;
    let last = runs.first().copied();
    let last_successful = runs
        .iter()
        .find(|r| r.outcome == Outcome::Completed)
        .and_then(|r| r.finished_at.or(Some(r.scheduled_at)));
    let mut d = Decision {
        create: None,
        next: None,
        requeue: None,
        state: State::Scheduled,
        consecutive_failures: failures,
        last_schedule: last.map(|r| r.scheduled_at),
        last_successful,
        last_backup: last.map(|r| r.name.clone()),
        skipped: None,
    };
    let cron = match parse(input.schedule) {
        Ok(c) => c,
        Err(why) => {
            d.state = State::Invalid(why);
            return d;
        }
    };
    if input.suspend {
        d.state = State::Suspended;
        return d;
    }
    // Whole seconds: run names are stamped to the second, and croner carries a
    // start time's fraction into the occurrences it finds.
    let now = input.now.with_nanosecond(0).unwrap_or(input.now);
    if let Some(r) = last.filter(|r| r.outcome == Outcome::Active) {
        d.state = State::Running(r.name.clone());
        d.requeue = Some(RUNNING_POLL);
        return d;
    }
    let next_after = |t: DateTime<Utc>| cron.find_next_occurrence(&t, false).ok();
    let finish = |mut d: Decision, next: Option<DateTime<Utc>>| {
        d.next = next;
        d.requeue = Some(
            next.map(|n| to_std(n - now).max(Duration::from_secs(1)))
                .unwrap_or(MAX_REQUEUE)
                .min(MAX_REQUEUE),
        );
        d
    };
    let Some(last) = last else {
        if input.immediate {
            d.create = Some((now, Why::Immediate));
            d.last_schedule = Some(now);
            return finish(d, next_after(now));
        }
        return on_schedule(d, &cron, input.created, input, finish, next_after);
    };
    if failures > 0 {
        let wait = backoff(
            failures,
            period(&cron, last.scheduled_at).unwrap_or(MAX_REQUEUE),
        );
        let due = last.scheduled_at + chrono::TimeDelta::from_std(wait).unwrap_or_default();
        if due <= now {
            d.create = Some((now, Why::Retry));
            d.last_schedule = Some(now);
            // The following attempt, if this one fails too.
            let then = backoff(failures + 1, period(&cron, now).unwrap_or(MAX_REQUEUE));
            return finish(
                d,
                Some(now + chrono::TimeDelta::from_std(then).unwrap_or_default()),
            );
        }
        d.state = State::BackingOff;
        return finish(d, Some(due));
    }
    on_schedule(d, &cron, last.scheduled_at, input, finish, next_after)
}

/// The cron part: the latest occurrence after `reference`, if it is due and within the
/// starting deadline.
fn on_schedule(
    mut d: Decision,
    cron: &Cron,
    reference: DateTime<Utc>,
    input: &Input,
    finish: impl Fn(Decision, Option<DateTime<Utc>>) -> Decision,
    next_after: impl Fn(DateTime<Utc>) -> Option<DateTime<Utc>>,
) -> Decision {
    let now = input.now.with_nanosecond(0).unwrap_or(input.now);
    let latest = cron
        .find_previous_occurrence(&now, true)
        .ok()
        .filter(|t| *t > reference);
    if let Some(t) = latest {
        let late = now - t;
        if late.num_seconds() <= input.starting_deadline_seconds {
            // Another occurrence between the reference and this one was missed too.
            let missed_more = next_after(reference).is_some_and(|first| first < t);
            let why = if late.num_seconds() > 10 || missed_more {
                Why::CatchUp
            } else {
                Why::Scheduled
            };
            d.create = Some((t, why));
            d.last_schedule = Some(t);
        } else {
            d.skipped = Some(t);
        }
    }
    let next = next_after(now);
    finish(d, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn input<'a>(schedule: &'a str, runs: &'a [Run], now: &str) -> Input<'a> {
        Input {
            schedule,
            suspend: false,
            immediate: false,
            starting_deadline_seconds: 300,
            created: t("2026-01-01T00:00:30Z"),
            runs,
            now: t(now),
        }
    }

    fn run(at: &str, outcome: Outcome) -> Run {
        Run {
            name: format!("s-{}", t(at).format("%Y%m%d%H%M%S")),
            scheduled_at: t(at),
            outcome,
            finished_at: (outcome == Outcome::Completed)
                .then(|| t(at) + chrono::TimeDelta::seconds(20)),
        }
    }

    #[test]
    fn five_and_six_fields_parse_and_others_are_refused() {
        assert!(parse("0 2 * * *").is_ok());
        assert!(parse("30 0 2 * * *").is_ok());
        assert!(parse("*/5 * * * * * 2026").is_err_and(|e| e.contains("7 fields")));
        assert!(parse("* * *").is_err());
        assert!(parse("0 25 * * *").is_err());
        let six = parse("30 0 2 * * *").unwrap_or_else(|e| panic!("{e}"));
        let next = six
            .find_next_occurrence(&t("2026-01-01T00:00:00Z"), false)
            .ok();
        assert_eq!(next, Some(t("2026-01-01T02:00:30Z")));
    }

    #[test]
    fn waits_for_the_first_occurrence_after_creation() {
        let d = decide(&input("0 2 * * *", &[], "2026-01-01T01:00:00Z"));
        assert_eq!(d.create, None);
        assert_eq!(d.next, Some(t("2026-01-01T02:00:00Z")));
        assert_eq!(d.requeue, Some(Duration::from_secs(3600).min(MAX_REQUEUE)));
        assert_eq!(d.state, State::Scheduled);
    }

    #[test]
    fn runs_an_occurrence_that_is_due() {
        let d = decide(&input("0 2 * * *", &[], "2026-01-01T02:00:01Z"));
        assert_eq!(d.create, Some((t("2026-01-01T02:00:00Z"), Why::Scheduled)));
        assert_eq!(d.next, Some(t("2026-01-02T02:00:00Z")));
        // Once created, the same occurrence is not run again.
        let runs = [run("2026-01-01T02:00:00Z", Outcome::Completed)];
        let d = decide(&input("0 2 * * *", &runs, "2026-01-01T02:00:05Z"));
        assert_eq!(d.create, None);
        assert_eq!(d.last_successful, Some(t("2026-01-01T02:00:20Z")));
    }

    #[test]
    fn times_are_whole_seconds() {
        let mut i = input("0 2 * * *", &[], "2026-01-01T00:00:31.75Z");
        i.immediate = true;
        let d = decide(&i);
        assert_eq!(d.create, Some((t("2026-01-01T00:00:31Z"), Why::Immediate)));
        assert_eq!(d.next, Some(t("2026-01-01T02:00:00Z")));
    }

    #[test]
    fn immediate_runs_once_at_creation() {
        let mut i = input("0 2 * * *", &[], "2026-01-01T00:00:31Z");
        i.immediate = true;
        let d = decide(&i);
        assert_eq!(d.create, Some((t("2026-01-01T00:00:31Z"), Why::Immediate)));
        let runs = [run("2026-01-01T00:00:31Z", Outcome::Completed)];
        let mut i = input("0 2 * * *", &runs, "2026-01-01T00:00:40Z");
        i.immediate = true;
        assert_eq!(decide(&i).create, None);
    }

    #[test]
    fn missed_runs_catch_up_at_most_once_within_the_deadline() {
        // Last run at 02:00 on Jan 1; the operator was away until 02:03 on Jan 4: only
        // the latest missed occurrence (Jan 4 02:00) is run.
        let runs = [run("2026-01-01T02:00:00Z", Outcome::Completed)];
        let d = decide(&input("0 2 * * *", &runs, "2026-01-04T02:03:00Z"));
        assert_eq!(d.create, Some((t("2026-01-04T02:00:00Z"), Why::CatchUp)));
        assert_eq!(d.skipped, None);
        // Later than the deadline (300 s): skipped, next one tomorrow.
        let d = decide(&input("0 2 * * *", &runs, "2026-01-04T02:06:00Z"));
        assert_eq!(d.create, None);
        assert_eq!(d.skipped, Some(t("2026-01-04T02:00:00Z")));
        assert_eq!(d.next, Some(t("2026-01-05T02:00:00Z")));
    }

    #[test]
    fn suspended_or_invalid_creates_nothing() {
        let mut i = input("0 2 * * *", &[], "2026-01-01T02:00:01Z");
        i.suspend = true;
        let d = decide(&i);
        assert_eq!(
            (d.create, d.next, d.requeue, d.state),
            (None, None, None, State::Suspended)
        );
        let d = decide(&input("0 2 * *", &[], "2026-01-01T02:00:01Z"));
        assert!(matches!(d.state, State::Invalid(_)));
        assert_eq!(d.create, None);
    }

    #[test]
    fn one_run_at_a_time() {
        let runs = [run("2026-01-01T02:00:00Z", Outcome::Active)];
        let d = decide(&input("* * * * *", &runs, "2026-01-01T02:05:00Z"));
        assert_eq!(d.create, None);
        assert_eq!(d.state, State::Running(runs[0].name.clone()));
        assert_eq!(d.requeue, Some(RUNNING_POLL));
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_period() {
        // Every 5 minutes; the 02:00 run failed: retry 60 s after it, not at 02:05.
        let one = [run("2026-01-01T02:00:00Z", Outcome::Failed)];
        let d = decide(&input("*/5 * * * *", &one, "2026-01-01T02:00:30Z"));
        assert_eq!((d.create, d.state.clone()), (None, State::BackingOff));
        assert_eq!(d.next, Some(t("2026-01-01T02:01:00Z")));
        assert_eq!(d.consecutive_failures, 1);
        let d = decide(&input("*/5 * * * *", &one, "2026-01-01T02:01:00Z"));
        assert_eq!(d.create, Some((t("2026-01-01T02:01:00Z"), Why::Retry)));
        // Three failures in a row: 240 s after the last.
        let three = [
            run("2026-01-01T02:00:00Z", Outcome::Failed),
            run("2026-01-01T02:01:00Z", Outcome::Failed),
            run("2026-01-01T02:03:00Z", Outcome::Failed),
        ];
        let d = decide(&input("*/5 * * * *", &three, "2026-01-01T02:05:00Z"));
        assert_eq!(
            d.create, None,
            "the 02:05 occurrence gives way to the back-off"
        );
        assert_eq!(d.next, Some(t("2026-01-01T02:07:00Z")));
        // Capped at the period (5 min) however many failures.
        assert_eq!(
            backoff(10, Duration::from_secs(300)),
            Duration::from_secs(300)
        );
        assert_eq!(
            backoff(1, Duration::from_secs(300)),
            Duration::from_secs(60)
        );
        assert_eq!(
            backoff(3, Duration::from_secs(3600)),
            Duration::from_secs(240)
        );
        // A success resets the count and the schedule is back on its grid.
        let ok = [
            run("2026-01-01T02:00:00Z", Outcome::Failed),
            run("2026-01-01T02:01:00Z", Outcome::Completed),
        ];
        let d = decide(&input("*/5 * * * *", &ok, "2026-01-01T02:02:00Z"));
        assert_eq!(d.consecutive_failures, 0);
        assert_eq!(d.next, Some(t("2026-01-01T02:05:00Z")));
    }

    #[test]
    fn a_long_run_of_failures_never_bursts() {
        // Six hours of a five-minute schedule where every run fails, looked at every
        // second: the gaps between attempts never shrink and never fall below 60 s.
        let mut runs: Vec<Run> = Vec::new();
        let mut now = t("2026-01-01T00:01:00Z");
        let end = t("2026-01-01T06:00:00Z");
        while now < end {
            let d = decide(&input("*/5 * * * *", &runs, &now.to_rfc3339()));
            if let Some((at, _)) = d.create {
                runs.push(run(&at.to_rfc3339(), Outcome::Failed));
            }
            now += chrono::TimeDelta::seconds(1);
        }
        runs.sort_by_key(|r| r.scheduled_at);
        let gaps: Vec<i64> = runs
            .windows(2)
            .map(|w| (w[1].scheduled_at - w[0].scheduled_at).num_seconds())
            .collect();
        assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
        assert!(gaps.iter().all(|g| *g >= 60), "{gaps:?}");
        assert_eq!(gaps.last(), Some(&300), "{gaps:?}");
    }
}
