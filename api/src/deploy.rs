//! Deploying a package: receive it (header, then chunks, never more than
//! the package limit), check it is exactly what workers will run, make its
//! subject subscriptions, then record the version. A function with an
//! `image` names the image spec blob its layers were uploaded under
//! ([`put_blob`], before the deploy): the spec and every layer must be
//! stored.

use stoke_core::Manifest;
use stoke_core::manifest::MANIFEST_FILE;
use stoke_core::oci::ImageSpec;
use stoke_core::package::{self, Limits};
use stoke_proto::{DeployRequest, PutBlobRequest, deploy_request, put_blob_request};
use stoke_store::{DeployOutcome, FunctionVersion, NewVersion};
use tonic::Streaming;

use crate::AdminApi;
use crate::access::Grant;
use crate::error::ApiError;

/// The largest blob [`put_blob`] takes: one image layer at most as large
/// as the CLI reads (`ImageLimits::default().max_layer_bytes`).
pub const MAX_BLOB_BYTES: u64 = 1 << 30;

/// A received package: its digest, its bytes, the namespace asked for and
/// the image spec named (empty: none).
struct Received {
    digest: String,
    data: Vec<u8>,
    namespace: String,
    image: String,
}

/// What a header declares: a body of `size` bytes hashing to `digest`.
struct Declared<'a> {
    /// "package" or "blob", for messages.
    what: &'a str,
    /// The RPC, for messages.
    rpc: &'a str,
    digest: &'a str,
    size: u64,
    limit: u64,
}

/// Receive the chunks after a header (`chunk` takes a message's chunk,
/// None for anything else), never more than declared or than the limit,
/// and check they are what the header declared.
async fn receive_body<M>(
    parts: &mut Streaming<M>,
    d: Declared<'_>,
    chunk: impl Fn(M) -> Option<Vec<u8>>,
) -> Result<Vec<u8>, ApiError> {
    if d.size > d.limit {
        return Err(ApiError::invalid(format!(
            "{} is {} bytes, over the {}-byte limit",
            d.what, d.size, d.limit
        )));
    }
    let mut data = Vec::with_capacity(d.size as usize);
    while let Some(part) = parts.message().await? {
        let Some(c) = chunk(part) else {
            return Err(ApiError::invalid(format!(
                "only chunks may follow the {} header",
                d.rpc
            )));
        };
        if (data.len() + c.len()) as u64 > d.size {
            return Err(ApiError::invalid(format!(
                "{} is larger than the {} bytes its header declared",
                d.what, d.size
            )));
        }
        data.extend_from_slice(&c);
    }
    if data.len() as u64 != d.size {
        return Err(ApiError::invalid(format!(
            "{} ended after {} of {} bytes",
            d.what,
            data.len(),
            d.size
        )));
    }
    let digest = package::digest(&data);
    if digest != d.digest {
        return Err(ApiError::invalid(format!(
            "{} digest is {digest}, the header said {}",
            d.what, d.digest
        )));
    }
    Ok(data)
}

/// Receive the archive: header first, then chunks, never more than `limit`.
async fn receive(mut parts: Streaming<DeployRequest>, limit: u64) -> Result<Received, ApiError> {
    let header = match parts.message().await? {
        Some(DeployRequest {
            part: Some(deploy_request::Part::Header(h)),
        }) => h,
        _ => return Err(ApiError::invalid("the first Deploy message must be the header")),
    };
    let declared = Declared {
        what: "package",
        rpc: "Deploy",
        digest: &header.digest,
        size: header.size,
        limit,
    };
    let data = receive_body(&mut parts, declared, |m| match m.part {
        Some(deploy_request::Part::Chunk(c)) => Some(c),
        _ => None,
    })
    .await?;
    Ok(Received {
        digest: header.digest,
        data,
        namespace: header.namespace,
        image: header.image,
    })
}

/// Store the blob `parts` carry (an image layer or spec) under its sha256
/// hex, once it is checked to be what its header says: (digest, size).
pub(crate) async fn put_blob(api: &AdminApi, mut parts: Streaming<PutBlobRequest>) -> Result<(String, u64), ApiError> {
    let header = match parts.message().await? {
        Some(PutBlobRequest {
            part: Some(put_blob_request::Part::Header(h)),
        }) => h,
        _ => return Err(ApiError::invalid("the first PutBlob message must be the header")),
    };
    if !is_sha256_hex(&header.digest) {
        return Err(ApiError::invalid(format!(
            "blob digest {:?} is not a sha256 hex digest (64 of 0-9a-f)",
            header.digest
        )));
    }
    let declared = Declared {
        what: "blob",
        rpc: "PutBlob",
        digest: &header.digest,
        size: header.size,
        limit: MAX_BLOB_BYTES,
    };
    let data = receive_body(&mut parts, declared, |m| match m.part {
        Some(put_blob_request::Part::Chunk(c)) => Some(c),
        _ => None,
    })
    .await?;
    api.store.put_package(&header.digest, &data).await?;
    tracing::info!(digest = %header.digest, size = data.len(), "blob stored");
    Ok((header.digest, data.len() as u64))
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The image a deploy names (`image`, from its header) agrees with its
/// manifest, and its spec and every layer are stored.
async fn check_image(api: &AdminApi, manifest: &Manifest, image: &str) -> Result<(), ApiError> {
    match (manifest.image.is_some(), image.is_empty()) {
        (false, true) => return Ok(()),
        (true, true) => {
            return Err(ApiError::invalid(format!(
                "{MANIFEST_FILE} has `image`: an image function is deployed by the stoke CLI, which uploads the image"
            )));
        }
        (false, false) => {
            return Err(ApiError::invalid(format!(
                "the deploy names an image but {MANIFEST_FILE} has no `image`"
            )));
        }
        (true, false) => {}
    }
    if !is_sha256_hex(image) {
        return Err(ApiError::invalid(format!(
            "image {image:?} is not a sha256 hex digest (64 of 0-9a-f)"
        )));
    }
    let data = api.store.get_package(image).await?.ok_or_else(|| {
        ApiError::precondition(format!(
            "image spec {image} is not stored: upload it with PutBlob first"
        ))
    })?;
    let spec = ImageSpec::from_bytes(&data)
        .map_err(|e| ApiError::invalid(format!("blob {image} is not an image spec: {e}")))?;
    for layer in &spec.layers {
        match api.store.package_size(&layer.digest).await? {
            Some(size) if size == layer.size => {}
            Some(size) => {
                return Err(ApiError::precondition(format!(
                    "layer {} is stored with {size} bytes, the image spec says {}",
                    layer.digest, layer.size
                )));
            }
            None => {
                return Err(ApiError::precondition(format!(
                    "layer {} of image {} is not stored: upload it with PutBlob first",
                    layer.digest, spec.image
                )));
            }
        }
    }
    Ok(())
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
        image,
    } = receive(parts, api.limits.max_archive_bytes).await?;
    let namespace = grant.caller.target_namespace(&asked);
    stoke_auth::validate_namespace(&namespace)?;
    grant.on_namespace(&namespace)?;
    let (data, manifest, text) = validate(data, api.limits).await?;
    check_image(api, &manifest, &image).await?;
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
            image: &image,
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
    tracing::info!(function = %v.function, version = v.version, %digest, %image, unchanged, "deployed");
    api.handles.deployments.changed();
    Ok((v, unchanged))
}
