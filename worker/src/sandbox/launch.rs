//! The one place a function process is started. Every sandbox goes through
//! [`launch`], one straight commented sequence (the Firecracker jailer is
//! the model). The worker prepares everything (C strings, pipes, filters),
//! then `clone`s the child with `CLONE_VM | CLONE_VFORK`, as `posix_spawn`
//! does: the child borrows the worker's memory instead of copying its page
//! tables, and the worker waits until the child has exec'd or failed.
//! Jailed, the same `clone` puts the child in new mount, pid, ipc and uts
//! namespaces: it is pid 1 there, and when it ends the kernel kills every
//! process left in its namespace. In order, in the child:
//!
//!  (a) signals back to their defaults (the worker's handlers are not the
//!      function's), then join the sandbox's cgroups (memory, pids, cpu:
//!      `cgroup.rs`), so everything it ever starts is limited and can be
//!      killed together;
//!  (b) stdin from /dev/null (or the worker's pipe, in exec mode), stdout
//!      and stderr to the worker's pipes; every other fd close-on-exec;
//!  (c) a new session (own process group); die with the worker (PDEATHSIG);
//!  (d) join the sandbox's prepared network namespace (`netns.rs`: only
//!      loopback, with the Runtime API listener on it); jailed, build its
//!      view of the system, drop to an unprivileged user in a user namespace
//!      of its own (`jail.rs`), and set PDEATHSIG again (the uid change
//!      cleared it); unjailed, change into the code dir;
//!  (e) rlimits: no core dumps, at most `NOFILE` open files, no file larger
//!      than `FSIZE`, at most `max_pids` processes (counted per user
//!      namespace on Linux ≥ 5.14, so per sandbox; the pids cgroup limits
//!      the same);
//!  (f) no_new_privs: setuid binaries and file capabilities grant nothing;
//!  (g) the seccomp filters (`seccomp.rs`), last: they refuse mount and
//!      friends, which (d) needed;
//!  (h) exec, with only the environment the worker built: the Lambda
//!      variables, the trace context and the manifest's env.
//!
//! Between `clone` and exec the child makes raw system calls only
//! (`sys.rs`: glibc's `syscall(3)`, never its wrappers, some of which take
//! locks or signal the worker's threads), on memory prepared before (no
//! allocation, no locks); a failing step is written to memory the worker
//! reads once `clone` returns ([`Failed`]: the step and its errno).
//!
//! This module owns that sequence and the `clone`. The system calls are
//! `sys.rs`'s, the sandbox's view of the system `jail.rs`'s (called from
//! here, never the other way), and the started process's handles
//! ([`Exit`], [`Killer`]) `process.rs`'s.
#![warn(clippy::undocumented_unsafe_blocks, clippy::multiple_unsafe_ops_per_block)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tokio::net::unix::pipe;

use super::jail::{self, Jail};
use super::process::{self, Exit, Killer};
use super::sys::{self, CStrArray, Failed, KernelSigset, Step, cstring};

/// What to start.
pub struct LaunchSpec<'a> {
    pub command: &'a [String],
    pub code_dir: &'a Path,
    pub env: Vec<(String, String)>,
    /// `cgroup.procs` files to join (see `cgroup::SandboxCgroup::join_fds`).
    pub cgroup_fds: Vec<BorrowedFd<'a>>,
    /// The sandbox's filesystem and namespaces, and its host id; `None`
    /// with `--sandbox none`.
    pub jail: Option<Jailed<'a>>,
    /// Open `ns/net` of the sandbox's prepared network namespace (`netns.rs`).
    pub netns: Option<BorrowedFd<'a>>,
    /// Seccomp filters to install (empty with `--sandbox none`).
    pub seccomp: &'a [seccompiler::BpfProgram],
    /// A pipe to the process's stdin (exec mode) rather than /dev/null.
    pub stdin_pipe: bool,
    /// RLIMIT_NPROC.
    pub max_pids: u32,
}

/// A jailed launch: the sandbox's world, and the host id it runs as
/// (`ids::HostId`, held by the caller as long as the process may live).
#[derive(Clone, Copy)]
pub struct Jailed<'a> {
    pub jail: &'a Jail,
    pub host_id: u32,
}

/// A started function process.
pub struct Process {
    pub pid: u32,
    /// Waits for (and reaps) the process; kills it if dropped first.
    pub exit: Exit,
    /// Kills it (and what it started) at any time, reaped or not.
    pub killer: Killer,
    /// The write end of its stdin, when asked for.
    pub stdin: Option<pipe::Sender>,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
}

/// Open files a function may hold (Lambda's limit).
const NOFILE: u64 = 1024;
/// Largest file a function may write (Lambda's default /tmp is 512 MiB).
const FSIZE: u64 = 512 << 20;
/// The child's stack until it execs (it runs system calls only).
const CHILD_STACK: usize = 256 << 10;

