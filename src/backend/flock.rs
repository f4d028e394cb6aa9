//! flock(2) locks: exactly flock(1)'s mechanism.

use std::os::fd::RawFd;

use super::kernel::KernelOps;
use crate::cli::Mode;

/// flock(2) on a file, directory or fd: always the whole file.
#[derive(Debug, Clone, Copy)]
pub struct Flock;

impl KernelOps for Flock {
    fn what(&self) -> &'static str {
        "flock"
    }

    fn needs_write(&self, _mode: Mode) -> bool {
        false
    }

    fn call(&self, fd: RawFd, mode: Mode, blocking: bool) -> nix::Result<()> {
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

    fn proc_kind(&self) -> &'static str {
        "FLOCK"
    }
}
