//! Host uids and gids for sandboxes. Each live sandbox runs as a host id of
//! its own, taken from a range reserved for the worker (`uid_range_start`,
//! `uid_range_size`), and its user namespace maps that one id to 65534
//! (`nobody`) inside: the function sees what Lambda shows, while on the host
//! no two sandboxes share an id, and none is the host's own `nobody`
//! (which system daemons run as).
//!
//! An id goes back to the range only once its sandbox's cgroup is empty
//! and removed (`Sandbox`'s drop), and fresh ids are handed out before
//! returned ones, so an id is reused as late as possible. The range is
//! checked once at worker start against the host's users, groups and
//! subordinate id ranges.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

/// The uid and gid a function sees (nobody / nogroup).
pub const INSIDE: u32 = 65534;

/// The worker's range of host ids.
#[derive(Debug)]
pub struct IdRange {
    start: u32,
    size: u32,
    state: Mutex<Handed>,
}

#[derive(Debug, Default)]
struct Handed {
    /// Offsets below this were handed out at least once.
    next: u32,
    /// Offsets given back, oldest first.
    returned: VecDeque<u32>,
}

/// One sandbox's host id, given back to the range when dropped.
#[derive(Debug)]
pub struct HostId {
    id: u32,
    range: Arc<IdRange>,
}

impl HostId {
    pub fn get(&self) -> u32 {
        self.id
    }
}

impl Drop for HostId {
    fn drop(&mut self) {
        let mut state = self.range.state.lock().unwrap_or_else(|p| p.into_inner());
        state.returned.push_back(self.id - self.range.start);
    }
}

impl IdRange {
    /// `size` ids from `start`, checked against the host's /etc files.
    pub fn new(start: u32, size: u32) -> Result<Arc<IdRange>, String> {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let host = HostIds {
            passwd: read("/etc/passwd"),
            group: read("/etc/group"),
            subuid: read("/etc/subuid"),
            subgid: read("/etc/subgid"),
        };
        check(start, size, &host)?;
        Ok(Self::unchecked(start, size))
    }

    fn unchecked(start: u32, size: u32) -> Arc<IdRange> {
        Arc::new(IdRange {
            start,
            size,
            state: Mutex::default(),
        })
    }

    /// An id no live sandbox has.
    pub fn lease(self: &Arc<Self>) -> io::Result<HostId> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let offset = if state.next < self.size {
            state.next += 1;
            state.next - 1
        } else {
            state.returned.pop_front().ok_or_else(|| {
                io::Error::other(format!(
                    "all {} sandbox host ids ({}..{}) are in use: raise uid_range_size",
                    self.size,
                    self.start,
                    u64::from(self.start) + u64::from(self.size)
                ))
            })?
        };
        Ok(HostId {
            id: self.start + offset,
            range: self.clone(),
        })
    }
}

/// The host's id files, as text.
struct HostIds {
    passwd: String,
    group: String,
    subuid: String,
    subgid: String,
}

/// Refuse a range that is empty, runs past the largest id, holds 0 or
/// 65534, or meets a user, group or subordinate range of the host.
fn check(start: u32, size: u32, host: &HostIds) -> Result<(), String> {
    let end = u64::from(start) + u64::from(size);
    let range = format!("sandbox host ids {start}..{end}");
    if size == 0 || start == 0 || end > u64::from(u32::MAX) {
        return Err(format!("{range}: not a usable range (1..4294967295, at least one id)"));
    }
    let inside = |id: u64| (u64::from(start)..end).contains(&id);
    if inside(u64::from(INSIDE)) {
        return Err(format!("{range} holds 65534, the host's nobody"));
    }
    // name:x:id:... (passwd, group): the third field.
    for (file, text) in [("/etc/passwd", &host.passwd), ("/etc/group", &host.group)] {
        for line in text.lines() {
            let mut fields = line.split(':');
            let (name, id) = (fields.next(), fields.nth(1));
            if let (Some(name), Some(Ok(id))) = (name, id.map(str::parse::<u64>))
                && inside(id)
            {
                return Err(format!("{range} holds {id}, {name} in {file}"));
            }
        }
    }
    // name:first:count (subuid, subgid).
    for (file, text) in [("/etc/subuid", &host.subuid), ("/etc/subgid", &host.subgid)] {
        for line in text.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if let [name, first, count] = fields[..]
                && let (Ok(first), Ok(count)) = (first.parse::<u64>(), count.parse::<u64>())
                && first < end
                && u64::from(start) < first + count
            {
                return Err(format!(
                    "{range} overlaps {name}'s subordinate ids {first}..{} in {file}",
                    first + count
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(passwd: &str, subuid: &str) -> HostIds {
        HostIds {
            passwd: passwd.into(),
            group: "root:x:0:\nnogroup:x:65534:\n".into(),
            subuid: subuid.into(),
            subgid: String::new(),
        }
    }

    #[test]
    fn a_range_that_meets_host_ids_is_refused_by_name() {
        let passwd = "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\nada:x:200010:200010::/:/bin/sh\n";
        assert!(check(200_000, 10, &host(passwd, "")).is_ok());
        let err = check(200_000, 11, &host(passwd, "")).unwrap_err();
        assert!(err.contains("ada") && err.contains("/etc/passwd"), "{err}");
        let err = check(200_000, 100, &host("", "ada:165536:65536\n")).unwrap_err();
        assert!(err.contains("ada's subordinate ids 165536..231072"), "{err}");
        assert!(check(231_072, 100, &host("", "ada:165536:65536\n")).is_ok());
        assert!(check(60_000, 10_000, &host("", "")).unwrap_err().contains("65534"));
        assert!(check(0, 10, &host("", "")).is_err());
        assert!(check(u32::MAX - 5, 10, &host("", "")).is_err());
    }

    #[test]
    fn ids_are_distinct_while_held_and_reused_oldest_first_after_fresh_ones() {
        let range = IdRange::unchecked(200_000, 3);
        let a = range.lease().unwrap();
        let b = range.lease().unwrap();
        assert_eq!((a.get(), b.get()), (200_000, 200_001));
        drop(a);
        // A fresh one first, even though 200000 is back.
        let c = range.lease().unwrap();
        assert_eq!(c.get(), 200_002);
        drop(b);
        let d = range.lease().unwrap();
        assert_eq!(d.get(), 200_000, "the oldest returned");
        let e = range.lease().unwrap();
        assert_eq!(e.get(), 200_001);
        let full = range.lease().unwrap_err();
        assert!(full.to_string().contains("raise uid_range_size"), "{full}");
    }
}
