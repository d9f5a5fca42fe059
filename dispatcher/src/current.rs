//! Which version a subject event runs: its function's current version, as
//! this dispatcher last read it from the store. An event on a subscribed
//! subject names no version (the invocation stream's do), so without this
//! every such event would cost a store read.
//!
//! A remembered version is trusted for `stoke_core::catalog::TTL` at most,
//! and never across a change made through this dispatcher's admin API
//! (deploy, rollback, env, delete bump the count every remembered entry
//! must match; `stoke up`'s gateway reads the same count). So in one
//! process an event handled after a deploy returns runs the new version;
//! another dispatcher of a cluster takes it within the TTL.

use stoke_core::catalog::{CatalogChanges, CurrentVersions};
use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Deployments {
    /// Wakes the pullers so a new function's consumers start at once.
    notify: Notify,
    /// Current version numbers, stale at every change through the admin API.
    pub current: CurrentVersions<u32>,
}

impl Deployments {
    /// Counting changes in `changes` (shared with whoever else caches).
    pub fn new(changes: CatalogChanges) -> Deployments {
        Deployments {
            notify: Notify::new(),
            current: CurrentVersions::new(changes),
        }
    }

    /// A function changed (deployed, rolled back, reconfigured, deleted):
    /// forget every remembered version and wake the pullers.
    pub fn changed(&self) {
        self.current.changes().bump();
        self.notify.notify_one();
    }

    /// Resolves at the next [`Deployments::changed`] (or at once if one
    /// came since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_forgets_remembered_versions() {
        let d = Deployments::default();
        d.current.remember("f", 3, d.current.changes().get());
        assert_eq!(d.current.get("f"), Some(3));
        d.changed();
        assert_eq!(d.current.get("f"), None);
    }
}
