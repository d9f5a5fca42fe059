//! The sandbox's own view of the system: new mount, pid, ipc and uts
//! namespaces, a read-only root of bind mounts (`/usr` and the merged-/usr
//! links, a short list of `/etc` files, the function's code read-only at
//! `/var/task`), a size-capped tmpfs `/tmp`, a fresh procfs that shows only
//! the sandbox's processes (`subset=pid`; on older kernels, the kernel's
//! entries masked and its settings read-only), `/dev` with
//! null/zero/urandom only, and an unprivileged uid/gid (65534) in a user
//! namespace of its own, with no capabilities: on the host, an id of the
//! sandbox's own (`ids.rs`).
//!
//! A function that brings its own image gets the same sandbox over the
//! image's root instead ([`Jail::for_image`], once per image on a worker):
//! a read-only overlay of the image's layers under the worker's own top
//! layer of mount points ([`Jail::image_top`]), mounted in the sandbox's
//! mount namespace; no host paths and no code bind, its working directory
//! the image's.
//!
//! [`Jail::prepare`] runs once per worker: it lays out the root directory
//! (mount points, symlinks; shared by every sandbox, each mounting onto it
//! in its own mount namespace) and turns every path into a `CString`, so
//! that [`Jail::enter`], which runs between clone and exec, is nothing but
//! system calls (`sys.rs`) on memory allocated before: one named step after
//! another, in the order they must happen. `launch.rs` calls it; this
//! module knows nothing of the launcher but the system calls both use.
#![warn(clippy::undocumented_unsafe_blocks, clippy::multiple_unsafe_ops_per_block)]

use std::ffi::{CStr, CString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ids::{HostId, IdRange};
use super::sys::{self, MountAttr, Step, cstr, cstring};

/// Where the function's code appears inside the sandbox (Lambda's path).
pub const TASK_ROOT: &str = "/var/task";
/// The sandbox's /tmp: 512 MiB (Lambda's default), writable by all.
const TMP_OPTIONS: &std::ffi::CStr = c"size=512m,mode=1777";

/// Top-level host paths the sandbox sees: symlinks are copied (merged
/// /usr), directories bind-mounted read-only.
const TOP: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// `/etc` entries a runtime may need (name resolution, TLS roots, time
/// zone, the dynamic linker cache). Not shadow, not the host's secrets.
const ETC: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "passwd",
    "group",
    "hosts",
    "resolv.conf",
    "nsswitch.conf",
    "localtime",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "alternatives",
    "mime.types",
];
/// Device nodes bound from the host's /dev (no /dev/random: getrandom(2)
/// and /dev/urandom are the same pool).
const DEVICES: &[&str] = &["null", "zero", "urandom"];
/// /dev's links into the sandbox's own /proc.
const DEV_LINKS: [(&str, &str); 4] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];
/// The sandbox's procfs options: nothing but processes (no /proc/sys,
/// kcore, kallsyms, meminfo, ...), and none of another user's (Linux 5.8).
const PROC_OPTIONS: &std::ffi::CStr = c"subset=pid,hidepid=invisible";
/// Without `subset=pid` (an older kernel): entries of the sandbox's procfs
/// hidden under /dev/null (files) or an
/// empty read-only directory, where the host has them: kernel memory,
/// keys, timers and scheduler state of every process, symbols, the sysrq
/// trigger, hardware trees. Mostly unreadable without privileges anyway;
/// masked as container runtimes do, for kernels and settings that differ.
const PROC_MASKED: &[&str] = &[
    "kcore",
    "keys",
    "key-users",
    "timer_list",
    "sched_debug",
    "latency_stats",
    "sysrq-trigger",
    "kallsyms",
    "kmsg",
    "acpi",
    "scsi",
    "asound",
];
/// Without `subset=pid`: procfs directories made read-only (bound onto
/// themselves and remounted): kernel settings, buses, filesystems, IRQs.
const PROC_READ_ONLY: &[&str] = &["sys", "bus", "fs", "irq"];

/// Remount flags that make a bind mount read-only (and nosuid, nodev):
/// only its top mount, unlike [`ALL_READ_ONLY`].
const READ_ONLY_REMOUNT: libc::c_ulong =
    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
/// mount_setattr's read-only (and nosuid, nodev), for a mount and every
/// mount under it.
const ALL_READ_ONLY: MountAttr = MountAttr {
    attr_set: sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
    attr_clr: 0,
    propagation: 0,
    userns_fd: 0,
};

