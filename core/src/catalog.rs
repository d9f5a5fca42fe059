//! A count of changes to the function catalog (deploys, rollbacks,
//! configuration edits, deletes) made through one process's admin API, and
//! the cache of functions' current versions that trusts it: an entry is
//! used for [`TTL`] at most and never across a change counted since it was
//! read. So in one process (`stoke up`) a call or event handled after a
//! deploy returns runs the new version; a change made through another
//! process's admin API is seen within the TTL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shared by the admin API (which bumps it) and the caches (which read it).
#[derive(Clone, Default, Debug)]
pub struct CatalogChanges(Arc<AtomicU64>);

impl CatalogChanges {
    /// The catalog changed: every version remembered before is stale.
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// Read before the store; a cache entry is good while this is unchanged.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Longest a remembered current version is used.
pub const TTL: Duration = Duration::from_secs(1);

/// Functions remembered at most (then the cache starts over).
const KEPT: usize = 4096;

/// Each function's current version (`T`: what the holder needs of it) as
/// last read from the store.
#[derive(Default)]
pub struct CurrentVersions<T> {
    changes: CatalogChanges,
    seen: Mutex<HashMap<String, Seen<T>>>,
}

struct Seen<T> {
    value: T,
    at_change: u64,
    at: Instant,
}

impl<T: Clone> CurrentVersions<T> {
    /// Stale at every change counted in `changes`.
    pub fn new(changes: CatalogChanges) -> Self {
        CurrentVersions {
            changes,
            seen: Mutex::default(),
        }
    }

    /// The count changes are made through.
    pub fn changes(&self) -> &CatalogChanges {
        &self.changes
    }

    /// `function`'s current version, if remembered and still good.
    pub fn get(&self, function: &str) -> Option<T> {
        let changes = self.changes.get();
        let seen = self.seen.lock().expect("not poisoned");
        let s = seen.get(function)?;
        (s.at_change == changes && s.at.elapsed() < TTL).then(|| s.value.clone())
    }

    /// Remember `value` as `function`'s current version, read from the store
    /// when the change count was `at_change` (taken with
    /// `changes().get()` before the read: a change since makes it stale).
    pub fn remember(&self, function: &str, value: T, at_change: u64) {
        let mut seen = self.seen.lock().expect("not poisoned");
        if seen.len() >= KEPT && !seen.contains_key(function) {
            seen.clear();
        }
        let entry = Seen {
            value,
            at_change,
            at: Instant::now(),
        };
        match seen.get_mut(function) {
            Some(s) => *s = entry,
            None => {
                seen.insert(function.to_string(), entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_version_holds_until_a_change() {
        let c = CurrentVersions::new(CatalogChanges::default());
        assert_eq!(c.get("f"), None);
        c.remember("f", 3, c.changes().get());
        assert_eq!(c.get("f"), Some(3));
        c.changes().bump();
        assert_eq!(c.get("f"), None, "a change forgets it");
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_trusted() {
        let c = CurrentVersions::new(CatalogChanges::default());
        let before = c.changes().get();
        c.changes().bump(); // a deploy lands while the store read is under way
        c.remember("f", 3, before);
        assert_eq!(c.get("f"), None);
    }

    #[test]
    fn a_remembered_version_expires() {
        let c = CurrentVersions::new(CatalogChanges::default());
        c.remember("f", 3, c.changes().get());
        c.seen.lock().unwrap().get_mut("f").unwrap().at -= TTL;
        assert_eq!(c.get("f"), None);
    }

    #[test]
    fn a_shared_count_ends_every_cache_reading_it() {
        let changes = CatalogChanges::default();
        let (a, b) = (
            CurrentVersions::new(changes.clone()),
            CurrentVersions::new(changes.clone()),
        );
        a.remember("f", 1, changes.get());
        b.remember("f", "one", changes.get());
        changes.bump();
        assert_eq!((a.get("f"), b.get("f")), (None, None));
    }
}
