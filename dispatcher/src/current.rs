//! Which version a subject event runs: its function's current version, as
//! this dispatcher last read it from the store. An event on a subscribed
//! subject names no version (the invocation stream's do), so without this
//! every such event would cost a store read.
//!
//! A remembered version is trusted for [`TTL`] at most, and never across a
//! change made through this dispatcher's admin API (deploy, rollback, env,
//! delete bump a generation that every remembered entry must match). So in
//! one process (`stoke up`) an event handled after a deploy returns runs
//! the new version; another dispatcher of a cluster takes it within `TTL`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use stoke_core::catalog::CatalogChanges;

use tokio::sync::Notify;

/// Longest a remembered current version is used.
pub(crate) const TTL: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct Deployments {
    /// Wakes the pullers so a new function's consumers start at once.
    notify: Notify,
    /// Bumped by every change through the admin API (shared with the
    /// broker's cache in `stoke up`).
    generation: CatalogChanges,
    current: Mutex<HashMap<String, Seen>>,
}

struct Seen {
    version: u32,
    generation: u64,
    at: Instant,
}

impl Deployments {
    /// Counting changes in `generation` (shared with whoever else caches).
    pub fn new(generation: CatalogChanges) -> Deployments {
        Deployments {
            generation,
            ..Default::default()
        }
    }

    /// A function changed (deployed, rolled back, reconfigured, deleted):
    /// forget every remembered version and wake the pullers.
    pub fn changed(&self) {
        self.generation.bump();
        self.notify.notify_one();
    }

    /// Resolves at the next [`Deployments::changed`] (or at once if one
    /// came since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Taken before reading the store; hand it back to [`Deployments::remember`].
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// The current version of `function`, if remembered and still good.
    pub fn cached(&self, function: &str) -> Option<u32> {
        let generation = self.generation();
        let current = self.current.lock().expect("not poisoned");
        current
            .get(function)
            .filter(|s| s.generation == generation && s.at.elapsed() < TTL)
            .map(|s| s.version)
    }

    /// Remember `version` as current, read from the store when the
    /// generation was `generation` (a change since makes it stale at once).
    pub fn remember(&self, function: &str, version: u32, generation: u64) {
        let seen = Seen {
            version,
            generation,
            at: Instant::now(),
        };
        let mut current = self.current.lock().expect("not poisoned");
        match current.get_mut(function) {
            Some(s) => *s = seen,
            None => {
                current.insert(function.to_string(), seen);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_version_holds_until_a_change() {
        let d = Deployments::default();
        assert_eq!(d.cached("f"), None);
        d.remember("f", 3, d.generation());
        assert_eq!(d.cached("f"), Some(3));
        d.changed();
        assert_eq!(d.cached("f"), None, "a change forgets it");
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_trusted() {
        let d = Deployments::default();
        let before = d.generation();
        d.changed(); // a deploy lands while the store read is under way
        d.remember("f", 3, before);
        assert_eq!(d.cached("f"), None);
    }

    #[test]
    fn a_remembered_version_expires() {
        let d = Deployments::default();
        d.remember("f", 3, d.generation());
        d.current.lock().unwrap().get_mut("f").unwrap().at -= TTL;
        assert_eq!(d.cached("f"), None);
    }
}