/// A bind mount of `src` on `dst`.
struct Bind {
    src: CString,
    dst: CString,
    read_only: bool,
}

/// Everything [`Jail::enter`] needs, prepared once per worker: the root's
/// mount points are shared by all its sandboxes (each mounts onto them in
/// its own mount namespace), so only the code differs between them.
pub struct Jail {
    root: CString,
    put_old: CString,
    put_old_inside: CString,
    binds: Vec<Bind>,
    /// Where the function's code is bound (`<root>/var/task`); None over an
    /// image, whose code is its own.
    task_mount: Option<CString>,
    /// Masks and read-only binds over a full procfs's entries, mounted
    /// after it when the kernel has no `subset=pid`.
    proc_masks: Vec<Bind>,
    tmp: CString,
    proc_dir: CString,
    /// Where the process starts: /var/task, or the image's WorkingDir.
    task_root: CString,
    /// Host ids for sandboxes, one each.
    ids: Arc<IdRange>,
    /// The uid and gid a sandbox's host id is seen as inside: 65534, or an
    /// image's `User`.
    inside: (u32, u32),
    /// An image's root: mounted as an overlay of its layers instead of
    /// binding `root` onto itself.
    overlay: Option<Overlay>,
}

/// An overlay mount of an image's layers, prepared for the child.
struct Overlay {
    /// Where its `lowerdir`s are relative to (the child changes into it to
    /// mount: short relative paths keep many layers within one page).
    layers: CString,
    options: CString,
}

/// Run `steps` with this process dumpable, and make it undumpable again
/// whether they succeed or fail. Dumpable is per address space, and until
/// exec the launcher's child shares the worker's: left set after a failed
/// step, the worker would stay dumpable (ptrace-able and readable through
/// /proc by its uid, core-dumped with its secrets).
pub(crate) fn while_dumpable(steps: impl FnOnce() -> Step) -> Step {
    sys::set_dumpable("dumpable", true)?;
    let done = steps();
    let undone = sys::set_dumpable("undumpable", false);
    done.and(undone)
}

