//! The gateway's route table (`stoke_core::routes`), built from the current
//! versions' manifests and kept as the current versions are: rebuilt at
//! most once per [`stoke_core::catalog::TTL`], and at once after a change
//! counted by this process's admin API. A route two functions claim (they
//! can only both have it through a race of two deploys) stays with the one
//! listed first, and the other is logged.

use std::sync::Arc;
use std::time::Instant;

use stoke_core::Manifest;
use stoke_core::catalog::{CatalogChanges, TTL};
use stoke_core::routes::RouteTable;
use stoke_store::FunctionVersion;

/// The last table built, and when.
#[derive(Default)]
pub(crate) struct Routes {
    built: tokio::sync::Mutex<Option<Built>>,
}

struct Built {
    table: Arc<RouteTable>,
    at_change: Option<u64>,
    at: Instant,
}

impl Routes {
    /// The table, rebuilt from `list()` (the current versions, parsed by
    /// `manifest`) when the one kept is stale. One caller rebuilds; the
    /// others wait for it.
    pub(crate) async fn table<L, E>(
        &self,
        changes: Option<&CatalogChanges>,
        list: L,
        manifest: impl Fn(&FunctionVersion) -> Option<Arc<Manifest>>,
    ) -> Result<Arc<RouteTable>, E>
    where
        L: AsyncFnOnce() -> Result<Vec<FunctionVersion>, E>,
    {
        let mut built = self.built.lock().await;
        let change = changes.map(CatalogChanges::get);
        if let Some(b) = built.as_ref()
            && b.at_change == change
            && b.at.elapsed() < TTL
        {
            return Ok(b.table.clone());
        }
        let functions = list().await?;
        let manifests: Vec<(String, Arc<Manifest>)> = functions
            .iter()
            .filter_map(|v| Some((v.function.clone(), manifest(v)?)))
            .collect();
        let (table, refused) = RouteTable::of(manifests.iter().map(|(f, m)| (f.as_str(), m.as_ref())));
        for conflict in refused {
            tracing::warn!(%conflict, "route not served");
        }
        let table = Arc::new(table);
        *built = Some(Built {
            table: table.clone(),
            at_change: change,
            at: Instant::now(),
        });
        Ok(table)
    }
}
