//! The seccomp filter every sandboxed process runs under: a deny list of
//! the system calls a function has no business making, answered with EPERM
//! (so runtimes that probe, e.g. for io_uring, fall back cleanly), plus
//! `clone3` answered with ENOSYS (its flags sit behind a pointer the filter
//! cannot read; libc then falls back to `clone`, whose flags it can).
//! A syscall of another architecture (i386 `int 0x80`) kills the process:
//! seccompiler checks the audit architecture first. x32 calls share
//! x86_64's audit architecture and have numbers of their own (ptrace is
//! 521, process_vm_readv 539, ...: not just `nr | 0x40000000`), so on
//! x86_64 a filter of its own refuses every number with the x32 bit with
//! EPERM, whether or not the kernel has the x32 ABI.
//!
//! socket() and socketpair() are allowed for AF_UNIX, AF_INET and AF_INET6
//! only, plus AF_NETLINK with NETLINK_ROUTE: glibc's getifaddrs and
//! if_nameindex (and so runtimes that list interfaces, and getaddrinfo's
//! AI_ADDRCONFIG) read the interface list over it. In the sandbox's own
//! network namespace it shows only `lo`, and changing anything needs
//! capabilities the sandbox does not have. Every other family — AF_VSOCK
//! (the hypervisor's host, on a VM), AF_PACKET, AF_ALG, other netlink
//! protocols (uevents, sock_diag, audit, generic), Bluetooth, ... — gets
//! EAFNOSUPPORT, as on a kernel without it.
//!
//! Refused: ptrace and cross-process memory access; mount, umount,
//! pivot_root and the new mount API; new user namespaces (unshare/clone
//! with CLONE_NEWUSER) and setns; keyctl/add_key/request_key; bpf;
//! perf_event_open; userfaultfd; io_uring; kexec; reboot; kernel modules;
//! swap, accounting, clock setting, syslog, quotas, raw I/O ports; file
//! handles (open_by_handle_at escapes bind mounts).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    sock_filter,
};

/// The x32 ABI's syscall number bit (x86_64).
const X32_BIT: u32 = 0x4000_0000;
/// `AUDIT_ARCH_X86_64`: EM_X86_64 | 64-bit | little-endian.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// Socket families a function may use (see the module doc).
const SOCKET_FAMILIES: &[i32] = &[libc::AF_UNIX, libc::AF_INET, libc::AF_INET6];

/// Syscalls refused outright.
const DENIED: &[i64] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_setns,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_syslog,
    libc::SYS_quotactl,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_vhangup,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_lookup_dcookie,
];

/// Build the filters for this machine's architecture: both are installed
/// (the kernel runs every installed filter; the strictest answer wins).
pub fn filters() -> Result<Vec<BpfProgram>, String> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp: unsupported architecture {}: {e:?}", std::env::consts::ARCH))?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|nr| (*nr, Vec::new())).collect();
    // unshare(flags) and clone(flags, ...) asking for a new user namespace.
    let new_user_ns = || -> Result<Vec<SeccompRule>, String> {
        let cond = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(libc::CLONE_NEWUSER as u64),
            libc::CLONE_NEWUSER as u64,
        )
        .map_err(|e| format!("seccomp: {e}"))?;
        Ok(vec![SeccompRule::new(vec![cond]).map_err(|e| format!("seccomp: {e}"))?])
    };
    for nr in [libc::SYS_unshare, libc::SYS_clone] {
        rules.insert(nr, new_user_ns()?);
    }
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("seccomp: {e}"))?;
    let program: BpfProgram = deny.try_into().map_err(|e| format!("seccomp: {e:?}"))?;
    // clone3 → ENOSYS: a second filter (one filter has one match action).
    let enosys = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| format!("seccomp: {e}"))?;
    let clone3: BpfProgram = enosys.try_into().map_err(|e| format!("seccomp: {e:?}"))?;
    let mut filters = vec![program, clone3, socket_families(arch)?];
    if cfg!(target_arch = "x86_64") {
        filters.push(no_x32());
    }
    Ok(filters)
}

/// socket()/socketpair() of a family other than [`SOCKET_FAMILIES`] and
/// AF_NETLINK + NETLINK_ROUTE → EAFNOSUPPORT.
fn socket_families(arch: seccompiler::TargetArch) -> Result<BpfProgram, String> {
    let err = |e: seccompiler::BackendError| format!("seccomp: {e}");
    // The family is argument 0 and the protocol argument 2, both ints.
    let arg = |index, op, value: i32| SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value as u64);
    let rules = || -> Result<Vec<SeccompRule>, String> {
        // Refused when the family is none of those allowed...
        let mut other_family = SOCKET_FAMILIES
            .iter()
            .map(|f| arg(0, SeccompCmpOp::Ne, *f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        other_family.push(arg(0, SeccompCmpOp::Ne, libc::AF_NETLINK).map_err(err)?);
        // ...or netlink with another protocol than NETLINK_ROUTE.
        let other_netlink = vec![
            arg(0, SeccompCmpOp::Eq, libc::AF_NETLINK).map_err(err)?,
            arg(2, SeccompCmpOp::Ne, libc::NETLINK_ROUTE).map_err(err)?,
        ];
        Ok(vec![
            SeccompRule::new(other_family).map_err(err)?,
            SeccompRule::new(other_netlink).map_err(err)?,
        ])
    };
    let filter = SeccompFilter::new(
        [(libc::SYS_socket, rules()?), (libc::SYS_socketpair, rules()?)]
            .into_iter()
            .collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EAFNOSUPPORT as u32),
        arch,
    )
    .map_err(err)?;
    filter.try_into().map_err(|e| format!("seccomp: {e:?}"))
}

/// x86_64: every syscall number with the x32 bit → EPERM. (seccompiler
/// matches numbers one by one, so this one is written by hand.) Another
/// architecture is left to the other filters, which kill it.
fn no_x32() -> BpfProgram {
    let stmt = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    // struct seccomp_data { int nr; __u32 arch; ... }
    let (nr_offset, arch_offset) = (0, 4);
    vec![
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, arch_offset),
        jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, AUDIT_ARCH_X86_64, 0, 2),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, nr_offset),
        jump(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K, X32_BIT, 1, 0),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_filters_compile_for_this_machine() {
        let f = super::filters().unwrap();
        assert_eq!(f.len(), if cfg!(target_arch = "x86_64") { 4 } else { 3 });
        assert!(f.iter().all(|p| !p.is_empty() && p.len() < 4096));
    }
}
