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

fn flock(fd: RawFd, mode: Mode, blocking: bool) -> nix::Result<()> {
    let mut op = match mode {
        Mode::Shared => libc::LOCK_SH,
        Mode::Exclusive => libc::LOCK_EX,
        Mode::Unlock => libc::LOCK_UN,
    };
    if !blocking {
        op |= libc::LOCK_NB;
    }
    super::flock_fd(fd, op)
}
