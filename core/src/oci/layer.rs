//! An image's layers on a worker: each unpacked once into a directory of
//! its own ([`unpack_layer`]), whiteout markers (`.wh.<name>`: the lower
//! layers' `<name>` is gone; `.wh..wh..opq`: the lower layers' contents of
//! its directory are hidden) kept as the empty files they are, for the
//! worker to turn into overlayfs's own and stack (`worker/src/images.rs`).
//!
//! A layer is as hostile as a package: `..` and absolute names, device
//! nodes, a whiteout naming no sibling (`.wh.`, `.wh..`), hard links to
//! anything but a file earlier in the same layer, and oversized or
//! over-many entries are refused; nothing is written through a symlink (a
//! parent that is one is refused, an entry replacing one removes it
//! first). Symlinks themselves may point anywhere: they are only ever
//! followed inside the sandbox, whose root is the image.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::package::{Limits, PackageError, safe_relative};

/// A whiteout's prefix, and the marker that makes a directory opaque.
pub const WHITEOUT: &str = ".wh.";
pub const OPAQUE: &str = ".wh..wh..opq";

/// What a layer held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    pub files: u64,
    pub bytes: u64,
}

fn io_err(path: &Path, cause: std::io::Error) -> PackageError {
    PackageError::Io {
        path: path.display().to_string(),
        cause,
    }
}

/// Unpack the layer blob `data` (a tar, gzipped or not) into `dest`, an
/// empty directory.
pub fn unpack_layer(data: &[u8], dest: &Path, limits: &Limits) -> Result<Unpacked, PackageError> {
    let reader: Box<dyn std::io::Read> = if data.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(data))
    } else {
        Box::new(data)
    };
    let mut archive = tar::Archive::new(reader);
    let mut seen = 0u64;
    let mut done = Unpacked::default();
    for entry in archive.entries().map_err(PackageError::Corrupt)? {
        let mut entry = entry.map_err(PackageError::Corrupt)?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            continue;
        }
        seen += 1;
        if seen > limits.max_entries {
            return Err(PackageError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let raw = entry.path().map_err(PackageError::Corrupt)?.into_owned();
        let refuse = |reason: String| PackageError::UnsafeEntry {
            path: raw.display().to_string(),
            reason,
        };
        let rel = match safe_relative(&raw) {
            Ok(rel) => rel,
            // The layer's own root ("./"): nothing to make.
            Err(_) if raw.components().all(|c| matches!(c, std::path::Component::CurDir)) => continue,
            Err(why) => return Err(refuse(why)),
        };
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if let Some(target) = name.strip_prefix(WHITEOUT)
            && name != OPAQUE
        {
            if target.is_empty() || target == "." || target == ".." || target.starts_with(WHITEOUT) {
                return Err(refuse("a whiteout that names no sibling".into()));
            }
            if kind != tar::EntryType::Regular {
                return Err(refuse("a whiteout must be a regular file".into()));
            }
        }
        let parent = make_parents(dest, &rel).map_err(|e| match e {
            Parent::NotDir => refuse("a parent is not a directory".into()),
            Parent::Io(p, e) => io_err(&p, e),
        })?;
        let target = parent.join(rel.file_name().expect("a normal last component"));
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        match kind {
            tar::EntryType::Directory => match std::fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => set_mode(&target, mode | 0o700)?,
                Ok(_) => {
                    std::fs::remove_file(&target).map_err(|e| io_err(&target, e))?;
                    make_dir(&target, mode)?;
                }
                Err(_) => make_dir(&target, mode)?,
            },
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(PackageError::Corrupt)?;
                done.bytes = done.bytes.saturating_add(size);
                if done.bytes > limits.max_unpacked_bytes {
                    return Err(PackageError::UnpackedTooLarge {
                        limit: limits.max_unpacked_bytes,
                    });
                }
                clear(&target)?;
                let mut out = std::fs::File::create(&target).map_err(|e| io_err(&target, e))?;
                let copied = std::io::copy(&mut (&mut entry).take(size), &mut out).map_err(|e| io_err(&target, e))?;
                if copied != size {
                    return Err(PackageError::Corrupt(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{}: truncated", raw.display()),
                    )));
                }
                // The layer's time: Python (and others) check compiled
                // caches against their source's mtime, and a read-only root
                // cannot rewrite them.
                let mtime = entry.header().mtime().unwrap_or(0);
                out.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime))
                    .map_err(|e| io_err(&target, e))?;
                set_mode(&target, mode)?;
                done.files += 1;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(PackageError::Corrupt)?
                    .ok_or_else(|| refuse("a symlink without a target".into()))?;
                clear(&target)?;
                std::os::unix::fs::symlink(&link, &target).map_err(|e| io_err(&target, e))?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(PackageError::Corrupt)?
                    .ok_or_else(|| refuse("a hard link without a target".into()))?;
                let source = safe_relative(&link)
                    .ok()
                    .filter(|s| is_file_here(dest, s))
                    .ok_or_else(|| {
                        refuse(format!(
                            "a hard link to {}, which is not a file earlier in this layer",
                            link.display()
                        ))
                    })?;
                if source == rel {
                    continue;
                }
                clear(&target)?;
                std::fs::hard_link(dest.join(&source), &target).map_err(|e| io_err(&target, e))?;
            }
            other => return Err(refuse(format!("entry type {other:?} is not allowed"))),
        }
    }
    Ok(done)
}

