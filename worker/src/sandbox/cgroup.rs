//! cgroups for sandboxes: a memory limit (the manifest's `memory`, no swap),
//! a pids limit (fork bombs), and a CPU weight proportional to memory (as
//! Lambda gives CPU by memory; a weight, not a cap, so an idle host runs a
//! cold start at full speed). OOM kills are counted per sandbox, peak
//! memory is measured over every process of the sandbox, and destroying a
//! sandbox kills everything in its cgroup — daemons that left the process
//! group included — before removing it.
//!
//! Both hierarchies: cgroup v2 (one tree; the worker moves itself into a
//! leaf so it may delegate controllers to its sandboxes) and v1 (memory,
//! pids and cpu mounted separately under /sys/fs/cgroup/<controller>). The
//! sandboxes of a worker live under its own cgroup, in
//! `stoke-sandboxes-<worker pid>`, so the worker's own limits cover them.
//! [`Cgroups::detect`] probes what can actually enforce limits and says
//! what is missing when nothing can.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Limits of one sandbox.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_mb: u32,
    pub max_pids: u32,
}

/// Where this worker's sandbox cgroups are made.
#[derive(Debug, Clone)]
pub enum Cgroups {
    V2 {
        parent: PathBuf,
    },
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: PathBuf,
    },
}

/// One sandbox's cgroup(s). [`SandboxCgroup::destroy`] removes them.
#[derive(Debug)]
pub struct SandboxCgroup {
    v2: bool,
    /// v2: the one dir; v1: memory, pids, cpu.
    dirs: Vec<PathBuf>,
    /// Open `cgroup.procs` files the sandbox's process writes `0` to before
    /// exec, joining every cgroup (close-on-exec).
    join: Vec<File>,
    /// The peak-memory file, opened once: it is read after every event,
    /// and a path lookup through the cgroup fs costs more than the read.
    peak: std::sync::OnceLock<Option<File>>,
}

fn io_err(what: String) -> std::io::Error {
    std::io::Error::other(what)
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value).map_err(|e| io_err(format!("{}: {e}", path.display())))
}

/// This process's cgroup path in a v1 controller (or v2 when `controller`
/// is empty), from /proc/self/cgroup.
fn own_path(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        matches.then(|| path.trim_start_matches('/').to_string())
    })
}

