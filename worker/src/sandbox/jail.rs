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
//! [`Jail::prepare`] runs once per worker: it lays out the root directory
//! (mount points, symlinks; shared by every sandbox, each mounting onto it
//! in its own mount namespace) and turns every path into a `CString`, so
//! that [`Jail::enter`], which runs between clone and exec, is nothing but
//! raw system calls on memory allocated before.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ids::{HostId, IdRange};
use super::launch::{Step, raw, sys};

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

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

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
    /// Where the function's code is bound (`<root>/var/task`).
    task_mount: CString,
    /// Masks and read-only binds over a full procfs's entries, mounted
    /// after it when the kernel has no `subset=pid`.
    proc_masks: Vec<Bind>,
    tmp: CString,
    proc_dir: CString,
    task_root: CString,
    /// Host ids for sandboxes, one each.
    ids: Arc<IdRange>,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other(format!("{} has a NUL byte", p.display())))
}

/// `capset(2)`'s header and data (version 3: two 32-bit words per set).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_SYS_ADMIN: u32 = 21;

/// Set this process's effective and permitted capabilities to `caps` (a
/// bit mask of the first 32); inheritable to none.
#[allow(unsafe_code)]
unsafe fn set_caps(step: &'static str, caps: u32) -> Step {
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let set = CapData {
        effective: caps,
        permitted: caps,
        inheritable: 0,
    };
    let data = [
        set,
        CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads the two structs above.
    unsafe { sys(step, raw!(SYS_capset, &raw const header, data.as_ptr())) }
}

/// Run `steps` with this process dumpable, and make it undumpable again
/// whether they succeed or fail. Dumpable is per address space, and until
/// exec the launcher's child shares the worker's: left set after a failed
/// step, the worker would stay dumpable (ptrace-able and readable through
/// /proc by its uid, core-dumped with its secrets).
#[allow(unsafe_code)]
pub(crate) fn while_dumpable(steps: impl FnOnce() -> Step) -> Step {
    // SAFETY: raw prctls on integers.
    unsafe {
        sys("dumpable", raw!(SYS_prctl, libc::PR_SET_DUMPABLE, 1, 0, 0, 0))?;
        let done = steps();
        let undone = sys("undumpable", raw!(SYS_prctl, libc::PR_SET_DUMPABLE, 0, 0, 0, 0));
        done.and(undone)
    }
}

/// Write `text` to the file at `path` (a /proc control file).
#[allow(unsafe_code)]
unsafe fn write_file(step: &'static str, path: &CStr, text: &[u8]) -> Step {
    // SAFETY: raw system calls on a NUL-terminated path and a byte slice.
    unsafe {
        let fd = raw!(
            SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC
        );
        sys(step, fd)?;
        let written = raw!(SYS_write, fd, text.as_ptr(), text.len());
        raw!(SYS_close, fd);
        sys(step, written)
    }
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
            task_mount: cstr(&root.join("var/task"))?,
            tmp: cstr(&root.join("tmp"))?,
            proc_dir: cstr(&root.join("proc"))?,
            task_root: CString::new(TASK_ROOT).expect("no NUL"),
            root: cstr(root)?,
            binds,
            ids,
        })
    }

    /// A host id for a new sandbox, held as long as its processes may live.
    pub fn lease_id(&self) -> io::Result<HostId> {
        self.ids.lease()
    }

    /// Build the sandbox's view with the code at `code_dir` (a host path)
    /// and become an unprivileged user in a user namespace of its own: host
    /// id `host_id`, seen inside as 65534 (`id_map`, from `HostId::map`). Runs
    /// in the sandbox's first process, pid 1 of its new mount and pid
    /// namespaces, before exec; raw system calls only.
    ///
    /// # Safety
    /// Call only in the launcher's child before exec.
    #[allow(unsafe_code)]
    pub unsafe fn enter(&self, code_dir: &CStr, host_id: u32, id_map: &[u8]) -> Step {
        let null = std::ptr::null::<libc::c_char>();
        let none = std::ptr::null::<libc::c_void>();
        let mount = |step,
                     src: *const libc::c_char,
                     dst: *const libc::c_char,
                     fs: *const libc::c_char,
                     flags: libc::c_ulong,
                     data: *const libc::c_void| {
            // SAFETY: NUL-terminated strings owned by `self` or the caller, or null.
            unsafe { sys(step, raw!(SYS_mount, src, dst, fs, flags, data)) }
        };
        let read_only = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
        // Nothing mounted here propagates back to the host.
        mount(
            "private mounts",
            null,
            c"/".as_ptr(),
            null,
            libc::MS_REC | libc::MS_PRIVATE,
            none,
        )?;
        // The new root must be a mount point for pivot_root.
        let root = self.root.as_ptr();
        mount("the root", root, root, null, libc::MS_BIND | libc::MS_REC, none)?;
        // The host's read-only binds, then the code, read-only too — with
        // every mount under them (mount_setattr, Linux 5.12; a remount
        // changes only the top one). A kernel without it binds them
        // without what is mounted under them instead: nothing writable
        // comes along.
        let all_read_only = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        for (src, dst, ro) in self
            .binds
            .iter()
            .map(|b| (b.src.as_ptr(), b.dst.as_ptr(), b.read_only))
            .chain([(code_dir.as_ptr(), self.task_mount.as_ptr(), true)])
        {
            mount("bind mounts", src, dst, null, libc::MS_BIND | libc::MS_REC, none)?;
            if !ro {
                continue;
            }
            // SAFETY: a raw system call on a NUL-terminated path and a struct on this stack.
            let r = unsafe {
                raw!(
                    SYS_mount_setattr,
                    libc::AT_FDCWD,
                    dst,
                    libc::AT_RECURSIVE,
                    &raw const all_read_only,
                    std::mem::size_of::<MountAttr>()
                )
            };
            match sys("read-only bind mounts", r) {
                Ok(()) => {}
                Err(f) if f.errno == libc::ENOSYS => {
                    // SAFETY: as above.
                    unsafe { sys("read-only bind mounts", raw!(SYS_umount2, dst, libc::MNT_DETACH))? };
                    mount("read-only bind mounts", src, dst, null, libc::MS_BIND, none)?;
                    mount("read-only bind mounts", null, dst, null, read_only, none)?;
                }
                Err(f) => return Err(f),
            }
        }
        mount(
            "the /tmp tmpfs",
            c"tmpfs".as_ptr(),
            self.tmp.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            TMP_OPTIONS.as_ptr().cast(),
        )?;
        // This pid namespace's own processes, and nothing else of procfs
        // (PROC_OPTIONS). A kernel without those options (< 5.8) refuses
        // them: it gets the whole procfs, with the kernel's entries masked
        // and /proc/sys, bus, fs and irq read-only.
        let proc_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        let (proc, proc_dir) = (c"proc".as_ptr(), self.proc_dir.as_ptr());
        let subset = mount("/proc", proc, proc_dir, proc, proc_flags, PROC_OPTIONS.as_ptr().cast());
        let masks = match subset {
            Ok(()) => &[][..],
            Err(_) => {
                mount("/proc", proc, proc_dir, proc, proc_flags, none)?;
                &self.proc_masks[..]
            }
        };
        for m in masks {
            mount(
                "masking /proc",
                m.src.as_ptr(),
                m.dst.as_ptr(),
                null,
                libc::MS_BIND,
                none,
            )?;
            if m.read_only {
                mount("masking /proc", null, m.dst.as_ptr(), null, read_only, none)?;
            }
        }
        // SAFETY (rest): raw system calls on NUL-terminated strings owned
        // by `self`, or on plain integers and structs on this stack.
        unsafe {
            sys("pivot_root", raw!(SYS_pivot_root, root, self.put_old.as_ptr()))?;
            sys("chdir /", raw!(SYS_chdir, c"/".as_ptr()))?;
            sys(
                "detaching the old root",
                raw!(SYS_umount2, self.put_old_inside.as_ptr(), libc::MNT_DETACH),
            )?;
            mount("a read-only root", null, c"/".as_ptr(), null, read_only, none)?;
            sys("chdir /var/task", raw!(SYS_chdir, self.task_root.as_ptr()))?;
            sys("sethostname", raw!(SYS_sethostname, c"stoke".as_ptr(), 5))?;

            // The unprivileged user — the sandbox's own host id, which no
            // other sandbox has — in a user namespace of its own that maps
            // only that uid and gid, to 65534. Entering it as that uid
            // (with CAP_SYS_ADMIN kept for the unshare only, whatever the
            // host's policy on unprivileged user namespaces) makes the
            // namespace owned by that id: whatever capabilities the
            // function could ever hold in it are over nothing of the host.
            for cap in 0..64 {
                raw!(SYS_prctl, libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
            sys("keepcaps", raw!(SYS_prctl, libc::PR_SET_KEEPCAPS, 1, 0, 0, 0))?;
            // Raw: glibc's wrappers of these change every thread of the
            // process through `__nptl_setxid` (a lock, and a signal to each
            // thread it knows: the worker's). The kernel's change only the
            // calling thread, which is all this process has.
            sys("setgroups", raw!(SYS_setgroups, 0, 0))?;
            sys("setresgid", raw!(SYS_setresgid, host_id, host_id, host_id))?;
            sys("setresuid", raw!(SYS_setresuid, host_id, host_id, host_id))?;
            set_caps("capset", 1 << CAP_SYS_ADMIN)?;
            // Its own /proc/self files are its to write while dumpable.
            while_dumpable(|| {
                sys("the user namespace", raw!(SYS_unshare, libc::CLONE_NEWUSER))?;
                write_file("setgroups deny", c"/proc/self/setgroups", b"deny")?;
                write_file("uid_map", c"/proc/self/uid_map", id_map)?;
                write_file("gid_map", c"/proc/self/gid_map", id_map)
            })?;
            // The new namespace gave a full set again: drop them all, for
            // good (no_new_privs follows).
            for cap in 0..64 {
                raw!(SYS_prctl, libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
            set_caps("dropping capabilities", 0)?;
        }
        Ok(())
    }
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
            Err(crate::sandbox::launch::Failed {
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
        assert!(jail.task_mount.to_bytes().ends_with(b"root/var/task"));
        assert!(
            jail.binds
                .iter()
                .any(|b| b.dst.to_bytes().ends_with(b"etc/passwd") && b.read_only)
        );
    }
}
