//! Admission in the dispatcher: a function's concurrency (across all its
//! sources: HTTP, cron and every subscription) and, when the manifest names
//! a `concurrency_key`, at most `concurrency_per_key` running per key.
//!
//! A hot key must not take every slot. An event whose key is at its limit
//! waits here (holding its message's lease, not a run slot) only while
//! fewer than `concurrency_per_key` others of that key already wait; any
//! further one is deferred: released to JetStream with a delay, so the
//! consumer moves on to other keys. Consumers of keyed functions may hold
//! twice the concurrency unacked for those waiters (see
//! `stoke_bus::streams::Holding`). Deferral is not an attempt.
//!
//! Limits are per dispatcher process and per function version (versions
//! may set different limits).
//!
//! **Hand-over.** A slot is a [`Lane`]: the events that use it in turn. When
//! every slot is taken, a waiting event need not wait for one to come back
//! (a result's trip to the dispatcher, its store write, then the send to a
//! worker: ~1 ms the slot sits idle). It may instead take the *baton* of a
//! running event (the one sent longest ago): it joins that lane and is sent
//! at once to the same worker, marked to run after it, on its sandbox when
//! it ends. A lane runs one event at a time, so the function never runs
//! more than `concurrency` at once; a lane hands over to one event at a
//! time (its baton is offered again once that one runs). Functions with a
//! `concurrency_key` do not hand over (their waits are per key).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// One function's admission state.
pub(crate) struct Gate {
    per_key: Option<u32>,
    concurrency: usize,
    slots: Arc<Semaphore>,
    keys: Mutex<HashMap<String, KeyState>>,
    freed: Notify,
    /// Lanes whose running event may be followed, oldest offer first
    /// (entries that went stale are skipped when claiming).
    offers: Mutex<VecDeque<Weak<Lane>>>,
    offered: Notify,
}

/// Where a running event is: the worker, its invocation id and epoch. An
/// event that takes the baton is sent to run after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Baton {
    pub worker: String,
    pub invocation_id: String,
    pub epoch: u64,
}

/// One of the function's `concurrency` slots, held by the events that use
/// it in turn; the slot is given back when the last of them lets go.
pub(crate) struct Lane {
    gate: Arc<Gate>,
    _slot: OwnedSemaphorePermit,
    state: Mutex<LaneState>,
    /// Told of every change of `state` (see [`Pass::running`]).
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct LaneState {
    /// Sent to a worker and not back: the running event, then the one
    /// sent to follow it.
    sent: VecDeque<Baton>,
    /// The running event's baton was taken.
    taken: bool,
}

#[derive(Default)]
struct KeyState {
    running: u32,
    waiting: u32,
}

/// Leave to run: a place in a lane (a function slot) and, if keyed, a slot
/// of its key. With `after`, the lane's running event still runs: this one
/// must be sent to run after it.
pub(crate) struct Pass {
    _key: Option<KeyHeld>,
    lane: Arc<Lane>,
    after: Option<Baton>,
    /// Its baton once sent (None: not sent yet).
    baton: Mutex<Option<Baton>>,
    /// It was sent to follow `after` (not placed anew: that had ended).
    followed: AtomicBool,
}

impl Pass {
    fn new(lane: Arc<Lane>, key: Option<KeyHeld>, after: Option<Baton>) -> Pass {
        Pass {
            _key: key,
            lane,
            after,
            baton: Mutex::new(None),
            followed: AtomicBool::new(false),
        }
    }

    /// Returns once this pass's event runs on its worker: it was sent, and
    /// nothing sent before it in its lane is still out (a follower waits on
    /// its worker until the one ahead ends). Pending while it is not sent.
    pub async fn running(&self) {
        loop {
            // Made before the check, so a change in between is not missed.
            let changed = self.lane.changed.notified();
            let baton = self.baton.lock().expect("not poisoned").clone();
            if let Some(baton) = baton
                && self.lane.state.lock().expect("not poisoned").sent.front() == Some(&baton)
            {
                return;
            }
            changed.await;
        }
    }

    /// The running event this one must follow, if it took a baton.
    pub fn after(&self) -> Option<&Baton> {
        self.after.as_ref()
    }

    /// Whether it was sent to run after `after` on its worker.
    pub fn followed(&self) -> bool {
        self.followed.load(Ordering::Relaxed)
    }

