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
//! `stoke_broker::streams::Holding`). Deferral is not an attempt.
//!
//! Limits are per dispatcher process and per function version (versions
//! may set different limits).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// One function's admission state.
pub(crate) struct Gate {
    per_key: Option<u32>,
    slots: Arc<Semaphore>,
    keys: Mutex<HashMap<String, KeyState>>,
    freed: Notify,
}

#[derive(Default)]
struct KeyState {
    running: u32,
    waiting: u32,
}

/// Leave to run: holds a function slot and, if keyed, a slot of its key.
pub(crate) struct Pass {
    _key: Option<KeyHeld>,
    _slot: OwnedSemaphorePermit,
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
            slots: Arc::new(Semaphore::new(concurrency.max(1) as usize)),
            keys: Mutex::new(HashMap::new()),
            freed: Notify::new(),
        })
    }

    /// Wait for leave to run an event with `key`; `None` means defer it.
    pub async fn admit(self: &Arc<Gate>, key: Option<String>) -> Option<Pass> {
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
        let slot = self.slots.clone().acquire_owned().await.expect("never closed");
        Some(Pass {
            _key: held,
            _slot: slot,
        })
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
        let first = gate.admit(key("hot")).await.expect("admitted");
        // A second "hot" waits; a third is deferred; another key runs.
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.admit(key("hot")).await.is_some() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        assert!(
            gate.admit(key("hot")).await.is_none(),
            "third of a busy key is deferred"
        );
        let cold = gate.admit(key("cold")).await.expect("other keys run");
        assert_eq!(gate.running("hot"), 1);
        drop(first);
        assert!(waiter.await.unwrap(), "the waiter runs once the key frees");
        drop(cold);
        assert!(gate.keys.lock().unwrap().is_empty(), "no state left for idle keys");
    }

    #[tokio::test]
    async fn function_slots_bound_every_key_and_unkeyed_events() {
        let gate = Gate::new(2, Some(1));
        let a = gate.admit(key("a")).await.unwrap();
        let _b = gate.admit(None).await.unwrap();
        let g = gate.clone();
        let third = tokio::spawn(async move { g.admit(key("c")).await.is_some() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!third.is_finished(), "no function slot free");
        drop(a);
        assert!(third.await.unwrap());
    }

    #[tokio::test]
    async fn a_cancelled_wait_gives_its_place_back() {
        let gate = Gate::new(4, Some(1));
        let first = gate.admit(key("k")).await.unwrap();
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.admit(key("k")).await.is_some() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiter.abort();
        let _ = waiter.await;
        // The wait line has room again: this one waits instead of deferring.
        let g = gate.clone();
        let again = tokio::spawn(async move { g.admit(key("k")).await.is_some() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!again.is_finished(), "waits rather than being deferred");
        drop(first);
        assert!(again.await.unwrap());
    }

    #[test]
    fn deferral_backs_off_to_a_cap() {
        assert_eq!(defer_delay(1), Duration::from_millis(250));
        assert_eq!(defer_delay(4), Duration::from_secs(1));
        assert_eq!(defer_delay(1000), Duration::from_secs(5));
    }
}