/// Resolve the program as the sandbox will see it: a path with a `/` is
/// taken relative to the code dir (absolute ones as they are); a bare name
/// is looked up on `path` (the sandbox's PATH). The jail binds the host's
/// /usr read-only, so a name found on the host is at the same path inside.
fn resolve_program(program: &str, code_dir: &Path, seen_code_dir: &Path, path: &str) -> io::Result<CString> {
    if program.starts_with('/') {
        return cstring(program, "the command");
    }
    if program.contains('/') {
        // Checked on the host, where the code is unpacked.
        let host = code_dir.join(program);
        if !host.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{program} is not in the function's code"),
            ));
        }
        return cstring(seen_code_dir.join(program).as_os_str().as_bytes(), "the command");
    }
    for dir in path.split(':').filter(|d| d.starts_with('/')) {
        let candidate = Path::new(dir).join(program);
        if std::fs::metadata(&candidate).is_ok_and(|m| m.is_file()) {
            return cstring(candidate.as_os_str().as_bytes(), "the command");
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("{program} is not on the sandbox's PATH ({path})"),
    ))
}

fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Held around a jailed `clone`. The child shares the worker's memory until
/// it execs, and with it the "dumpable" flag, which is per address space:
/// the user namespace step sets it (so the child may write its own
/// uid_map) and clears it again, so two jailed children at once would undo
/// each other. The child clears it on its error path too, and the worker
/// clears it once more when `clone` returns. A side effect: the worker is
/// not dumpable once it has started a sandbox (no core dump of a process
/// that holds secrets).
static JAILED_CLONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Everything the child reads, prepared before `clone`.
struct Child<'a> {
    program: &'a CStr,
    argv: CStrArray<'a>,
    envp: CStrArray<'a>,
    stdio: [BorrowedFd<'a>; 3],
    cgroup_fds: &'a [BorrowedFd<'a>],
    netns: Option<BorrowedFd<'a>>,
    jail: Option<&'a Jail>,
    host_id: u32,
    /// Its uid_map and gid_map lines.
    id_maps: (&'a [u8], &'a [u8]),
    code_dir: &'a CStr,
    seccomp: &'a [seccompiler::BpfProgram],
    max_pids: u64,
    /// The worker's signal mask, restored just before exec.
    mask: KernelSigset,
    /// Written by the child when a step fails; read by the worker after.
    failed: Option<Failed>,
}