    /// This pass's event was sent as `baton` (`following` the one in
    /// `after`, or placed anew): once it runs (it is the lane's only one
    /// out), others may follow it. Dropping the guard says it is back (a
    /// result, or given up on).
    pub fn sent(&self, baton: Baton, following: bool) -> Sent<'_> {
        *self.baton.lock().expect("not poisoned") = Some(baton.clone());
        self.followed.store(following, Ordering::Relaxed);
        self.lane.offer_if(|state| {
            state.sent.push_back(baton.clone());
            state.sent.len() == 1
        });
        Sent { pass: self, baton }
    }
}

/// A sent event that is not back yet.
pub(crate) struct Sent<'a> {
    pass: &'a Pass,
    baton: Baton,
}

impl Drop for Sent<'_> {
    fn drop(&mut self) {
        self.pass.lane.offer_if(|state| {
            let was_running = state.sent.front() == Some(&self.baton);
            state.sent.retain(|b| *b != self.baton);
            // The one that followed it runs now: it may be followed in turn.
            was_running && state.sent.len() == 1
        });
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        // A baton taken by an event that was never sent (it expired, or
        // shutdown): let another take it.
        if let Some(after) = &self.after
            && self.baton.get_mut().expect("not poisoned").is_none()
        {
            self.lane
                .offer_if(|state| state.taken && state.sent.len() == 1 && state.sent.front() == Some(after));
        }
    }
}

impl Lane {
    /// Change the lane's state with `f`; if it says the running event is
    /// now one that may be followed, it is offered (not yet taken).
    fn offer_if(self: &Arc<Self>, f: impl FnOnce(&mut LaneState) -> bool) {
        let mut state = self.state.lock().expect("not poisoned");
        let offer = f(&mut state);
        if offer {
            state.taken = false;
        }
        drop(state);
        self.changed.notify_waiters();
        if offer {
            self.offer();
        }
    }

    fn offer(self: &Arc<Self>) {
        if !self.gate.hands_over() {
            return;
        }
        let mut offers = self.gate.offers.lock().expect("not poisoned");
        // Offers nobody took (the function was not saturated) go stale:
        // drop them before they pile up.
        if offers.len() >= 2 * self.gate.concurrency {
            offers.retain(|lane| lane.upgrade().is_some_and(|lane| lane.offerable()));
        }
        offers.push_back(Arc::downgrade(self));
        drop(offers);
        self.gate.offered.notify_one();
    }

    fn offerable(&self) -> bool {
        self.state.lock().expect("not poisoned").offerable()
    }
}

impl LaneState {
    /// One event out (running), not yet followed.
    fn offerable(&self) -> bool {
        self.sent.len() == 1 && !self.taken
    }
}

/// A running slot of one key, given back on drop.
struct KeyHeld {
    gate: Arc<Gate>,
    key: String,
}

impl Gate {
    pub fn new(concurrency: u32, per_key: Option<u32>) -> Arc<Gate> {
        Arc::new(Gate {
            per_key,
            concurrency: concurrency.max(1) as usize,
            slots: Arc::new(Semaphore::new(concurrency.max(1) as usize)),
            keys: Mutex::new(HashMap::new()),
            freed: Notify::new(),
            offers: Mutex::new(VecDeque::new()),
            offered: Notify::new(),
        })
    }

    fn hands_over(&self) -> bool {
        self.per_key.is_none()
    }

    /// Wait for leave to run an event with `key`; `None` means defer it.
    /// With `follow`, an event may take the baton of a running one instead
    /// of waiting for a free slot (see the module docs).
    pub async fn admit(self: &Arc<Gate>, key: Option<String>, follow: bool) -> Option<Pass> {
        let held = match (self.per_key, key) {
            (Some(limit), Some(key)) => {
                self.take_key(&key, limit).await?;
                Some(KeyHeld {
                    gate: self.clone(),
                    key,
                })
            }
            _ => None,
        };
        // A wait cancelled here gives the key back (`held` drops).
        let fresh = |slot, held| {
            let lane = Arc::new(Lane {
                gate: self.clone(),
                _slot: slot,
                state: Mutex::new(LaneState::default()),
                changed: tokio::sync::Notify::new(),
            });
            Pass::new(lane, held, None)
        };
        if !(follow && self.hands_over()) {
            let slot = self.slots.clone().acquire_owned().await.expect("never closed");
            return Some(fresh(slot, held));
        }
        loop {
            if let Ok(slot) = self.slots.clone().try_acquire_owned() {
                return Some(fresh(slot, held));
            }
            let offered = self.offered.notified();
            tokio::pin!(offered);
            offered.as_mut().enable();
            if let Some((lane, baton)) = self.take_baton() {
                return Some(Pass::new(lane, held, Some(baton)));
            }
            tokio::select! {
                biased;
                slot = self.slots.clone().acquire_owned() => {
                    let slot = slot.expect("never closed");
                    return Some(fresh(slot, held));
                }
                _ = offered => {}
            }
        }
    }

