//! Reading an image from disk: an OCI image layout directory (`oci-layout`,
//! `index.json`, `blobs/sha256/…`, as `umoci` and `skopeo copy … oci:DIR`
//! write it), the same in a tarball (`oci-archive`, and `docker save` from
//! Docker 25 on), or a classic `docker save` tarball (`manifest.json`
//! naming a config file and `<id>/layer.tar` layers). Every blob is checked
//! against its digest (and size, where a descriptor gives one).

use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;

use serde::Deserialize;

use super::{
    Blob, Config, Descriptor, Image, ImageError, ImageLimits, Index, Manifest, check_platform, choose_platform, json,
    media, sha256_hex,
};
use crate::package::digest as sha256;

/// Read the image at `path` (a layout directory or a tarball, gzipped or
/// not), for linux/amd64.
pub fn read_image(path: &Path, limits: &ImageLimits) -> Result<Image, ImageError> {
    let io = |cause| ImageError::Io {
        path: path.display().to_string(),
        cause,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let files = if meta.is_dir() {
        Files::Dir(path.to_path_buf())
    } else {
        let data = std::fs::read(path).map_err(io)?;
        Files::Tar(tar_files(&data, limits)?)
    };
    if files.has("index.json") {
        read_layout(&files, limits)
    } else if files.has("manifest.json") {
        read_docker_save(&files, limits)
    } else {
        Err(ImageError::NotAnImage(format!(
            "{} has neither an OCI layout's index.json nor docker save's manifest.json",
            path.display()
        )))
    }
}

/// The files of an image on disk.
enum Files {
    Dir(std::path::PathBuf),
    Tar(HashMap<String, Vec<u8>>),
}

impl Files {
    fn has(&self, name: &str) -> bool {
        match self {
            Files::Dir(d) => d.join(name).is_file(),
            Files::Tar(m) => m.contains_key(name),
        }
    }

    /// The file `name` (relative, from the image's own metadata: checked).
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, ImageError> {
        let rel = crate::package::safe_relative(Path::new(name))
            .map_err(|why| ImageError::NotAnImage(format!("file name {name:?} {why}")))?;
        match self {
            Files::Dir(d) => {
                let path = d.join(&rel);
                match std::fs::read(&path) {
                    Ok(data) => Ok(Some(data)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(cause) => Err(ImageError::Io {
                        path: path.display().to_string(),
                        cause,
                    }),
                }
            }
            Files::Tar(m) => Ok(m.get(rel.to_str().unwrap_or_default()).cloned()),
        }
    }

    /// The blob `digest` names, checked against it (and `size`, if known).
    fn blob(&self, digest: &str, size: Option<u64>) -> Result<Blob, ImageError> {
        let hex = sha256_hex(digest)?;
        let data = self
            .read(&format!("blobs/sha256/{hex}"))?
            .ok_or_else(|| ImageError::MissingBlob {
                digest: digest.to_string(),
            })?;
        checked(digest, hex, size, data)
    }
}

/// `data` if it is the blob `digest` names (and `size` long, if known).
fn checked(digest: &str, hex: &str, size: Option<u64>, data: Vec<u8>) -> Result<Blob, ImageError> {
    if let Some(expected) = size
        && expected != data.len() as u64
    {
        return Err(ImageError::SizeMismatch {
            digest: digest.to_string(),
            expected,
            actual: data.len() as u64,
        });
    }
    let actual = sha256(&data);
    if actual != hex {
        return Err(ImageError::DigestMismatch {
            digest: digest.to_string(),
            actual,
        });
    }
    Ok(Blob { digest: actual, data })
}

/// The regular files of a tarball (gzipped or not), by normalised name.
fn tar_files(data: &[u8], limits: &ImageLimits) -> Result<HashMap<String, Vec<u8>>, ImageError> {
    let gzipped = data.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn std::io::Read> = if gzipped {
        Box::new(flate2::read::GzDecoder::new(data))
    } else {
        Box::new(data)
    };
    let mut archive = tar::Archive::new(reader);
    let mut files = HashMap::new();
    let mut total = 0u64;
    for entry in archive.entries().map_err(ImageError::Corrupt)? {
        let mut entry = entry.map_err(ImageError::Corrupt)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path().map_err(ImageError::Corrupt)?.into_owned();
        let Ok(rel) = crate::package::safe_relative(&path) else {
            continue;
        };
        let size = entry.header().size().map_err(ImageError::Corrupt)?;
        total = total.saturating_add(size);
        if total > limits.max_image_bytes {
            return Err(ImageError::TooLarge {
                size: total,
                limit: limits.max_image_bytes,
            });
        }
        let mut content = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut content).map_err(ImageError::Corrupt)?;
        files.insert(rel.to_string_lossy().into_owned(), content);
    }
    Ok(files)
}

/// An OCI image layout: index.json → (index →) manifest → config, layers.
fn read_layout(files: &Files, limits: &ImageLimits) -> Result<Image, ImageError> {
    let index_json = files.read("index.json")?.expect("checked before");
    let mut index: Index = json("index.json", &index_json)?;
    // A nested index (a multi-platform image copied whole): one level.
    let mut chosen = choose_platform(&index)?.clone();
    if matches!(chosen.media_type.as_str(), media::OCI_INDEX | media::DOCKER_LIST) {
        let nested = files.blob(&chosen.digest, Some(chosen.size))?;
        index = json(&format!("index {}", chosen.digest), &nested.data)?;
        chosen = choose_platform(&index)?.clone();
    }
    let manifest_blob = files.blob(&chosen.digest, Some(chosen.size))?;
    let manifest: Manifest = json(&format!("manifest {}", chosen.digest), &manifest_blob.data)?;
    if !manifest.media_type.is_empty()
        && !matches!(
            manifest.media_type.as_str(),
            media::OCI_MANIFEST | media::DOCKER_MANIFEST
        )
    {
        return Err(ImageError::UnsupportedMediaType {
            what: format!("manifest {}", chosen.digest),
            media_type: manifest.media_type,
        });
    }
    let config_blob = files.blob(&manifest.config.digest, Some(manifest.config.size))?;
    let config: Config = json(&format!("config {}", manifest.config.digest), &config_blob.data)?;
    check_platform(&config)?;
    check_counts(&manifest.layers, limits)?;
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for d in &manifest.layers {
        check_layer_type(d)?;
        layers.push(files.blob(&d.digest, Some(d.size))?);
    }
    Ok(Image {
        manifest_digest: chosen.digest,
        config,
        layers,
    })
}

/// Layers this module can unpack: tar, gzipped or not (not zstd, not
/// foreign or non-distributable layers).
pub fn check_layer_type(d: &Descriptor) -> Result<(), ImageError> {
    let t = d.media_type.as_str();
    let tar = t.ends_with(".tar") || t.ends_with(".tar+gzip") || t.ends_with(".tar.gzip");
    if tar && !t.contains("nondistributable") && !t.contains("foreign") {
        Ok(())
    } else {
        Err(ImageError::UnsupportedMediaType {
            what: format!("layer {}", d.digest),
            media_type: d.media_type.clone(),
        })
    }
}

/// The layers are no more, and no larger, than `limits` allow (by their
/// descriptors' sizes).
pub fn check_counts(layers: &[Descriptor], limits: &ImageLimits) -> Result<(), ImageError> {
    if layers.len() > limits.max_layers {
        return Err(ImageError::TooManyLayers {
            count: layers.len(),
            limit: limits.max_layers,
        });
    }
    let total: u64 = layers.iter().map(|d| d.size).sum();
    if total > limits.max_image_bytes {
        return Err(ImageError::TooLarge {
            size: total,
            limit: limits.max_image_bytes,
        });
    }
    if let Some(big) = layers.iter().find(|d| d.size > limits.max_layer_bytes) {
        return Err(ImageError::TooLarge {
            size: big.size,
            limit: limits.max_layer_bytes,
        });
    }
    Ok(())
}

/// One image of a classic `docker save` tarball's manifest.json.
#[derive(Deserialize)]
struct SavedImage {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// A classic `docker save`: the config and layer files manifest.json names;
/// each layer checked against the config's `rootfs.diff_ids`. The image is
/// named by its config's digest (Docker's image id).
fn read_docker_save(files: &Files, limits: &ImageLimits) -> Result<Image, ImageError> {
    let saved: Vec<SavedImage> = json("manifest.json", &files.read("manifest.json")?.expect("checked before"))?;
    let one = match saved.as_slice() {
        [one] => one,
        [] => return Err(ImageError::NotAnImage("manifest.json lists no image".into())),
        many => {
            return Err(ImageError::NotAnImage(format!(
                "the archive holds {} images: save one image per archive",
                many.len()
            )));
        }
    };
    let config_data = files.read(&one.config)?.ok_or_else(|| ImageError::MissingBlob {
        digest: one.config.clone(),
    })?;
    let config_digest = sha256(&config_data);
    let config: Config = json(&one.config, &config_data)?;
    check_platform(&config)?;
    if one.layers.len() > limits.max_layers {
        return Err(ImageError::TooManyLayers {
            count: one.layers.len(),
            limit: limits.max_layers,
        });
    }
    if config.rootfs.diff_ids.len() != one.layers.len() {
        return Err(ImageError::NotAnImage(format!(
            "manifest.json lists {} layers, the config's rootfs {}",
            one.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    let mut layers = Vec::with_capacity(one.layers.len());
    for (file, diff_id) in one.layers.iter().zip(&config.rootfs.diff_ids) {
        let data = files.read(file)?.ok_or_else(|| ImageError::MissingBlob {
            digest: format!("{diff_id} ({file})"),
        })?;
        if data.len() as u64 > limits.max_layer_bytes {
            return Err(ImageError::TooLarge {
                size: data.len() as u64,
                limit: limits.max_layer_bytes,
            });
        }
        // Layers saved this way are plain tars: their digest is the diff id.
        let hex = sha256_hex(diff_id)?;
        layers.push(checked(diff_id, hex, None, data)?);
    }
    Ok(Image {
        manifest_digest: format!("sha256:{config_digest}"),
        config,
        layers,
    })
}
