//! Whether lockwrap runs as a terminal's foreground job, which decides the
//! command's process group.
//!
//! Elsewhere (cron, CI, systemd, a background job, under timeout(1), which
//! puts itself in a group of its own) the command gets a process group of
//! its own: a signal sent to lockwrap's group then reaches the command once,
//! forwarded by lockwrap to the command's group, instead of once from the
//! kernel and once forwarded.
//!
//! In the terminal's foreground the command stays in lockwrap's group, as
//! under flock(1): the terminal's Ctrl-C, Ctrl-Z, `fg`, `bg` and reads from
//! the tty then work for the whole job (lockwrap, the command, and a calling
//! script) by the terminal's own rules; lockwrap forwards only what a process
//! sent to it with kill(2), never what the terminal already delivered to the
//! group.

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::unistd::{getpgrp, tcgetpgrp};

/// Whether this process is in the foreground process group of its
/// controlling terminal: one open of /dev/tty (which fails at once with
/// ENXIO when there is no terminal) and one ioctl. A terminal that cannot be
/// opened for another reason (one owned by another user after `su`) is
/// taken as foreground, the behaviour of flock(1).
pub fn in_terminal_foreground() -> bool {
    let opened = open(
        "/dev/tty",
        OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    );
    match opened {
        Ok(tty) => tcgetpgrp(&tty) == Ok(getpgrp()),
        Err(Errno::ENXIO | Errno::ENOENT | Errno::ENODEV) => false,
        Err(_) => true,
    }
}
