//! The sandbox's own view of the system: new mount, pid, ipc and uts
//! namespaces, a read-only root of bind mounts (`/usr` and the merged-/usr
//! links, a short list of `/etc` files, the function's code read-only at
//! `/var/task`), a size-capped tmpfs `/tmp`, a fresh procfs that shows only
//! the sandbox's processes, `/dev` with null/zero/random/urandom only, and
//! an unprivileged uid/gid (65534) with an empty capability bounding set.
//!
//! [`Jail::prepare`] runs in the worker: it lays out the root directory
//! (mount points, symlinks) and turns every path into a `CString`, so that
//! [`Jail::enter`], which runs between fork and exec, is nothing but raw
//! system calls on memory allocated before the fork.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where the function's code appears inside the sandbox (Lambda's path).
pub const TASK_ROOT: &str = "/var/task";
/// The sandbox's uid and gid (nobody / nogroup).
pub const SANDBOX_ID: libc::uid_t = 65534;
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
/// Device nodes bound from the host's /dev.
const DEVICES: &[&str] = &["null", "zero", "random", "urandom"];

/// A bind mount of `src` on `dst`.
struct Bind {
    src: CString,
    dst: CString,
    read_only: bool,
}

/// Everything [`Jail::enter`] needs, prepared before the fork.
pub struct Jail {
    root: CString,
    put_old: CString,
    put_old_inside: CString,
    binds: Vec<Bind>,
    tmp: CString,
    proc_dir: CString,
    task_root: CString,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other(format!("{} has a NUL byte", p.display())))
}

impl Jail {
    /// Lay out the root at `<scratch>/root` for a function whose code is in
    /// `code_dir`.
    pub fn prepare(scratch: &Path, code_dir: &Path) -> io::Result<Jail> {
        let root = scratch.join("root");
        for d in ["etc", "var/task", "tmp", "proc", "dev", ".old_root"] {
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
        for name in DEVICES {
            let inside = root.join("dev").join(name);
            std::fs::File::create(&inside)?;
            bind(Path::new("/dev").join(name), inside, false)?;
        }
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            std::os::unix::fs::symlink(target, root.join("dev").join(name))?;
        }
        bind(code_dir.to_path_buf(), root.join("var/task"), true)?;
        Ok(Jail {
            put_old: cstr(&root.join(".old_root"))?,
            put_old_inside: CString::new("/.old_root").expect("no NUL"),
            tmp: cstr(&root.join("tmp"))?,
            proc_dir: cstr(&root.join("proc"))?,
            task_root: CString::new(TASK_ROOT).expect("no NUL"),
            root: cstr(&root)?,
            binds,
        })
    }

    /// Build the sandbox's view and become an unprivileged user in it.
    /// Runs in the sandbox's first process inside its new mount and pid
    /// namespaces (pid 1 there), before exec; raw system calls only.
    ///
    /// # Safety
    /// Call only in a forked child before exec.
    #[allow(unsafe_code)]
    pub unsafe fn enter(&self) -> io::Result<()> {
        let check = |r: libc::c_int| if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) };
        let null = std::ptr::null::<libc::c_char>();
        let none = std::ptr::null::<libc::c_void>();
        // SAFETY (whole block): every pointer is a NUL-terminated string
        // owned by `self`, or null where the call allows it.
        unsafe {
            // Nothing mounted here propagates back to the host.
            check(libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                none,
            ))?;
            // The new root must be a mount point for pivot_root.
            check(libc::mount(
                self.root.as_ptr(),
                self.root.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                none,
            ))?;
            for b in &self.binds {
                check(libc::mount(
                    b.src.as_ptr(),
                    b.dst.as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REC,
                    none,
                ))?;
                if b.read_only {
                    let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
                    check(libc::mount(null, b.dst.as_ptr(), null, flags, none))?;
                }
            }
            check(libc::mount(
                c"tmpfs".as_ptr(),
                self.tmp.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                TMP_OPTIONS.as_ptr().cast(),
            ))?;
            // This pid namespace's own processes only.
            check(libc::mount(
                c"proc".as_ptr(),
                self.proc_dir.as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                none,
            ))?;
            check(libc::syscall(libc::SYS_pivot_root, self.root.as_ptr(), self.put_old.as_ptr()) as libc::c_int)?;
            check(libc::chdir(c"/".as_ptr()))?;
            check(libc::umount2(self.put_old_inside.as_ptr(), libc::MNT_DETACH))?;
            let ro_root = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
            check(libc::mount(null, c"/".as_ptr(), null, ro_root, none))?;
            check(libc::chdir(self.task_root.as_ptr()))?;
            check(libc::sethostname(c"stoke".as_ptr(), 5))?;
            // No capability can ever come back (no_new_privs follows), and
            // leaving uid 0 clears the ones held now.
            for cap in 0..64 {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID))?;
            check(libc::setresuid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_lays_out_mount_points_and_links() {
        let scratch = tempfile::tempdir().unwrap();
        let code = tempfile::tempdir().unwrap();
        let jail = Jail::prepare(scratch.path(), code.path()).unwrap();
        let root = scratch.path().join("root");
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
        assert!(
            jail.binds
                .iter()
                .any(|b| b.dst.to_bytes().ends_with(b"var/task") && b.read_only)
        );
    }
}
