//! The seccomp filter every sandboxed process runs under: a deny list of
//! the system calls a function has no business making, answered with EPERM
//! (so runtimes that probe, e.g. for io_uring, fall back cleanly), plus
//! `clone3` answered with ENOSYS (its flags sit behind a pointer the filter
//! cannot read; libc then falls back to `clone`, whose flags it can).
//! A syscall of another architecture (i386 `int 0x80`) kills the process:
//! seccompiler checks the audit architecture first. x32 calls share
//! x86_64's audit architecture, so their numbers (`nr | 0x40000000`) of
//! the refused calls are refused as well.
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
};

/// The x32 ABI's syscall number bit (x86_64).
const X32_BIT: i64 = 0x4000_0000;

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
    // On x86_64 the x32 ABI reaches the same calls as `nr | X32_BIT` under
    // the same audit architecture: refuse those numbers too.
    let numbers = |nr: i64| -> Vec<i64> {
        if cfg!(target_arch = "x86_64") {
            vec![nr, nr | X32_BIT]
        } else {
            vec![nr]
        }
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED
        .iter()
        .flat_map(|nr| numbers(*nr))
        .map(|nr| (nr, Vec::new()))
        .collect();
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
    for nr in numbers(libc::SYS_unshare).into_iter().chain(numbers(libc::SYS_clone)) {
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
    Ok(vec![program, clone3])
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_filters_compile_for_this_machine() {
        let f = super::filters().unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|p| !p.is_empty() && p.len() < 4096));
    }
}