    /// The oldest offered baton still good: its lane has one event out,
    /// not yet followed.
    fn take_baton(&self) -> Option<(Arc<Lane>, Baton)> {
        let mut offers = self.offers.lock().expect("not poisoned");
        while let Some(lane) = offers.pop_front() {
            let Some(lane) = lane.upgrade() else { continue };
            let mut state = lane.state.lock().expect("not poisoned");
            if state.offerable() {
                state.taken = true;
                let baton = state.sent[0].clone();
                drop(state);
                return Some((lane, baton));
            }
        }
        None
    }

    /// Take a running slot of `key`, waiting while at most `limit` others
    /// wait for it too. Cancel-safe.
    async fn take_key(&self, key: &str, limit: u32) -> Option<()> {
        let mut waiting = None::<Waiting<'_>>;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut keys = self.keys.lock().expect("not poisoned");
                let state = keys.entry(key.to_string()).or_default();
                if state.running < limit {
                    state.running += 1;
                    if let Some(mut w) = waiting.take() {
                        state.waiting -= 1;
                        w.counted = false;
                    }
                    return Some(());
                }
                if waiting.is_none() {
                    if state.waiting >= limit {
                        return None;
                    }
                    state.waiting += 1;
                    waiting = Some(Waiting {
                        gate: self,
                        key,
                        counted: true,
                    });
                }
            }
            freed.await;
        }
    }

    /// (key, running, waiting) of every key with events now (queue view).
    pub fn keys(&self) -> Vec<(String, u32, u32)> {
        self.keys
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|(_, s)| s.running + s.waiting > 0)
            .map(|(k, s)| (k.clone(), s.running, s.waiting))
            .collect()
    }

    /// Events of `key` running now (for tests).
    #[cfg(test)]
    fn running(&self, key: &str) -> u32 {
        self.keys
            .lock()
            .expect("not poisoned")
            .get(key)
            .map_or(0, |s| s.running)
    }
}

/// How long to defer an event whose key is busy: longer each time it
/// comes back, so a deep backlog of one key is not cycled through quickly.
pub(crate) fn defer_delay(delivered: u32) -> Duration {
    (Duration::from_millis(250) * delivered.max(1)).min(Duration::from_secs(5))
}

/// A place in a key's wait line, given back if the wait is cancelled.
struct Waiting<'a> {
    gate: &'a Gate,
    key: &'a str,
    /// Still counted in the key's `waiting`.
    counted: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let mut keys = self.gate.keys.lock().expect("not poisoned");
        if let Some(state) = keys.get_mut(self.key) {
            state.waiting -= 1;
            if state.running == 0 && state.waiting == 0 {
                keys.remove(self.key);
            }
        }
    }
}

