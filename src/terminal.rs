//! Whether lockwrap runs in a terminal session, which decides the command's
//! process group.
//!
//! Without a controlling terminal (cron, CI, systemd, anything after
//! setsid), the command gets a process group of its own: a signal sent to
//! lockwrap's group then reaches the command once, forwarded by lockwrap to
//! the command's group, instead of once from the kernel and once forwarded.
//!
//! In a terminal session the command stays in lockwrap's group, as under
//! flock(1): the terminal's Ctrl-C, Ctrl-Z, `fg`, `bg` and reads from the tty
//! then work for the whole job (lockwrap, the command, and a calling script)
//! by the terminal's own rules; lockwrap forwards only what a process sent to
//! it with kill(2), never what the terminal already delivered to the group.

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

/// Whether this process has a controlling terminal: one open of /dev/tty,
/// which fails at once with ENXIO when there is none. Any other failure
/// (a terminal owned by another user after `su`) still means a terminal.
pub fn in_terminal_session() -> bool {
    let opened = open(
        "/dev/tty",
        OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    );
    !matches!(opened, Err(Errno::ENXIO | Errno::ENOENT | Errno::ENODEV))
}
