//! Function lifecycle through the admin API beyond deploy: version history,
//! rollback, delete, environment and secrets, aliases.

use crate::error::ApiError;
use stoke_core::{ConfigEdit, Manifest};
use stoke_proto::{
    AliasInfo, DeleteFunctionResponse, FunctionInfo, ListAliasesResponse, ListVersionsResponse, SetEnvRequest,
    SetEnvResponse,
};
use stoke_store::{Admin, Alias, DeployOutcome, FunctionVersion};

pub(crate) async fn list(store: &dyn Admin, name: &str) -> Result<ListVersionsResponse, ApiError> {
    let versions = store.list_versions(name).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("function {name:?} not found")));
    }
    let current = store.current_version(name).await?;
    Ok(ListVersionsResponse {
        versions: versions.iter().map(function_info).collect(),
        current_version: current.map_or(0, |v| v.version),
    })
}

/// Make `version` current; 0 = the highest version below the current one.
pub(crate) async fn rollback(store: &dyn Admin, name: &str, version: u32) -> Result<FunctionInfo, ApiError> {
    let current = store
        .current_version(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("function {name:?} is not deployed")))?;
    let target = if version == 0 {
        let versions = store.list_versions(name).await?;
        versions
            .iter()
            .map(|v| v.version)
            .filter(|v| *v < current.version)
            .max()
            .ok_or_else(|| {
                ApiError::precondition(format!(
                    "{name} v{} is its first version: nothing to roll back to",
                    current.version
                ))
            })?
    } else {
        version
    };
    // Its routes must still be free (another function may have taken one).
    if let Some(target) = store.get_version(name, target).await?
        && let Ok(manifest) = stoke_core::Manifest::parse(&target.manifest)
    {
        crate::routes::check_claims(store, name, &manifest).await?;
    }
    if !store.set_current_version(name, target, stoke_core::now_ms()).await? {
        return Err(ApiError::not_found(format!(
            "function {name:?} has no version {target}"
        )));
    }
    let v = store
        .current_version(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("function {name:?} was deleted meanwhile")))?;
    tracing::info!(function = %name, from = current.version, to = v.version, "current version changed");
    Ok(function_info(&v))
}

pub(crate) async fn delete(store: &dyn Admin, name: &str) -> Result<DeleteFunctionResponse, ApiError> {
    if !store.delete_function(name, stoke_core::now_ms()).await? {
        return Err(ApiError::not_found(format!("function {name:?} is not deployed")));
    }
    tracing::info!(function = %name, "deleted");
    Ok(DeleteFunctionResponse {})
}

/// Apply a SetEnv: a new version with the same package and manifest.
/// Secrets are sealed with `key` before they reach the store.
pub(crate) async fn set_env(
    store: &dyn Admin,
    key: Option<&stoke_auth::sealed::SecretsKey>,
    r: SetEnvRequest,
) -> Result<SetEnvResponse, ApiError> {
    let function = r.function.clone();
    let seal = |(name, value): (String, String)| match key {
        Some(k) => {
            let sealed = k.seal(&function, &name, &value);
            (name, sealed)
        }
        None => (name, value),
    };
    let edit = ConfigEdit {
        set_env: r.set.into_iter().collect(),
        set_secrets: r.set_secrets.into_iter().collect(),
        unset: r.unset,
    };
    // Checked as given: sealed, a value's NUL bytes would pass unseen.
    edit.validate()
        .map_err(|e| ApiError::invalid(format!("environment variable {e}")))?;
    if key.is_none()
        && let Some(name) = edit
            .set_secrets
            .iter()
            .find_map(|(n, v)| v.starts_with(stoke_core::fnconfig::SEALED_PREFIX).then_some(n))
    {
        // It would read as sealed, and no key could open it.
        return Err(ApiError::invalid(format!(
            "secret {name}: a value starting with {:?} needs a dispatcher with a secrets_key_file",
            stoke_core::fnconfig::SEALED_PREFIX
        )));
    }
    let edit = ConfigEdit {
        set_secrets: edit.set_secrets.into_iter().map(seal).collect(),
        ..edit
    };
    if edit.set_env.is_empty() && edit.set_secrets.is_empty() && edit.unset.is_empty() {
        return Err(ApiError::invalid(
            "nothing to change: give variables to set or names to unset",
        ));
    }
    let name = &r.function;
    let outcome = store.edit_config(name, &edit, stoke_core::now_ms()).await?;
    let (v, unchanged) = match outcome {
        DeployOutcome::Created(v) => (v, false),
        DeployOutcome::Unchanged(v) => (v, true),
        DeployOutcome::NotDeployed => return Err(ApiError::not_found(format!("function {name:?} is not deployed"))),
        DeployOutcome::InvalidConfig(e) => {
            return Err(ApiError::invalid(format!("environment variable {e}")));
        }
        DeployOutcome::OtherNamespace(_) => return Err(ApiError::internal("configuration edit crossed namespaces")),
    };
    // Names only: values may be secrets.
    let changed: Vec<&String> = edit
        .set_env
        .keys()
        .chain(edit.set_secrets.keys())
        .chain(&edit.unset)
        .collect();
    tracing::info!(function = %name, version = v.version, unchanged, ?changed, "environment changed");
    Ok(SetEnvResponse {
        function: Some(function_info(&v)),
        unchanged,
    })
}

