//! The launcher's raw system-call layer: every system call the launcher's
//! child makes between `clone` and exec (for `launch.rs` and `jail.rs`),
//! and the few the worker makes around it (the signal mask over the
//! `clone`) and on a started process (`process.rs`: its pidfd, its
//! reaping) and on a Runtime API connection (`runtime_api.rs`: quick ACKs), each a small function over glibc's `syscall(3)` (`raw!`).
//!
//! Owns the `unsafe` of those calls — one block per call, each with why it
//! is sound — the kernel structs they take, and [`Failed`]: the step that
//! failed and its errno, which is all a failure in the child can carry. It
//! must not allocate or lock in anything the child calls (the child shares
//! the worker's memory until it execs), nor call glibc's wrappers there;
//! and it decides nothing: which calls, in which order, with which step
//! names, is `jail.rs`'s and `launch.rs`'s. It imports neither.
//!
//! A wrapper is a safe function when its arguments' types are all its
//! call needs to be memory-safe (borrowed C strings and structs, borrowed
//! fds, integers). Safe is not harmless: most change the whole process —
//! its root, its ids, its namespaces, its signal handlers — and are meant
//! for the launcher's child only. [`dup2`] and [`close_from`] are `unsafe`:
//! they replace or close fds that may be someone else's.
#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::multiple_unsafe_ops_per_block)]

use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A step of the child that failed, and why: its name (as error messages
/// show it, "uid_map: Permission denied (os error 13)") and errno.
#[derive(Clone, Copy, Debug)]
pub struct Failed {
    pub step: &'static str,
    pub errno: i32,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, io::Error::from_raw_os_error(self.errno))
    }
}

impl std::error::Error for Failed {}

impl From<Failed> for io::Error {
    /// The errno's kind, and the step in the message (the worker's side,
    /// once `clone` has returned: this allocates).
    fn from(f: Failed) -> io::Error {
        io::Error::new(io::Error::from_raw_os_error(f.errno).kind(), f)
    }
}

/// What a step in the child returns: nothing to allocate, even on failure.
pub type Step = Result<(), Failed>;

/// A raw system call for the child between `clone` and exec. glibc's
/// `syscall(3)` only moves its arguments into registers and sets errno: no
/// locks, no allocation, no thread bookkeeping. Its wrappers are not all
/// like that: `setuid`, `setgroups` and friends go through `__nptl_setxid`,
/// which takes the thread-stack lock and signals every thread it knows —
/// the worker's, since the child shares the worker's memory. Every
/// argument is widened to a full register (`as c_long`), so that no
/// garbage in the upper half of a 32-bit value reaches an `unsigned long`
/// parameter.
macro_rules! raw {
    ($nr:ident $(, $arg:expr)* $(,)?) => {
        libc::syscall(libc::$nr $(, $arg as libc::c_long)*)
    };
}

/// Check a system call's return value for step `step`: a negative one is
/// a failure, with this thread's errno.
fn check(step: &'static str, r: libc::c_long) -> Step {
    if r < 0 {
        Err(Failed {
            step,
            errno: nix::errno::Errno::last_raw(),
        })
    } else {
        Ok(())
    }
}

/// A host path as a C string (`jail.rs`'s paths).
pub(crate) fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other(format!("{} has a NUL byte", p.display())))
}

/// `s` as a C string; `what` names it if it has a NUL byte (`launch.rs`'s
/// command, arguments and environment).
pub(crate) fn cstring(s: impl AsRef<[u8]>, what: &str) -> io::Result<CString> {
    CString::new(s.as_ref()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} has a NUL byte")))
}

fn or_null(s: Option<&CStr>) -> *const libc::c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

// ---- The kernel's structs ------------------------------------------------

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
pub(crate) const CAP_SYS_ADMIN: u32 = 21;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
pub(crate) struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}
pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;

