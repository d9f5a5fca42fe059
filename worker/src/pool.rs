//! Warm pools: idle sandboxes per function version, reused while healthy
//! and dropped (process killed) after an idle TTL — scale to zero — except
//! a function's provisioned floor (`min_warm`), which stays started.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sandbox::Sandbox;

type Key = (String, u32);

#[derive(Default)]
struct State {
    idle: HashMap<Key, Vec<(Sandbox, Instant)>>,
    /// Sandboxes taken out (running an event) or being started.
    in_use: HashMap<Key, u32>,
    /// Provisioned floor per function: (version, sandboxes kept started).
    floors: HashMap<String, (u32, u32)>,
}

pub struct WarmPool {
    state: Mutex<State>,
    idle_ttl: Duration,
}

/// A sandbox of `key` counted as in use until dropped.
pub struct InUse<'a> {
    pool: &'a WarmPool,
    key: Key,
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        self.pool.release(&self.key.0, self.key.1);
    }
}

impl WarmPool {
    pub fn new(idle_ttl: Duration) -> WarmPool {
        WarmPool {
            state: Mutex::new(State::default()),
            idle_ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("not poisoned")
    }

    /// Count one sandbox of this version as in use (running or starting)
    /// while the guard lives.
    pub fn in_use(&self, function: &str, version: u32) -> InUse<'_> {
        self.hold(function, version);
        InUse {
            pool: self,
            key: (function.to_string(), version),
        }
    }

    /// Count one sandbox of this version as in use until [`Self::release`]
    /// (for an owner that cannot hold an [`InUse`] borrow).
    pub fn hold(&self, function: &str, version: u32) {
        *self.lock().in_use.entry((function.to_string(), version)).or_insert(0) += 1;
    }

    /// Undo one [`Self::hold`] (or an [`InUse`] ending).
    pub fn release(&self, function: &str, version: u32) {
        let mut state = self.lock();
        let key = (function.to_string(), version);
        if let Some(n) = state.in_use.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.in_use.remove(&key);
            }
        }
    }

    /// The most recently used live idle sandbox of this version, if any.
    pub fn take(&self, function: &str, version: u32) -> Option<Sandbox> {
        let mut state = self.lock();
        let list = state.idle.get_mut(&(function.to_string(), version))?;
        while let Some((sb, _)) = list.pop() {
            if sb.is_alive() {
                return Some(sb);
            }
            // Dead while idle: dropped here, a fresh one will be started.
        }
        None
    }

    pub fn put(&self, sandbox: Sandbox) {
        if !sandbox.is_alive() {
            return;
        }
        let key = (sandbox.function.clone(), sandbox.version);
        self.lock().idle.entry(key).or_default().push((sandbox, Instant::now()));
    }

    /// Sandboxes of this version started: idle, running or starting.
    pub fn live(&self, function: &str, version: u32) -> u32 {
        let state = self.lock();
        let key = (function.to_string(), version);
        let idle = state
            .idle
            .get(&key)
            .map_or(0, |l| l.iter().filter(|(sb, _)| sb.is_alive()).count());
        idle as u32 + state.in_use.get(&key).copied().unwrap_or(0)
    }

    /// Keep `n` sandboxes of `function` `version` started whatever the idle
    /// TTL (0: none; the TTL applies again).
    pub fn set_floor(&self, function: &str, version: u32, n: u32) {
        let mut state = self.lock();
        if n == 0 {
            state.floors.remove(function);
        } else {
            state.floors.insert(function.to_string(), (version, n));
        }
    }

    /// Stop idle provisioned sandboxes of this version beyond `keep` started
    /// ones (a share that shrank: another worker joined, or `min_warm`
    /// went down). On-demand ones keep their idle TTL. Returns how many.
    pub fn trim_provisioned(&self, function: &str, version: u32, keep: u32) -> usize {
        let key = (function.to_string(), version);
        let dropped: Vec<Sandbox> = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let in_use = state.in_use.get(&key).copied().unwrap_or(0);
            let Some(list) = state.idle.get_mut(&key) else {
                return 0;
            };
            let mut excess = (list.len() as u32 + in_use).saturating_sub(keep) as usize;
            let mut out = Vec::new();
            // Oldest first.
            let mut i = 0;
            while excess > 0 && i < list.len() {
                if list[i].0.provisioned {
                    out.push(list.remove(i).0);
                    excess -= 1;
                } else {
                    i += 1;
                }
            }
            out
        };
        let n = dropped.len();
        drop(dropped); // kills outside the lock
        n
    }

    /// Drop dead sandboxes and those idle longer than the TTL, except as
    /// many as a provisioned floor still needs. Returns how many were dropped.
    pub fn reap(&self) -> usize {
        let expired: Vec<Sandbox> = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let mut out = Vec::new();
            for (key, list) in state.idle.iter_mut() {
                let (mut keep, expired): (Vec<_>, Vec<_>) = std::mem::take(list)
                    .into_iter()
                    .filter(|(sb, _)| sb.is_alive())
                    .partition(|(_, since)| since.elapsed() < self.idle_ttl);
                let floor = match state.floors.get(&key.0) {
                    Some((version, n)) if *version == key.1 => *n,
                    _ => 0,
                };
                let in_use = state.in_use.get(key).copied().unwrap_or(0);
                let short = floor.saturating_sub(keep.len() as u32 + in_use) as usize;
                // The most recently used of the expired ones stay for the floor.
                let mut expired = expired;
                let stay = expired.split_off(expired.len().saturating_sub(short));
                keep.splice(0..0, stay);
                *list = keep;
                out.extend(expired.into_iter().map(|(sb, _)| sb));
            }
            state.idle.retain(|_, l| !l.is_empty());
            out
        };
        let n = expired.len();
        drop(expired); // kills outside the lock
        n
    }

    /// Idle sandboxes per function version.
    pub fn idle_counts(&self) -> Vec<(String, u32, u32)> {
        let state = self.lock();
        state
            .idle
            .iter()
            .map(|((f, v), l)| (f.clone(), *v, l.len() as u32))
            .collect()
    }

    /// Kill every idle sandbox.
    pub fn clear(&self) {
        let all: Vec<_> = self.lock().idle.drain().collect();
        drop(all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-over (`invoke::Warm`) holds its sandbox with `hold` while the
    /// run that used it still counts it, then `release`s it: the count of
    /// live sandboxes (what a top-up compares with `min_warm`) never dips.
    #[test]
    fn held_and_in_use_sandboxes_count_as_live_until_released() {
        let pool = WarmPool::new(Duration::from_secs(60));
        let run = pool.in_use("f", 1);
        pool.hold("f", 1);
        assert_eq!(pool.live("f", 1), 2, "the run and the hand-over overlap");
        drop(run);
        assert_eq!(pool.live("f", 1), 1, "held between the two runs");
        let next = pool.in_use("f", 1);
        pool.release("f", 1);
        assert_eq!(pool.live("f", 1), 1, "the follower's run");
        drop(next);
        assert_eq!(pool.live("f", 1), 0);
        assert_eq!(pool.live("f", 2), 0, "per version");
    }
}
