//! OCI images as function packages: what an image is made of (an index or
//! manifest, a config, layers by digest), read from disk ([`read_image`]:
//! an OCI layout directory, an `oci-archive` tarball, or a `docker save`
//! tarball), checked blob by blob against its digest, narrowed to the one
//! platform workers run (linux/amd64), and described for the worker as an
//! [`ImageSpec`]; and how a worker unpacks its layers (`layer`: each once,
//! safely, its whiteouts kept for the worker's overlay).

pub mod layer;
mod read;
mod reference;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use read::{check_counts, check_layer_type, read_image};
pub use reference::{Reference, ReferenceError};

/// OCI and Docker media types this module reads.
pub mod media {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
}

/// The one platform workers run.
pub const OS: &str = "linux";
pub const ARCHITECTURE: &str = "amd64";

/// A content descriptor: what a blob is, its digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image index (or Docker manifest list): manifests by platform.
#[derive(Debug, Clone, Deserialize)]
pub struct Index {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

/// An image manifest: its config and layers, bottom first.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config a function runs by.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: RunConfig,
    #[serde(default)]
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// What a worker needs to run an image: its layers (digests of their
/// blobs, bottom first, each stored as a package blob) and how to start it.
/// Stored itself as a package blob (canonical JSON), which a function
/// version with an image names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// The image's manifest digest (`sha256:…`): which image this is.
    pub image: String,
    /// Where it came from, as given (a path or a reference), for display.
    pub source: String,
    pub layers: Vec<LayerRef>,
    /// Entrypoint + Cmd: the process, unless the manifest's `command` says.
    pub argv: Vec<String>,
    /// `NAME=value`, the image's; the function's env goes on top.
    pub env: Vec<String>,
    /// The process's directory ("/" when the image names none).
    pub working_dir: String,
    /// The image's `User` (`name`, `uid`, `uid:gid`, `name:group`), if any.
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// sha256 hex of the layer blob (as stored, compressed or not).
    pub digest: String,
    pub size: u64,
}

impl ImageSpec {
    /// The spec for `config`'s image `manifest_digest`, its layers' blob
    /// digests given bottom first.
    pub fn new(source: &str, manifest_digest: &str, config: &Config, layers: Vec<LayerRef>) -> ImageSpec {
        let run = &config.config;
        let argv = run
            .entrypoint
            .iter()
            .flatten()
            .chain(run.cmd.iter().flatten())
            .cloned()
            .collect();
        ImageSpec {
            image: manifest_digest.to_string(),
            source: source.to_string(),
            layers,
            argv,
            env: run.env.clone().unwrap_or_default(),
            working_dir: run
                .working_dir
                .clone()
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "/".into()),
            user: run.user.clone().filter(|u| !u.is_empty()),
        }
    }

    /// Its stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an image spec serialises")
    }

    pub fn from_bytes(data: &[u8]) -> Result<ImageSpec, serde_json::Error> {
        serde_json::from_slice(data)
    }

    /// `PATH` as the image sets it (the default Linux one otherwise).
    pub fn path_var(&self) -> &str {
        self.env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    }
}

/// An image read and checked: its manifest's digest, config, and layer
/// blobs bottom first (each checked against its digest).
#[derive(Debug)]
pub struct Image {
    pub manifest_digest: String,
    pub config: Config,
    pub layers: Vec<Blob>,
}

#[derive(Debug)]
pub struct Blob {
    /// sha256 hex of `data`.
    pub digest: String,
    pub data: Vec<u8>,
}

/// Limits on an image read from disk or a registry.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    /// All its blobs together.
    pub max_image_bytes: u64,
    /// One layer's blob.
    pub max_layer_bytes: u64,
    pub max_layers: usize,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_image_bytes: 2 << 30,
            max_layer_bytes: 1 << 30,
            max_layers: 127,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("{what} is not valid JSON: {cause}")]
    Json {
        what: String,
        #[source]
        cause: serde_json::Error,
    },
    #[error("not an image: {0}")]
    NotAnImage(String),
    #[error("the image has no {OS}/{ARCHITECTURE} manifest (it has: {found}); workers run {OS}/{ARCHITECTURE}")]
    NoPlatform { found: String },
    #[error("the image is for {os}/{architecture}; workers run {OS}/{ARCHITECTURE}")]
    WrongPlatform { os: String, architecture: String },
    #[error("blob {digest} is missing from the image")]
    MissingBlob { digest: String },
    #[error("blob {digest} does not match its digest (its content hashes to sha256:{actual})")]
    DigestMismatch { digest: String, actual: String },
    #[error("blob {digest} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch { digest: String, expected: u64, actual: u64 },
    #[error("digest {0:?} is not a sha256 digest (sha256:<64 hex>)")]
    BadDigest(String),
    #[error("unsupported media type {media_type} for {what}")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error("the image is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: u64, limit: u64 },
    #[error("the image has {count} layers, over the limit of {limit}")]
    TooManyLayers { count: usize, limit: usize },
    #[error("the image archive is not a valid tar: {0}")]
    Corrupt(#[source] std::io::Error),
}