/// The kernel's `struct sigaction` (x86_64 and aarch64 layout: handler,
/// flags, restorer, a 64-bit mask), for a raw `rt_sigaction`.
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}
/// The kernel's signal set: one bit per signal.
pub(crate) type KernelSigset = u64;
/// The size of the kernel's signal set, for `rt_sigaction`/`rt_sigprocmask`.
const KERNEL_SIGSET: usize = std::mem::size_of::<KernelSigset>();
/// Signals the kernel knows (`_NSIG`).
pub(crate) const NSIG: libc::c_int = 64;

/// A NULL-terminated array of pointers to C strings, as execve(2) takes
/// `argv` and `envp`; the strings outlive it. Built before `clone`.
pub(crate) struct CStrArray<'a> {
    ptrs: Vec<*const libc::c_char>,
    strings: PhantomData<&'a CStr>,
}

impl<'a> CStrArray<'a> {
    pub(crate) fn new(strings: impl IntoIterator<Item = &'a CStr>) -> CStrArray<'a> {
        let mut ptrs: Vec<*const libc::c_char> = strings.into_iter().map(CStr::as_ptr).collect();
        ptrs.push(std::ptr::null());
        CStrArray {
            ptrs,
            strings: PhantomData,
        }
    }
}

// ---- Mounts --------------------------------------------------------------

/// mount(2); `None` passes a null pointer (the source and type of a bind or
/// a remount, no data).
pub(crate) fn mount(
    step: &'static str,
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Step {
    let (src, fstype, data) = (or_null(src), or_null(fstype), or_null(data));
    // SAFETY: the kernel reads NUL-terminated strings borrowed for the
    // call, or nothing through a null pointer.
    check(step, unsafe {
        raw!(SYS_mount, src, target.as_ptr(), fstype, flags, data)
    })
}

/// mount_setattr(2) on `path` (Linux 5.12; ENOSYS before).
pub(crate) fn mount_setattr(step: &'static str, path: &CStr, flags: libc::c_int, attr: &MountAttr) -> Step {
    let size = std::mem::size_of::<MountAttr>();
    // SAFETY: the kernel reads a NUL-terminated path and `size` bytes of
    // `attr`, both borrowed for the call.
    check(step, unsafe {
        raw!(
            SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            std::ptr::from_ref(attr),
            size
        )
    })
}

/// lsetxattr(2): the extended attribute `name` of `path` (not followed if
/// a link) set to `value`. Used by the worker on its own files (an image
/// layer's opaque directories, `images.rs`), not by the child.
pub(crate) fn lsetxattr(step: &'static str, path: &CStr, name: &CStr, value: &[u8]) -> Step {
    // SAFETY: the kernel reads a NUL-terminated path and name and
    // `value.len()` bytes of `value`, all borrowed for the call.
    check(step, unsafe {
        raw!(
            SYS_lsetxattr,
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr(),
            value.len(),
            0
        )
    })
}

/// umount2(2).
pub(crate) fn umount2(step: &'static str, target: &CStr, flags: libc::c_int) -> Step {
    // SAFETY: the kernel reads a NUL-terminated path borrowed for the call.
    check(step, unsafe { raw!(SYS_umount2, target.as_ptr(), flags) })
}

/// pivot_root(2): `new_root` becomes `/`, the old root moves to `put_old`.
pub(crate) fn pivot_root(step: &'static str, new_root: &CStr, put_old: &CStr) -> Step {
    // SAFETY: the kernel reads two NUL-terminated paths borrowed for the call.
    check(step, unsafe {
        raw!(SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr())
    })
}

/// chdir(2).
pub(crate) fn chdir(step: &'static str, path: &CStr) -> Step {
    // SAFETY: the kernel reads a NUL-terminated path borrowed for the call.
    check(step, unsafe { raw!(SYS_chdir, path.as_ptr()) })
}

// ---- Identity, privileges, namespaces ------------------------------------

/// sethostname(2) (in the caller's uts namespace).
pub(crate) fn sethostname(step: &'static str, name: &[u8]) -> Step {
    // SAFETY: the kernel reads `name.len()` bytes of a slice borrowed for
    // the call.
    check(step, unsafe { raw!(SYS_sethostname, name.as_ptr(), name.len()) })
}

/// setgroups(2) with no groups at all. Raw, like the two below: glibc's
/// wrappers change every thread of the process through `__nptl_setxid`
/// (a lock, and a signal to each thread it knows: the worker's); the
/// kernel's change only the calling thread.
pub(crate) fn setgroups_none(step: &'static str) -> Step {
    // SAFETY: an empty list: the kernel reads nothing through the null pointer.
    check(step, unsafe { raw!(SYS_setgroups, 0, 0) })
}

/// setresgid(2), real, effective and saved, of the calling thread.
pub(crate) fn setresgid(step: &'static str, gid: u32) -> Step {
    // SAFETY: integers only.
    check(step, unsafe { raw!(SYS_setresgid, gid, gid, gid) })
}

/// setresuid(2), real, effective and saved, of the calling thread.
pub(crate) fn setresuid(step: &'static str, uid: u32) -> Step {
    // SAFETY: integers only.
    check(step, unsafe { raw!(SYS_setresuid, uid, uid, uid) })
}

/// Set this process's effective and permitted capabilities to `caps` (a
/// bit mask of the first 32); inheritable to none.
pub(crate) fn capset(step: &'static str, caps: u32) -> Step {
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
    // SAFETY: the kernel reads the header and the two data structs (as
    // version 3 says) on this stack.
    check(step, unsafe { raw!(SYS_capset, &raw const header, data.as_ptr()) })
}

/// Drop every capability from the bounding set, for good. The kernel
/// refuses numbers past its last capability (EINVAL): ignored.
pub(crate) fn drop_bounding_set() {
    for cap in 0..64 {
        // SAFETY: integers only.
        unsafe { raw!(SYS_prctl, libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
}

/// PR_SET_KEEPCAPS: permitted capabilities survive a change from uid 0.
pub(crate) fn set_keepcaps(step: &'static str) -> Step {
    // SAFETY: integers only.
    check(step, unsafe { raw!(SYS_prctl, libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) })
}

/// PR_SET_DUMPABLE (per address space: until exec, the child's is the
/// worker's).
pub(crate) fn set_dumpable(step: &'static str, dumpable: bool) -> Step {
    // SAFETY: integers only.
    check(step, unsafe {
        raw!(SYS_prctl, libc::PR_SET_DUMPABLE, dumpable, 0, 0, 0)
    })
}

/// PR_SET_NO_NEW_PRIVS: exec grants nothing (setuid, file capabilities).
pub(crate) fn set_no_new_privs(step: &'static str) -> Step {
    // SAFETY: integers only.
    check(step, unsafe { raw!(SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
}

/// SIGKILL when the thread that started this process dies (the worker's,
/// or `stoke`'s main thread): step "PDEATHSIG". Async-signal-safe.
pub(crate) fn die_with_parent() -> Step {
    // SAFETY: integers only.
    check("PDEATHSIG", unsafe {
        raw!(SYS_prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0)
    })
}

/// unshare(2).
pub(crate) fn unshare(step: &'static str, flags: libc::c_int) -> Step {
    // SAFETY: integers only.
    check(step, unsafe { raw!(SYS_unshare, flags) })
}

/// setns(2) into the namespace open at `fd`.
pub(crate) fn setns(step: &'static str, fd: BorrowedFd<'_>, nstype: libc::c_int) -> Step {
    // SAFETY: integers only; `fd` is borrowed, open for the call.
    check(step, unsafe { raw!(SYS_setns, fd.as_raw_fd(), nstype) })
}

/// setsid(2): a new session and process group.
pub(crate) fn setsid(step: &'static str) -> Step {
    // SAFETY: no arguments.
    check(step, unsafe { raw!(SYS_setsid) })
}

/// setrlimit(2): soft and hard limit `limit` on `resource`.
pub(crate) fn setrlimit(step: &'static str, resource: libc::__rlimit_resource_t, limit: u64) -> Step {
    let r = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: the kernel reads one `rlimit` on this stack.
    check(step, unsafe { raw!(SYS_setrlimit, resource, &raw const r) })
}

/// Install a seccomp filter: the program is built before `clone`, so this
/// is a prctl over a pointer to it. A program of more instructions than
/// the kernel takes fails the step (`E2BIG`), never truncated.
///
/// # Safety
///
/// Only in the launcher's child before exec: a filter can make system
/// calls fail or fake their results for the rest of the process's life,
/// which no code that goes on running could be sound under.
pub(crate) unsafe fn seccomp_filter(step: &'static str, program: &[seccompiler::sock_filter]) -> Step {
    let Ok(len) = u16::try_from(program.len()) else {
        return Err(Failed {
            step,
            errno: libc::E2BIG,
        });
    };
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the kernel copies `prog` and the `len` instructions it points
    // to, borrowed for the call (`sock_filter` of seccompiler and libc have
    // the same C layout; the kernel writes to neither).
    check(step, unsafe {
        raw!(
            SYS_prctl,
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &raw const prog,
        )
    })
}

// ---- Files ---------------------------------------------------------------

/// write(2) of `bytes` to `fd`.
pub(crate) fn write(step: &'static str, fd: BorrowedFd<'_>, bytes: &[u8]) -> Step {
    // SAFETY: the kernel reads `bytes.len()` bytes of a slice borrowed for
    // the call; `fd` is borrowed, open for the call.
    check(step, unsafe {
        raw!(SYS_write, fd.as_raw_fd(), bytes.as_ptr(), bytes.len())
    })
}

/// Write `text` to the file at `path` (a /proc control file).
pub(crate) fn write_file(step: &'static str, path: &CStr, text: &[u8]) -> Step {
    // SAFETY: the kernel reads a NUL-terminated path borrowed for the call.
    let fd = unsafe {
        raw!(
            SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC
        )
    };
    check(step, fd)?;
    // SAFETY: the kernel reads `text.len()` bytes of a borrowed slice, to
    // the fd opened just above.
    let written = unsafe { raw!(SYS_write, fd, text.as_ptr(), text.len()) };
    // SAFETY: closes the fd opened above, which nothing else has seen.
    unsafe { raw!(SYS_close, fd) };
    check(step, written)
}

/// dup2(2): `fd` also at `target`.
///
/// # Safety
/// `target` is closed first if open: it must be no one else's (the
/// launcher's child, whose fd table is its own copy, on its stdio).
pub(crate) unsafe fn dup2(step: &'static str, fd: BorrowedFd<'_>, target: libc::c_int) -> Step {
    // SAFETY: integers only; the caller vouches for `target`.
    check(step, unsafe { raw!(SYS_dup2, fd.as_raw_fd(), target) })
}

/// Close (or mark close-on-exec) every fd from `first` up: `close_range`
/// where the kernel has it (5.9; CLOEXEC from 5.11), else one by one up to
/// the open-files limit. Async-signal-safe.
///
/// # Safety
/// Every fd from `first` up must be the caller's to close (the launcher's
/// child: its fd table is its own copy).
pub(crate) unsafe fn close_from(first: u32, cloexec: bool) {
    let flags = if cloexec { libc::CLOSE_RANGE_CLOEXEC } else { 0 };
    // SAFETY: integers only; the caller vouches for the fds.
    if unsafe { raw!(SYS_close_range, first, u32::MAX, flags) } == 0 {
        return;
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: the kernel writes one `rlimit` on this stack.
    let top = if unsafe { raw!(SYS_getrlimit, libc::RLIMIT_NOFILE, &raw mut limit) } == 0 {
        limit.rlim_cur.min(1 << 20) as libc::c_int
    } else {
        1 << 16
    };
    for fd in first as libc::c_int..top {
        if cloexec {
            // SAFETY: integers only; the caller vouches for the fds.
            unsafe { raw!(SYS_fcntl, fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        } else {
            // SAFETY: integers only; the caller vouches for the fds.
            unsafe { raw!(SYS_close, fd) };
        }
    }
}

// ---- Signals, exec, exit -------------------------------------------------

/// Block every signal, glibc's internal SIGCANCEL and SIGSETXID included
/// (its pthread_sigmask leaves those two open), and return the mask that
/// was set before.
pub(crate) fn block_all_signals() -> KernelSigset {
    let all: KernelSigset = !0;
    let mut old: KernelSigset = 0;
    // SAFETY: the kernel reads `all` and writes `old`, both on this stack
    // and `KERNEL_SIGSET` bytes long.
    unsafe {
        raw!(
            SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const all,
            &raw mut old,
            KERNEL_SIGSET
        )
    };
    old
}

/// Set the signal mask to `mask` (one [`block_all_signals`] returned).
pub(crate) fn set_signal_mask(mask: KernelSigset) {
    // SAFETY: the kernel reads `mask`, on this stack and `KERNEL_SIGSET`
    // bytes long; no old mask is asked for (null).
    unsafe { raw!(SYS_rt_sigprocmask, libc::SIG_SETMASK, &raw const mask, 0, KERNEL_SIGSET) };
}

/// Signal `sig` back to its default action (SIG_DFL: no handler runs).
pub(crate) fn default_signal_action(sig: libc::c_int) {
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: the kernel reads one `KernelSigaction` on this stack (its
    // layout); no old action is asked for (null).
    unsafe { raw!(SYS_rt_sigaction, sig, &raw const default, 0, KERNEL_SIGSET) };
}

/// execve(2): returns only if it failed.
pub(crate) fn execve(step: &'static str, program: &CStr, argv: &CStrArray<'_>, envp: &CStrArray<'_>) -> Step {
    // SAFETY: the kernel reads a NUL-terminated path and two
    // NULL-terminated arrays of NUL-terminated strings (`CStrArray`), all
    // borrowed for the call.
    check(step, unsafe {
        raw!(SYS_execve, program.as_ptr(), argv.ptrs.as_ptr(), envp.ptrs.as_ptr())
    })
}

/// exit_group(2): end the process with `code`.
pub(crate) fn exit_group(code: libc::c_int) {
    // SAFETY: integers only.
    unsafe { raw!(SYS_exit_group, code) };
}

// ---- A started process, from the worker ----------------------------------

/// SIGKILL the process `pidfd` refers to: that process or, once it is
/// reaped, nothing (never another one with its pid).
pub(crate) fn pidfd_kill(pidfd: BorrowedFd<'_>) {
    // SAFETY: integers only (no siginfo: null); `pidfd` is borrowed, open
    // for the call.
    unsafe {
        raw!(
            SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0
        )
    };
}

/// waitpid(2) for child `pid`: its raw wait status once it has ended (and
/// is reaped), `None` while it runs (with WNOHANG).
pub(crate) fn waitpid(pid: libc::pid_t, options: libc::c_int) -> io::Result<Option<libc::c_int>> {
    let mut status = 0;
    // SAFETY: the kernel writes one int on this stack.
    match unsafe { libc::waitpid(pid, &raw mut status, options) } {
        0 => Ok(None),
        r if r < 0 => Err(io::Error::last_os_error()),
        _ => Ok(Some(status)),
    }
}

/// TCP_QUICKACK on socket `fd`: acknowledge what has arrived now rather
/// than after the delayed-ACK timer (the kernel may go back to delaying,
/// so it is set again after each read). A worker-side call, never the
/// child's.
pub(crate) fn quick_ack(fd: BorrowedFd<'_>) {
    let on: libc::c_int = 1;
    // SAFETY: `fd` is borrowed, open for the call; the kernel reads one int
    // from this stack, of the size given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_reads_as_its_name_and_errno() {
        let failed = Failed {
            step: "uid_map",
            errno: libc::EPERM,
        };
        assert_eq!(failed.to_string(), "uid_map: Operation not permitted (os error 1)");
        let e = io::Error::from(failed);
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(e.to_string(), "uid_map: Operation not permitted (os error 1)");
        let inner = e.get_ref().and_then(|e| e.downcast_ref::<Failed>()).unwrap();
        assert_eq!((inner.step, inner.errno), ("uid_map", libc::EPERM));
    }

    #[test]
    fn a_failing_call_names_its_step_and_errno() {
        let failed = chdir("chdir to the code", c"/no/such/dir").unwrap_err();
        assert_eq!((failed.step, failed.errno), ("chdir to the code", libc::ENOENT));
    }
}
