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
//! (`raw!`: glibc's `syscall(3)`, never its wrappers, some of which take
//! locks or signal the worker's threads), on memory prepared before (no
//! allocation, no locks); a failing step is written to memory the worker
//! reads once `clone` returns.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};

use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use super::jail::{self, Jail};

/// What to start.
pub struct LaunchSpec<'a> {
    pub command: &'a [String],
    pub code_dir: &'a Path,
    pub env: Vec<(String, String)>,
    /// `cgroup.procs` files to join (see `cgroup::SandboxCgroup::join_fds`).
    pub cgroup_fds: Vec<RawFd>,
    /// The sandbox's filesystem and namespaces, and its host id; `None`
    /// with `--sandbox none`.
    pub jail: Option<Jailed<'a>>,
    /// Open `ns/net` of the sandbox's prepared network namespace (`netns.rs`).
    pub netns: Option<RawFd>,
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

/// A step of the child that failed, and why.
#[derive(Clone, Copy, Debug)]
pub struct Failed {
    pub step: &'static str,
    pub errno: i32,
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
pub(crate) use raw;

/// The kernel's `struct sigaction` (x86_64 and aarch64 layout: handler,
/// flags, restorer, a 64-bit mask), for a raw `rt_sigaction`.
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}
/// The size of the kernel's signal set, for `rt_sigaction`/`rt_sigprocmask`.
const KERNEL_SIGSET: usize = 8;
/// Signals the kernel knows (`_NSIG`).
const NSIG: libc::c_int = 64;

/// Check a system call's return value for step `step`.
pub fn sys(step: &'static str, r: libc::c_long) -> Step {
    if r < 0 {
        // SAFETY: reads this thread's errno.
        #[allow(unsafe_code)]
        let errno = unsafe { *libc::__errno_location() };
        Err(Failed { step, errno })
    } else {
        Ok(())
    }
}

