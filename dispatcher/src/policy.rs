//! The retry / dead-letter decision, as a pure function so it can be
//! property-tested apart from NATS and the store.

use std::time::Duration;

use rand::Rng;
use stoke_proto::Outcome;
use stoke_store::{DeadReason, Status};

/// Retry backoff for async events: base × 2^(attempt-1), capped, ±20 %
/// (the manifest's `retry_backoff_ms` and `retry_backoff_max_ms`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub fn of(m: &stoke_core::Manifest) -> Backoff {
        Backoff {
            base: Duration::from_millis(u64::from(m.retry_backoff_ms)),
            cap: Duration::from_millis(u64::from(m.retry_backoff_max_ms)),
        }
    }
}

/// One finished attempt, as far as the decision needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempted<'a> {
    pub outcome: Outcome,
    /// A caller is waiting (RequestResponse): never retried.
    pub sync: bool,
    /// 1-based, across redrives.
    pub attempt: u32,
    pub max_attempts: u32,
    pub error_type: Option<&'a str>,
    pub backoff: Backoff,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Decision {
    /// Write the completion with this status.
    Complete(Status),
    /// Meter the attempt and redeliver after this delay.
    Retry(Duration),
    /// Copy to the dead-letter store, then TERM.
    DeadLetter(DeadReason),
}

pub(crate) fn decide(a: &Attempted<'_>) -> Decision {
    let status = match a.outcome {
        Outcome::Success => return Decision::Complete(Status::Succeeded),
        Outcome::Timeout => Status::TimedOut,
        _ => Status::Failed,
    };
    // Lambda's RequestResponse: the caller gets the error.
    if a.sync {
        return Decision::Complete(status);
    }
    let terminal = a.outcome == Outcome::FunctionError && a.error_type.is_some_and(stoke_core::is_terminal_error);
    if terminal {
        Decision::DeadLetter(DeadReason::TerminalError)
    } else if a.attempt >= a.max_attempts {
        Decision::DeadLetter(DeadReason::MaxAttempts)
    } else {
        Decision::Retry(backoff(a.attempt, a.backoff))
    }
}

/// Is an async event too old to run?
pub(crate) fn expired(sync: bool, age_ms: i64, max_event_age_secs: u32) -> bool {
    !sync && age_ms > i64::from(max_event_age_secs) * 1000
}

/// Whether an event may be sent to wait at a worker behind a running one
/// (`gate` hand-over): only if it cannot pass its age there, where nobody
/// judges it again; the one ahead runs for at most `timeout_ms`.
pub(crate) fn may_follow(sync: bool, age_ms: i64, timeout_ms: u64, max_event_age_secs: u32) -> bool {
    sync || !expired(sync, age_ms.saturating_add(timeout_ms as i64), max_event_age_secs)
}

pub(crate) fn backoff(attempt: u32, b: Backoff) -> Duration {
    backoff_base(attempt, b).mul_f64(rand::rng().random_range(0.8..1.2))
}

fn backoff_base(attempt: u32, b: Backoff) -> Duration {
    b.base.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(b.cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Success),
            Just(Outcome::FunctionError),
            Just(Outcome::Crashed),
            Just(Outcome::Timeout),
            Just(Outcome::InitError),
            Just(Outcome::PlatformError),
        ]
    }

    fn backoff_policy() -> impl Strategy<Value = Backoff> {
        (0u64..=60_000, 0u64..=600_000).prop_map(|(base, extra)| Backoff {
            base: Duration::from_millis(base),
            cap: Duration::from_millis(base + extra),
        })
    }

    fn error_type() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some("ValueError".to_string())),
            Just(Some("TerminalError".to_string())),
            Just(Some("App.TerminalError".to_string())),
            Just(Some("Runtime.ExitError".to_string())),
        ]
    }

    proptest! {
        /// Success completes; sync never retries or dead-letters; async
        /// retries exactly while attempts remain and the error is not
        /// terminal; every other async failure is a dead letter.
        #[test]
        fn one_attempt(outcome in outcome(), sync: bool, attempt in 1u32..200, max in 1u32..=100, et in error_type(), b in backoff_policy()) {
            let d = decide(&Attempted { outcome, sync, attempt, max_attempts: max, error_type: et.as_deref(), backoff: b });
            let terminal = outcome == Outcome::FunctionError && et.as_deref().is_some_and(stoke_core::is_terminal_error);
            match d {
                Decision::Complete(Status::Succeeded) => prop_assert_eq!(outcome, Outcome::Success),
                Decision::Complete(s) => {
                    prop_assert!(sync);
                    prop_assert_eq!(s == Status::TimedOut, outcome == Outcome::Timeout);
                }
                Decision::Retry(delay) => {
                    prop_assert!(!sync && outcome != Outcome::Success && !terminal && attempt < max);
                    prop_assert!(delay <= b.cap.mul_f64(1.2));
                }
                Decision::DeadLetter(reason) => {
                    prop_assert!(!sync && outcome != Outcome::Success);
                    prop_assert_eq!(reason == DeadReason::TerminalError, terminal);
                    prop_assert!(terminal || attempt >= max);
                }
            }
        }

        /// Driving one async event through a run of outcomes ends in exactly
        /// one final record within max_attempts attempts, and the backoff
        /// grows (within jitter) as attempts go on.
        #[test]
        fn an_event_ends_once_within_max_attempts(
            outcomes in prop::collection::vec((outcome(), error_type()), 1..120),
            max in 1u32..=100,
            b in backoff_policy(),
        ) {
            let mut finals = 0;
            let mut attempts = 0u32;
            for (n, (outcome, et)) in outcomes.iter().enumerate() {
                let attempt = n as u32 + 1;
                attempts = attempt;
                match decide(&Attempted { outcome: *outcome, sync: false, attempt, max_attempts: max, error_type: et.as_deref(), backoff: b }) {
                    Decision::Retry(delay) => {
                        let base = backoff_base(attempt, b);
                        prop_assert!(delay >= base.mul_f64(0.8) && delay <= base.mul_f64(1.2));
                        prop_assert!(base >= backoff_base(attempt.saturating_sub(1).max(1), b));
                    }
                    Decision::Complete(_) | Decision::DeadLetter(_) => {
                        finals += 1;
                        break;
                    }
                }
            }
            prop_assert!(attempts <= max);
            let ran_out = outcomes.len() < max as usize && finals == 0;
            prop_assert!(finals == 1 || ran_out, "finals {} after {} attempts (max {})", finals, attempts, max);
        }

        #[test]
        fn only_async_events_expire(sync: bool, age_ms in -1000i64..10_000_000, max_age in 1u32..10_000) {
            let e = expired(sync, age_ms, max_age);
            prop_assert_eq!(e, !sync && age_ms > i64::from(max_age) * 1000);
        }

        /// An async event may queue behind a running one only if it is
        /// still young enough when that one has run its full timeout.
        #[test]
        fn only_events_that_cannot_expire_queued_may_follow(
            sync: bool,
            age_ms in 0i64..10_000_000,
            timeout_ms in 1u64..900_000,
            max_age in 1u32..10_000,
        ) {
            let follow = may_follow(sync, age_ms, timeout_ms, max_age);
            prop_assert_eq!(follow, sync || age_ms + timeout_ms as i64 <= i64::from(max_age) * 1000);
        }
    }
}