impl Cgroups {
    /// Find a hierarchy that can enforce memory, pids and cpu limits and set
    /// up this worker's parent cgroup in it.
    /// `root` is where the hierarchies are mounted (`/sys/fs/cgroup`).
    pub fn detect(root: &Path) -> Result<Cgroups, String> {
        let v2_err = match Self::setup_v2(root) {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        let v1_err = match Self::setup_v1(root) {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        Err(format!(
            "no cgroup hierarchy can enforce memory, pids and cpu limits here (v2: {v2_err}; v1: {v1_err})"
        ))
    }

    fn setup_v2(root: &Path) -> Result<Cgroups, String> {
        // The unified hierarchy: /sys/fs/cgroup itself, or the hybrid
        // layout's /sys/fs/cgroup/unified (often without controllers).
        let mount = [root.to_path_buf(), root.join("unified")]
            .into_iter()
            .find(|m| m.join("cgroup.controllers").is_file())
            .ok_or_else(|| format!("no cgroup2 mount at {}", root.display()))?;
        Self::setup_v2_at(&mount, &own_path("").ok_or("not in a v2 cgroup")?)
    }

    /// `setup_v2` with the unified hierarchy mounted at `mount` and this
    /// process in its cgroup `own` (relative to the mount).
    fn setup_v2_at(mount: &Path, own: &str) -> Result<Cgroups, String> {
        let own = mount.join(own);
        let available = std::fs::read_to_string(mount.join("cgroup.controllers")).map_err(|e| e.to_string())?;
        for c in ["memory", "pids", "cpu"] {
            if !available.split_whitespace().any(|a| a == c) {
                return Err(format!("the {c} controller is not available at {}", mount.display()));
            }
        }
        // No internal processes: a cgroup that hands controllers down holds
        // none itself. So everything in ours (this worker, and e.g. the
        // nats-server `stoke up` started) moves into a leaf first. The real
        // root cgroup (it has no cgroup.type) is exempt and is left as it
        // is; a container's namespaced root is not.
        let real_root = own == *mount && !own.join("cgroup.type").exists();
        if !real_root {
            let leaf = own.join("stoke-worker");
            std::fs::create_dir_all(&leaf).map_err(|e| format!("{}: {e}", leaf.display()))?;
            let procs = std::fs::read_to_string(own.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().map(str::trim).filter(|p| !p.is_empty()) {
                let _ = write(&leaf.join("cgroup.procs"), pid);
            }
        }
        write(&own.join("cgroup.subtree_control"), "+memory +pids +cpu").map_err(|e| {
            format!(
                "{e} (a cgroup that delegates controllers must hold no processes: are there processes in {} \
                 that this worker may not move?)",
                own.display()
            )
        })?;
        let parent = own.join(format!("stoke-sandboxes-{}", std::process::id()));
        sweep_stale(&own);
        std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        write(&parent.join("cgroup.subtree_control"), "+memory +pids +cpu").map_err(|e| e.to_string())?;
        Ok(Cgroups::V2 { parent })
    }

    fn setup_v1(root: &Path) -> Result<Cgroups, String> {
        let mut dirs = Vec::new();
        for c in ["memory", "pids", "cpu"] {
            let mount = root.join(c);
            if !mount.join("cgroup.procs").is_file() {
                return Err(format!("{} is not a mounted {c} hierarchy", mount.display()));
            }
            let own = mount.join(own_path(c).unwrap_or_default());
            sweep_stale(&own);
            let parent = own.join(format!("stoke-sandboxes-{}", std::process::id()));
            std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            dirs.push(parent);
        }
        let [memory, pids, cpu] = <[PathBuf; 3]>::try_from(dirs).expect("three controllers");
        // v1 does not account children in their parent unless asked.
        let _ = write(&memory.join("memory.use_hierarchy"), "1");
        Ok(Cgroups::V1 { memory, pids, cpu })
    }

    /// Make the cgroup(s) of sandbox `name` with `limits`.
    pub fn create(&self, name: &str, limits: Limits) -> std::io::Result<SandboxCgroup> {
        let memory = u64::from(limits.memory_mb) << 20;
        let made = match self {
            Cgroups::V2 { parent } => {
                let dir = parent.join(name);
                let cg = SandboxCgroup::make(true, vec![dir.clone()])?;
                write(&dir.join("memory.max"), &memory.to_string())?;
                let _ = write(&dir.join("memory.swap.max"), "0");
                write(&dir.join("pids.max"), &limits.max_pids.to_string())?;
                let weight = (u64::from(limits.memory_mb) * 100 / 1769).clamp(1, 10_000);
                write(&dir.join("cpu.weight"), &weight.to_string())?;
                cg
            }
            Cgroups::V1 { memory: m, pids, cpu } => {
                let cg = SandboxCgroup::make(false, vec![m.join(name), pids.join(name), cpu.join(name)])?;
                let (mdir, pdir, cdir) = (&cg.dirs[0], &cg.dirs[1], &cg.dirs[2]);
                write(&mdir.join("memory.limit_in_bytes"), &memory.to_string())?;
                // Without swap accounting these do not exist; swap is then the host's.
                let _ = write(&mdir.join("memory.memsw.limit_in_bytes"), &memory.to_string());
                let _ = write(&mdir.join("memory.swappiness"), "0");
                write(&pdir.join("pids.max"), &limits.max_pids.to_string())?;
                let shares = (u64::from(limits.memory_mb) * 1024 / 1769).max(2);
                write(&cdir.join("cpu.shares"), &shares.to_string())?;
                cg
            }
        };
        Ok(made)
    }

    /// Remove this worker's parent cgroup(s) (at exit; empty by then).
    pub fn remove(&self) {
        let dirs: Vec<&PathBuf> = match self {
            Cgroups::V2 { parent } => vec![parent],
            Cgroups::V1 { memory, pids, cpu } => vec![memory, pids, cpu],
        };
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Where [`favor_dynamic_changes`] mounts its hierarchy.
const FAVOR_MOUNT: &str = "/run/stoke/cgroup-favordynmods";

/// Make moving a process into a cgroup cheap. Every attach takes the
/// kernel's global cgroup threadgroup lock for writing, which by default
/// waits for an RCU grace period: ~11–16 ms per cold start measured here,
/// most of a jailed cold start's overhead. The `favordynmods` mount option
/// keeps that lock ready for writers instead (forks and exits pay a little
/// more, which is the kernel's documented trade-off for hosts that create
/// cgroups constantly). The lock is global, so any one hierarchy with the
/// option is enough: if none is mounted yet, mount an empty named v1
/// hierarchy with it at /run/stoke/cgroup-favordynmods (left mounted; it
/// holds no processes). Returns whether the option is in effect.
pub fn favor_dynamic_changes() -> Result<bool, String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    if mounts.lines().any(|l| l.contains("favordynmods")) {
        return Ok(true);
    }
    std::fs::create_dir_all(FAVOR_MOUNT).map_err(|e| format!("{FAVOR_MOUNT}: {e}"))?;
    nix::mount::mount(
        Some("cgroup"),
        FAVOR_MOUNT,
        Some("cgroup"),
        nix::mount::MsFlags::empty(),
        Some("none,name=stoke-favordynmods,favordynmods"),
    )
    .map_err(|e| format!("mounting a cgroup hierarchy with favordynmods at {FAVOR_MOUNT}: {e}"))?;
    Ok(true)
}

/// Remove `stoke-sandboxes-<pid>` cgroups left by workers that are gone
/// (SIGKILLed), killing anything still running in them first.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("stoke-sandboxes-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            if let Ok(children) = std::fs::read_dir(e.path()) {
                for c in children.flatten().filter(|c| c.path().is_dir()) {
                    for _ in 0..100 {
                        let procs = std::fs::read_to_string(c.path().join("cgroup.procs")).unwrap_or_default();
                        if procs.trim().is_empty() {
                            break;
                        }
                        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let _ = std::fs::remove_dir(c.path());
                }
            }
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

impl SandboxCgroup {
    fn make(v2: bool, dirs: Vec<PathBuf>) -> std::io::Result<SandboxCgroup> {
        let mut join = Vec::new();
        for d in &dirs {
            std::fs::create_dir(d).map_err(|e| io_err(format!("{}: {e}", d.display())))?;
            // (The kernel made the file with the dir; `create` only matters
            // for the unit tests' plain-file hierarchy.)
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(d.join("cgroup.procs"))
                .map_err(|e| io_err(format!("{}/cgroup.procs: {e}", d.display())))?;
            join.push(f);
        }
        Ok(SandboxCgroup {
            v2,
            dirs,
            join,
            peak: std::sync::OnceLock::new(),
        })
    }

    /// File descriptors to write `0` to from the child before exec.
    pub fn join_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.join.iter().map(|f| f.as_fd()).collect()
    }

    fn memory_dir(&self) -> &Path {
        &self.dirs[0]
    }

    /// How many times the kernel's OOM killer struck in this sandbox.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 { "memory.events" } else { "memory.oom_control" };
        std::fs::read_to_string(self.memory_dir().join(file))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse().ok()))
            })
            .unwrap_or(0)
    }

    /// Peak memory of every process in the sandbox so far, in KiB.
    pub fn peak_memory_kb(&self) -> u64 {
        use std::os::unix::fs::FileExt as _;
        let file = self.peak.get_or_init(|| {
            let files: &[&str] = if self.v2 {
                &["memory.peak", "memory.current"]
            } else {
                &["memory.max_usage_in_bytes"]
            };
            files.iter().find_map(|f| File::open(self.memory_dir().join(f)).ok())
        });
        // A read at offset 0 makes the kernel render the value afresh.
        let mut buf = [0u8; 32];
        file.as_ref()
            .and_then(|f| f.read_at(&mut buf, 0).ok())
            .and_then(|n| std::str::from_utf8(&buf[..n]).ok())
            .and_then(|t| t.trim().parse::<u64>().ok())
            .map_or(0, |b| b / 1024)
    }

    /// Pids of every process in the sandbox.
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dirs[0].join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// SIGKILL every process in the sandbox (forks racing the kill are
    /// caught by the next round; pids.max bounds how many there can be).
    pub fn kill_all(&self) {
        if self.v2 && write(&self.dirs[0].join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Kill everything in the sandbox, wait for it to be gone, remove the
    /// cgroup(s); true once done. Gives up (logging) after a few seconds.
    pub async fn destroy(self) -> bool {
        for _ in 0..500 {
            self.kill_all();
            if self.pids().is_empty() && self.remove_dirs() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::warn!(cgroup = %self.dirs[0].display(), "sandbox cgroup could not be removed");
        false
    }

    /// Remove the dirs; true when all are gone.
    fn remove_dirs(&self) -> bool {
        self.dirs.iter().all(|d| match std::fs::remove_dir(d) {
            Ok(()) => true,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        })
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        // Without `destroy` (a start that failed before anything ran in it)
        // a plain rmdir does it; after `destroy` the dirs are gone already.
        let _ = self.remove_dirs();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This host has only cgroup v1, so the v2 code runs here against a
    /// hierarchy of plain files laid out as cgroup2 lays it out: what it
    /// writes is checked, what the kernel would do with it is not.
    fn fake_v2(controllers: &str) -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), controllers).unwrap();
        let own = root.path().join("system.slice/stoke.service");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("cgroup.procs"), "123\n456\n").unwrap();
        (root, own)
    }

    #[test]
    fn v2_moves_the_worker_into_a_leaf_delegates_and_sets_limits() {
        let (root, own) = fake_v2("cpuset cpu io memory pids");
        let cgroups = Cgroups::setup_v2_at(root.path(), "system.slice/stoke.service").unwrap();
        let parent = own.join(format!("stoke-sandboxes-{}", std::process::id()));
        assert!(
            matches!(&cgroups, Cgroups::V2 { parent: p } if *p == parent),
            "{cgroups:?}"
        );
        // Every process of the worker's cgroup went to the leaf (a plain
        // file keeps the last write), then the controllers were delegated.
        let leaf = std::fs::read_to_string(own.join("stoke-worker/cgroup.procs")).unwrap();
        assert_eq!(leaf, "456");
        for dir in [&own, &parent] {
            let delegated = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap();
            assert_eq!(delegated, "+memory +pids +cpu", "{}", dir.display());
        }

        let limits = Limits {
            memory_mb: 1769,
            max_pids: 64,
        };
        let sb = cgroups.create("sb-1", limits).unwrap();
        let dir = parent.join("sb-1");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("memory.max"), (1769u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("pids.max"), "64");
        assert_eq!(read("cpu.weight"), "100", "1769 MB = one CPU's weight");
        assert_eq!(sb.join_fds().len(), 1, "one cgroup to join in v2");
        let small = cgroups
            .create(
                "sb-2",
                Limits {
                    memory_mb: 128,
                    max_pids: 64,
                },
            )
            .unwrap();
        assert_eq!(std::fs::read_to_string(parent.join("sb-2/cpu.weight")).unwrap(), "7");

        // What the worker reads back: OOM kills and peak memory.
        std::fs::write(dir.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n").unwrap();
        assert_eq!(sb.oom_kills(), 2);
        std::fs::write(dir.join("memory.peak"), "10485760\n").unwrap();
        assert_eq!(sb.peak_memory_kb(), 10240);
        assert_eq!(small.oom_kills(), 0);
        // v2 kills a whole sandbox through cgroup.kill.
        sb.kill_all();
        assert_eq!(read("cgroup.kill"), "1");
    }

    #[test]
    fn v2_without_a_needed_controller_is_refused_by_name() {
        let (root, _) = fake_v2("cpu memory");
        let err = Cgroups::setup_v2_at(root.path(), "system.slice/stoke.service").unwrap_err();
        assert!(err.contains("pids"), "{err}");
    }
}
