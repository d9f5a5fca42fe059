//! The one place a function process is started. Every sandbox goes through
//! [`launch`], one straight commented sequence (the Firecracker jailer is
//! the model). In order:
//!
//!  1. resolve the program: a `./path` is relative to the code dir (as the
//!     sandbox sees it: `/var/task` when jailed);
//!  2. clear the environment and set only the Lambda variables + the manifest's env;
//!  3. stdin = /dev/null; stdout/stderr piped to the worker;
//!  4. in the forked child, before exec:
//!     (a) join the sandbox's cgroups (memory, pids, cpu: `cgroup.rs`), so
//!     everything it ever starts is limited and can be killed together;
//!     (b) mark every inherited fd ≥ 3 close-on-exec;
//!     (c) start a new session (own process group); die with the worker
//!     (PDEATHSIG);
//!     (d) join the sandbox's prepared network namespace (`netns.rs`: only
//!     loopback, with the Runtime API listener on it). Jailed: unshare
//!     mount, pid, ipc and uts namespaces and fork. The
//!     first process stays outside as the sandbox's keeper: it closes every
//!     fd, waits for the inner one and exits as it did. The inner one is
//!     pid 1 of the new pid namespace (when it ends, the kernel kills every
//!     process left in it), and builds its view of the system and drops to
//!     an unprivileged user (`jail.rs`);
//!     (e) rlimits: no core dumps, at most `NOFILE` open files, no file
//!     larger than `FSIZE`;
//!     (f) no_new_privs: setuid binaries and file capabilities grant nothing;
//!     (g) the seccomp filters (`seccomp.rs`), last: they refuse mount and
//!     friends, which (d) needed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use super::jail::{self, Jail};

/// What to start.
pub struct LaunchSpec<'a> {
    pub command: &'a [String],
    pub code_dir: &'a Path,
    pub env: Vec<(String, String)>,
    /// `cgroup.procs` files to join (see `cgroup::SandboxCgroup::join_fds`).
    pub cgroup_fds: Vec<std::os::fd::RawFd>,
    /// The sandbox's filesystem and namespaces; `None` with `--sandbox none`.
    pub jail: Option<Arc<Jail>>,
    /// Open `ns/net` of the sandbox's prepared network namespace (`netns.rs`).
    pub netns: Option<std::os::fd::RawFd>,
    /// Seccomp filters to install (empty with `--sandbox none`).
    pub seccomp: Arc<Vec<seccompiler::BpfProgram>>,
}

/// Open files a function may hold (Lambda's limit).
const NOFILE: u64 = 1024;
/// Largest file a function may write (Lambda's default /tmp is 512 MiB).
const FSIZE: u64 = 512 << 20;

/// Resolve the program: paths with a `/` are taken relative to the code dir
/// (absolute ones as they are); bare names are looked up on the sandbox PATH.
fn resolve_program(program: &str, code_dir: &Path) -> OsString {
    if program.starts_with('/') {
        program.into()
    } else if program.contains('/') {
        code_dir.join(program).into_os_string()
    } else {
        program.into()
    }
}

