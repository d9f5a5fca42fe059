//! Network namespaces for sandboxes. Each sandbox joins its own network
//! namespace, which has only a loopback interface and, on it, the sandbox's
//! Runtime API listener at 127.0.0.1:9001 (Lambda's address), bound there
//! by the worker. So the API is the only thing the function can reach: no
//! host ports, no other sandbox, no outside network.
//!
//! Making a namespace costs ~0.4 ms, so a small pool is kept ready and
//! refilled in the background: none is created on the invoke path unless
//! the pool ran dry. A namespace is made on a short-lived thread of its
//! own (unshare affects only the calling thread), which brings `lo` up,
//! binds the listener and exits; the socket stays in the namespace it was
//! made in, and the worker's runtime serves it from anywhere.

use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// The Runtime API address inside every sandbox.
pub const RUNTIME_API: &str = "127.0.0.1:9001";
/// Namespaces kept ready.
const POOL: usize = 4;

/// A network namespace with the Runtime API listener bound inside.
pub struct Prepared {
    /// Open `ns/net` of the namespace, for the sandbox's `setns`.
    pub ns: File,
    pub listener: TcpListener,
}

#[derive(Default)]
pub struct NetPool {
    ready: Mutex<Vec<Prepared>>,
    refilling: Mutex<bool>,
}

impl NetPool {
    pub fn new() -> Arc<NetPool> {
        Arc::new(NetPool::default())
    }

    /// A prepared namespace: from the pool, or made now if it is empty.
    /// Either way the pool is topped up in the background.
    pub fn take(self: &Arc<Self>) -> io::Result<Prepared> {
        let ready = self.ready.lock().expect("not poisoned").pop();
        self.refill();
        match ready {
            Some(p) => Ok(p),
            None => make(),
        }
    }

    fn refill(self: &Arc<Self>) {
        {
            let mut busy = self.refilling.lock().expect("not poisoned");
            if *busy {
                return;
            }
            *busy = true;
        }
        let pool = self.clone();
        std::thread::spawn(move || {
            while pool.ready.lock().expect("not poisoned").len() < POOL {
                match make() {
                    Ok(p) => pool.ready.lock().expect("not poisoned").push(p),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot prepare a network namespace");
                        break;
                    }
                }
            }
            *pool.refilling.lock().expect("not poisoned") = false;
        });
    }
}

/// Make one namespace on a thread of its own.
pub fn make() -> io::Result<Prepared> {
    std::thread::spawn(|| {
        // This thread only: it ends right after.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let ns = File::open("/proc/thread-self/ns/net")?;
        loopback_up()?;
        let listener = TcpListener::bind(RUNTIME_API)?;
        listener.set_nonblocking(true)?;
        Ok(Prepared { ns, listener })
    })
    .join()
    .map_err(|_| io::Error::other("network namespace thread panicked"))?
}

/// `ip link set lo up` in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").or_else(|_| std::net::UdpSocket::bind("[::]:0"));
    // Any socket will do for the ioctl; binding to an address needs no interface up.
    let sock = sock?;
    use std::os::fd::AsRawFd;
    #[allow(unsafe_code)]
    // SAFETY: a zeroed ifreq with a NUL-terminated name, passed to two
    // ioctls that read and write exactly that struct.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// These need CAP_SYS_ADMIN, as the worker does (CI runs as root).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_namespace_has_its_own_9001_and_the_host_has_none() {
        let a = make().unwrap();
        let b = make().unwrap();
        assert_eq!(a.listener.local_addr().unwrap().to_string(), RUNTIME_API);
        assert_eq!(b.listener.local_addr().unwrap().to_string(), RUNTIME_API);
        // Not reachable from the host's namespace (this thread).
        assert!(std::net::TcpStream::connect(RUNTIME_API).is_err());
    }

    #[test]
    fn the_pool_hands_out_distinct_namespaces() {
        let pool = NetPool::new();
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_ne!(a.ns.metadata().unwrap().ino(), b.ns.metadata().unwrap().ino());
    }
}
