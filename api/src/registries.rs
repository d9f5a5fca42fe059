//! Credentials for the OCI registries [`crate::pull`] pulls from: one per
//! host, the password sealed like a function secret (under the name
//! [`SEAL_AS`] and the host) and never handed back.

use stoke_auth::sealed::SecretsKey;
use stoke_proto::RegistryInfo;
use stoke_store::RegistryCredential;

use crate::AdminApi;
use crate::error::ApiError;

/// The "function" registry passwords are sealed for: not a valid function
/// name, so no function secret opens as one, nor one as a function secret.
const SEAL_AS: &str = "@registry";

/// A registry host as image references name it: `name[.domain][:port]`.
pub(crate) fn validate_host(host: &str) -> Result<(), ApiError> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "registry host {host:?} is not a host[:port] (as in an image reference: registry.example.com, 127.0.0.1:5000)"
        )))
    }
}

fn info(c: &RegistryCredential) -> RegistryInfo {
    RegistryInfo {
        host: c.host.clone(),
        username: c.username.clone(),
        set_unix_ms: c.set_ms,
    }
}

pub(crate) async fn login(
    api: &AdminApi,
    host: &str,
    username: &str,
    password: &str,
) -> Result<RegistryInfo, ApiError> {
    validate_host(host)?;
    if username.is_empty() || password.is_empty() {
        return Err(ApiError::invalid("a registry login needs a username and a password"));
    }
    let sealed = match &api.secrets {
        Some(key) => key.seal(SEAL_AS, host, password),
        None => password.to_string(),
    };
    let c = RegistryCredential {
        host: host.to_string(),
        username: username.to_string(),
        password: sealed,
        set_ms: stoke_core::now_ms(),
    };
    api.store.put_registry_credential(&c).await?;
    tracing::info!(%host, %username, "registry credentials stored");
    Ok(info(&c))
}

pub(crate) async fn logout(api: &AdminApi, host: &str) -> Result<(), ApiError> {
    validate_host(host)?;
    if !api.store.delete_registry_credential(host).await? {
        return Err(ApiError::not_found(format!(
            "no credentials are kept for registry {host}"
        )));
    }
    tracing::info!(%host, "registry credentials removed");
    Ok(())
}

pub(crate) async fn list(api: &AdminApi) -> Result<Vec<RegistryInfo>, ApiError> {
    Ok(api.store.registry_credentials().await?.iter().map(info).collect())
}

/// The username and (opened) password kept for `host`, if any.
pub(crate) async fn credentials(
    store: &dyn stoke_store::Admin,
    key: Option<&SecretsKey>,
    host: &str,
) -> Result<Option<(String, String)>, ApiError> {
    let Some(c) = store.registry_credential(host).await? else {
        return Ok(None);
    };
    let password = SecretsKey::open(key, SEAL_AS, host, &c.password)
        .map_err(|e| ApiError::precondition(format!("the credentials kept for registry {host}: {e}")))?;
    Ok(Some((c.username, password)))
}
