//! Function packages: a gzipped tar of the function directory, addressed by
//! the sha256 of the archive bytes.
//!
//! Packing is deterministic (sorted entries, zeroed times and owners) so the
//! same directory always yields the same digest and a redeploy of unchanged
//! code is recognised. Extraction treats the archive as hostile: absolute
//! paths, `..`, links leaving the root, device files and oversized or
//! over-many entries are refused before anything is written outside `dest`.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// Limits applied when packing and when extracting.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Compressed archive size.
    pub max_archive_bytes: u64,
    /// Sum of file sizes after extraction.
    pub max_unpacked_bytes: u64,
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_archive_bytes: 64 << 20,
            max_unpacked_bytes: 256 << 20,
            max_entries: 20_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("package is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: u64, limit: u64 },
    #[error("package unpacks to more than {limit} bytes")]
    UnpackedTooLarge { limit: u64 },
    #[error("package has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("package entry {path:?} refused: {reason}")]
    UnsafeEntry { path: String, reason: String },
    #[error("package is not a valid gzipped tar: {0}")]
    Corrupt(std::io::Error),
}

fn io_err(path: &Path, e: std::io::Error) -> PackageError {
    PackageError::Io {
        path: path.display().to_string(),
        cause: e,
    }
}

/// sha256 hex of `data`.
pub fn digest(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A packed function directory.
pub struct Packed {
    pub archive: Vec<u8>,
    pub digest: String,
    pub files: u64,
}

/// Pack `dir` into a deterministic gzipped tar. `.git` is skipped. Symlinks
/// are kept only when they stay inside `dir`.
pub fn pack_dir(dir: &Path, limits: &Limits) -> Result<Packed, PackageError> {
    pack_dir_except(dir, limits, &[])
}

/// [`pack_dir`], leaving out `skip` (paths relative to `dir`: a file, or a
/// directory with everything under it), e.g. an OCI image the function
/// names, which is uploaded as blobs of its own.
pub fn pack_dir_except(dir: &Path, limits: &Limits, skip: &[PathBuf]) -> Result<Packed, PackageError> {
    let skip: Vec<PathBuf> = skip
        .iter()
        .map(|p| p.components().filter(|c| *c != Component::CurDir).collect())
        .collect();
    let mut paths = Vec::new();
    collect(dir, dir, &skip, &mut paths)?;
    paths.sort();
    if paths.len() as u64 > limits.max_entries {
        return Err(PackageError::TooManyEntries {
            limit: limits.max_entries,
        });
    }
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut files = 0;
    for rel in &paths {
        let full = dir.join(rel);
        let meta = std::fs::symlink_metadata(&full).map_err(|e| io_err(&full, e))?;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full).map_err(|e| io_err(&full, e))?;
            if !link_stays_inside(rel, &target) {
                return Err(PackageError::UnsafeEntry {
                    path: rel.display().to_string(),
                    reason: format!("symlink to {} leaves the function directory", target.display()),
                });
            }
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            tar.append_link(&mut header, rel, &target)
                .map_err(|e| io_err(&full, e))?;
        } else if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            header.set_mode(0o755);
            tar.append_data(&mut header, rel, std::io::empty())
                .map_err(|e| io_err(&full, e))?;
        } else if meta.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            header.set_mode(if mode & 0o111 != 0 { 0o755 } else { 0o644 });
            let f = std::fs::File::open(&full).map_err(|e| io_err(&full, e))?;
            tar.append_data(&mut header, rel, f).map_err(|e| io_err(&full, e))?;
            files += 1;
        } else {
            return Err(PackageError::UnsafeEntry {
                path: rel.display().to_string(),
                reason: "only regular files, directories and symlinks can be packaged".into(),
            });
        }
    }
    let gz = tar.into_inner().map_err(|e| io_err(dir, e))?;
    let archive = gz.finish().map_err(|e| io_err(dir, e))?;
    if archive.len() as u64 > limits.max_archive_bytes {
        return Err(PackageError::TooLarge {
            size: archive.len() as u64,
            limit: limits.max_archive_bytes,
        });
    }
    Ok(Packed {
        digest: digest(&archive),
        archive,
        files,
    })
}

fn collect(root: &Path, dir: &Path, skip: &[PathBuf], out: &mut Vec<PathBuf>) -> Result<(), PackageError> {
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let path = entry.path();
        if entry.file_name() == ".git" {
            continue;
        }
        let rel = path.strip_prefix(root).expect("walk stays under root").to_path_buf();
        if skip.contains(&rel) {
            continue;
        }
        let ft = entry.file_type().map_err(|e| io_err(&path, e))?;
        out.push(rel);
        if ft.is_dir() {
            collect(root, &path, skip, out)?;
        }
    }
    Ok(())
}