impl Jail {
    /// Lay out a root at `root` (mount points and symlinks only); sandboxes
    /// will run as host ids from `ids`.
    pub fn prepare(root: &Path, ids: Arc<IdRange>) -> io::Result<Jail> {
        for d in ["etc", "var/task", "tmp", "proc", "dev", ".old_root", ".masked"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        let mut binds = Vec::new();
        let mut bind = |src: PathBuf, dst: PathBuf, read_only: bool| -> io::Result<()> {
            binds.push(Bind {
                src: cstr(&src)?,
                dst: cstr(&dst)?,
                read_only,
            });
            Ok(())
        };
        for name in TOP {
            let host = Path::new("/").join(name);
            match std::fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    std::os::unix::fs::symlink(std::fs::read_link(&host)?, root.join(name))?;
                }
                Ok(m) if m.is_dir() => {
                    std::fs::create_dir(root.join(name))?;
                    bind(host, root.join(name), true)?;
                }
                _ => {}
            }
        }
        for name in ETC {
            let host = Path::new("/etc").join(name);
            let inside = root.join("etc").join(name);
            match std::fs::metadata(&host) {
                Ok(m) if m.is_dir() => std::fs::create_dir(&inside)?,
                Ok(_) => drop(std::fs::File::create(&inside)?),
                Err(_) => continue,
            }
            bind(host, inside, true)?;
        }
        Jail::finish(root, true, binds, Some(cstr(&root.join("var/task"))?), TASK_ROOT, ids)
    }

    /// Lay out `top`, the worker's own topmost layer of every image's root:
    /// the mount points a sandbox needs (/tmp, /proc, /dev's nodes and
    /// links, /.old_root), over whatever an image has there. Once per
    /// worker; what is there already stays.
    pub fn image_top(top: &Path) -> io::Result<()> {
        for d in ["", "tmp", "proc", "dev", ".old_root", ".masked"] {
            std::fs::create_dir_all(top.join(d))?;
        }
        for name in DEVICES {
            let p = top.join("dev").join(name);
            if std::fs::symlink_metadata(&p).is_err() {
                std::fs::File::create(&p)?;
            }
        }
        for (name, target) in DEV_LINKS {
            let p = top.join("dev").join(name);
            if std::fs::symlink_metadata(&p).is_err() {
                std::os::unix::fs::symlink(target, &p)?;
            }
        }
        Ok(())
    }

    /// The same sandbox over an image: its root a read-only overlay mounted
    /// at `mount_point` (an empty directory) of `lowerdirs` (overlayfs's
    /// `top:layerN:…:layer1`, relative to `layers`: the worker's top, then
    /// the image's layers, topmost first); no host paths, no code bind; the
    /// process started in `working_dir`, as `user` (uid, gid) inside, or
    /// 65534.
    pub fn for_image(
        &self,
        mount_point: &Path,
        layers: &Path,
        lowerdirs: &str,
        working_dir: &str,
        user: Option<(u32, u32)>,
    ) -> io::Result<Jail> {
        let options = format!("lowerdir={lowerdirs}");
        // The kernel reads mount options from one page.
        if options.len() >= 4096 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the image has too many layers for one overlay mount ({} bytes of options)",
                    options.len()
                ),
            ));
        }
        let working_dir = if working_dir.starts_with('/') { working_dir } else { "/" };
        let mut jail = Jail::finish(mount_point, false, Vec::new(), None, working_dir, self.ids.clone())?;
        jail.inside = user.unwrap_or(jail.inside);
        jail.overlay = Some(Overlay {
            layers: cstr(layers)?,
            options: cstring(options, "the overlay's options")?,
        });
        Ok(jail)
    }

    /// The uid_map and gid_map lines that show host id `host_id` inside.
    pub fn id_maps(&self, host_id: u32) -> (Vec<u8>, Vec<u8>) {
        let (uid, gid) = self.inside;
        (
            format!("{uid} {host_id} 1").into_bytes(),
            format!("{gid} {host_id} 1").into_bytes(),
        )
    }

    /// What every root has: /dev's nodes (made under `root` when `lay_out`:
    /// an image's come with the worker's top layer) and links, the procfs
    /// masks.
    fn finish(
        root: &Path,
        lay_out: bool,
        mut binds: Vec<Bind>,
        task_mount: Option<CString>,
        task_root: &str,
        ids: Arc<IdRange>,
    ) -> io::Result<Jail> {
        for name in DEVICES {
            let inside = root.join("dev").join(name);
            if lay_out {
                std::fs::File::create(&inside)?;
            }
            binds.push(Bind {
                src: cstr(&Path::new("/dev").join(name))?,
                dst: cstr(&inside)?,
                read_only: false,
            });
        }
        for (name, target) in DEV_LINKS {
            if lay_out {
                std::os::unix::fs::symlink(target, root.join("dev").join(name))?;
            }
        }
        let mut proc_masks = Vec::new();
        for name in PROC_MASKED {
            // A directory gets an empty read-only one; a file /dev/null
            // (a device: its bind keeps /dev's flags, not remounted nodev).
            let (src, read_only) = match std::fs::symlink_metadata(Path::new("/proc").join(name)) {
                Ok(m) if m.is_dir() => (root.join(".masked"), true),
                Ok(_) => (PathBuf::from("/dev/null"), false),
                Err(_) => continue,
            };
            proc_masks.push(Bind {
                src: cstr(&src)?,
                dst: cstr(&root.join("proc").join(name))?,
                read_only,
            });
        }
        for name in PROC_READ_ONLY {
            if std::fs::symlink_metadata(Path::new("/proc").join(name)).is_ok_and(|m| m.is_dir()) {
                let inside = cstr(&root.join("proc").join(name))?;
                proc_masks.push(Bind {
                    src: inside.clone(),
                    dst: inside,
                    read_only: true,
                });
            }
        }
        Ok(Jail {
            proc_masks,
            put_old: cstr(&root.join(".old_root"))?,
            put_old_inside: CString::new("/.old_root").expect("no NUL"),
            task_mount,
            tmp: cstr(&root.join("tmp"))?,
            proc_dir: cstr(&root.join("proc"))?,
            task_root: cstr(Path::new(task_root))?,
            root: cstr(root)?,
            binds,
            ids,
            inside: (super::ids::INSIDE, super::ids::INSIDE),
            overlay: None,
        })
    }

    /// A host id for a new sandbox, held as long as its processes may live.
    pub fn lease_id(&self) -> io::Result<HostId> {
        self.ids.lease()
    }

    /// Build the sandbox's view with the code at `code_dir` (a host path)
    /// and become an unprivileged user in a user namespace of its own: host
    /// id `host_id`, seen inside as 65534 or an image's User (the maps of [`Jail::id_maps`]). Runs
    /// in the sandbox's first process, pid 1 of its new mount and pid
    /// namespaces, before exec; system calls only (`sys.rs`). Each step
    /// fails as itself: its name and errno ([`sys::Failed`]).
    ///
    /// # Safety
    /// Call only in the launcher's child before exec.
    #[allow(unsafe_code)]
    pub unsafe fn enter(&self, code_dir: &CStr, host_id: u32, (uid_map, gid_map): (&[u8], &[u8])) -> Step {
        make_mounts_private()?;
        self.mount_root()?;
        self.bind_host_paths()?;
        self.bind_code(code_dir)?;
        self.mount_tmp()?;
        self.mount_proc()?;
        self.pivot_into_root()?;
        make_root_read_only()?;
        self.enter_task_root()?;
        set_hostname()?;
        become_host_id(host_id)?;
        enter_user_namespace(uid_map, gid_map)?;
        drop_capabilities()
    }

    /// The new root, a mount point as pivot_root needs: the root directory
    /// bound onto itself, or an image's layers as a read-only overlay.
    fn mount_root(&self) -> Step {
        if let Some(o) = &self.overlay {
            sys::chdir("chdir to the image's layers", &o.layers)?;
            return sys::mount(
                "the image's root (overlay)",
                Some(c"overlay"),
                &self.root,
                Some(c"overlay"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                Some(&o.options),
            );
        }
        sys::mount(
            "the root",
            Some(&self.root),
            &self.root,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )
    }

    /// The host's binds (read-only, but /dev's nodes), under the root.
    fn bind_host_paths(&self) -> Step {
        for b in &self.binds {
            bind(&b.src, &b.dst, b.read_only)?;
        }
        Ok(())
    }

    /// The function's code, read-only at /var/task (an image has its own).
    fn bind_code(&self, code_dir: &CStr) -> Step {
        match &self.task_mount {
            Some(task) => bind(code_dir, task, true),
            None => Ok(()),
        }
    }

    /// The sandbox's /tmp: a size-capped tmpfs of its own.
    fn mount_tmp(&self) -> Step {
        sys::mount(
            "the /tmp tmpfs",
            Some(c"tmpfs"),
            &self.tmp,
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(TMP_OPTIONS),
        )
    }

    /// This pid namespace's own processes, and nothing else of procfs
    /// (PROC_OPTIONS). A kernel without those options (< 5.8) refuses
    /// them: it gets the whole procfs, with the kernel's entries masked
    /// and /proc/sys, bus, fs and irq read-only.
    fn mount_proc(&self) -> Step {
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        let proc = Some(c"proc");
        if sys::mount("/proc", proc, &self.proc_dir, proc, flags, Some(PROC_OPTIONS)).is_ok() {
            return Ok(());
        }
        sys::mount("/proc", proc, &self.proc_dir, proc, flags, None)?;
        for m in &self.proc_masks {
            sys::mount("masking /proc", Some(&m.src), &m.dst, None, libc::MS_BIND, None)?;
            if m.read_only {
                sys::mount("masking /proc", None, &m.dst, None, READ_ONLY_REMOUNT, None)?;
            }
        }
        Ok(())
    }

    /// The root becomes `/`; the host's, moved under it, is detached.
    fn pivot_into_root(&self) -> Step {
        sys::pivot_root("pivot_root", &self.root, &self.put_old)?;
        sys::chdir("chdir /", c"/")?;
        sys::umount2("detaching the old root", &self.put_old_inside, libc::MNT_DETACH)
    }

    /// The function starts in its code's directory (an image's: its
    /// WorkingDir).
    fn enter_task_root(&self) -> Step {
        sys::chdir("chdir to the working directory", &self.task_root)
    }
}

