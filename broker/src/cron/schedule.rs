//! When a cron schedule fires, as pure functions of time (no clock reads),
//! so DST transitions and catch-up are tested with any "now".
//!
//! The expression is evaluated on the schedule's local wall clock:
//! - a local time that does not exist (the hour skipped when clocks spring
//!   forward) fires once, at the transition — however many such times the
//!   expression names (an every-minute schedule does not fire 60 times);
//! - a local time that happens twice (clocks fall back) fires once, at its
//!   first occurrence.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use stoke_core::{CatchUp, CronSpec};

/// A parsed cron trigger.
pub struct Schedule {
    expr: cron::Schedule,
    tz: Tz,
}

impl Schedule {
    pub fn new(spec: &CronSpec) -> Result<Schedule, super::CronError> {
        let expr = cron::Schedule::from_str(&spec.schedule).map_err(|cause| super::CronError::Expression {
            expr: spec.schedule.clone(),
            cause,
        })?;
        Ok(Schedule {
            expr,
            tz: spec.timezone,
        })
    }

    /// Fire instants in `(after, until]`, in order, at most `limit`.
    pub fn fire_times(&self, after: DateTime<Utc>, until: DateTime<Utc>, limit: usize) -> Vec<DateTime<Utc>> {
        let mut out: Vec<DateTime<Utc>> = Vec::new();
        // Walk the expression over local wall-clock times (as if UTC), from
        // a little before `after` so a gap straddling it is seen whole.
        let start_local = after.with_timezone(&self.tz).naive_local() - Duration::hours(3);
        let end_local = until.with_timezone(&self.tz).naive_local() + Duration::hours(3);
        for wall in self.expr.after(&Utc.from_utc_datetime(&start_local)) {
            let wall = wall.naive_utc();
            if wall > end_local {
                break;
            }
            let instant = self.instant_of(wall);
            if instant <= after || instant > until {
                continue;
            }
            if out.last().is_some_and(|last| *last >= instant) {
                continue; // a gap's times all map to the transition; a repeat maps earlier
            }
            out.push(instant);
            if out.len() >= limit {
                break;
            }
        }
        out
    }

    /// The real instant of a local wall-clock time under the DST rules above.
    fn instant_of(&self, wall: NaiveDateTime) -> DateTime<Utc> {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => t.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
            LocalResult::None => {
                // In a gap: the first local minute that exists after it.
                let mut probe = wall;
                loop {
                    probe =
                        probe + Duration::minutes(1) - Duration::seconds(i64::from(chrono::Timelike::second(&probe)));
                    if let LocalResult::Single(t) | LocalResult::Ambiguous(t, _) = self.tz.from_local_datetime(&probe) {
                        // The transition instant itself (the gap's end).
                        let t = t.with_timezone(&Utc);
                        return t - Duration::seconds(i64::from(chrono::Timelike::second(&probe)));
                    }
                }
            }
        }
    }
}

/// What to do with one due tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// On time: fire.
    Fire,
    /// Missed while no broker ran; fire it now by policy.
    CatchUp,
    /// Missed, and the policy says not to fire it.
    Missed,
}

