//! Job control on a terminal. The command runs in a process group of its
//! own, so that a signal sent to lockwrap's group reaches it once (forwarded
//! by lockwrap) instead of twice. On a terminal, that group must then be the
//! terminal's foreground group for the command to read the tty and receive
//! Ctrl-C and Ctrl-Z, as a shell would arrange: lockwrap hands the terminal
//! over, takes it back, and mirrors the command's stops so that the shell
//! sees the job stop and `fg` resumes it.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::fcntl::{OFlag, open};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::stat::Mode;
use nix::unistd::{Pid, getpgrp, isatty, tcgetpgrp, tcsetpgrp};

/// lockwrap's controlling terminal.
pub struct Terminal {
    tty: OwnedFd,
}

impl Terminal {
    /// The controlling terminal, when one of stdin, stdout and stderr is a
    /// terminal and /dev/tty opens (cron, CI and pipes have none; the check
    /// costs one ioctl per fd when there is none).
    pub fn controlling() -> Option<Terminal> {
        let on_terminal = [0, 1, 2].into_iter().any(|fd| {
            // SAFETY: fds 0-2 are only looked at, for the duration of the call.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            isatty(fd).unwrap_or(false)
        });
        if !on_terminal {
            return None;
        }
        let tty = open(
            "/dev/tty",
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .ok()?;
        Some(Terminal { tty })
    }

    /// The terminal's fd, for the child to claim the foreground before exec.
    pub fn raw_fd(&self) -> RawFd {
        self.tty.as_raw_fd()
    }

    /// Whether lockwrap's process group is the terminal's foreground group.
    pub fn is_foreground(&self) -> bool {
        tcgetpgrp(self.tty.as_fd()) == Ok(getpgrp())
    }

    /// Makes `group` the foreground group. A background process that does
    /// this gets SIGTTOU unless it blocks it: blocked for the call.
    pub fn give_to(&self, group: Pid) {
        let mut ttou = SigSet::empty();
        ttou.add(Signal::SIGTTOU);
        let previous = ttou.thread_swap_mask(SigmaskHow::SIG_BLOCK).ok();
        let _ = tcsetpgrp(self.tty.as_fd(), group);
        if let Some(previous) = previous {
            let _ = previous.thread_set_mask();
        }
    }

    /// Takes the foreground back from `group`, if `group` still has it (a
    /// shell that took it meanwhile keeps it).
    pub fn take_back_from(&self, group: Pid) {
        if tcgetpgrp(self.tty.as_fd()) == Ok(group) {
            self.give_to(getpgrp());
        }
    }
}

/// In the child between fork and exec: makes the child's process group the
/// terminal's foreground group. Only async-signal-safe calls.
///
/// # Safety
/// Call only in a freshly forked child, with `tty` an open terminal fd.
pub unsafe fn claim_foreground_in_child(tty: RawFd) {
    // SAFETY: sigset operations on a local set, sigprocmask, getpid and
    // tcsetpgrp are async-signal-safe and touch only this child's state.
    unsafe {
        let mut ttou: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut ttou);
        libc::sigaddset(&mut ttou, libc::SIGTTOU);
        libc::sigprocmask(libc::SIG_BLOCK, &ttou, &mut previous);
        // std sets the group too; doing it here does not depend on its order.
        libc::setpgid(0, 0);
        libc::tcsetpgrp(tty, libc::getpid());
        libc::sigprocmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
    }
}
