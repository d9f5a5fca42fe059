//! The image cache: functions that bring an OCI image run on its root
//! filesystem. A version's image spec (`stoke_core::oci::ImageSpec`) and
//! its layers are blobs fetched from a dispatcher like packages, checked
//! against their digests; each layer is unpacked once per worker under
//! `layers/<digest>` (shared by every image that has it), each image's
//! root made once under `roots/<spec digest>` as hard links to its layers'
//! files (`stoke_core::oci::layer`), and a [`Jail`] prepared over it,
//! shared read-only by all the image's sandboxes. Unpacking goes to a temp
//! dir renamed into place: a crash never leaves a half-made tree that
//! looks complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stoke_core::oci::{ImageSpec, layer};
use stoke_core::package::Limits;
use tokio::sync::Mutex;

use crate::WorkerError;
use crate::packages::fetch_blob;
use crate::sandbox::jail::Jail;

/// A version's image, ready for sandboxes.
pub struct Prepared {
    pub spec: ImageSpec,
    /// The image's root on this worker.
    pub root: PathBuf,
    pub jail: Jail,
}

pub struct ImageCache {
    layers: PathBuf,
    roots: PathBuf,
    limits: Limits,
    /// Largest spec blob.
    max_spec: u64,
    /// By spec digest; the lock makes concurrent cold starts prepare once.
    prepared: Mutex<HashMap<String, Arc<Prepared>>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorkerError + '_ {
    move |e| WorkerError::Package(format!("{}: {e}", path.display()))
}

impl ImageCache {
    pub fn new(root: PathBuf) -> std::io::Result<ImageCache> {
        let (layers, roots) = (root.join("layers"), root.join("roots"));
        std::fs::create_dir_all(&layers)?;
        std::fs::create_dir_all(&roots)?;
        Ok(ImageCache {
            layers,
            roots,
            limits: Limits {
                max_archive_bytes: 1 << 30,
                max_unpacked_bytes: 4 << 30,
                max_entries: 500_000,
            },
            max_spec: 1 << 20,
            prepared: Mutex::new(HashMap::new()),
        })
    }

    /// The image whose spec has sha256 hex `digest`, its layers fetched and
    /// its root made if this worker has not yet; sandboxed over `base`'s
    /// ids (None: `--sandbox none`, which cannot run an image).
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
        let mut prepared = self.prepared.lock().await;
        if let Some(p) = prepared.get(digest) {
            return Ok(p.clone());
        }
        let data = fetch_blob(client, digest, self.max_spec).await?;
        let spec =
            ImageSpec::from_bytes(&data).map_err(|e| WorkerError::Package(format!("image spec {digest}: {e}")))?;
        let root = self.roots.join(digest);
        if !root.is_dir() {
            let mut layers = Vec::with_capacity(spec.layers.len());
            for l in &spec.layers {
                layers.push(self.layer(&l.digest, client).await?);
            }
            let tmp = self.roots.join(format!(".{digest}.{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir(&tmp).map_err(io(&tmp))?;
            let made = layer::flatten(&layers, &tmp)
                .map_err(|e| WorkerError::Package(format!("image {}: {e}", spec.image)))
                .and_then(|()| std::fs::rename(&tmp, &root).map_err(io(&root)));
            if let Err(e) = made {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        }
        let user = spec
            .user
            .as_deref()
            .map(|u| resolve_user(&root, u))
            .transpose()
            .map_err(|why| WorkerError::Package(format!("image {}: {why}", spec.image)))?;
        let jail = base
            .for_image(&root, &spec.working_dir, user)
            .map_err(|e| WorkerError::Package(format!("image {} at {}: {e}", spec.image, root.display())))?;
        let p = Arc::new(Prepared { spec, root, jail });
        prepared.insert(digest.to_string(), p.clone());
        Ok(p)
    }

    /// The layer with blob digest `digest`, unpacked (fetched if needed).
    async fn layer(&self, digest: &str, client: &mut crate::DispatcherClient) -> Result<PathBuf, WorkerError> {
        let dir = self.layers.join(digest);
        if dir.is_dir() {
            return Ok(dir);
        }
        let data = fetch_blob(client, digest, self.limits.max_archive_bytes).await?;
        let tmp = self.layers.join(format!(".{digest}.{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&tmp).map_err(io(&tmp))?;
        let made = layer::unpack_layer(&data, &tmp, &self.limits)
            .map_err(|e| WorkerError::Package(format!("layer {digest}: {e}")))
            .and_then(|_| std::fs::rename(&tmp, &dir).map_err(io(&dir)));
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        Ok(dir)
    }
}

/// The uid and gid an image's `User` names (`name`, `uid`, `name:group`,
/// `uid:gid`, ...), names looked up in the image's own /etc/passwd and
/// /etc/group (read only when they are regular files of the image: a link
/// could point at the host's). A uid not in /etc/passwd runs with gid 0,
/// as Docker does.
pub fn resolve_user(root: &Path, user: &str) -> Result<(u32, u32), String> {
    let table = |name: &str| -> Vec<Vec<String>> {
        let path = root.join("etc").join(name);
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
            if std::fs::symlink_metadata(self.root.join(inside.strip_prefix("/").expect("absolute"))).is_ok() {
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

    /// An image root with `files` (and /bin/sh a link to busybox), its spec
    /// `argv`, PATH=/usr/bin:/bin, WorkingDir /app.
    fn prepared(argv: &[&str], files: &[&str]) -> (tempfile::TempDir, Prepared) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for f in files {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
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
        let jail = base.for_image(&root, &spec.working_dir, None).unwrap();
        (dir, Prepared { spec, root, jail })
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

    #[test]
    fn an_image_root_gets_its_mount_points_whatever_it_had_there() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("dev")).unwrap();
        // An image whose /tmp and /dev/null are links out of it.
        std::os::unix::fs::symlink("/etc", root.join("tmp")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", root.join("dev/null")).unwrap();
        let base = Jail::prepare(&dir.path().join("host"), IdRange::new(320_000, 4).unwrap()).unwrap();
        base.for_image(&root, "/srv", None).unwrap();
        for d in ["tmp", "proc", "dev", ".old_root"] {
            let m = std::fs::symlink_metadata(root.join(d)).unwrap();
            assert!(m.is_dir(), "{d} is a real directory");
        }
        let null = std::fs::symlink_metadata(root.join("dev/null")).unwrap();
        assert!(null.is_file(), "a mount point of its own, not the link");
        // Prepared again (a worker restart over the same cache): fine.
        let jail = base.for_image(&root, "/srv", Some((1000, 100))).unwrap();
        assert_eq!(
            jail.id_maps(400_000),
            (b"1000 400000 1".to_vec(), b"100 400000 1".to_vec())
        );
        let plain = base.for_image(&root, "/srv", None).unwrap();
        assert_eq!(plain.id_maps(7).0, b"65534 7 1".to_vec());
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
        std::fs::remove_file(root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("etc/passwd")).unwrap();
        assert!(resolve_user(root, "root").is_err());
    }
}
