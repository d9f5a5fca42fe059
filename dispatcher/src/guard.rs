//! Authorization for the admin API: who the caller is (bearer token →
//! [`Caller`]) and whether they may act on a function's namespace. Every
//! admin RPC starts with one of these checks.

use stoke_auth::{AuthError, Authenticator, Caller, Role};
use stoke_store::Store;
use tonic::{Request, Status};

use crate::admin::store_status;

pub(crate) fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::Unauthenticated(m) => Status::unauthenticated(m),
        AuthError::PermissionDenied(m) => Status::permission_denied(m),
        AuthError::Invalid(m) => Status::invalid_argument(m),
        AuthError::Unavailable(e) => store_status(e),
    }
}

/// The caller behind a request, from its `authorization` metadata.
pub(crate) async fn caller<T>(auth: &Authenticator, req: &Request<T>) -> Result<Caller, Status> {
    let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
    auth.authenticate(header).await.map_err(auth_status)
}

/// `need` anywhere the caller's token reaches (for listings that are then
/// filtered by namespace).
pub(crate) fn role(caller: &Caller, need: Role) -> Result<(), Status> {
    let ns = caller.namespace.clone();
    caller.require(need, &ns).map_err(auth_status)
}

/// `need` on `function`'s namespace. A function the store has never heard
/// of is NOT_FOUND for a one-namespace caller (an all-namespace caller
/// passes, and the call itself then says "not found").
pub(crate) async fn on_function(store: &dyn Store, caller: &Caller, need: Role, function: &str) -> Result<(), Status> {
    // `name:7` and `name:alias` belong to `name`.
    let (function, _) = stoke_core::naming::split_qualified(function);
    // Every namespace is covered (and, with auth off, every caller is such
    // an admin): the role is all there is to check, no store read on the
    // invoke path.
    if caller.sees_all_namespaces() {
        return role(caller, need);
    }
    match store.function_namespace(function).await.map_err(store_status)? {
        Some(ns) => caller.require(need, &ns).map_err(|e| match e {
            AuthError::PermissionDenied(_) if !caller.covers(&ns) => Status::permission_denied(format!(
                "function {function:?} belongs to another namespace than the token's ({:?})",
                caller.namespace
            )),
            e => auth_status(e),
        }),
        None => {
            role(caller, need)?;
            Err(Status::not_found(format!("function {function:?} not found")))
        }
    }
}

/// Cluster-wide calls (workers): an admin of every namespace.
pub(crate) fn cluster_admin(caller: &Caller) -> Result<(), Status> {
    caller
        .require(Role::Admin, stoke_auth::ALL_NAMESPACES)
        .map_err(auth_status)
}

/// The refusal of a deploy under a name another namespace owns.
pub(crate) fn owned_elsewhere(function: &str, namespace: &str) -> Status {
    Status::permission_denied(format!(
        "function {function:?} belongs to another namespace than {namespace:?}: deploy it under another name"
    ))
}

/// Keep the items whose function the caller may read.
pub(crate) async fn visible<T>(
    store: &dyn Store,
    caller: &Caller,
    items: Vec<T>,
    function: impl Fn(&T) -> &str,
) -> Result<Vec<T>, Status> {
    if caller.sees_all_namespaces() {
        return Ok(items);
    }
    let mut owners = std::collections::HashMap::new();
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        let f = function(&item).to_string();
        if !owners.contains_key(&f) {
            let ns = store.function_namespace(&f).await.map_err(store_status)?;
            owners.insert(f.clone(), ns);
        }
        if owners[&f].as_deref().is_some_and(|ns| caller.covers(ns)) {
            kept.push(item);
        }
    }
    Ok(kept)
}
