//! The image cache: functions that bring an OCI image run on its root
//! filesystem. A version's image spec (`stoke_core::oci::ImageSpec`) and
//! its layers are blobs fetched from a dispatcher like packages, checked
//! against their digests; each layer is unpacked once per worker under
//! `layers/<digest>` (shared by every image that has it), its whiteouts
//! turned into overlayfs's own (a `.wh.<name>` marker into a 0/0 character
//! device `<name>`, `.wh..wh..opq` into the directory's
//! `trusted.overlay.opaque`), and reachable by a short link `l/<16 hex>`.
//! An image's root is then a read-only overlay of the worker's top layer of
//! mount points (`top/`) over its layers, mounted by each sandbox in its
//! own mount namespace (`Jail::for_image`): no tree is made per image, so
//! images on one base share its files and their directories. Unpacking
//! goes to a temp dir renamed into place: a crash never leaves a half-made
//! layer that looks complete.

use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stoke_core::oci::{ImageSpec, layer};
use stoke_core::package::Limits;
use tokio::sync::OnceCell;

use crate::WorkerError;
use crate::packages::fetch_blob;
use crate::sandbox::jail::Jail;

/// A version's image, ready for sandboxes.
pub struct Prepared {
    pub spec: ImageSpec,
    /// Its layers' directories, topmost first (for looking into its root
    /// from the host).
    pub layers: Vec<PathBuf>,
    pub jail: Jail,
}

pub struct ImageCache {
    root: PathBuf,
    layers: PathBuf,
    limits: Limits,
    /// Largest spec blob.
    max_spec: u64,
    /// By spec digest, each made once however many cold starts wait for
    /// it (one image's fetch does not hold another's up).
    prepared: std::sync::Mutex<HashMap<String, Arc<OnceCell<Arc<Prepared>>>>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorkerError + '_ {
    move |e| WorkerError::Package(format!("{}: {e}", path.display()))
}

/// A layer's short name, relative to the cache's root.
fn short(digest: &str) -> String {
    format!("l/{}", &digest[..16])
}

impl ImageCache {
    pub fn new(root: PathBuf) -> std::io::Result<ImageCache> {
        let layers = root.join("layers");
        for d in [&layers, &root.join("l"), &root.join("mnt")] {
            std::fs::create_dir_all(d)?;
        }
        Jail::image_top(&root.join("top"))?;
        Ok(ImageCache {
            root,
            layers,
            limits: Limits {
                max_archive_bytes: 1 << 30,
                max_unpacked_bytes: 4 << 30,
                max_entries: 500_000,
            },
            max_spec: 1 << 20,
            prepared: std::sync::Mutex::default(),
        })
    }

    /// The image whose spec has sha256 hex `digest`, its layers fetched if
    /// this worker has not yet; sandboxed over `base`'s ids (None:
    /// `--sandbox none`, which cannot run an image).
    pub async fn ensure(
        &self,
        digest: &str,
        base: Option<&Jail>,
        client: &mut crate::DispatcherClient,
    ) -> Result<Arc<Prepared>, WorkerError> {
        let Some(base) = base else {
            return Err(WorkerError::Package(
                "a function with an image runs only sandboxed (not with --sandbox none): its root is the image's"
                    .into(),
            ));
        };
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(WorkerError::Package(format!("bad image digest {digest:?}")));
        }
        let cell = self
            .prepared
            .lock()
            .expect("not poisoned")
            .entry(digest.to_string())
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.prepare(digest, base, client))
            .await
            .cloned()
    }

    /// Fetch and unpack what the image `digest` needs; its jail.
    async fn prepare(
        &self,
        digest: &str,
        base: &Jail,
        client: &mut crate::DispatcherClient,
    ) -> Result<Arc<Prepared>, WorkerError> {
        let data = fetch_blob(client, digest, self.max_spec).await?;
        let spec =
            ImageSpec::from_bytes(&data).map_err(|e| WorkerError::Package(format!("image spec {digest}: {e}")))?;
        let mut layers = Vec::with_capacity(spec.layers.len());
        for l in &spec.layers {
            layers.push(self.layer(&l.digest, client).await?);
        }
        layers.reverse();
        let lowerdirs = std::iter::once("top".to_string())
            .chain(spec.layers.iter().rev().map(|l| short(&l.digest)))
            .collect::<Vec<_>>()
            .join(":");
        let user = spec
            .user
            .as_deref()
            .map(|u| resolve_user(&layers, u))
            .transpose()
            .map_err(|why| WorkerError::Package(format!("image {}: {why}", spec.image)))?;
        let jail = base
            .for_image(&self.root.join("mnt"), &self.root, &lowerdirs, &spec.working_dir, user)
            .map_err(|e| WorkerError::Package(format!("image {}: {e}", spec.image)))?;
        Ok(Arc::new(Prepared { spec, layers, jail }))
    }

    /// The layer with blob digest `digest`, unpacked (fetched if needed).
    async fn layer(&self, digest: &str, client: &mut crate::DispatcherClient) -> Result<PathBuf, WorkerError> {
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(WorkerError::Package(format!("bad layer digest {digest:?}")));
        }
        let dir = self.layers.join(digest);
        if !dir.is_dir() {
            let data = fetch_blob(client, digest, self.limits.max_archive_bytes).await?;
            let tmp = self.layers.join(format!(".{digest}.{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir(&tmp).map_err(io(&tmp))?;
            let made = layer::unpack_layer(&data, &tmp, &self.limits)
                .map_err(|e| WorkerError::Package(format!("layer {digest}: {e}")))
                .and_then(|_| overlay_whiteouts(&tmp).map_err(|e| WorkerError::Package(format!("layer {digest}: {e}"))))
                // Another image's start may have put the same layer there
                // meanwhile: theirs will do.
                .and_then(|()| match std::fs::rename(&tmp, &dir) {
                    Err(_) if dir.is_dir() => Ok(()),
                    other => other.map_err(io(&dir)),
                });
            let _ = std::fs::remove_dir_all(&tmp);
            made?;
        }
        let link = self.root.join(short(digest));
        let target = Path::new("../layers").join(digest);
        if std::fs::read_link(&link).is_err() {
            // (Made meanwhile by another start: checked below.)
            let _ = std::os::unix::fs::symlink(&target, &link);
        }
        match std::fs::read_link(&link) {
            Ok(t) if t == target => Ok(dir),
            Ok(other) => Err(WorkerError::Package(format!(
                "layer {digest}: its short name is taken by {}",
                other.display()
            ))),
            Err(e) => Err(io(&link)(e)),
        }
    }
}