pub fn launch(spec: &LaunchSpec<'_>) -> io::Result<Process> {
    let (program, args) = spec
        .command
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let seen_code_dir = match spec.jail {
        Some(_) => Path::new(jail::TASK_ROOT),
        None => spec.code_dir,
    };
    let path = spec
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("/usr/bin:/bin", |(_, v)| v);
    let program = resolve_program(program, spec.code_dir, seen_code_dir, path)?;
    let args: Vec<CString> = args
        .iter()
        .map(|a| cstring(a, "an argument"))
        .collect::<io::Result<_>>()?;
    let env: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}"), "an environment variable"))
        .collect::<io::Result<_>>()?;
    let code_dir = cstring(spec.code_dir.as_os_str().as_bytes(), "the code dir")?;
    let (uid_map, gid_map) = spec.jail.map(|j| j.jail.id_maps(j.host_id)).unwrap_or_default();
    let stdin_null = std::fs::File::open("/dev/null")?;
    let (stdin_read, stdin_write) = match spec.stdin_pipe {
        true => {
            let (r, w) = pipe_pair()?;
            (r, Some(w))
        }
        false => (OwnedFd::from(stdin_null), None),
    };
    let (out_read, out_write) = pipe_pair()?;
    let (err_read, err_write) = pipe_pair()?;

    let argv = CStrArray::new(std::iter::once(program.as_c_str()).chain(args.iter().map(CString::as_c_str)));
    let envp = CStrArray::new(env.iter().map(CString::as_c_str));
    let mut stack = vec![0u8; CHILD_STACK];

    let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    if spec.jail.is_some() {
        flags |= libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    }
    let (pid, pidfd, failed) = {
        let mut child = Child {
            program: &program,
            argv,
            envp,
            stdio: [stdin_read.as_fd(), out_write.as_fd(), err_write.as_fd()],
            cgroup_fds: &spec.cgroup_fds,
            netns: spec.netns,
            jail: spec.jail.map(|j| j.jail),
            host_id: spec.jail.map_or(0, |j| j.host_id),
            id_maps: (&uid_map, &gid_map),
            code_dir: &code_dir,
            seccomp: spec.seccomp,
            max_pids: u64::from(spec.max_pids),
            mask: 0,
            failed: None,
        };
        // Every signal, glibc's internal SIGCANCEL and SIGSETXID included:
        // the child starts with this mask, and their handlers would touch
        // the worker's thread state.
        child.mask = sys::block_all_signals();
        let top = stack.as_mut_ptr_range().end;
        let top = top.wrapping_sub(top as usize % 16);
        let mut pidfd: libc::c_int = -1;
        let serial = spec
            .jail
            .map(|_| JAILED_CLONE.lock().unwrap_or_else(|p| p.into_inner()));
        // SAFETY: the child runs `child_main` on its own stack (`stack`,
        // 16-byte aligned top) in our memory while this thread is
        // suspended (CLONE_VFORK) until it execs or exits; it only reads
        // `child`, makes raw system calls and writes `child.failed`. All
        // signals are blocked around the clone so that none of the
        // worker's handlers can run on the child's stack.
        #[allow(unsafe_code)]
        let pid = unsafe { libc::clone(child_main, top.cast(), flags, (&raw mut child).cast(), &raw mut pidfd) };
        let clone_error = io::Error::last_os_error();
        if serial.is_some() {
            // The child has exec'd (its own memory now) or died; whatever
            // step it stopped at, the worker's memory is not dumpable.
            let _ = nix::sys::prctl::set_dumpable(false);
        }
        drop(serial);
        sys::set_signal_mask(child.mask);
        if pid < 0 {
            return Err(io::Error::new(clone_error.kind(), format!("clone: {clone_error}")));
        }
        // SAFETY: CLONE_PIDFD stored the new child's pidfd here: a new fd,
        // which nothing else owns.
        #[allow(unsafe_code)]
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        // SAFETY: a read of our own, initialised local. Volatile: the
        // child wrote it through the pointer `clone` took, a write the
        // compiler does not see.
        #[allow(unsafe_code)]
        let failed = unsafe { std::ptr::read_volatile(&raw const child.failed) };
        (pid, pidfd, failed)
    };
    drop((out_write, err_write, stdin_read));
    if let Some(f) = failed {
        // The child has exited; reap it.
        let _ = sys::waitpid(pid, 0);
        return Err(f.into());
    }
    let (exit, killer) = process::handles(pid, pidfd, spec.jail.is_none())?;
    Ok(Process {
        pid: pid as u32,
        exit,
        killer,
        stdin: stdin_write.map(pipe::Sender::from_owned_fd).transpose()?,
        stdout: pipe::Receiver::from_owned_fd(out_read)?,
        stderr: pipe::Receiver::from_owned_fd(err_read)?,
    })
}

/// The child, from `clone` to exec. Only fails back: on success it never
/// returns.
#[allow(unsafe_code)]
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the worker's `Child`, alive until we exec or exit
    // (the worker's thread is suspended meanwhile), and no one else's
    // until then.
    let child = unsafe { &mut *arg.cast::<Child<'_>>() };
    // SAFETY: this is the launcher's child, before exec.
    let failed = unsafe { child_steps(child) };
    if let Err(f) = failed {
        // SAFETY: a write to the worker's `Child`, as above; volatile: the
        // worker reads it after we exit, across a `clone` the compiler
        // does not see.
        unsafe { std::ptr::write_volatile(&raw mut child.failed, Some(f)) };
        sys::exit_group(127);
    }
    127
}

/// The child's steps, (a) to (h) of this module's header, in order. The
/// first that fails ends them, as itself: its name and errno.
///
/// # Safety
/// Only in the launcher's child, before exec: it replaces fds 0 to 2 and
/// marks every other close-on-exec, which must be its own copy of the fd
/// table (no `CLONE_FILES`), and it enters the jail.
#[allow(unsafe_code)]
unsafe fn child_steps(c: &Child<'_>) -> Step {
    // (a)
    default_signal_actions();
    join_cgroups(c.cgroup_fds)?;
    // (b)
    // SAFETY: our fd table is a copy of the worker's (no CLONE_FILES):
    // replacing 0 to 2 and marking the rest close-on-exec touches none of
    // the worker's fds.
    unsafe { set_up_stdio(c.stdio) }?;
    // (c)
    sys::setsid("setsid")?;
    sys::die_with_parent()?;
    // (d)
    if let Some(fd) = c.netns {
        sys::setns("joining the network namespace", fd, libc::CLONE_NEWNET)?;
    }
    match c.jail {
        Some(jail) => {
            // SAFETY: this is the launcher's child, before exec.
            unsafe { jail.enter(c.code_dir, c.host_id, c.id_maps) }?;
            // The uid change cleared it.
            sys::die_with_parent()?;
        }
        None => sys::chdir("chdir to the code", c.code_dir)?,
    }
    // (e)
    set_rlimits(c.max_pids)?;
    // (f)
    sys::set_no_new_privs("no_new_privs")?;
    // (g)
    // SAFETY: this is the launcher's child; exec follows.
    unsafe { install_seccomp(c.seccomp) }?;
    // (h)
    sys::set_signal_mask(c.mask);
    sys::execve("exec", c.program, &c.argv, &c.envp)
}