fn alias_info(a: &Alias) -> AliasInfo {
    AliasInfo {
        function: a.function.clone(),
        name: a.name.clone(),
        version: a.version,
        updated_unix_ms: a.updated_ms,
    }
}

/// Create or move an alias; version 0 = the current version.
pub(crate) async fn set_alias(
    store: &dyn Admin,
    function: &str,
    alias: &str,
    version: u32,
) -> Result<AliasInfo, ApiError> {
    stoke_core::manifest::validate_name(alias).map_err(|_| {
        ApiError::invalid(format!(
            "alias {alias:?} must be 1-63 characters of a-z, 0-9 and '-', starting with a letter"
        ))
    })?;
    let current = store
        .current_version(function)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("function {function:?} is not deployed")))?;
    let version = if version == 0 { current.version } else { version };
    let now = stoke_core::now_ms();
    if !store.set_alias(function, alias, version, now).await? {
        return Err(ApiError::not_found(format!(
            "function {function:?} has no version {version}"
        )));
    }
    tracing::info!(%function, %alias, version, "alias set");
    Ok(alias_info(&Alias {
        function: function.to_string(),
        name: alias.to_string(),
        version,
        updated_ms: now,
    }))
}

pub(crate) async fn aliases(store: &dyn Admin, function: &str) -> Result<ListAliasesResponse, ApiError> {
    if store.function_namespace(function).await?.is_none() {
        return Err(ApiError::not_found(format!("function {function:?} not found")));
    }
    let aliases = store.aliases(function).await?;
    Ok(ListAliasesResponse {
        aliases: aliases.iter().map(alias_info).collect(),
    })
}

pub(crate) async fn delete_alias(store: &dyn Admin, function: &str, alias: &str) -> Result<(), ApiError> {
    if !store.delete_alias(function, alias).await? {
        return Err(ApiError::not_found(format!(
            "function {function:?} has no alias {alias:?}"
        )));
    }
    tracing::info!(%function, %alias, "alias deleted");
    Ok(())
}

/// The wire view of a deployed version.
pub(crate) fn function_info(v: &FunctionVersion) -> FunctionInfo {
    let manifest = Manifest::parse(&v.manifest).ok();
    FunctionInfo {
        name: v.function.clone(),
        version: v.version,
        digest: v.digest.clone(),
        package_size: v.package_size,
        memory_mb: manifest.as_ref().map_or(0, |m| m.memory),
        timeout_ms: manifest.as_ref().map_or(0, |m| m.timeout_ms() as u32),
        command: manifest.as_ref().map(|m| m.command.clone()).unwrap_or_default(),
        manifest: v.manifest.clone(),
        created_unix_ms: v.created_ms,
        triggers: manifest
            .and_then(|m| m.triggers().ok())
            .map(|ts| ts.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        namespace: v.namespace.clone(),
        env: v.config.env.clone().into_iter().collect(),
        secret_names: v.config.secrets.keys().cloned().collect(),
        image: v.image.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret is checked as given, before it is sealed; and without a key,
    /// a value that would read as sealed is refused (no key could open it).
    #[tokio::test]
    async fn secrets_are_checked_before_sealing_and_never_stored_unopenable() {
        let dir = tempfile::tempdir().unwrap();
        let store = stoke_store::SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
        let key = stoke_auth::sealed::SecretsKey::load_or_create(&dir.path().join("k")).unwrap();
        let request = |value: &str| SetEnvRequest {
            function: "f".into(),
            set_secrets: [("S".to_string(), value.to_string())].into(),
            ..Default::default()
        };
        let status = |e: ApiError| tonic::Status::from(e);
        let err = status(set_env(&store, Some(&key), request("a\0b")).await.unwrap_err());
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("NUL"), "{err:?}");
        let err = status(set_env(&store, None, request("sealed:v1:abc")).await.unwrap_err());
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("secrets_key_file"), "{err:?}");
        // Past the checks, an undeployed function is what is wrong.
        let err = status(set_env(&store, Some(&key), request("sealed:v1:abc")).await.unwrap_err());
        assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    }
}