impl Drop for KeyHeld {
    fn drop(&mut self) {
        let mut keys = self.gate.keys.lock().expect("not poisoned");
        if let Some(state) = keys.get_mut(&self.key) {
            state.running -= 1;
            if state.running == 0 && state.waiting == 0 {
                keys.remove(&self.key);
            }
        }
        drop(keys);
        self.gate.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Option<String> {
        Some(k.to_string())
    }

    #[tokio::test]
    async fn one_key_runs_alone_waits_once_then_defers() {
        let gate = Gate::new(4, Some(1));
        let first = gate.admit(key("hot"), true).await.expect("admitted");
        // A second "hot" waits; a third is deferred; another key runs.
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.admit(key("hot"), true).await.is_some() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        assert!(
            gate.admit(key("hot"), true).await.is_none(),
            "third of a busy key is deferred"
        );
        let cold = gate.admit(key("cold"), true).await.expect("other keys run");
        assert_eq!(gate.running("hot"), 1);
        drop(first);
        assert!(waiter.await.unwrap(), "the waiter runs once the key frees");
        drop(cold);
        assert!(gate.keys.lock().unwrap().is_empty(), "no state left for idle keys");
    }

    #[tokio::test]
    async fn function_slots_bound_every_key_and_unkeyed_events() {
        let gate = Gate::new(2, Some(1));
        let a = gate.admit(key("a"), true).await.unwrap();
        let _b = gate.admit(None, true).await.unwrap();
        let g = gate.clone();
        let third = tokio::spawn(async move { g.admit(key("c"), true).await.is_some() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!third.is_finished(), "no function slot free");
        drop(a);
        assert!(third.await.unwrap());
    }

    #[tokio::test]
    async fn a_cancelled_wait_gives_its_place_back() {
        let gate = Gate::new(4, Some(1));
        let first = gate.admit(key("k"), true).await.unwrap();
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.admit(key("k"), true).await.is_some() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiter.abort();
        let _ = waiter.await;
        // The wait line has room again: this one waits instead of deferring.
        let g = gate.clone();
        let again = tokio::spawn(async move { g.admit(key("k"), true).await.is_some() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!again.is_finished(), "waits rather than being deferred");
        drop(first);
        assert!(again.await.unwrap());
    }

    fn baton(id: &str) -> Baton {
        Baton {
            worker: "w".into(),
            invocation_id: id.into(),
            epoch: 1,
        }
    }

    #[tokio::test]
    async fn a_full_gate_hands_a_running_slot_over_to_one_follower_at_a_time() {
        let gate = Gate::new(1, None);
        let a = gate.admit(None, true).await.unwrap();
        assert_eq!(a.after(), None, "a free slot is taken fresh");
        let a_out = a.sent(baton("a"), false);
        // The slot is busy: the next one follows the running one.
        let b = gate.admit(None, true).await.unwrap();
        assert_eq!(b.after(), Some(&baton("a")));
        // One follower per running event: a third waits...
        let g = gate.clone();
        let third = tokio::spawn(async move { g.admit(None, true).await.map(|p| p.after().cloned()) });
        let b_out = b.sent(baton("b"), true);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!third.is_finished(), "b is queued behind a, not running: not offered");
        // ...until a is back and b runs: then it follows b.
        drop(a_out);
        drop(a);
        assert_eq!(third.await.unwrap(), Some(Some(baton("b"))));
        // A pass that does not hand over never follows.
        let g = gate.clone();
        let plain = tokio::spawn(async move { g.admit(None, false).await.map(|p| p.after().cloned()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!plain.is_finished(), "waits for the slot itself");
        drop(b_out);
        drop(b);
        assert_eq!(
            plain.await.unwrap(),
            Some(None),
            "the slot is free once its lane is empty"
        );
    }

    #[tokio::test]
    async fn a_baton_taken_by_an_event_never_sent_is_offered_again() {
        let gate = Gate::new(1, None);
        let a = gate.admit(None, true).await.unwrap();
        let _a_out = a.sent(baton("a"), false);
        let b = gate.admit(None, true).await.unwrap();
        assert!(b.after().is_some());
        drop(b);
        let c = gate.admit(None, true).await.unwrap();
        assert_eq!(c.after(), Some(&baton("a")));
    }

    #[tokio::test]
    async fn offers_nobody_takes_do_not_pile_up() {
        let gate = Gate::new(2, None);
        for i in 0..1000 {
            let pass = gate.admit(None, true).await.unwrap();
            drop(pass.sent(baton(&format!("e{i}")), false));
        }
        let offers = gate.offers.lock().unwrap().len();
        assert!(offers <= 4, "{offers} offers kept");
    }

    #[tokio::test]
    async fn keyed_functions_do_not_hand_over() {
        let gate = Gate::new(1, Some(1));
        let a = gate.admit(key("k"), true).await.unwrap();
        let _a_out = a.sent(baton("a"), false);
        let g = gate.clone();
        let other = tokio::spawn(async move { g.admit(key("other"), true).await.is_some() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!other.is_finished(), "waits for the slot");
        drop(_a_out);
        drop(a);
        assert!(other.await.unwrap());
    }

    /// `Pass::running`: pending until sent; at once for an event sent to a
    /// free slot; for a follower, only once the one ahead of it is back.
    #[tokio::test]
    async fn a_follower_runs_once_the_one_ahead_is_back() {
        use futures::FutureExt as _;
        let gate = Gate::new(1, None);
        let a = gate.admit(None, true).await.unwrap();
        assert!(a.running().now_or_never().is_none(), "not sent yet");
        let a_out = a.sent(baton("a"), false);
        assert!(a.running().now_or_never().is_some(), "sent to a free slot: it runs");
        let b = Arc::new(gate.admit(None, true).await.unwrap());
        assert_eq!(b.after(), Some(&baton("a")));
        let b_out = b.sent(baton("b"), true);
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.running().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "queued on its worker behind a");
        drop(a_out);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("runs once a is back")
            .unwrap();
        drop(b_out);
    }

    #[test]
    fn deferral_backs_off_to_a_cap() {
        assert_eq!(defer_delay(1), Duration::from_millis(250));
        assert_eq!(defer_delay(4), Duration::from_secs(1));
        assert_eq!(defer_delay(1000), Duration::from_secs(5));
    }
}
