//! API tokens through the admin API. An admin manages the tokens of its own
//! namespace, never with a role above its own; only an all-namespace admin
//! creates all-namespace or worker tokens.

use stoke_auth::{self as auth, ALL_NAMESPACES, Caller, Role};

use crate::access::Grant;
use crate::error::ApiError;
use stoke_proto::{CreateTokenRequest, CreateTokenResponse, TokenInfo};
use stoke_store::{Admin, TokenRecord};

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
    store: &dyn Admin,
    grant: &Grant,
    r: CreateTokenRequest,
) -> Result<CreateTokenResponse, ApiError> {
    let caller = &grant.caller;
    let role: Role = r.role.parse()?;
    let namespace = if r.namespace.is_empty() {
        caller.namespace.clone()
    } else {
        r.namespace
    };
    grant.on_namespace(&namespace)?;
    if (namespace == ALL_NAMESPACES || role == Role::Worker) && !caller.sees_all_namespaces() {
        return Err(ApiError::denied(
            "only an admin token for every namespace (\"*\") can create all-namespace or worker tokens",
        ));
    }
    if r.name.trim().is_empty() {
        return Err(ApiError::invalid("name the token (e.g. \"ci-deploy\")"));
    }
    let (record, secret) = auth::mint(store, r.name.trim(), &namespace, role).await?;
    tracing::info!(token = %record.id, %namespace, %role, by = ?caller.token_id, "token created");
    Ok(CreateTokenResponse {
        aws_access_key_id: record.id.clone(),
        aws_secret_access_key: auth::sigv4::secret_access_key(&secret),
        token: Some(info(&record)),
        secret,
    })
}

/// The tokens the caller (an admin: see `ACCESS`) manages.
pub(crate) async fn list(store: &dyn Admin, caller: &Caller) -> Result<Vec<TokenInfo>, ApiError> {
    let tokens = store.tokens().await?;
    Ok(tokens
        .iter()
        .filter(|t| caller.sees_all_namespaces() || t.namespace == caller.namespace)
        .map(info)
        .collect())
}

/// Revoke a live token the caller (an admin: see `ACCESS`) manages.
pub(crate) async fn revoke(store: &dyn Admin, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let tokens = store.tokens().await?;
    let token = tokens
        .iter()
        .find(|t| t.id == id && t.revoked_ms.is_none())
        .filter(|t| caller.sees_all_namespaces() || t.namespace == caller.namespace)
        .ok_or_else(|| ApiError::not_found(format!("no live token {id:?} in the token's namespace")))?;
    store.revoke_token(&token.id, stoke_core::now_ms()).await?;
    tracing::info!(token = %id, by = ?caller.token_id, "token revoked");
    Ok(())
}

/// The caller's own token (with auth off: what every caller is).
pub(crate) async fn who_am_i(store: &dyn Admin, caller: Caller) -> Result<TokenInfo, ApiError> {
    let token = match &caller.token_id {
        Some(id) => store.tokens().await?.iter().find(|t| &t.id == id).map(info),
        None => None,
    };
    Ok(token.unwrap_or(TokenInfo {
        id: String::new(),
        name: "(auth off: every caller is an admin of every namespace)".into(),
        namespace: caller.namespace,
        role: caller.role.to_string(),
        created_unix_ms: 0,
        revoked_unix_ms: 0,
    }))
}