/// Whether a relative symlink at `link` (relative to the root) pointing to
/// `target` resolves inside the root, lexically.
fn link_stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = link.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// A relative path made only of normal components.
pub(crate) fn safe_relative(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains `..`".into()),
            Component::RootDir | Component::Prefix(_) => return Err("is absolute".into()),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("is empty".into());
    }
    Ok(out)
}

/// Extract `archive` into `dest` (which must exist and be empty), refusing
/// anything unsafe. Returns the number of regular files written.
pub fn unpack(archive: &[u8], dest: &Path, limits: &Limits) -> Result<u64, PackageError> {
    if archive.len() as u64 > limits.max_archive_bytes {
        return Err(PackageError::TooLarge {
            size: archive.len() as u64,
            limit: limits.max_archive_bytes,
        });
    }
    let gz = flate2::read::GzDecoder::new(archive);
    let mut tar = tar::Archive::new(gz);
    let mut entries_seen = 0u64;
    let mut unpacked = 0u64;
    let mut files = 0u64;
    let entries = tar.entries().map_err(PackageError::Corrupt)?;
    for entry in entries {
        let mut entry = entry.map_err(PackageError::Corrupt)?;
        entries_seen += 1;
        if entries_seen > limits.max_entries {
            return Err(PackageError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let raw_path = entry.path().map_err(PackageError::Corrupt)?.into_owned();
        let shown = raw_path.display().to_string();
        let unsafe_entry = |reason: String| PackageError::UnsafeEntry {
            path: shown.clone(),
            reason,
        };
        let rel = safe_relative(&raw_path).map_err(unsafe_entry)?;
        let target = dest.join(&rel);
        // Parents must be real directories created by this extraction, never
        // a symlink planted by an earlier entry.
        if let Some(parent) = rel.parent() {
            let mut cur = dest.to_path_buf();
            for c in parent.components() {
                cur.push(c);
                match std::fs::symlink_metadata(&cur) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(unsafe_entry("a parent is not a directory".into())),
                    Err(_) => std::fs::create_dir(&cur).map_err(|e| io_err(&cur, e))?,
                }
            }
        }
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => {
                if !target.is_dir() {
                    std::fs::create_dir(&target).map_err(|e| io_err(&target, e))?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(PackageError::Corrupt)?;
                unpacked = unpacked.saturating_add(size);
                if unpacked > limits.max_unpacked_bytes {
                    return Err(PackageError::UnpackedTooLarge {
                        limit: limits.max_unpacked_bytes,
                    });
                }
                let mode = entry.header().mode().unwrap_or(0o644);
                if std::fs::symlink_metadata(&target).is_ok() {
                    return Err(unsafe_entry("duplicate entry".into()));
                }
                let mut out = std::fs::File::create(&target).map_err(|e| io_err(&target, e))?;
                // Copy at most `size` bytes: the header is the bound we checked.
                let copied = std::io::copy(&mut (&mut entry).take(size), &mut out).map_err(|e| io_err(&target, e))?;
                if copied != size {
                    return Err(PackageError::Corrupt(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{shown}: truncated"),
                    )));
                }
                let perm = if mode & 0o111 != 0 { 0o555 } else { 0o444 };
                std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(perm))
                    .map_err(|e| io_err(&target, e))?;
                files += 1;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(PackageError::Corrupt)?
                    .ok_or_else(|| unsafe_entry("symlink without a target".into()))?;
                if !link_stays_inside(&rel, &link) {
                    return Err(unsafe_entry(format!(
                        "symlink to {} leaves the package",
                        link.display()
                    )));
                }
                std::os::unix::fs::symlink(&link, &target).map_err(|e| io_err(&target, e))?;
            }
            tar::EntryType::Link => return Err(unsafe_entry("hard links are not allowed".into())),
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            other => return Err(unsafe_entry(format!("entry type {other:?} is not allowed"))),
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, data: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    #[test]
    fn pack_is_deterministic_and_roundtrips() {
        let a = tempfile::tempdir().unwrap();
        write(a.path(), "stoke.toml", "name = \"x\"");
        write(a.path(), "lib/util.py", "print(1)");
        std::os::unix::fs::symlink("lib/util.py", a.path().join("link.py")).unwrap();
        let p1 = pack_dir(a.path(), &Limits::default()).unwrap();
        let p2 = pack_dir(a.path(), &Limits::default()).unwrap();
        assert_eq!(p1.digest, p2.digest);
        assert_eq!(p1.files, 2);
        let out = tempfile::tempdir().unwrap();
        assert_eq!(unpack(&p1.archive, out.path(), &Limits::default()).unwrap(), 2);
        assert_eq!(std::fs::read_to_string(out.path().join("link.py")).unwrap(), "print(1)");
    }

    #[test]
    fn pack_leaves_out_what_it_is_told_to() {
        let a = tempfile::tempdir().unwrap();
        write(a.path(), "stoke.toml", "name = \"x\"");
        write(a.path(), "image.tar", "big");
        write(a.path(), "layout/index.json", "{}");
        write(a.path(), "layout/blobs/sha256/aa", "blob");
        let skip = [PathBuf::from("./image.tar"), PathBuf::from("layout")];
        let p = pack_dir_except(a.path(), &Limits::default(), &skip).unwrap();
        assert_eq!(p.files, 1);
        let out = tempfile::tempdir().unwrap();
        unpack(&p.archive, out.path(), &Limits::default()).unwrap();
        assert!(out.path().join("stoke.toml").exists());
        assert!(!out.path().join("image.tar").exists() && !out.path().join("layout").exists());
    }

    #[test]
    fn pack_refuses_escaping_symlink() {
        let a = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", a.path().join("pw")).unwrap();
        assert!(matches!(
            pack_dir(a.path(), &Limits::default()),
            Err(PackageError::UnsafeEntry { .. })
        ));
    }

    fn raw_tar(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h
    }

    /// Write a path into the header without the tar crate's own checks, as
    /// an attacker's archive would.
    fn set_raw_path(h: &mut tar::Header, path: &str) {
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
    }

    fn refused(archive: &[u8]) -> String {
        let out = tempfile::tempdir().unwrap();
        let err = unpack(archive, out.path(), &Limits::default()).unwrap_err();
        assert!(std::fs::read_dir(out.path().parent().unwrap()).is_ok());
        err.to_string()
    }

    #[test]
    fn unpack_refuses_traversal_absolute_links_and_devices() {
        let dotdot = raw_tar(|b| {
            let mut h = header(tar::EntryType::Regular, 1);
            set_raw_path(&mut h, "../evil");
            b.append(&h, &b"x"[..]).unwrap();
        });
        assert!(refused(&dotdot).contains(".."));
        let abs = raw_tar(|b| {
            let mut h = header(tar::EntryType::Regular, 1);
            set_raw_path(&mut h, "/tmp/evil");
            b.append(&h, &b"x"[..]).unwrap();
        });
        assert!(refused(&abs).contains("absolute"));
        let link = raw_tar(|b| {
            let mut h = header(tar::EntryType::Symlink, 0);
            b.append_link(&mut h, "esc", "../../etc").unwrap();
        });
        assert!(refused(&link).contains("leaves the package"));
        // A symlink inside, then a file written "through" it.
        let through = raw_tar(|b| {
            let mut h = header(tar::EntryType::Symlink, 0);
            b.append_link(&mut h, "d", ".").unwrap();
            let mut h = header(tar::EntryType::Regular, 1);
            b.append_data(&mut h, "d/x", &b"x"[..]).unwrap();
        });
        assert!(refused(&through).contains("parent is not a directory"));
        let hard = raw_tar(|b| {
            let mut h = header(tar::EntryType::Link, 0);
            b.append_link(&mut h, "h", "/etc/shadow").unwrap();
        });
        assert!(refused(&hard).contains("hard links"));
        let dev = raw_tar(|b| {
            let mut h = header(tar::EntryType::Char, 0);
            b.append_data(&mut h, "null", std::io::empty()).unwrap();
        });
        assert!(refused(&dev).contains("not allowed"));
    }

    #[test]
    fn unpack_enforces_size_and_entry_limits() {
        let big = raw_tar(|b| {
            let mut h = header(tar::EntryType::Regular, 4096);
            b.append_data(&mut h, "zeros", &vec![0u8; 4096][..]).unwrap();
        });
        let limits = Limits {
            max_unpacked_bytes: 1000,
            ..Limits::default()
        };
        let out = tempfile::tempdir().unwrap();
        assert!(matches!(
            unpack(&big, out.path(), &limits),
            Err(PackageError::UnpackedTooLarge { .. })
        ));
        let many = raw_tar(|b| {
            for i in 0..5 {
                let mut h = header(tar::EntryType::Regular, 0);
                b.append_data(&mut h, format!("f{i}"), std::io::empty()).unwrap();
            }
        });
        let limits = Limits {
            max_entries: 3,
            ..Limits::default()
        };
        let out = tempfile::tempdir().unwrap();
        assert!(matches!(
            unpack(&many, out.path(), &limits),
            Err(PackageError::TooManyEntries { .. })
        ));
        let out = tempfile::tempdir().unwrap();
        assert!(matches!(
            unpack(b"not gzip", out.path(), &Limits::default()),
            Err(PackageError::Corrupt(_))
        ));
    }
}
