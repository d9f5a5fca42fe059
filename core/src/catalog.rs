//! A count of changes to the function catalog (deploys, rollbacks,
//! configuration edits, deletes) made through one process's admin API.
//! Caches of a function's current version in that process remember the
//! count they read under and are stale as soon as it moves, so in one
//! process (`stoke up`) a call made after a deploy returns runs the new
//! version.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