enum Parent {
    NotDir,
    Io(PathBuf, std::io::Error),
}

/// `rel`'s parent under `dest`, every component a real directory (made
/// when missing), never a symlink.
fn make_parents(dest: &Path, rel: &Path) -> Result<PathBuf, Parent> {
    let mut cur = dest.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(Parent::NotDir),
                Err(_) => std::fs::create_dir(&cur).map_err(|e| Parent::Io(cur.clone(), e))?,
            }
        }
    }
    Ok(cur)
}

/// `rel` is a regular file under `dest`, reached through directories only.
fn is_file_here(dest: &Path, rel: &Path) -> bool {
    let mut cur = dest.to_path_buf();
    let count = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if i + 1 < count && m.is_dir() => {}
            Ok(m) if i + 1 == count && m.is_file() => return true,
            _ => return false,
        }
    }
    false
}

/// Whatever is at `path` (not following a symlink) removed.
fn clear(path: &Path) -> Result<(), PackageError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map_err(|e| io_err(path, e)),
        Ok(_) => std::fs::remove_file(path).map_err(|e| io_err(path, e)),
        Err(_) => Ok(()),
    }
}

fn make_dir(path: &Path, mode: u32) -> Result<(), PackageError> {
    std::fs::create_dir(path).map_err(|e| io_err(path, e))?;
    set_mode(path, mode | 0o700)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), PackageError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layer tar of `entries`: (path, kind, content or link target).
    fn layer(entries: &[(&str, char, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            match kind {
                'd' => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, path, std::io::empty()).unwrap();
                }
                'f' => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_bytes()).unwrap();
                }
                'l' => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, path, data).unwrap();
                }
                'h' => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, path, data).unwrap();
                }
                'c' => {
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_size(0);
                    b.append_data(&mut h, path, std::io::empty()).unwrap();
                }
                _ => unreachable!(),
            }
        }
        b.into_inner().unwrap()
    }

    /// Raw tar bytes with `path` as an entry's name (the tar crate's
    /// builder refuses `..` and absolute names: write the header by hand).
    fn raw_entry(path: &str) -> Vec<u8> {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_mode(0o644);
        h.set_size(1);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(b"x");
        out.resize(512 * 2, 0);
        out.extend_from_slice(&[0; 1024]);
        out
    }

    fn unpack(entries: &[(&str, char, &str)]) -> Result<tempfile::TempDir, PackageError> {
        let d = tempfile::tempdir().unwrap();
        unpack_layer(&layer(entries), d.path(), &Limits::default())?;
        Ok(d)
    }

    fn read(root: &Path, rel: &str) -> Option<String> {
        std::fs::read_to_string(root.join(rel)).ok()
    }

    #[test]
    fn hard_links_stay_within_their_layer() {
        let d = unpack(&[("bin/busybox", 'f', "bb"), ("bin/sh", 'h', "bin/busybox")]).unwrap();
        assert_eq!(read(d.path(), "bin/sh").as_deref(), Some("bb"));
        for (target, why) in [
            ("etc/passwd", "not in the layer"),
            ("../outside", "leaves the root"),
            ("/etc/passwd", "absolute"),
        ] {
            let e = unpack(&[("bin/x", 'f', "x"), ("bin/y", 'h', target)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("not a file earlier in this layer"), "{why}: {e}");
        }
        // Through a symlink is no file of the layer either.
        let e = unpack(&[("d", 'l', "/etc"), ("y", 'h', "d/passwd")]).unwrap_err();
        assert!(e.to_string().contains("not a file earlier"), "{e}");
    }

    #[test]
    fn nothing_is_written_through_a_symlink() {
        let outside = tempfile::tempdir().unwrap();
        let e = unpack(&[
            ("escape", 'l', outside.path().to_str().unwrap()),
            ("escape/owned", 'f', "x"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("a parent is not a directory"), "{e}");
        assert!(!outside.path().join("owned").exists());
        // A later entry of the symlink's own name replaces the link, not
        // what it points at.
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "safe").unwrap();
        let d = unpack(&[("v", 'l', victim.to_str().unwrap()), ("v", 'f', "replaced")]).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "safe");
        assert_eq!(read(d.path(), "v").as_deref(), Some("replaced"));
    }

    #[test]
    fn hostile_entries_are_refused() {
        let e = unpack(&[("dev/sda", 'c', "")]).unwrap_err().to_string();
        assert!(e.contains("Char") && e.contains("not allowed"), "{e}");
        for bad in ["etc/.wh..", "etc/.wh.", "etc/.wh..wh..plnk"] {
            let e = unpack(&[(bad, 'f', "")]).unwrap_err().to_string();
            assert!(e.contains("names no sibling"), "{bad}: {e}");
        }
        let e = unpack(&[("etc/.wh.x", 'd', "")]).unwrap_err().to_string();
        assert!(e.contains("regular file"), "{e}");
        for raw in ["../evil", "/etc/evil", "a/../../evil"] {
            let d = tempfile::tempdir().unwrap();
            let e = unpack_layer(&raw_entry(raw), &d.path().join("x"), &Limits::default()).unwrap_err();
            assert!(matches!(e, PackageError::UnsafeEntry { .. }), "{raw}: {e}");
        }
    }

    #[test]
    fn limits_hold() {
        let tight = Limits {
            max_archive_bytes: 1 << 20,
            max_unpacked_bytes: 4,
            max_entries: 2,
        };
        let d = tempfile::tempdir().unwrap();
        let e = unpack_layer(&layer(&[("a", 'f', "12345")]), d.path(), &tight).unwrap_err();
        assert!(matches!(e, PackageError::UnpackedTooLarge { .. }), "{e}");
        let d = tempfile::tempdir().unwrap();
        let three = layer(&[("a", 'f', ""), ("b", 'f', ""), ("c", 'f', "")]);
        let e = unpack_layer(&three, d.path(), &tight).unwrap_err();
        assert!(matches!(e, PackageError::TooManyEntries { .. }), "{e}");
    }

    #[test]
    fn files_keep_the_layers_mtime() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(2);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, "mod.py", &b"x\n"[..]).unwrap();
        let d = tempfile::tempdir().unwrap();
        unpack_layer(&b.into_inner().unwrap(), d.path(), &Limits::default()).unwrap();
        let mtime = std::fs::metadata(d.path().join("mod.py")).unwrap().modified().unwrap();
        assert_eq!(
            mtime.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            1_700_000_000
        );
    }

    #[test]
    fn gzipped_layers_unpack_too() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &layer(&[("hello", 'f', "hi")])).unwrap();
        let d = tempfile::tempdir().unwrap();
        let got = unpack_layer(&gz.finish().unwrap(), d.path(), &Limits::default()).unwrap();
        assert_eq!(got, Unpacked { files: 1, bytes: 2 });
    }
}