/// (a) Signal handlers are the worker's: back to the defaults (SIGPIPE
/// included, which Rust ignores) while every signal is still blocked. The
/// child has its own copy of the handler table (no CLONE_SIGHAND).
fn default_signal_actions() {
    for sig in 1..=sys::NSIG {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            sys::default_signal_action(sig);
        }
    }
}

/// (a) Before anything else, so nothing escapes the limits: writing "0"
/// to cgroup.procs moves the writing process.
fn join_cgroups(fds: &[BorrowedFd<'_>]) -> Step {
    for fd in fds {
        sys::write("joining the cgroup", *fd, b"0")?;
    }
    Ok(())
}

/// (b) stdin, stdout and stderr from `stdio`. Inherited fds (a test
/// harness, a systemd socket, other sandboxes' pipes) must not reach the
/// function: every other fd close-on-exec.
///
/// # Safety
/// Only where the fd table is the caller's own (the launcher's child).
#[allow(unsafe_code)]
unsafe fn set_up_stdio(stdio: [BorrowedFd<'_>; 3]) -> Step {
    for (target, fd) in (0..).zip(stdio) {
        // SAFETY: fds 0 to 2 are the caller's (its contract).
        unsafe { sys::dup2("stdio", fd, target) }?;
    }
    // SAFETY: every fd from 3 up is the caller's (its contract).
    unsafe { sys::close_from(3, true) };
    Ok(())
}

/// (e) No core dumps, at most `NOFILE` open files, no file larger than
/// `FSIZE`, at most `max_pids` processes.
fn set_rlimits(max_pids: u64) -> Step {
    for (resource, limit) in [
        (libc::RLIMIT_CORE, 0),
        (libc::RLIMIT_NOFILE, NOFILE),
        (libc::RLIMIT_FSIZE, FSIZE),
        (libc::RLIMIT_NPROC, max_pids),
    ] {
        sys::setrlimit("setrlimit", resource, limit)?;
    }
    Ok(())
}

/// (g) The programs were built before the clone; installing one is a
/// prctl over a pointer to it.
///
/// # Safety
///
/// Only in the launcher's child, which execs next (see
/// [`sys::seccomp_filter`]).
#[allow(unsafe_code)]
unsafe fn install_seccomp(programs: &[seccompiler::BpfProgram]) -> Step {
    for program in programs {
        // SAFETY: our caller is the launcher's child, which execs next.
        unsafe { sys::seccomp_filter("seccomp", program)? };
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// `command` started without a jail, with `code` as its code dir (also
    /// for `process.rs`'s tests).
    pub(crate) fn unjailed(command: &[String], code: &Path) -> Process {
        launch(&LaunchSpec {
            command,
            code_dir: code,
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cgroup_fds: Vec::new(),
            jail: None,
            netns: None,
            seccomp: &[],
            stdin_pipe: false,
            max_pids: 64,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn the_child_starts_with_default_signals_and_an_empty_mask() {
        // This test process ignores SIGPIPE (Rust's runtime does) and
        // blocks nothing; the child must ignore nothing and block nothing,
        // though every signal is blocked while it runs before exec.
        let code = tempfile::tempdir().unwrap();
        let mut p = unjailed(&["cat".to_string(), "/proc/self/status".to_string()], code.path());
        let mut status = String::new();
        p.stdout.read_to_string(&mut status).await.unwrap();
        assert!(p.exit.wait().await.unwrap().success());
        for field in ["SigBlk", "SigIgn"] {
            let line = status.lines().find(|l| l.starts_with(field)).unwrap();
            assert_eq!(line.split_whitespace().nth(1), Some("0000000000000000"), "{line}");
        }
    }

    #[test]
    fn programs_resolve_as_the_sandbox_sees_them() {
        let code = tempfile::tempdir().unwrap();
        std::fs::write(code.path().join("bootstrap"), "").unwrap();
        let jailed = |p: &str| resolve_program(p, code.path(), Path::new("/var/task"), "/usr/bin:/bin");
        assert_eq!(jailed("./bootstrap").unwrap().to_bytes(), b"/var/task/./bootstrap");
        assert_eq!(jailed("/usr/bin/env").unwrap().to_bytes(), b"/usr/bin/env");
        assert_eq!(jailed("sh").unwrap().to_bytes(), b"/usr/bin/sh");
        let missing = jailed("./nope").unwrap_err();
        assert!(missing.to_string().contains("not in the function's code"), "{missing}");
        let unknown = jailed("no-such-runtime").unwrap_err();
        assert!(unknown.to_string().contains("not on the sandbox's PATH"), "{unknown}");
    }
}