/// Decide for each due tick (in order) whether it fires. A tick more than
/// `tolerance` old was missed (no broker ran at its time) and is subject to
/// the catch-up policy; a newer one is on time.
pub fn plan(
    due: &[DateTime<Utc>],
    now: DateTime<Utc>,
    tolerance: Duration,
    catch_up: CatchUp,
    window: Duration,
) -> Vec<(DateTime<Utc>, Plan)> {
    let missed: Vec<usize> = (0..due.len()).filter(|i| now - due[*i] > tolerance).collect();
    let latest_missed = missed.last().copied();
    due.iter()
        .enumerate()
        .map(|(i, t)| {
            let p = if now - *t <= tolerance {
                Plan::Fire
            } else {
                match catch_up {
                    CatchUp::None => Plan::Missed,
                    CatchUp::Latest if Some(i) == latest_missed => Plan::CatchUp,
                    CatchUp::Latest => Plan::Missed,
                    CatchUp::All if now - *t <= window => Plan::CatchUp,
                    CatchUp::All => Plan::Missed,
                }
            };
            (*t, p)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stoke_core::Overlap;

    fn sched(expr: &str, tz: &str) -> Schedule {
        Schedule::new(&CronSpec {
            schedule: expr.into(),
            timezone: tz.parse().unwrap(),
            overlap: Overlap::Allow,
            catch_up: CatchUp::None,
            catch_up_window_secs: 3600,
        })
        .unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn fires_on_the_utc_grid() {
        let s = sched("*/5 * * * * *", "UTC");
        let t = s.fire_times(utc("2026-01-01T00:00:00Z"), utc("2026-01-01T00:00:20Z"), 100);
        let secs: Vec<u32> = t.iter().map(chrono::Timelike::second).collect();
        assert_eq!(secs, [5, 10, 15, 20], "(after, until]");
    }

    #[test]
    fn a_skipped_local_time_fires_once_at_the_transition() {
        // Berlin springs forward 2026-03-29 02:00 → 03:00 local (01:00 UTC).
        let s = sched("0 30 2 * * *", "Europe/Berlin");
        let t = s.fire_times(utc("2026-03-28T12:00:00Z"), utc("2026-03-30T12:00:00Z"), 10);
        assert_eq!(t, [utc("2026-03-29T01:00:00Z"), utc("2026-03-30T00:30:00Z")]);
        // Every minute through the gap: one fire at the transition, not 60.
        let s = sched("0 * 2 * * *", "Europe/Berlin");
        let t = s.fire_times(utc("2026-03-29T00:00:00Z"), utc("2026-03-29T03:00:00Z"), 1000);
        assert_eq!(t, [utc("2026-03-29T01:00:00Z")]);
    }

    #[test]
    fn a_repeated_local_time_fires_once() {
        // Berlin falls back 2026-10-25 03:00 → 02:00 local: 02:30 happens twice.
        let s = sched("0 30 2 * * *", "Europe/Berlin");
        let t = s.fire_times(utc("2026-10-24T12:00:00Z"), utc("2026-10-25T12:00:00Z"), 10);
        assert_eq!(t, [utc("2026-10-25T00:30:00Z")], "first occurrence only");
        // Starting inside the second occurrence does not fire the hour again.
        let t = s.fire_times(utc("2026-10-25T01:10:00Z"), utc("2026-10-25T12:00:00Z"), 10);
        assert!(t.is_empty(), "{t:?}");
        // An hourly schedule across the fall-back: 02:00 local fires once.
        let s = sched("0 0 * * * *", "Europe/Berlin");
        let t = s.fire_times(utc("2026-10-24T23:30:00Z"), utc("2026-10-25T02:30:00Z"), 10);
        assert_eq!(t, [utc("2026-10-25T00:00:00Z"), utc("2026-10-25T02:00:00Z")], "{t:?}");
    }

    #[test]
    fn catch_up_policies() {
        let now = utc("2026-01-01T00:01:00Z");
        let due: Vec<_> = [0, 10, 20, 30, 40, 55, 60]
            .iter()
            .map(|s| utc("2026-01-01T00:00:00Z") + Duration::seconds(*s))
            .collect();
        let tol = Duration::seconds(5);
        let kinds = |c, w| {
            plan(&due, now, tol, c, Duration::seconds(w))
                .into_iter()
                .map(|(_, p)| p)
                .collect::<Vec<_>>()
        };
        use Plan::{Fire as F, Missed as M};
        const C: Plan = Plan::CatchUp;
        assert_eq!(kinds(CatchUp::None, 3600), [M, M, M, M, M, F, F]);
        assert_eq!(kinds(CatchUp::Latest, 3600), [M, M, M, M, C, F, F]);
        assert_eq!(kinds(CatchUp::All, 3600), [C, C, C, C, C, F, F]);
        assert_eq!(kinds(CatchUp::All, 30), [M, M, M, C, C, F, F]);
    }
}
