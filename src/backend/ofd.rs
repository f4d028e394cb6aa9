//! Open-file-description record locks (F_OFD_SETLK / F_OFD_SETLKW): owned by
//! the open file like flock(2) locks, but real network locks on NFS, and on
//! a byte range (`--start`, `--length`) rather than the whole file.
//! Independent of flock(2) locks on the same file, as with flock(1) --fcntl.

use std::os::fd::{BorrowedFd, RawFd};

use nix::fcntl::{FcntlArg, fcntl};

use super::kernel::KernelOps;
use crate::cli::Mode;
use crate::spec::ByteRange;

/// OFD locks over one byte range (the whole file by default).
#[derive(Debug, Clone, Copy)]
pub struct Ofd {
    /// The bytes locked.
    pub range: ByteRange,
}

impl KernelOps for Ofd {
    fn what(&self) -> &'static str {
        "fcntl OFD lock"
    }

    fn needs_write(&self, mode: Mode) -> bool {
        // As flock(1) --fcntl: a write lock needs a writable fd.
        mode == Mode::Exclusive
    }

    fn call(&self, fd: RawFd, mode: Mode, blocking: bool) -> nix::Result<()> {
        let kind = match mode {
            Mode::Shared => libc::F_RDLCK,
            Mode::Exclusive => libc::F_WRLCK,
            Mode::Unlock => libc::F_UNLCK,
        };
        // SAFETY: all-zero is a valid libc::flock; l_pid must be 0 for OFD locks.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = kind as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        // The parser keeps both below 2^63: they fit off_t.
        lock.l_start = self.range.start as libc::off_t;
        lock.l_len = self.range.length as libc::off_t;
        // SAFETY: the caller keeps fd open for the duration of this call.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let arg = if blocking {
            FcntlArg::F_OFD_SETLKW(&lock)
        } else {
            FcntlArg::F_OFD_SETLK(&lock)
        };
        fcntl(fd, arg).map(drop)
    }

    fn proc_kind(&self) -> &'static str {
        "OFDLCK"
    }

    fn range(&self) -> Option<ByteRange> {
        Some(self.range)
    }
}