/// Turn an unpacked layer's whiteout markers into overlayfs's: `.wh.<name>`
/// into a 0/0 character device `<name>`, `.wh..wh..opq` into its
/// directory's `trusted.overlay.opaque` = `y`. Links are not followed.
fn overlay_whiteouts(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let (path, name) = (entry.path(), entry.file_name());
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            overlay_whiteouts(&path)?;
            continue;
        }
        let Some(name) = name.to_str() else { continue };
        if name == layer::OPAQUE {
            std::fs::remove_file(&path)?;
            let dir_c = crate::sandbox::sys::cstr(dir)?;
            crate::sandbox::sys::lsetxattr("opaque directory", &dir_c, c"trusted.overlay.opaque", b"y")
                .map_err(std::io::Error::from)?;
        } else if let Some(hidden) = name.strip_prefix(layer::WHITEOUT) {
            std::fs::remove_file(&path)?;
            let target = dir.join(hidden);
            if std::fs::symlink_metadata(&target).is_ok() {
                return Err(std::io::Error::other(format!(
                    "{} is both whited out and in the layer",
                    target.display()
                )));
            }
            nix::sys::stat::mknod(
                &target,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )?;
        }
    }
    Ok(())
}

/// Whether `path` (not followed) is a whiteout: a 0/0 character device.
fn whited_out(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// The file at `rel` in the image's root, as its layers (topmost first)
/// show it: the topmost layer's, unless that is a whiteout. (An opaque
/// directory above it is not looked through here: such a file is found,
/// and the kernel, which does, answers "not found" at start.)
fn find(layers: &[PathBuf], rel: &Path) -> Option<PathBuf> {
    for layer in layers {
        let p = layer.join(rel);
        if let Ok(m) = std::fs::symlink_metadata(&p) {
            return (!whited_out(&m)).then_some(p);
        }
    }
    None
}

/// The uid and gid an image's `User` names (`name`, `uid`, `name:group`,
/// `uid:gid`, ...), names looked up in the image's own /etc/passwd and
/// /etc/group (read only when they are regular files of the image: a link
/// could point at the host's). A uid not in /etc/passwd runs with gid 0,
/// as Docker does.
pub fn resolve_user(layers: &[PathBuf], user: &str) -> Result<(u32, u32), String> {
    let table = |name: &str| -> Vec<Vec<String>> {
        let Some(path) = find(layers, &Path::new("etc").join(name)) else {
            return Vec::new();
        };
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .map(|l| l.split(':').map(str::to_string).collect())
                .collect(),
            _ => Vec::new(),
        }
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = table("passwd");
    let entry = |pred: &dyn Fn(&[String]) -> bool| passwd.iter().find(|e| e.len() >= 4 && pred(e)).cloned();
    let (uid, user_gid) = match u.parse::<u32>() {
        Ok(uid) => {
            let gid = entry(&|e| e[2] == uid.to_string()).and_then(|e| e[3].parse().ok());
            (uid, gid.unwrap_or(0))
        }
        Err(_) => {
            let e = entry(&|e| e[0] == u).ok_or_else(|| format!("user {u:?} is not in the image's /etc/passwd"))?;
            let uid = e[2]
                .parse()
                .map_err(|_| format!("user {u:?} has a bad uid in /etc/passwd"))?;
            (uid, e[3].parse().unwrap_or(0))
        }
    };
    let gid = match g {
        None => user_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => table("group")
                .iter()
                .find(|e| e.len() >= 3 && e[0] == g)
                .and_then(|e| e[2].parse().ok())
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

impl Prepared {
    /// The process to start: the manifest's `command` if it has one, else
    /// the image's Entrypoint + Cmd; its program as the sandbox sees it (a
    /// bare name found on the image's PATH, a relative path from the
    /// working directory).
    pub fn argv(&self, command: &[String]) -> Result<Vec<String>, String> {
        let mut argv = if command.is_empty() {
            self.spec.argv.clone()
        } else {
            command.to_vec()
        };
        let Some(program) = argv.first_mut() else {
            return Err(format!(
                "image {} has no Entrypoint or Cmd, and the manifest no command",
                self.spec.image
            ));
        };
        if program.starts_with('/') {
            return Ok(argv);
        }
        if program.contains('/') {
            *program = Path::new(&self.spec.working_dir).join(&*program).display().to_string();
            return Ok(argv);
        }
        let path = self.spec.path_var();
        for dir in path.split(':').filter(|d| d.starts_with('/')) {
            let inside = Path::new(dir).join(&*program);
            // Not followed: a link's target is the sandbox's to resolve.
            if find(&self.layers, inside.strip_prefix("/").expect("absolute")).is_some() {
                *program = inside.display().to_string();
                return Ok(argv);
            }
        }
        Err(format!("{program} is not on the image's PATH ({path})"))
    }

    /// The image's environment (`NAME=value`), for under the function's.
    pub fn env(&self) -> Vec<(String, String)> {
        self.spec
            .env
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::ids::IdRange;

    /// An image of two layers: the lower with `files` and /bin/sh a link
    /// to busybox, the upper whiting out /usr/bin/gone; its spec `argv`,
    /// PATH=/usr/bin:/bin, WorkingDir /app.
    fn prepared(argv: &[&str], files: &[&str]) -> (tempfile::TempDir, Prepared) {
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
        for f in files.iter().chain(&["usr/bin/gone"]) {
            let p = lower.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        std::fs::create_dir_all(lower.join("bin")).unwrap();
        std::os::unix::fs::symlink("busybox", lower.join("bin/sh")).unwrap();
        std::fs::create_dir_all(upper.join("usr/bin")).unwrap();
        std::fs::write(upper.join("usr/bin/.wh.gone"), "").unwrap();
        overlay_whiteouts(&upper).unwrap();
        let base = Jail::prepare(&dir.path().join("host"), IdRange::new(310_000, 4).unwrap()).unwrap();
        let spec = ImageSpec {
            image: "sha256:x".into(),
            source: "test".into(),
            layers: vec![],
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/usr/bin:/bin".into(), "LANG=C.UTF-8".into(), "BROKEN".into()],
            working_dir: "/app".into(),
            user: None,
        };
        let jail = base
            .for_image(dir.path(), dir.path(), "upper:lower", &spec.working_dir, None)
            .unwrap();
        let layers = vec![upper, lower];
        (dir, Prepared { spec, layers, jail })
    }

    #[test]
    fn the_program_is_found_as_the_sandbox_will_see_it() {
        let (_d, p) = prepared(&["python3", "-m", "awslambdaric"], &["usr/bin/python3"]);
        assert_eq!(p.argv(&[]).unwrap(), ["/usr/bin/python3", "-m", "awslambdaric"]);
        // A link counts without being followed.
        assert_eq!(p.argv(&["sh".into()]).unwrap(), ["/bin/sh"]);
        // The manifest's command wins; relative paths are from WorkingDir.
        assert_eq!(p.argv(&["./run".into(), "x".into()]).unwrap(), ["/app/./run", "x"]);
        assert_eq!(p.argv(&["/abs".into()]).unwrap(), ["/abs"]);
        let e = p.argv(&["node".into()]).unwrap_err();
        assert!(e.contains("node is not on the image's PATH (/usr/bin:/bin)"), "{e}");
        // Whited out by the upper layer.
        let e = p.argv(&["gone".into()]).unwrap_err();
        assert!(e.contains("gone is not on the image's PATH"), "{e}");
        let (_d, bare) = prepared(&[], &[]);
        let e = bare.argv(&[]).unwrap_err();
        assert!(e.contains("no Entrypoint or Cmd"), "{e}");
        assert_eq!(
            p.env(),
            [
                ("PATH".to_string(), "/usr/bin:/bin".to_string()),
                ("LANG".into(), "C.UTF-8".into())
            ]
        );
    }

    /// Unmounts (lazily) on drop.
    struct Mounted(PathBuf);

    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    /// Layers unpacked and converted, mounted as the kernel's overlay (as
    /// each sandbox does): whiteouts and opaque directories hide the lower
    /// layers' files, the top layer's mount points cover the image's.
    #[test]
    fn converted_layers_overlay_as_the_image_says() {
        let dir = tempfile::tempdir().unwrap();
        let layer = |name: &str, entries: &[(&str, &str)]| {
            let d = dir.path().join(name);
            for (path, data) in entries {
                let p = d.join(path);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, data).unwrap();
            }
            overlay_whiteouts(&d).unwrap();
            d
        };
        let base = layer(
            "base",
            &[
                ("etc/gone", "x"),
                ("etc/kept", "k"),
                ("opt/a", "a"),
                ("opt/sub/b", "b"),
                ("dev/null", "not a device"),
            ],
        );
        std::os::unix::fs::symlink("/etc", base.join("tmp")).unwrap();
        layer(
            "upper",
            &[("etc/.wh.gone", ""), ("opt/.wh..wh..opq", ""), ("opt/c", "c")],
        );
        let top = dir.path().join("top");
        Jail::image_top(&top).unwrap();
        Jail::image_top(&top).unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let options = format!(
            "lowerdir={}:{}:{}",
            top.display(),
            dir.path().join("upper").display(),
            base.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &mnt,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(options.as_str()),
        )
        .expect("overlayfs (run as root)");
        let _mounted = Mounted(mnt.clone());
        assert!(!mnt.join("etc/gone").exists(), "whited out");
        assert_eq!(std::fs::read_to_string(mnt.join("etc/kept")).unwrap(), "k");
        assert!(!mnt.join("opt/a").exists() && !mnt.join("opt/sub").exists(), "opaque");
        assert_eq!(std::fs::read_to_string(mnt.join("opt/c")).unwrap(), "c");
        assert!(
            std::fs::symlink_metadata(mnt.join("tmp")).unwrap().is_dir(),
            "the top's /tmp"
        );
        assert_eq!(
            std::fs::read_to_string(mnt.join("dev/null")).unwrap(),
            "",
            "the top's mount point"
        );
        assert!(mnt.join(".old_root").is_dir());
        // A marker beside the file it hides (a malformed layer) is refused.
        let bad = dir.path().join("bad");
        std::fs::create_dir_all(&bad).unwrap();
        std::fs::write(bad.join("x"), "").unwrap();
        std::fs::write(bad.join(".wh.x"), "").unwrap();
        assert!(overlay_whiteouts(&bad).is_err());
    }

    #[test]
    fn too_many_layers_for_one_mount_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = Jail::prepare(&dir.path().join("host"), IdRange::new(330_000, 4).unwrap()).unwrap();
        let jail = base
            .for_image(
                dir.path(),
                dir.path(),
                "top:l/0123456789abcdef",
                "/srv",
                Some((1000, 100)),
            )
            .unwrap();
        assert_eq!(
            jail.id_maps(400_000),
            (b"1000 400000 1".to_vec(), b"100 400000 1".to_vec())
        );
        let plain = base.for_image(dir.path(), dir.path(), "top", "/srv", None).unwrap();
        assert_eq!(plain.id_maps(7).0, b"65534 7 1".to_vec());
        let many = vec!["l/0123456789abcdef"; 300].join(":");
        let e = base.for_image(dir.path(), dir.path(), &many, "/", None).err().unwrap();
        assert!(e.to_string().contains("too many layers"), "{e}");
    }

    #[test]
    fn an_images_user_is_found_in_its_own_passwd_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let root = &[root.to_path_buf()][..];
        assert_eq!(resolve_user(root, "app").unwrap(), (1000, 1001));
        assert_eq!(resolve_user(root, "app:staff").unwrap(), (1000, 50));
        assert_eq!(resolve_user(root, "1000").unwrap(), (1000, 1001));
        assert_eq!(resolve_user(root, "4242").unwrap(), (4242, 0), "unknown uid: gid 0");
        assert_eq!(resolve_user(root, "4242:7").unwrap(), (4242, 7));
        assert_eq!(resolve_user(root, "root").unwrap(), (0, 0));
        let e = resolve_user(root, "nobody-here").unwrap_err();
        assert!(e.contains("not in the image's /etc/passwd"), "{e}");
        let e = resolve_user(root, "app:wheel").unwrap_err();
        assert!(e.contains("group \"wheel\""), "{e}");
        // A passwd that is a link (to the host's) is not read.
        std::fs::remove_file(dir.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("etc/passwd")).unwrap();
        assert!(resolve_user(root, "root").is_err());
    }
}
