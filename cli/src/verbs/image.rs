//! The OCI image a function's `image` names, for `stoke deploy`: a
//! registry reference is pulled by the dispatcher ([`pull`]: `PullImage`,
//! its progress printed); a path is read from disk (an OCI layout directory, an `oci-archive` or a
//! `docker save` tarball; every blob checked, the linux/amd64 image
//! chosen), upload each layer and then its [`ImageSpec`] with `PutBlob`,
//! and hand back the spec's digest for the deploy to name.

use std::path::{Path, PathBuf};

use stoke_core::oci::{self, ImageLimits, ImageSpec, LayerRef};
use stoke_core::package;
use stoke_proto::{BlobHeader, PutBlobRequest, put_blob_request};

use crate::client::Admin;

/// Uploads go in chunks of this size.
const CHUNK: usize = 1 << 20;

/// Whether the manifest's `image` is a registry reference rather than a
/// path. A path: it starts with `/`, `./`, `../` or `~`, ends in `.tar`,
/// `.tar.gz` or `.tgz`, or exists (relative to the function directory).
/// Anything else is a reference (`registry.example.com/team/fn:1.4`,
/// `host:port/repo@sha256:<hex>`, `name:tag` on Docker Hub).
pub fn is_reference(dir: &Path, image: &str) -> bool {
    let path_like = image.starts_with('/')
        || image.starts_with("./")
        || image.starts_with("../")
        || image.starts_with('~')
        || [".tar", ".tar.gz", ".tgz"].iter().any(|e| image.ends_with(e));
    !path_like && !dir.join(image).exists()
}

/// Have the dispatcher pull `reference`, printing its progress; the
/// sha256 hex of the image spec it stored.
pub async fn pull(admin: &mut Admin, reference: &str) -> anyhow::Result<String> {
    eprintln!("pulling {reference} (on the dispatcher)");
    let mut stream = admin
        .client()
        .pull_image(stoke_proto::PullImageRequest {
            reference: reference.to_string(),
        })
        .await
        .map_err(admin.err())?
        .into_inner();
    loop {
        let p = match stream.message().await {
            Ok(Some(p)) => p,
            Ok(None) => anyhow::bail!("the pull of {reference} ended without an image"),
            Err(status) => return Err((admin.err())(status)),
        };
        eprintln!("  {}", p.message);
        if !p.spec_digest.is_empty() {
            return Ok(p.spec_digest);
        }
    }
}

/// Where the manifest's `image` is on disk: relative to the function
/// directory `dir`, or absolute.
pub fn resolve(dir: &Path, image: &str) -> PathBuf {
    dir.join(image)
}

/// The part of the package to leave out: the image itself, when it lies
/// inside the function directory (it is uploaded as blobs instead).
pub fn inside(dir: &Path, image: &str) -> Option<PathBuf> {
    let p = Path::new(image);
    if p.is_relative() {
        return Some(p.to_path_buf());
    }
    p.strip_prefix(dir).ok().map(Path::to_path_buf)
}

/// Read the image `image` (as the manifest gives it) and upload it; the
/// sha256 hex of its spec blob.
pub async fn upload(admin: &mut Admin, dir: &Path, image: &str) -> anyhow::Result<String> {
    let path = resolve(dir, image);
    if !path.exists() {
        anyhow::bail!(
            "stoke.toml: image {image:?}: {} does not exist: give an OCI image on this machine, \
             relative to {} or absolute (an OCI layout directory, an oci-archive or a `docker save` \
             tarball), or a registry reference (`registry.example.com/team/fn:1.4`)",
            path.display(),
            dir.display()
        );
    }
    eprintln!("reading image {}", path.display());
    let read_path = path.clone();
    let read = tokio::task::spawn_blocking(move || oci::read_image(&read_path, &ImageLimits::default())).await?;
    let image_read = read.map_err(|e| anyhow::anyhow!("image {}: {e}", path.display()))?;
    let n = image_read.layers.len();
    let mut layers = Vec::with_capacity(n);
    for (i, blob) in image_read.layers.iter().enumerate() {
        let size = blob.data.len() as u64;
        eprintln!(
            "uploading layer {}/{n} ({}, {})",
            i + 1,
            super::run::human_bytes(size),
            &blob.digest[..12]
        );
        put_blob(admin, &blob.digest, &blob.data).await?;
        layers.push(LayerRef {
            digest: blob.digest.clone(),
            size,
        });
    }
    let spec = ImageSpec::new(image, &image_read.manifest_digest, &image_read.config, layers);
    let bytes = spec.to_bytes();
    let digest = package::digest(&bytes);
    put_blob(admin, &digest, &bytes).await?;
    eprintln!("image {} uploaded ({n} layers)", spec.image);
    Ok(digest)
}

/// Upload one blob under its sha256 hex `digest`.
async fn put_blob(admin: &mut Admin, digest: &str, data: &[u8]) -> anyhow::Result<()> {
    let header = PutBlobRequest {
        part: Some(put_blob_request::Part::Header(BlobHeader {
            digest: digest.to_string(),
            size: data.len() as u64,
        })),
    };
    let chunks: Vec<PutBlobRequest> = data
        .chunks(CHUNK)
        .map(|c| PutBlobRequest {
            part: Some(put_blob_request::Part::Chunk(c.to_vec())),
        })
        .collect();
    let parts = futures::stream::iter(std::iter::once(header).chain(chunks));
    admin.client().put_blob(parts).await.map_err(admin.err())?;
    Ok(())
}
