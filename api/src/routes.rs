//! The routes functions claim at the gateway's root (`stoke_core::routes`):
//! one function per route and host, checked whenever a version becomes
//! current (a deploy, a rollback), and the table `stoke routes` shows.

use stoke_core::Manifest;
use stoke_core::routes::RouteTable;
use stoke_proto::RouteInfo;
use stoke_store::{Catalog, FunctionVersion};

use crate::error::ApiError;

/// The table of every current version (but `except`'s), and those versions.
async fn table(store: &dyn Catalog, except: Option<&str>) -> Result<(RouteTable, Vec<FunctionVersion>), ApiError> {
    let current: Vec<FunctionVersion> = store
        .list_functions()
        .await?
        .into_iter()
        .filter(|v| Some(v.function.as_str()) != except)
        .collect();
    let parsed: Vec<(&str, Manifest)> = current
        .iter()
        .filter_map(|v| Some((v.function.as_str(), Manifest::parse(&v.manifest).ok()?)))
        .collect();
    let (table, _) = RouteTable::of(parsed.iter().map(|(f, m)| (*f, m)));
    Ok((table, current))
}

/// Refuse `manifest` becoming `function`'s current version if it claims a
/// route another function has, naming that function.
pub(crate) async fn check_claims(store: &dyn Catalog, function: &str, manifest: &Manifest) -> Result<(), ApiError> {
    let routes = manifest.http_routes();
    if routes.is_empty() {
        return Ok(());
    }
    let (mut table, _) = table(store, Some(function)).await?;
    for (host, route) in routes {
        table.claim(host.as_deref(), route, function).map_err(|conflict| {
            ApiError::exists(format!(
                "{conflict}: remove it there first, or choose another route{}",
                if host.is_none() { " or a `host`" } else { "" }
            ))
        })?;
    }
    Ok(())
}

/// The route table, limited to what `visible` lets through.
pub(crate) async fn list(store: &dyn Catalog, visible: impl Fn(&str) -> bool) -> Result<Vec<RouteInfo>, ApiError> {
    let (table, current) = table(store, None).await?;
    Ok(table
        .entries()
        .into_iter()
        .filter_map(|e| {
            let v = current.iter().find(|v| v.function == e.function)?;
            visible(&v.namespace).then(|| RouteInfo {
                route_key: e.route.key().to_string(),
                host: e.host.clone().unwrap_or_default(),
                function: e.function.clone(),
                version: v.version,
                namespace: v.namespace.clone(),
            })
        })
        .collect())
}
