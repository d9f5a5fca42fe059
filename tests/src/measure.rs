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

/// The mean cycle of `slots` slots that each end one event after another,
/// from the events' end times sorted (`ends`), leaving out the first and
/// last `skip_cycles` cycles (the slots fill and drain one after another
/// there). In the steady state the slots end in the same order every
/// cycle, so the end ranked `r` and the one ranked `r + m × slots` are the
/// same slot `m` cycles later; averaging that span over one cycle's worth
/// of starting ranks averages over every slot. None when fewer than two
/// cycles are left.
pub fn steady_cycle(ends: &[f64], slots: usize, skip_cycles: usize) -> Option<f64> {
    let from = slots * skip_cycles;
    let cycles = (ends.len() / slots.max(1)).checked_sub(2 * skip_cycles + 1)?;
    if slots == 0 || cycles < 2 {
        return None;
    }
    let spans: f64 = (from..from + slots).map(|r| ends[r + cycles * slots] - ends[r]).sum();
    Some(spans / slots as f64 / cycles as f64)
}

#[cfg(test)]
mod tests {
    use super::steady_cycle;

    /// Slots with a cycle of 101 ms that start 0.3 ms apart: a slow fill
    /// and drain skews a whole-run rate, never the steady cycle.
    #[test]
    fn the_steady_cycle_is_the_slots_cycle_whatever_the_fill() {
        let (slots, events) = (100, 4000);
        let mut ends: Vec<f64> = (0..events)
            .map(|i| (i % slots) as f64 * 0.3 + (i / slots + 1) as f64 * 101.0)
            .collect();
        ends.sort_by(f64::total_cmp);
        let cycle = steady_cycle(&ends, slots, 3).unwrap();
        assert!((cycle - 101.0).abs() < 1e-9, "{cycle}");
        // The whole-run rate would read 40 cycles in 40 × 101 + 29.7 ms.
        let whole = (ends[events - 1] - (ends[0] - 101.0)) / 40.0;
        assert!(whole > 101.7, "{whole}");
        assert_eq!(steady_cycle(&ends[..600], slots, 3), None);
    }
}
