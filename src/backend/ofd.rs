//! Open-file-description record locks (F_OFD_SETLK / F_OFD_SETLKW): owned by
//! the open file like flock(2) locks, but real network locks on NFS.
//! Independent of flock(2) locks on the same file, as with flock(1) --fcntl.

use std::os::fd::{BorrowedFd, RawFd};

use nix::fcntl::{FcntlArg, fcntl};

use super::kernel::KernelOps;
use crate::cli::Mode;

/// OFD locks over the whole file.
pub static OPS: KernelOps = KernelOps {
    what: "fcntl OFD lock",
    // As flock(1) --fcntl: a write lock needs a writable fd.
    needs_write: |mode| mode == Mode::Exclusive,
    call: ofd_lock,
    proc_kind: "OFDLCK",
};

fn ofd_lock(fd: RawFd, mode: Mode, blocking: bool) -> nix::Result<()> {
    let kind = match mode {
        Mode::Shared => libc::F_RDLCK,
        Mode::Exclusive => libc::F_WRLCK,
        Mode::Unlock => libc::F_UNLCK,
    };
    // SAFETY: all-zero is a valid libc::flock; l_pid must be 0 for OFD locks.
    let mut range: libc::flock = unsafe { std::mem::zeroed() };
    range.l_type = kind as libc::c_short;
    range.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: the caller keeps fd open for the duration of this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let arg = if blocking {
        FcntlArg::F_OFD_SETLKW(&range)
    } else {
        FcntlArg::F_OFD_SETLK(&range)
    };
    fcntl(fd, arg).map(drop)
}