/// The hex of a `sha256:<hex>` digest.
pub fn sha256_hex(digest: &str) -> Result<&str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => Ok(hex),
        _ => Err(ImageError::BadDigest(digest.to_string())),
    }
}

/// The platform's manifest among an index's (the first for linux/amd64).
pub fn choose_platform(index: &Index) -> Result<&Descriptor, ImageError> {
    let mut found = Vec::new();
    for m in &index.manifests {
        match &m.platform {
            Some(p) if p.os == OS && p.architecture == ARCHITECTURE => return Ok(m),
            Some(p) => found.push(format!("{}/{}", p.os, p.architecture)),
            // Attestations and the like carry no platform.
            None => {}
        }
    }
    // An index of one manifest without a platform (umoci, skopeo's
    // oci-archive) is that image: its config says its platform.
    if found.is_empty()
        && let [only] = index.manifests.as_slice()
    {
        return Ok(only);
    }
    Err(ImageError::NoPlatform {
        found: if found.is_empty() {
            "none".into()
        } else {
            found.join(", ")
        },
    })
}

/// The config's platform is the workers'.
pub fn check_platform(config: &Config) -> Result<(), ImageError> {
    if config.os == OS && config.architecture == ARCHITECTURE {
        Ok(())
    } else {
        Err(ImageError::WrongPlatform {
            os: config.os.clone(),
            architecture: config.architecture.clone(),
        })
    }
}

fn json<T: serde::de::DeserializeOwned>(what: &str, data: &[u8]) -> Result<T, ImageError> {
    serde_json::from_slice(data).map_err(|cause| ImageError::Json {
        what: what.to_string(),
        cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(os: &str, arch: &str) -> Descriptor {
        Descriptor {
            media_type: media::OCI_MANIFEST.into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 1,
            platform: Some(Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: None,
            }),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn the_workers_platform_is_chosen_from_an_index() {
        let index = Index {
            media_type: media::OCI_INDEX.into(),
            manifests: vec![desc("linux", "arm64"), desc("linux", "amd64")],
        };
        assert_eq!(choose_platform(&index).unwrap(), &index.manifests[1]);
        let arm_only = Index {
            media_type: media::OCI_INDEX.into(),
            manifests: vec![desc("linux", "arm64"), desc("linux", "s390x")],
        };
        let e = choose_platform(&arm_only).unwrap_err().to_string();
        assert!(e.contains("linux/arm64, linux/s390x"), "{e}");
        assert!(e.contains("workers run linux/amd64"), "{e}");
    }

    #[test]
    fn a_config_for_another_platform_is_refused() {
        let config = Config {
            os: "linux".into(),
            architecture: "arm64".into(),
            ..Default::default()
        };
        assert!(matches!(check_platform(&config), Err(ImageError::WrongPlatform { .. })));
    }

    #[test]
    fn digests_must_be_sha256() {
        assert!(sha256_hex(&format!("sha256:{}", "0f".repeat(32))).is_ok());
        for bad in ["sha512:00", "sha256:../../etc", "sha256:ABCD", "", "sha256:"] {
            assert!(sha256_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_spec_runs_entrypoint_then_cmd_in_the_working_dir() {
        let config: Config = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/lambda-entrypoint.sh"],
            "Cmd":["app.handler"],"Env":["PATH=/var/lang/bin:/usr/bin","LANG=C"],"WorkingDir":"/var/task"}}"#,
        )
        .unwrap();
        let spec = ImageSpec::new("img", "sha256:x", &config, vec![]);
        assert_eq!(spec.argv, ["/lambda-entrypoint.sh", "app.handler"]);
        assert_eq!(spec.working_dir, "/var/task");
        assert_eq!(spec.path_var(), "/var/lang/bin:/usr/bin");
        assert_eq!(spec.user, None);
        assert_eq!(ImageSpec::from_bytes(&spec.to_bytes()).unwrap(), spec);
        let bare = ImageSpec::new("img", "sha256:x", &Config::default(), vec![]);
        assert_eq!(bare.working_dir, "/");
        assert!(bare.path_var().contains("/usr/bin"));
    }
}
