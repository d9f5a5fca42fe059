//! Child processes of the platform itself, not sandboxes: the `nats-server`
//! that `stoke up` starts. What they get here is to die with the process
//! that started them, so a killed `stoke` never leaves one behind.
//!
//! It must not start function processes: those go through the sandbox
//! launcher (`launch`), whatever the mode. It lives in the sandbox module
//! because its one `unsafe` call does (DESIGN: unsafe only here).
#![warn(clippy::undocumented_unsafe_blocks, clippy::multiple_unsafe_ops_per_block)]

use std::io;

/// Make `cmd`'s process receive SIGKILL when the thread that spawns it
/// dies. Spawn from a thread that lives as long as the process (the main
/// thread).
pub fn die_with_parent_cmd(cmd: &mut tokio::process::Command) {
    // SAFETY: the hook runs in the forked child before exec, where only
    // async-signal-safe calls may run: one raw prctl and, if it fails, an
    // `io::Error` made from its errno (no allocation, no lock).
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| crate::sandbox::sys::die_with_parent().map_err(|f| io::Error::from_raw_os_error(f.errno)));
    }
}
