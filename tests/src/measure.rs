//! Measuring helpers shared by the benchmark binaries: CPU time and memory
//! from /proc, percentiles, and knobs from the environment.

/// The fields of /proc/<pid>/stat after the command name (state is 0).
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// The clock-tick fields `fields` of /proc/<pid>/stat summed, in seconds.
fn stat_secs(pid: u32, fields: &[usize]) -> f64 {
    let stat = stat_fields(pid);
    let ticks: f64 = fields.iter().filter_map(|i| stat.get(*i)?.parse::<f64>().ok()).sum();
    // SAFETY: sysconf reads a constant.
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// CPU seconds (user + system) used so far by `pid` (all its threads;
/// not its children). 0 once the process is gone. Clock-tick resolution
/// (10 ms).
pub fn cpu_secs(pid: u32) -> f64 {
    // utime, stime.
    stat_secs(pid, &[11, 12])
}

/// CPU seconds used so far by `pid` and by the children it has waited
/// for (a server that forks a process per request, such as a CGI server).
pub fn cpu_secs_with_children(pid: u32) -> f64 {
    // utime, stime, cutime, cstime.
    stat_secs(pid, &[11, 12, 13, 14])
}

/// CPU seconds used so far by `pids` together.
pub fn cpu_secs_of(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_secs(*p)).sum()
}

/// CPU seconds on the CPU so far of `pid`'s live threads, in nanosecond
/// resolution (/proc/<pid>/task/*/schedstat): for short windows of a
/// nearly idle process, where clock ticks would read 0. Threads that have
/// exited are not counted.
pub fn thread_cpu_secs(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| {
            let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            s.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    ns as f64 / 1e9
}

/// Resident memory of `pid` in KiB (VmRSS); None once it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse().ok())
}

/// The `p` quantile (0..=1) of `sorted` by nearest rank; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// `v` sorted (NaN-safe), for [`percentile`].
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The median of `v`.
pub fn median(v: Vec<f64>) -> f64 {
    percentile(&sorted(v), 0.5)
}

/// A numeric knob from the environment, else `default`.
pub fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
