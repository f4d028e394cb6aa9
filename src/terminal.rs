//! What lockwrap asks of the terminal: whether it runs as the terminal's
//! foreground job, which decides the command's process group, and how a
//! live line must look there (its width, whether the terminal draws one).
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

/// Whether a live line (redrawn in place with `\r` and `ESC [K`) may be
/// drawn on stderr: a terminal that is not `TERM=dumb` (Emacs shell
/// buffers, some CI log viewers), which cannot erase a line and would show
/// every redraw. lockwrap draws no colour; if it ever does, `NO_COLOR`
/// (<https://no-color.org>) must turn it off.
pub fn draws_live_lines() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// Whether a write to stderr's terminal now reaches it: lockwrap is in
/// that terminal's foreground process group, or the terminal is not its
/// controlling one (no job control applies there). A background job's
/// live line would erase the prompt and the user's typing every second,
/// and under `stty tostop` its first write would stop lockwrap (SIGTTOU)
/// until brought to the foreground. Asked anew at each draw: `fg` and `bg`
/// move a waiting lockwrap between the two.
pub fn stderr_in_foreground() -> bool {
    match tcgetpgrp(std::io::stderr()) {
        Ok(group) => group == getpgrp(),
        Err(_) => true,
    }
}

/// The width of the terminal on stderr, in columns: TIOCGWINSZ, read anew
/// for each line drawn so a resized window counts from the next draw; else
/// `COLUMNS`; else 80. A pty nobody sized says 0 columns: not believed.
pub fn stderr_columns() -> usize {
    if let Some(cols) = window_columns(libc::STDERR_FILENO).filter(|c| *c > 0) {
        return cols;
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| *c > 0)
        .unwrap_or(80)
}

/// TIOCGWINSZ on `fd` (nix has no wrapper for it).
fn window_columns(fd: libc::c_int) -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only writes a struct winsize through the pointer,
    // which points at a live, properly sized local; a bad fd or one that is
    // no terminal fails with an errno and writes nothing.
    let done = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size as *mut libc::winsize) };
    (done == 0).then_some(usize::from(size.ws_col))
}

/// `text` as one terminal row of at most `columns - 1` columns (the last
/// column is left free: a character written there makes some terminals
/// wrap at once), control characters escaped so that nothing but the text
/// reaches the terminal; a cut line ends in `…`. Widths are counted per
/// character, not per byte, with East Asian wide characters and emoji as
/// two columns, so the row never wraps.
pub fn one_row(text: &str, columns: usize) -> String {
    let escaped = crate::status::escape_controls(text);
    let room = columns.saturating_sub(1);
    let total: usize = escaped.chars().map(char_width).sum();
    if total <= room {
        return escaped;
    }
    let mut out = String::new();
    let mut used = 0;
    for c in escaped.chars() {
        let w = char_width(c);
        // Keep one column for the ellipsis.
        if used + w + 1 > room {
            break;
        }
        out.push(c);
        used += w;
    }
    if room > 0 {
        out.push('…');
    }
    out
}

/// The columns a terminal gives `c`: 0 for combining marks and zero-width
/// characters, 2 for East Asian wide and fullwidth forms and emoji, else 1.
/// A small table, not all of Unicode's (no dependency for one status
/// line): the wide ranges are generous, since a wide character counted as
/// one column could make the row wrap, while a zero-width one counted as
/// one only cuts the row a column early. So the symbol blocks
/// (U+2600-U+27BF, U+1F000-U+1FAFF) count 2 throughout, and U+FE0F (which
/// asks for the wide emoji form of the character before it, as in ❤️)
/// counts 1.
fn char_width(c: char) -> usize {
    let u = u32::from(c);
    match u {
        0x0300..=0x036F | 0x200B..=0x200F | 0xFE00..=0xFE0E => 0,
        0x1100..=0x115F
        | 0x231A..=0x231B
        | 0x2329..=0x232A
        | 0x23E9..=0x23EC
        | 0x23F0
        | 0x23F3
        | 0x25FD..=0x25FE
        | 0x2600..=0x27BF
        | 0x2B1B..=0x2B1C
        | 0x2B50
        | 0x2B55
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xA960..=0xA97F
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE10..=0xFE19
        | 0xFE30..=0xFE6F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x16FE0..=0x18DFF
        | 0x1AFF0..=0x1B2FF
        | 0x1D300..=0x1D37F
        | 0x1F000..=0x1FAFF
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn width(text: &str) -> usize {
        text.chars().map(char_width).sum()
    }

    #[test]
    fn a_short_row_is_kept_and_a_long_one_cut_with_an_ellipsis() {
        assert_eq!(one_row("waiting 1s", 60), "waiting 1s");
        let cut = one_row(&"x".repeat(100), 60);
        assert_eq!(cut, format!("{}…", "x".repeat(58)));
        assert_eq!(width(&cut), 59);
    }

    #[test]
    fn widths_are_counted_in_columns_not_bytes() {
        let cut = one_row(&"é".repeat(100), 20);
        assert_eq!(cut.chars().count(), 19);
        let cut = one_row(&"漢".repeat(100), 20);
        assert!(width(&cut) <= 19, "{cut}");
        assert_eq!(one_row("漢字", 6), "漢字");
    }

    #[test]
    fn emoji_beyond_the_first_blocks_are_wide() {
        for c in [
            "\u{1fae0}",
            "\u{1f004}",
            "\u{1f18e}",
            "\u{1f201}",
            "\u{17000}",
            "\u{2764}\u{fe0f}",
        ] {
            assert!(width(c) >= 2, "{c}");
        }
    }

    #[test]
    fn control_characters_are_escaped_before_cutting() {
        assert_eq!(one_row("a\x1b[31mb\n", 80), "a\\u{1b}[31mb\\n");
        assert!(!one_row(&"\x07".repeat(50), 20).contains('\x07'));
    }

    #[test]
    fn a_terminal_too_narrow_gets_an_empty_row() {
        assert_eq!(one_row("abc", 1), "");
        assert_eq!(one_row("abc", 0), "");
    }
}
