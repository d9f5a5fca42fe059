//! Results on their way to a dispatcher. Each is kept until the dispatcher
//! confirms it; the ones a broken stream may have swallowed are sent again
//! on the next stream, where the dispatcher records them as fenced (it gave
//! up on those attempts when the stream broke). Without this, the late
//! result of a paused or partitioned worker would vanish unmetered.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use stoke_proto::{ErrorInfo, Invocation, InvocationResult, Metering, Outcome};

/// Unconfirmed results kept at most; the oldest go first.
const MAX_HELD: usize = 10_000;

#[derive(Default)]
pub struct Outbox {
    held: Mutex<VecDeque<InvocationResult>>,
}

impl Outbox {
    /// Keep a copy of `result` (without its payload: a late result is only
    /// metered) until the dispatcher confirms it.
    pub fn hold(&self, result: &mut InvocationResult) {
        // Copy all but the (up to 6 MiB) payload.
        let payload = std::mem::take(&mut result.payload);
        let copy = result.clone();
        result.payload = payload;
        let mut held = self.held.lock().expect("not poisoned");
        if held.len() >= MAX_HELD {
            let dropped = held.pop_front();
            tracing::warn!(invocation = ?dropped.map(|r| r.invocation_id), "too many unconfirmed results; forgetting the oldest");
        }
        held.push_back(copy);
    }

    pub fn confirm(&self, invocation_id: &str, epoch: u64) {
        self.held
            .lock()
            .expect("not poisoned")
            .retain(|r| !(r.epoch == epoch && r.invocation_id == invocation_id));
    }

    /// Everything not confirmed yet, oldest first.
    pub fn unconfirmed(&self) -> Vec<InvocationResult> {
        self.held.lock().expect("not poisoned").iter().cloned().collect()
    }
}

/// The result of an attempt whose sandbox was killed because its dispatcher
/// was lost.
pub fn dispatcher_lost(inv: &Invocation, worker_id: &str, (started_ms, started): (i64, Instant)) -> InvocationResult {
    let metering = Metering {
        started_unix_ms: started_ms,
        ended_unix_ms: stoke_core::now_ms(),
        duration_us: started.elapsed().as_micros() as u64,
        worker_id: worker_id.to_string(),
        ..Default::default()
    };
    let error = ErrorInfo {
        error_type: "Stoke.DispatcherLost".into(),
        error_message: "the worker lost its dispatcher and killed the sandbox".into(),
        raw: Vec::new(),
    };
    crate::invoke::result_of(inv, Outcome::PlatformError, Vec::new(), Some(error), metering)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, epoch: u64) -> InvocationResult {
        InvocationResult {
            invocation_id: id.into(),
            epoch,
            payload: b"body".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn keeps_until_confirmed_without_payloads() {
        let outbox = Outbox::default();
        let mut sent = result("a", 1);
        outbox.hold(&mut sent);
        assert_eq!(sent.payload, b"body", "the result sent keeps its payload");
        outbox.hold(&mut result("a", 2));
        outbox.hold(&mut result("b", 1));
        outbox.confirm("a", 1);
        let left: Vec<_> = outbox
            .unconfirmed()
            .into_iter()
            .map(|r| (r.invocation_id, r.epoch, r.payload.len()))
            .collect();
        assert_eq!(left, vec![("a".to_string(), 2, 0), ("b".to_string(), 1, 0)]);
    }

    #[test]
    fn is_bounded() {
        let outbox = Outbox::default();
        for i in 0..(MAX_HELD as u64 + 5) {
            outbox.hold(&mut result("x", i));
        }
        let left = outbox.unconfirmed();
        assert_eq!(left.len(), MAX_HELD);
        assert_eq!(left[0].epoch, 5);
    }
}
