//! API tokens through the admin API. An admin manages the tokens of its own
//! namespace, never with a role above its own; only an all-namespace admin
//! creates all-namespace or worker tokens.

use stoke_auth::{self as auth, ALL_NAMESPACES, Caller, Role};
use stoke_proto::{CreateTokenRequest, CreateTokenResponse, TokenInfo};
use stoke_store::{Store, TokenRecord};
use tonic::Status;

use crate::admin::store_status;
use crate::guard::auth_status;

pub(crate) fn info(t: &TokenRecord) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        namespace: t.namespace.clone(),
        role: t.role.clone(),
        created_unix_ms: t.created_ms,
        revoked_unix_ms: t.revoked_ms.unwrap_or(0),
    }
}

pub(crate) async fn create(
    store: &dyn Store,
    caller: &Caller,
    r: CreateTokenRequest,
) -> Result<CreateTokenResponse, Status> {
    let role: Role = r.role.parse().map_err(auth_status)?;
    let namespace = if r.namespace.is_empty() {
        caller.namespace.clone()
    } else {
        r.namespace
    };
    caller.require(Role::Admin, &namespace).map_err(auth_status)?;
    if (namespace == ALL_NAMESPACES || role == Role::Worker) && !caller.sees_all_namespaces() {
        return Err(Status::permission_denied(
            "only an admin token for every namespace (\"*\") can create all-namespace or worker tokens",
        ));
    }
    if r.name.trim().is_empty() {
        return Err(Status::invalid_argument("name the token (e.g. \"ci-deploy\")"));
    }
    let (record, secret) = auth::mint(store, r.name.trim(), &namespace, role)
        .await
        .map_err(auth_status)?;
    tracing::info!(token = %record.id, %namespace, %role, by = ?caller.token_id, "token created");
    Ok(CreateTokenResponse {
        token: Some(info(&record)),
        secret,
    })
}

pub(crate) async fn list(store: &dyn Store, caller: &Caller) -> Result<Vec<TokenInfo>, Status> {
    crate::guard::role(caller, Role::Admin)?;
    let tokens = store.tokens().await.map_err(store_status)?;
    Ok(tokens
        .iter()
        .filter(|t| caller.sees_all_namespaces() || t.namespace == caller.namespace)
        .map(info)
        .collect())
}

pub(crate) async fn revoke(store: &dyn Store, caller: &Caller, id: &str) -> Result<(), Status> {
    crate::guard::role(caller, Role::Admin)?;
    let tokens = store.tokens().await.map_err(store_status)?;
    let token = tokens
        .iter()
        .find(|t| t.id == id && t.revoked_ms.is_none())
        .filter(|t| caller.sees_all_namespaces() || t.namespace == caller.namespace)
        .ok_or_else(|| Status::not_found(format!("no live token {id:?} in the token's namespace")))?;
    store
        .revoke_token(&token.id, stoke_core::now_ms())
        .await
        .map_err(store_status)?;
    tracing::info!(token = %id, by = ?caller.token_id, "token revoked");
    Ok(())
}
