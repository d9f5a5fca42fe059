//! Deploying a package: receive it (header, then chunks, never more than
//! the package limit), check it is exactly what workers will run, make its
//! subject subscriptions, then record the version.

use stoke_core::Manifest;
use stoke_core::manifest::MANIFEST_FILE;
use stoke_core::package::{self, Limits};
use stoke_proto::{DeployRequest, deploy_request};
use stoke_store::{DeployOutcome, FunctionVersion, NewVersion};
use tonic::Streaming;

use crate::AdminApi;
use crate::access::Grant;
use crate::error::ApiError;

/// A received package: its digest, its bytes and the namespace asked for.
struct Received {
    digest: String,
    data: Vec<u8>,
    namespace: String,
}

/// Receive the archive: header first, then chunks, never more than `limit`.
async fn receive(mut parts: Streaming<DeployRequest>, limit: u64) -> Result<Received, ApiError> {
    let header = match parts.message().await? {
        Some(DeployRequest {
            part: Some(deploy_request::Part::Header(h)),
        }) => h,
        _ => return Err(ApiError::invalid("the first Deploy message must be the header")),
    };
    if header.size > limit {
        return Err(ApiError::invalid(format!(
            "package is {} bytes, over the {limit}-byte limit",
            header.size
        )));
    }
    let mut data = Vec::with_capacity(header.size as usize);
    while let Some(part) = parts.message().await? {
        match part.part {
            Some(deploy_request::Part::Chunk(c)) => {
                if (data.len() + c.len()) as u64 > header.size {
                    return Err(ApiError::invalid(format!(
                        "package is larger than the {} bytes its header declared",
                        header.size
                    )));
                }
                data.extend_from_slice(&c);
            }
            _ => return Err(ApiError::invalid("only chunks may follow the Deploy header")),
        }
    }
    if data.len() as u64 != header.size {
        return Err(ApiError::invalid(format!(
            "package ended after {} of {} bytes",
            data.len(),
            header.size
        )));
    }
    let digest = package::digest(&data);
    if digest != header.digest {
        return Err(ApiError::invalid(format!(
            "package digest is {digest}, the header said {}",
            header.digest
        )));
    }
    Ok(Received {
        digest,
        data,
        namespace: header.namespace,
    })
}

/// Unpack into a scratch dir to validate exactly what workers will run:
/// the package, its manifest and the manifest's text.
async fn validate(data: Vec<u8>, limits: Limits) -> Result<(Vec<u8>, Manifest, String), ApiError> {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().map_err(|e| ApiError::internal(format!("scratch dir: {e}")))?;
        package::unpack(&data, dir.path(), &limits).map_err(|e| ApiError::invalid(e.to_string()))?;
        let manifest = Manifest::load_dir(dir.path()).map_err(|e| ApiError::invalid(e.to_string()))?;
        let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE))
            .map_err(|e| ApiError::invalid(format!("{MANIFEST_FILE}: {e}")))?;
        Ok((data, manifest, text))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

/// The refusal of a deploy under a name another namespace owns.
fn owned_elsewhere(function: &str, namespace: &str) -> ApiError {
    ApiError::denied(format!(
        "function {function:?} belongs to another namespace than {namespace:?}: deploy it under another name"
    ))
}

/// Deploy the package `parts` carry for the caller of `grant`: the version
/// it made (or the current one, unchanged, for the same package).
pub(crate) async fn deploy(
    api: &AdminApi,
    grant: &Grant,
    parts: Streaming<DeployRequest>,
) -> Result<(FunctionVersion, bool), ApiError> {
    let Received {
        digest,
        data,
        namespace: asked,
    } = receive(parts, api.limits.max_archive_bytes).await?;
    let namespace = grant.caller.target_namespace(&asked);
    stoke_auth::validate_namespace(&namespace)?;
    grant.on_namespace(&namespace)?;
    let (data, manifest, text) = validate(data, api.limits).await?;
    if let Some(owner) = api.store.function_namespace(&manifest.name).await?
        && owner != namespace
    {
        // Checked before subscribing, so a refused deploy creates nothing.
        return Err(owned_elsewhere(&manifest.name, &namespace));
    }
    crate::routes::check_claims(api.store.as_ref(), &manifest.name, &manifest).await?;

    // Subscriptions exist before the deploy is acknowledged: from then
    // on, every message on the subject is captured for this function.
    for trigger in manifest.triggers().map_err(|e| ApiError::invalid(e.to_string()))? {
        if let stoke_core::Trigger::Subject { subject, batch } = trigger {
            stoke_bus::streams::ensure_subscription(
                &api.js,
                &api.streams,
                &manifest.name,
                &subject,
                stoke_bus::streams::Holding::of(&manifest, batch),
            )
            .await
            .map_err(|e| ApiError::nats(format!("cannot subscribe {} to {subject:?}", manifest.name), e))?;
        }
    }

    api.store.put_package(&digest, &data).await?;
    let outcome = api
        .store
        .deploy_version(NewVersion {
            function: &manifest.name,
            namespace: &namespace,
            digest: &digest,
            manifest: &text,
            package_size: data.len() as u64,
            now_ms: stoke_core::now_ms(),
        })
        .await?;
    let (v, unchanged) = match outcome {
        DeployOutcome::Created(v) => (v, false),
        DeployOutcome::Unchanged(v) => (v, true),
        // A first deploy from another namespace won the race since the check above.
        DeployOutcome::OtherNamespace(_) => return Err(owned_elsewhere(&manifest.name, &namespace)),
        DeployOutcome::NotDeployed | DeployOutcome::InvalidConfig(_) => {
            return Err(ApiError::internal("a package deploy came back as a configuration edit"));
        }
    };
    tracing::info!(function = %v.function, version = v.version, %digest, unchanged, "deployed");
    api.handles.deployments.changed();
    Ok((v, unchanged))
}
