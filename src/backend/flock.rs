//! flock(2) locks: exactly flock(1)'s mechanism.

use std::os::fd::RawFd;

use super::kernel::KernelOps;
use crate::cli::Mode;

/// flock(2) on a file, directory or fd.
pub static OPS: KernelOps = KernelOps {
    what: "flock",
    needs_write: |_| false,
    call: flock,
    proc_kind: "FLOCK",
};

/// flock(2). nix offers it only as `Flock`, which unlocks on drop; that would
/// take the lock away from a child that inherited the fd.
fn flock(fd: RawFd, mode: Mode, blocking: bool) -> nix::Result<()> {
    let mut op = match mode {
        Mode::Shared => libc::LOCK_SH,
        Mode::Exclusive => libc::LOCK_EX,
        Mode::Unlock => libc::LOCK_UN,
    };
    if !blocking {
        op |= libc::LOCK_NB;
    }
    // SAFETY: flock takes a plain integer fd and flags and touches no memory;
    // an fd that is not open gives EBADF.
    let rc = unsafe { libc::flock(fd, op) };
    nix::errno::Errno::result(rc).map(drop)
}
