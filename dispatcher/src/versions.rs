//! Function lifecycle through the admin API beyond deploy: version history,
//! rollback and delete.

use stoke_proto::{DeleteFunctionResponse, FunctionInfo, ListVersionsResponse};
use stoke_store::Store;
use tonic::Status;

use crate::admin::{function_info, store_status};

pub(crate) async fn list(store: &dyn Store, name: &str) -> Result<ListVersionsResponse, Status> {
    let versions = store.list_versions(name).await.map_err(store_status)?;
    if versions.is_empty() {
        return Err(Status::not_found(format!("function {name:?} not found")));
    }
    let current = store.current_version(name).await.map_err(store_status)?;
    Ok(ListVersionsResponse {
        versions: versions.iter().map(function_info).collect(),
        current_version: current.map_or(0, |v| v.version),
    })
}

/// Make `version` current; 0 = the highest version below the current one.
pub(crate) async fn rollback(store: &dyn Store, name: &str, version: u32) -> Result<FunctionInfo, Status> {
    let current = store
        .current_version(name)
        .await
        .map_err(store_status)?
        .ok_or_else(|| Status::not_found(format!("function {name:?} is not deployed")))?;
    let target = if version == 0 {
        let versions = store.list_versions(name).await.map_err(store_status)?;
        versions
            .iter()
            .map(|v| v.version)
            .filter(|v| *v < current.version)
            .max()
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "{name} v{} is its first version: nothing to roll back to",
                    current.version
                ))
            })?
    } else {
        version
    };
    if !store
        .set_current_version(name, target, stoke_core::now_ms())
        .await
        .map_err(store_status)?
    {
        return Err(Status::not_found(format!("function {name:?} has no version {target}")));
    }
    let v = store
        .current_version(name)
        .await
        .map_err(store_status)?
        .ok_or_else(|| Status::not_found(format!("function {name:?} was deleted meanwhile")))?;
    tracing::info!(function = %name, from = current.version, to = v.version, "current version changed");
    Ok(function_info(&v))
}

pub(crate) async fn delete(store: &dyn Store, name: &str) -> Result<DeleteFunctionResponse, Status> {
    if !store
        .delete_function(name, stoke_core::now_ms())
        .await
        .map_err(store_status)?
    {
        return Err(Status::not_found(format!("function {name:?} is not deployed")));
    }
    tracing::info!(function = %name, "deleted");
    Ok(DeleteFunctionResponse {})
}