fn cstring(s: impl AsRef<[u8]>, what: &str) -> io::Result<CString> {
    CString::new(s.as_ref()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} has a NUL byte")))
}

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
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds we then own.
    #[allow(unsafe_code)]
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
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
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    stdio: [RawFd; 3],
    cgroup_fds: &'a [RawFd],
    netns: Option<RawFd>,
    jail: Option<&'a Jail>,
    host_id: u32,
    /// Its uid_map and gid_map line.
    id_map: &'a [u8],
    code_dir: &'a CStr,
    seccomp: &'a [seccompiler::BpfProgram],
    max_pids: u64,
    /// The worker's signal mask, restored just before exec.
    mask: libc::sigset_t,
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
    let id_map = spec
        .jail
        .map(|j| format!("{} {} 1", super::ids::INSIDE, j.host_id).into_bytes())
        .unwrap_or_default();
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

    let mut argv: Vec<*const libc::c_char> = vec![program.as_ptr()];
    argv.extend(args.iter().map(|a| a.as_ptr()));
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut stack = vec![0u8; CHILD_STACK];

    let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    if spec.jail.is_some() {
        flags |= libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    }
    #[allow(unsafe_code)]
    // SAFETY: the child runs `child_main` on its own stack in our memory
    // while this thread is suspended (CLONE_VFORK) until it execs or exits;
    // it only reads `child`, makes raw system calls and writes
    // `child.failed`. All signals are blocked around the clone so that none
    // of the worker's handlers can run on the child's stack.
    let (pid, pidfd, failed) = unsafe {
        let mut child = Child {
            program: &program,
            argv,
            envp,
            stdio: [stdin_read.as_raw_fd(), out_write.as_raw_fd(), err_write.as_raw_fd()],
            cgroup_fds: &spec.cgroup_fds,
            netns: spec.netns,
            jail: spec.jail.map(|j| j.jail),
            host_id: spec.jail.map_or(0, |j| j.host_id),
            id_map: &id_map,
            code_dir: &code_dir,
            seccomp: spec.seccomp,
            max_pids: u64::from(spec.max_pids),
            mask: std::mem::zeroed(),
            failed: None,
        };
        // Every signal, glibc's internal SIGCANCEL and SIGSETXID included
        // (its pthread_sigmask leaves those two open): the child starts
        // with this mask, and their handlers would touch the worker's
        // thread state.
        let all: u64 = !0;
        raw!(
            SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const all,
            &raw mut child.mask,
            KERNEL_SIGSET
        );
        let top = stack.as_mut_ptr().add(CHILD_STACK);
        let top = top.sub(top as usize % 16);
        let mut pidfd: libc::c_int = -1;
        let serial = spec
            .jail
            .map(|_| JAILED_CLONE.lock().unwrap_or_else(|p| p.into_inner()));
        let pid = libc::clone(
            child_main,
            top.cast(),
            flags,
            (&raw mut child).cast(),
            &mut pidfd as *mut libc::c_int,
        );
        let clone_error = io::Error::last_os_error();
        if serial.is_some() {
            // The child has exec'd (its own memory now) or died; whatever
            // step it stopped at, the worker's memory is not dumpable.
            let _ = nix::sys::prctl::set_dumpable(false);
        }
        drop(serial);
        raw!(
            SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const child.mask,
            0,
            KERNEL_SIGSET
        );
        if pid < 0 {
            return Err(io::Error::new(clone_error.kind(), format!("clone: {clone_error}")));
        }
        (pid, OwnedFd::from_raw_fd(pidfd), std::ptr::read_volatile(&child.failed))
    };
    drop((out_write, err_write, stdin_read));
    if let Some(f) = failed {
        // The child has exited; reap it.
        // SAFETY: waits for our own child.
        #[allow(unsafe_code)]
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        let e = io::Error::from_raw_os_error(f.errno);
        return Err(io::Error::new(e.kind(), format!("{}: {e}", f.step)));
    }
    let reaped = Arc::new(Mutex::new(false));
    let killer = Killer {
        pid,
        pidfd: Arc::new(pidfd.try_clone()?),
        reaped: reaped.clone(),
        group: spec.jail.is_none(),
    };
    Ok(Process {
        pid: pid as u32,
        exit: Exit {
            pid,
            // SAFETY: the AsyncFd owns the pidfd: it stays open as long.
            #[allow(unsafe_code)]
            fd: Some(unsafe { AsyncFd::register(pidfd)? }),
            reaped,
        },
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
    // (the worker is suspended meanwhile).
    let child = unsafe { &mut *arg.cast::<Child<'_>>() };
    // SAFETY: raw system calls on memory prepared before the clone.
    let failed = unsafe { child_steps(child) };
    if let Err(f) = failed {
        // SAFETY: as above; the worker reads it after we exit.
        unsafe {
            std::ptr::write_volatile(&mut child.failed, Some(f));
            raw!(SYS_exit_group, 127);
        }
    }
    127
}

#[allow(unsafe_code)]
unsafe fn child_steps(c: &Child<'_>) -> Step {
    // SAFETY (whole body): every pointer is to memory owned by the worker's
    // `Child`, which outlives this call, or to this stack; only raw system
    // calls (`raw!`).
    unsafe {
        // (a) Signal handlers are the worker's: back to the defaults (SIGPIPE
        // included, which Rust ignores) while every signal is still blocked.
        // The child has its own copy of the handler table (no CLONE_SIGHAND).
        let default = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        for sig in 1..=NSIG {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                raw!(SYS_rt_sigaction, sig, &raw const default, 0, KERNEL_SIGSET);
            }
        }
        // Before anything else, so nothing escapes the limits: writing "0"
        // to cgroup.procs moves the writing process.
        for fd in c.cgroup_fds {
            sys("joining the cgroup", raw!(SYS_write, *fd, b"0".as_ptr(), 1))?;
        }
        // (b)
        for (target, fd) in c.stdio.iter().enumerate() {
            sys("stdio", raw!(SYS_dup2, *fd, target))?;
        }
        // Inherited fds (a test harness, a systemd socket, other sandboxes'
        // pipes) must not reach the function.
        close_from(3, true);
        // (c)
        sys("setsid", raw!(SYS_setsid))?;
        die_with_parent()?;
        // (d)
        if let Some(fd) = c.netns {
            sys("joining the network namespace", raw!(SYS_setns, fd, libc::CLONE_NEWNET))?;
        }
        match c.jail {
            Some(jail) => {
                jail.enter(c.code_dir, c.host_id, c.id_map)?;
                die_with_parent()?;
            }
            None => sys("chdir to the code", raw!(SYS_chdir, c.code_dir.as_ptr()))?,
        }
        // (e)
        for (resource, limit) in [
            (libc::RLIMIT_CORE, 0),
            (libc::RLIMIT_NOFILE, NOFILE),
            (libc::RLIMIT_FSIZE, FSIZE),
            (libc::RLIMIT_NPROC, c.max_pids),
        ] {
            let r = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            sys("setrlimit", raw!(SYS_setrlimit, resource, &raw const r))?;
        }
        // (f)
        sys("no_new_privs", raw!(SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        // (g) The programs were built before the clone; installing one is a
        // prctl over a pointer to them. `sock_filter` of seccompiler and
        // libc have the same C layout.
        for program in c.seccomp {
            let prog = libc::sock_fprog {
                len: program.len() as u16,
                filter: program.as_ptr() as *mut libc::sock_filter,
            };
            sys(
                "seccomp",
                raw!(
                    SYS_prctl,
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &raw const prog,
                ),
            )?;
        }
        // (h)
        raw!(
            SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const c.mask,
            0,
            KERNEL_SIGSET
        );
        let r = raw!(SYS_execve, c.program.as_ptr(), c.argv.as_ptr(), c.envp.as_ptr());
        sys("exec", r)
    }
}

/// SIGKILL when the worker (the thread that started us) dies.
#[allow(unsafe_code)]
fn die_with_parent() -> Step {
    // SAFETY: a raw prctl.
    unsafe {
        sys(
            "PDEATHSIG",
            raw!(SYS_prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0),
        )
    }
}

/// A started process's end: wait for it with [`Exit::wait`]. Dropped
/// before the process was reaped, it kills it and reaps it in the
/// background, so no zombie is left.
pub struct Exit {
    pid: libc::pid_t,
    fd: Option<AsyncFd<OwnedFd>>,
    /// Set, under the lock, by the `waitpid` that reaps the process; shared
    /// with its [`Killer`].
    reaped: Arc<Mutex<bool>>,
}

impl Exit {
    /// Wait for the process to end and reap it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            let fd = self.fd.as_ref().ok_or_else(|| io::Error::other("already reaped"))?;
            fd.readable().await?.clear_ready();
            if let Some(status) = self.try_reap()? {
                return Ok(status);
            }
        }
    }

    fn try_reap(&mut self) -> io::Result<Option<ExitStatus>> {
        let mut status = 0;
        let mut reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: waits for our own child (unreaped, its pid is still ours).
        #[allow(unsafe_code)]
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        match r {
            0 => Ok(None),
            r if r < 0 => Err(io::Error::last_os_error()),
            _ => {
                *reaped = true;
                self.fd = None;
                Ok(Some(ExitStatus::from_raw(status)))
            }
        }
    }

    fn is_reaped(&self) -> bool {
        *self.reaped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// SIGKILL the process (through its pidfd: never another process).
    pub fn kill(&self) {
        if let Some(fd) = &self.fd {
            // SAFETY: a raw system call on our pidfd.
            #[allow(unsafe_code)]
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            }
        }
    }
}

impl Drop for Exit {
    fn drop(&mut self) {
        if self.fd.is_none() || self.is_reaped() {
            return;
        }
        self.kill();
        if matches!(self.try_reap(), Ok(Some(_))) {
            return;
        }
        let mut rest = Exit {
            pid: self.pid,
            fd: self.fd.take(),
            reaped: self.reaped.clone(),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = rest.wait().await;
                });
            }
            Err(_) => {
                let mut reaped = rest.reaped.lock().unwrap_or_else(|p| p.into_inner());
                // SAFETY: a blocking wait for our own, killed child.
                #[allow(unsafe_code)]
                unsafe {
                    libc::waitpid(rest.pid, std::ptr::null_mut(), 0);
                }
                *reaped = true;
            }
        }
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
        if raw!(SYS_close_range, first, u32::MAX, flags) == 0 {
            return;
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let top = if raw!(SYS_getrlimit, libc::RLIMIT_NOFILE, &raw mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as libc::c_int
        } else {
            1 << 16
        };
        for fd in first as libc::c_int..top {
            if cloexec {
                raw!(SYS_fcntl, fd, libc::F_SETFD, libc::FD_CLOEXEC);
            } else {
                raw!(SYS_close, fd);
            }
        }
    }
}

