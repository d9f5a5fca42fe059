//! The package cache: function code by digest, fetched from a dispatcher on
//! first use, verified, extracted once (safely) and shared read-only by
//! every sandbox of that version.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stoke_core::package::{self, Limits};
use tokio::sync::Mutex;
use tokio_stream::StreamExt as _;

use crate::WorkerError;

pub struct PackageCache {
    root: PathBuf,
    limits: Limits,
    /// One lock per digest so concurrent cold starts fetch once.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl PackageCache {
    pub fn new(root: PathBuf) -> std::io::Result<PackageCache> {
        std::fs::create_dir_all(&root)?;
        Ok(PackageCache {
            root,
            limits: Limits::default(),
            locks: Mutex::new(HashMap::new()),
        })
    }

    /// The extracted code directory for `digest`, fetching it if needed.
    pub async fn ensure(&self, digest: &str, client: &mut crate::DispatcherClient) -> Result<PathBuf, WorkerError> {
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(WorkerError::Package(format!("bad digest {digest:?}")));
        }
        let dir = self.root.join(digest);
        if dir.is_dir() {
            return Ok(dir);
        }
        let lock = self.locks.lock().await.entry(digest.to_string()).or_default().clone();
        let _held = lock.lock().await;
        if dir.is_dir() {
            return Ok(dir);
        }
        let data = fetch_blob(client, digest, self.limits.max_archive_bytes).await?;
        extract(&self.root, digest, &data, &self.limits)?;
        Ok(dir)
    }
}

/// The stored blob (a package, an image's layer or spec) with this sha256
/// hex `digest`, from the dispatcher, at most `max` bytes, checked.
pub(crate) async fn fetch_blob(
    client: &mut crate::DispatcherClient,
    digest: &str,
    max: u64,
) -> Result<Vec<u8>, WorkerError> {
    let mut stream = client
        .fetch_package(digest)
        .await
        .map_err(|s| WorkerError::Package(format!("fetch {digest}: {}", s.message())))?;
    let mut data = Vec::new();
    while let Some(chunk) = stream
        .next()
        .await
        .transpose()
        .map_err(|s| WorkerError::Package(format!("fetch {digest}: {}", s.message())))?
    {
        data.extend_from_slice(&chunk.data);
        if data.len() as u64 > max {
            return Err(WorkerError::Package(format!("blob {digest} exceeds the size limit")));
        }
    }
    let got = package::digest(&data);
    if got != digest {
        return Err(WorkerError::Package(format!(
            "blob digest mismatch: wanted {digest}, got {got}"
        )));
    }
    Ok(data)
}

/// Extract into a temp dir beside the final one, then rename: a crash never
/// leaves a half-extracted package that looks complete.
fn extract(root: &Path, digest: &str, data: &[u8], limits: &Limits) -> Result<(), WorkerError> {
    let tmp = root.join(format!(".{digest}.{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&tmp).map_err(|e| WorkerError::Package(e.to_string()))?;
    let result = package::unpack(data, &tmp, limits)
        .map_err(|e| WorkerError::Package(e.to_string()))
        .and_then(|_| std::fs::rename(&tmp, root.join(digest)).map_err(|e| WorkerError::Package(e.to_string())));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}
