//! The one place a function process is started. Every sandbox goes through
//! [`launch`]; hardening (namespaces, pivot_root, cgroups, seccomp) is added
//! here, as one straight commented sequence, and nowhere else.
//!
//! Today's steps, in order:
//!  1. resolve the program (a `./path` is relative to the read-only code dir);
//!  2. clear the environment and set only the Lambda variables + the manifest's env;
//!  3. working directory = the code dir; stdin = /dev/null; stdout/stderr piped to the worker;
//!  4. in the child, before exec: mark every inherited fd ≥ 3 close-on-exec,
//!     start a new session (own process group, so the whole group can be killed),
//!     die with the worker (PDEATHSIG), no core dumps.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// What to start.
pub struct LaunchSpec<'a> {
    pub command: &'a [String],
    pub code_dir: &'a Path,
    pub env: Vec<(String, String)>,
}

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
    let mut cmd = tokio::process::Command::new(resolve_program(program, spec.code_dir));
    cmd.args(args)
        // (2) Nothing of the worker's environment leaks in.
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        // (3)
        .current_dir(PathBuf::from(spec.code_dir))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // (4) Runs in the forked child before exec: only async-signal-safe calls.
    #[allow(unsafe_code)]
    // SAFETY: the closure calls only raw syscalls (close_range, setsid, prctl,
    // setrlimit) that neither allocate nor take locks, as required between
    // fork and exec; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            // Inherited fds (a test harness, a systemd socket) must not reach
            // the function; CLOEXEC rather than close keeps std's own
            // exec-error pipe working.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_CORE, &no_core) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
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
