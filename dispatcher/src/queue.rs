//! The queue view (`GetQueue`): per function, how many events wait where.
//!
//! Two kinds of figures. From JetStream, for the whole cluster: `queued`
//! (stored, not yet handed to any dispatcher) and `unacked` (handed out and
//! not yet settled: running, waiting for a slot, or waiting out a retry
//! backoff or a deferral). From this dispatcher's [`Board`]: `running`,
//! `waiting` for a slot, `retrying` (an attempt failed; the event comes
//! back after its backoff) and `deferred` (its concurrency key was busy),
//! and per key the running and waiting counts of its admission gates.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long past its due time a noted retry still counts, in case the
/// redelivery went to another dispatcher (this one never sees it arrive).
const LATE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Later {
    Retry,
    Deferred,
}

#[derive(Default)]
struct Counts {
    running: u32,
    waiting: u32,
    /// Invocation id → (when it is due back, why it went).
    later: HashMap<String, (Instant, Later)>,
}

/// What this dispatcher is doing per function.
#[derive(Default)]
pub(crate) struct Board {
    functions: Mutex<HashMap<String, Counts>>,
}

/// Counts one running or waiting event while it lives.
pub(crate) struct Held<'a> {
    board: &'a Board,
    function: String,
    running: bool,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut fns = self.board.functions.lock().expect("not poisoned");
        if let Some(c) = fns.get_mut(&self.function) {
            let n = if self.running { &mut c.running } else { &mut c.waiting };
            *n = n.saturating_sub(1);
        }
    }
}

impl Board {
    fn hold(&self, function: &str, running: bool) -> Held<'_> {
        let mut fns = self.functions.lock().expect("not poisoned");
        let c = fns.entry(function.to_string()).or_default();
        if running {
            c.running += 1;
        } else {
            c.waiting += 1;
        }
        Held {
            board: self,
            function: function.to_string(),
            running,
        }
    }

    /// An event of `function` runs until the guard drops.
    pub fn running(&self, function: &str) -> Held<'_> {
        self.hold(function, true)
    }

    /// An event of `function` waits for admission until the guard drops.
    pub fn waiting(&self, function: &str) -> Held<'_> {
        self.hold(function, false)
    }

    /// An event was released to come back after `delay`.
    pub fn later(&self, function: &str, invocation_id: &str, delay: Duration, why: Later) {
        let mut fns = self.functions.lock().expect("not poisoned");
        let c = fns.entry(function.to_string()).or_default();
        let now = Instant::now();
        c.later.retain(|_, (due, _)| *due + LATE > now);
        c.later.insert(invocation_id.to_string(), (now + delay, why));
    }

    /// An event came back (or reached this dispatcher for the first time).
    pub fn arrived(&self, function: &str, invocation_id: &str) {
        let mut fns = self.functions.lock().expect("not poisoned");
        if let Some(c) = fns.get_mut(function) {
            c.later.remove(invocation_id);
        }
    }

    /// (running, waiting, retrying, deferred) for `function`.
    pub(crate) fn counts(&self, function: &str) -> (u32, u32, u32, u32) {
        let fns = self.functions.lock().expect("not poisoned");
        let Some(c) = fns.get(function) else {
            return (0, 0, 0, 0);
        };
        let now = Instant::now();
        let live = |kind: Later| {
            c.later
                .values()
                .filter(|(due, k)| *k == kind && *due + LATE > now)
                .count() as u32
        };
        (c.running, c.waiting, live(Later::Retry), live(Later::Deferred))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_counts_what_lives_and_forgets_what_came_back() {
        let b = Board::default();
        let r = b.running("f");
        let w1 = b.waiting("f");
        let _w2 = b.waiting("f");
        b.later("f", "a", Duration::from_secs(10), Later::Retry);
        b.later("f", "b", Duration::from_secs(10), Later::Deferred);
        b.later("f", "c", Duration::from_secs(10), Later::Retry);
        assert_eq!(b.counts("f"), (1, 2, 2, 1));
        drop(r);
        drop(w1);
        b.arrived("f", "a");
        assert_eq!(b.counts("f"), (0, 1, 1, 1));
        assert_eq!(b.counts("g"), (0, 0, 0, 0));
    }
}