/// Kills a started process and what it started, at any time — also after
/// it was reaped, when its pid may already be another process's:
///
/// - through a pidfd of its own, which reaches that process or nothing.
///   Jailed, the process is pid 1 of its pid namespace, and when it dies
///   the kernel kills every other process in the namespace (the sandbox's
///   cgroup is killed as well, by `SandboxCgroup::kill_all`);
/// - unjailed (`--sandbox none`), its process group too (the session it
///   started with setsid), but only while it is unreaped: its pid, which
///   is the group's id, stays ours until then, and the reaping `waitpid`
///   takes the same lock. A reaped process's group is left alone (with
///   no cgroup, what it left behind in it is out of reach: that mode
///   isolates nothing anyway).
#[derive(Clone)]
pub struct Killer {
    pid: libc::pid_t,
    pidfd: Arc<OwnedFd>,
    reaped: Arc<Mutex<bool>>,
    group: bool,
}

impl Killer {
    pub fn kill(&self) {
        // SAFETY: a raw system call on our own pidfd.
        #[allow(unsafe_code)]
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
        if self.group {
            let reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
            if !*reaped {
                let pgid = nix::unistd::Pid::from_raw(self.pid);
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// Make a platform child process (not a sandbox: e.g. the `nats-server`
/// that `stoke up` starts) receive SIGKILL when the thread that spawned it
/// dies, so a killed `stoke` never leaves it behind. Spawn from a thread
/// that lives as long as the process (the main thread).
pub fn die_with_parent_cmd(cmd: &mut tokio::process::Command) {
    #[allow(unsafe_code)]
    // SAFETY: prctl is a raw syscall, async-signal-safe, touching no shared memory.
    unsafe {
        cmd.pre_exec(|| die_with_parent().map_err(|f| io::Error::from_raw_os_error(f.errno)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use tokio::io::AsyncReadExt;

    fn unjailed(command: &[String], code: &Path) -> Process {
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

    /// A `sleep` in a process group of its own, started at `pid` (writing
    /// the pid before it to ns_last_pid, as CRIU does; root only). Retried
    /// while other forks on the host take the pid first.
    fn sleep_at_pid(pid: i32) -> std::process::Child {
        for _ in 0..200 {
            std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
            let mut child = std::process::Command::new("sleep")
                .arg("30")
                .process_group(0)
                .spawn()
                .unwrap();
            if child.id() as i32 == pid {
                return child;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("pid {pid} was always taken by another fork first");
    }

    #[tokio::test]
    async fn a_reaped_sandbox_s_pid_and_group_are_never_signalled() {
        let code = tempfile::tempdir().unwrap();
        let mut p = unjailed(&["true".to_string()], code.path());
        assert!(p.exit.wait().await.unwrap().success());
        // Its pid, now reaped, is another process's — and that process's
        // group id (as after pid reuse on a busy host).
        let victim = sleep_at_pid(p.pid as i32);
        p.killer.kill();
        // SIGTERM after the kill: if the kill had reached the victim, it
        // would have died of SIGKILL, which was sent first.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let mut victim = victim;
        let status = victim.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
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

    #[tokio::test]
    async fn an_unreaped_sandbox_s_group_is_killed() {
        let code = tempfile::tempdir().unwrap();
        let script = "sleep 60 & echo $!; wait".to_string();
        let mut p = unjailed(&["sh".to_string(), "-c".to_string(), script], code.path());
        let mut out = String::new();
        let mut buf = [0u8; 64];
        while !out.ends_with('\n') {
            let n = p.stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "no pid from the script");
            out.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        let background: i32 = out.trim().parse().unwrap();
        p.killer.kill();
        let status = p.exit.wait().await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
        // The background sleep was in the same group: killed too (and
        // reparented to init, which reaps it).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_to_string(format!("/proc/{background}/stat"))
            .is_ok_and(|s| !s.contains(") Z ") && s.contains("sleep"))
        {
            assert!(std::time::Instant::now() < deadline, "the group's sleep still runs");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
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