/// Nothing mounted here propagates back to the host.
fn make_mounts_private() -> Step {
    sys::mount(
        "private mounts",
        None,
        c"/",
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
}

/// Bind `src` on `dst`. Read-only, it is read-only with every mount under
/// it (mount_setattr, Linux 5.12; a remount changes only the top one). A
/// kernel without it binds `src` without what is mounted under it instead:
/// nothing writable comes along.
fn bind(src: &CStr, dst: &CStr, read_only: bool) -> Step {
    sys::mount("bind mounts", Some(src), dst, None, libc::MS_BIND | libc::MS_REC, None)?;
    if !read_only {
        return Ok(());
    }
    match sys::mount_setattr("read-only bind mounts", dst, libc::AT_RECURSIVE, &ALL_READ_ONLY) {
        Ok(()) => Ok(()),
        Err(f) if f.errno == libc::ENOSYS => {
            sys::umount2("read-only bind mounts", dst, libc::MNT_DETACH)?;
            sys::mount("read-only bind mounts", Some(src), dst, None, libc::MS_BIND, None)?;
            sys::mount("read-only bind mounts", None, dst, None, READ_ONLY_REMOUNT, None)
        }
        Err(f) => Err(f),
    }
}

/// The whole tree, as the function sees it, read-only (its /tmp and /dev
/// nodes are mounts of their own).
fn make_root_read_only() -> Step {
    sys::mount("a read-only root", None, c"/", None, READ_ONLY_REMOUNT, None)
}

fn set_hostname() -> Step {
    sys::sethostname("sethostname", b"stoke")
}

/// The unprivileged user — the sandbox's own host id, which no other
/// sandbox has — keeping only CAP_SYS_ADMIN, for the next step's unshare
/// (whatever the host's policy on unprivileged user namespaces). Entering
/// the namespace as that uid makes it owned by that id: whatever
/// capabilities the function could ever hold in it are over nothing of the
/// host. Raw calls (`sys.rs`): glibc's change every thread of the process,
/// the kernel's only the calling thread, which is all this process has.
fn become_host_id(host_id: u32) -> Step {
    sys::drop_bounding_set();
    sys::set_keepcaps("keepcaps")?;
    sys::setgroups_none("setgroups")?;
    sys::setresgid("setresgid", host_id)?;
    sys::setresuid("setresuid", host_id)?;
    sys::capset("capset", 1 << sys::CAP_SYS_ADMIN)
}

/// A user namespace of its own that maps only that uid and gid, to 65534.
/// Its own /proc/self files are its to write while dumpable.
fn enter_user_namespace(uid_map: &[u8], gid_map: &[u8]) -> Step {
    while_dumpable(|| {
        sys::unshare("the user namespace", libc::CLONE_NEWUSER)?;
        sys::write_file("setgroups deny", c"/proc/self/setgroups", b"deny")?;
        sys::write_file("uid_map", c"/proc/self/uid_map", uid_map)?;
        sys::write_file("gid_map", c"/proc/self/gid_map", gid_map)
    })
}

/// The new namespace gave a full set again: drop them all, for good
/// (no_new_privs follows, in `launch.rs`).
fn drop_capabilities() -> Step {
    sys::drop_bounding_set();
    sys::capset("dropping capabilities", 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_while_dumpable_leaves_the_process_undumpable() {
        // In this test's own process (nextest runs each test in one).
        use nix::sys::prctl::get_dumpable;
        let failed = while_dumpable(|| {
            assert!(get_dumpable().unwrap(), "dumpable during the steps");
            Err(sys::Failed {
                step: "uid_map",
                errno: libc::EPERM,
            })
        });
        assert_eq!(failed.unwrap_err().step, "uid_map", "the step's error comes back");
        assert!(!get_dumpable().unwrap(), "undumpable after a failure");
        while_dumpable(|| Ok(())).unwrap();
        assert!(!get_dumpable().unwrap(), "undumpable after success");
    }

    #[test]
    fn prepare_lays_out_mount_points_and_links() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().join("root");
        let jail = Jail::prepare(&root, IdRange::new(300_000, 10).unwrap()).unwrap();
        for p in [
            "var/task",
            "tmp",
            "proc",
            "dev/null",
            "dev/urandom",
            "etc/passwd",
            ".old_root",
        ] {
            assert!(root.join(p).exists(), "{p}");
        }
        assert!(!root.join("etc/shadow").exists());
        assert!(root.join("usr").is_dir());
        assert!(jail.task_mount.as_ref().unwrap().to_bytes().ends_with(b"root/var/task"));
        assert!(
            jail.binds
                .iter()
                .any(|b| b.dst.to_bytes().ends_with(b"etc/passwd") && b.read_only)
        );
    }
}
