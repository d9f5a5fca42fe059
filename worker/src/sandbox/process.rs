//! A started function process, as the worker holds it: [`Exit`] waits for
//! it and reaps it, [`Killer`] kills it (and what it started) at any time.
//! Both reach it through its pidfd, which names that process or nothing:
//! never another one that got its pid after it was reaped. `launch.rs`
//! makes them; the system calls are `sys.rs`'s.
//!
//! It must not signal a pid that may have been reaped: only the pidfd, and
//! a process group only under the lock its reaping `waitpid` takes.
#![warn(clippy::undocumented_unsafe_blocks, clippy::multiple_unsafe_ops_per_block)]

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};

use tokio::io::unix::AsyncFd;

use super::sys;

/// The two handles of process `pid`, started with its pidfd; `group`: its
/// process group (its session, unjailed) is killed with it.
pub(crate) fn handles(pid: libc::pid_t, pidfd: OwnedFd, group: bool) -> io::Result<(Exit, Killer)> {
    let reaped = Arc::new(Mutex::new(false));
    let killer = Killer {
        pid,
        pidfd: Arc::new(pidfd.try_clone()?),
        reaped: reaped.clone(),
        group,
    };
    // SAFETY: the AsyncFd owns the pidfd: it stays open, the same file, as
    // long as the AsyncFd.
    #[allow(unsafe_code)]
    let fd = unsafe { AsyncFd::register(pidfd)? };
    let exit = Exit {
        pid,
        fd: Some(fd),
        reaped,
    };
    Ok((exit, killer))
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
        let mut reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
        // Our own child: unreaped, its pid is still ours.
        match sys::waitpid(self.pid, libc::WNOHANG)? {
            None => Ok(None),
            Some(status) => {
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
            sys::pidfd_kill(fd.get_ref().as_fd());
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
                // A blocking wait for our own, killed child.
                let _ = sys::waitpid(rest.pid, 0);
                *reaped = true;
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
        sys::pidfd_kill(self.pidfd.as_fd());
        if self.group {
            let reaped = self.reaped.lock().unwrap_or_else(|p| p.into_inner());
            if !*reaped {
                let pgid = nix::unistd::Pid::from_raw(self.pid);
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::sandbox::launch::tests::unjailed;

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
}
