//! Who this process is to its user, decided once from argv\[0\]: lockwrap,
//! or util-linux flock(1) when it is installed under that name (a symlink
//! named `flock`). This module is the one place that knows: the prefix of
//! every message ([`crate::say!`]), how messages name an fd, and how the
//! `--verbose` report lines reach stdout. Which words an error uses under
//! either name is [`crate::Error::message`]'s business.

use std::ffi::OsStr;
use std::fmt;
use std::io::{IsTerminal as _, Write as _};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt as _;
use std::sync::{Mutex, OnceLock};

use nix::errno::Errno;

/// The names lockwrap answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    /// Its own: richer messages that name the lock.
    Lockwrap,
    /// util-linux flock(1)'s: its messages, to the letter.
    Flock,
}

struct Program {
    name: Name,
    /// argv\[0\] as invoked, which getopt's messages start with.
    argv0: String,
}

static PROGRAM: OnceLock<Program> = OnceLock::new();

/// Decides the name from argv\[0\]: flock(1) when what follows its last
/// `/` is `flock` (glibc's program_invocation_short_name; `flock/` is not
/// named so, though Path::file_name would say it is), else lockwrap. Only
/// the first call counts; without one, lockwrap.
pub fn set_from_argv0(argv0: Option<&OsStr>) {
    let argv0 = argv0.unwrap_or_default();
    let short_name = argv0.as_bytes().rsplit(|b| *b == b'/').next();
    let name = if short_name == Some(b"flock".as_slice()) {
        Name::Flock
    } else {
        Name::Lockwrap
    };
    let _ = PROGRAM.set(Program {
        name,
        argv0: argv0.to_string_lossy().into_owned(),
    });
}

/// The name this process answers to.
pub fn name() -> Name {
    PROGRAM.get().map_or(Name::Lockwrap, |p| p.name)
}

/// Whether it runs as flock(1).
pub fn is_flock() -> bool {
    name() == Name::Flock
}

/// What every message starts with, before `: `.
pub fn prefix() -> &'static str {
    match name() {
        Name::Lockwrap => "lockwrap",
        Name::Flock => "flock",
    }
}

/// argv\[0\] as invoked (`/usr/local/bin/flock`): glibc's getopt names the
/// program so in its messages.
pub fn invoked_as() -> &'static str {
    PROGRAM.get().map_or_else(|| prefix(), |p| p.argv0.as_str())
}

/// How messages name a caller's fd: `fd 9`, or `9` as flock(1) does
/// (`flock: 9: Bad file descriptor`).
pub fn fd_lock_name(fd: RawFd) -> String {
    match name() {
        Name::Lockwrap => format!("fd {fd}"),
        Name::Flock => fd.to_string(),
    }
}

/// The `--verbose` report lines on their way to stdout.
struct Report {
    /// Lines written at exit: flock(1)'s stdio buffer when stdout is not a
    /// terminal, which is why they follow the command's output.
    pending: Vec<u8>,
    /// Whether lines wait in `pending`; decided at the first line.
    buffered: Option<bool>,
    /// The first write error, reported at exit.
    failed: Option<Errno>,
}

static REPORT: Mutex<Report> = Mutex::new(Report {
    pending: Vec::new(),
    buffered: None,
    failed: None,
});

/// Writes a `--verbose` report line (how long the lock took, what runs) to
/// stdout, where scripts parse it: `lockwrap: LOCK: WHAT`, written at once,
/// or flock(1)'s `flock: WHAT`, which, as flock's stdio does, waits for the
/// exit when stdout is not a terminal. A write error is kept for
/// [`finish_stdout`]; the command runs all the same.
pub fn report(lock: &str, what: fmt::Arguments<'_>) {
    let line = match name() {
        Name::Lockwrap => format!("lockwrap: {lock}: {what}\n"),
        Name::Flock => format!("flock: {what}\n"),
    };
    let mut report = REPORT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let buffered = *report
        .buffered
        .get_or_insert_with(|| is_flock() && !std::io::stdout().is_terminal());
    if buffered {
        report.pending.extend_from_slice(line.as_bytes());
    } else if let Err(e) = write_stdout(line.as_bytes()) {
        report.failed.get_or_insert(e);
    }
}

/// Drops report lines not yet written: `-F` under flock's name, whose exec
/// discards flock(1)'s stdio buffer with them.
pub fn discard_unwritten_report() {
    let mut report = REPORT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    report.pending.clear();
}

/// At exit: writes the report lines still waiting, and returns the first
/// write error of any report line, as flock(1)'s close_stdout() finds it.
/// A closed stdout (EBADF) is no error, as there.
pub fn finish_stdout() -> Option<Errno> {
    let mut report = REPORT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let pending = std::mem::take(&mut report.pending);
    if !pending.is_empty()
        && let Err(e) = write_stdout(&pending)
    {
        report.failed.get_or_insert(e);
    }
    report.failed.filter(|e| *e != Errno::EBADF)
}

fn write_stdout(bytes: &[u8]) -> Result<(), Errno> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// The C library's text for `errno` ("Bad file descriptor"), as flock(1)
/// prints it; nix's own texts differ for some ("Bad file number").
pub fn strerror(errno: Errno) -> String {
    let code = errno as i32;
    let text = std::io::Error::from_raw_os_error(code).to_string();
    match text.strip_suffix(&format!(" (os error {code})")) {
        Some(bare) => bare.to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strerror_is_the_c_librarys() {
        assert_eq!(strerror(Errno::EBADF), "Bad file descriptor");
        assert_eq!(strerror(Errno::ENOENT), "No such file or directory");
    }
}