pub fn launch(spec: &LaunchSpec<'_>) -> std::io::Result<tokio::process::Child> {
    let (program, args) = spec
        .command
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
    // (1)
    let seen_code_dir = match spec.jail {
        Some(_) => Path::new(jail::TASK_ROOT),
        None => spec.code_dir,
    };
    let mut cmd = tokio::process::Command::new(resolve_program(program, seen_code_dir));
    cmd.args(args)
        // (2) Nothing of the worker's environment leaks in.
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        // (3) The jail changes into /var/task itself, after pivot_root.
        .current_dir(PathBuf::from(spec.code_dir))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let cgroup_fds = spec.cgroup_fds.clone();
    let jail = spec.jail.clone();
    let netns = spec.netns;
    let seccomp = spec.seccomp.clone();
    // (4) Runs in the forked child before exec: only async-signal-safe calls.
    #[allow(unsafe_code)]
    // SAFETY: the closure makes only raw system calls (write, close_range,
    // setsid, prctl, unshare, fork, waitpid, mount, setrlimit, ...) that
    // neither allocate nor take locks, as required between fork and exec; it
    // reads `cgroup_fds`, the jail's C strings and the seccomp programs, all
    // allocated before the fork, and touches no memory shared with the
    // parent. `sock_filter` of seccompiler and libc have the same C layout.
    unsafe {
        cmd.pre_exec(move || {
            let check = |r: libc::c_int| {
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            // (a) Before anything else, so nothing escapes the limits:
            // writing "0" to cgroup.procs moves the writing process.
            for fd in &cgroup_fds {
                if libc::write(*fd, b"0".as_ptr().cast(), 1) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // (b) Inherited fds (a test harness, a systemd socket) must not
            // reach the function; CLOEXEC rather than close keeps std's own
            // exec-error pipe (and the cgroup files are CLOEXEC already).
            close_from(3, true);
            // (c)
            check(libc::setsid())?;
            check(libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ))?;
            // (d)
            if let Some(fd) = netns {
                check(libc::setns(fd, libc::CLONE_NEWNET))?;
            }
            if let Some(jail) = &jail {
                check(libc::unshare(
                    libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS,
                ))?;
                let inner = libc::fork();
                check(inner)?;
                if inner > 0 {
                    keep(inner);
                }
                jail.enter()?;
                // The keeper's death must take this one along too; after
                // the uid change, which clears PDEATHSIG.
                check(libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ))?;
            }
            // (e)
            for (resource, limit) in [
                (libc::RLIMIT_CORE, 0),
                (libc::RLIMIT_NOFILE, NOFILE),
                (libc::RLIMIT_FSIZE, FSIZE),
            ] {
                let r = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                check(libc::setrlimit(resource, &r))?;
            }
            // (f)
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            // (g) The programs were built before the fork; installing one is
            // a prctl over a pointer to them.
            for program in seccomp.iter() {
                let prog = libc::sock_fprog {
                    len: program.len() as u16,
                    filter: program.as_ptr() as *mut libc::sock_filter,
                };
                check(libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ))?;
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// The keeper: the process the worker started, outside the sandbox's pid
/// namespace. It holds nothing open (the worker's exec-error pipe included,
/// so the spawn completes when the inner process execs), waits for the
/// inner process and ends the same way. Never returns.
#[allow(unsafe_code)]
unsafe fn keep(inner: libc::pid_t) -> ! {
    // SAFETY: raw system calls only, in a forked child.
    unsafe {
        close_from(0, false);
        // It is a copy of the (root) worker: it must never dump core, even
        // when it dies of the function's fatal signal below.
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        let mut status = 0;
        while libc::waitpid(inner, &mut status, 0) < 0 {
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            libc::signal(sig, libc::SIG_DFL);
            libc::kill(libc::getpid(), sig);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}

/// Close (or mark close-on-exec) every fd from `first` up: `close_range`
/// where the kernel has it (5.9; CLOEXEC from 5.11), else one by one up to
/// the open-files limit. Async-signal-safe.
#[allow(unsafe_code)]
fn close_from(first: u32, cloexec: bool) {
    // SAFETY: raw system calls on integers only.
    unsafe {
        let flags = if cloexec { libc::CLOSE_RANGE_CLOEXEC } else { 0 };
        if libc::syscall(libc::SYS_close_range, first, u32::MAX, flags) == 0 {
            return;
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let top = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as libc::c_int
        } else {
            1 << 16
        };
        for fd in first as libc::c_int..top {
            if cloexec {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            } else {
                libc::close(fd);
            }
        }
    }
}

/// Kill the sandbox's whole process group (its session, started by setsid).
pub fn kill_group(pid: u32) {
    let pgid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
}

/// Make a platform child process (not a sandbox: e.g. the `nats-server`
/// that `stoke up` starts) receive SIGKILL when the thread that spawned it
/// dies, so a killed `stoke` never leaves it behind. Spawn from a thread
/// that lives as long as the process (the main thread).
pub fn die_with_parent(cmd: &mut tokio::process::Command) {
    #[allow(unsafe_code)]
    // SAFETY: prctl is a raw syscall, async-signal-safe, touching no shared memory.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
