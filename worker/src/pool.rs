//! Warm pools: idle sandboxes per function version, reused while healthy
//! and dropped (process killed) after an idle TTL — scale to zero.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sandbox::Sandbox;

type Key = (String, u32);

pub struct WarmPool {
    idle: Mutex<HashMap<Key, Vec<(Sandbox, Instant)>>>,
    idle_ttl: Duration,
}

impl WarmPool {
    pub fn new(idle_ttl: Duration) -> WarmPool {
        WarmPool {
            idle: Mutex::new(HashMap::new()),
            idle_ttl,
        }
    }

    /// The most recently used live idle sandbox of this version, if any.
    pub fn take(&self, function: &str, version: u32) -> Option<Sandbox> {
        let mut idle = self.idle.lock().expect("not poisoned");
        let list = idle.get_mut(&(function.to_string(), version))?;
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
        self.idle
            .lock()
            .expect("not poisoned")
            .entry(key)
            .or_default()
            .push((sandbox, Instant::now()));
    }

    /// Drop sandboxes idle longer than the TTL, and older versions of a
    /// function once a newer one is warm. Returns how many were dropped.
    pub fn reap(&self) -> usize {
        let expired: Vec<Sandbox> = {
            let mut idle = self.idle.lock().expect("not poisoned");
            let mut out = Vec::new();
            for list in idle.values_mut() {
                let (keep, drop): (Vec<_>, Vec<_>) = std::mem::take(list)
                    .into_iter()
                    .partition(|(sb, since)| sb.is_alive() && since.elapsed() < self.idle_ttl);
                *list = keep;
                out.extend(drop.into_iter().map(|(sb, _)| sb));
            }
            idle.retain(|_, l| !l.is_empty());
            out
        };
        let n = expired.len();
        drop(expired); // kills outside the lock
        n
    }

    /// Idle sandboxes per function version.
    pub fn idle_counts(&self) -> Vec<(String, u32, u32)> {
        let idle = self.idle.lock().expect("not poisoned");
        idle.iter().map(|((f, v), l)| (f.clone(), *v, l.len() as u32)).collect()
    }

    /// Kill every idle sandbox.
    pub fn clear(&self) {
        let all: Vec<_> = self.idle.lock().expect("not poisoned").drain().collect();
        drop(all);
    }
}
