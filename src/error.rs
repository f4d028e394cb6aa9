//! The one error type of the library. Each variant knows its exit code, so
//! `main` only prints the message and maps it; nothing else exits the process.

use nix::errno::Errno;
use nix::sys::signal::Signal;

use crate::spec::redact_urls_in;

/// Exit code for a usage error (sysexits EX_USAGE), as flock(1).
pub const EXIT_USAGE: u8 = 64;
/// Exit code when the lock call fails for a reason other than a conflict (EX_DATAERR).
pub const EXIT_LOCK_FAILED: u8 = 65;
/// Exit code when the lock cannot be opened or created (EX_NOINPUT).
pub const EXIT_CANNOT_OPEN: u8 = 66;
/// Exit code when the command cannot be executed (EX_UNAVAILABLE).
pub const EXIT_CANNOT_EXEC: u8 = 69;
/// Exit code for an operating-system error such as ENOMEM or EMFILE (EX_OSERR).
pub const EXIT_OS_ERROR: u8 = 71;
/// Exit code when the lock cannot be created on a read-only or full filesystem (EX_CANTCREAT).
pub const EXIT_CANNOT_CREATE: u8 = 73;
/// Exit code when a lock server cannot be reached or the lock was lost (EX_TEMPFAIL).
pub const EXIT_TEMPFAIL: u8 = 75;
/// Exit code when a lock server refuses the credentials or a right (EX_NOPERM).
pub const EXIT_NOPERM: u8 = 77;
/// Exit code when a setting cannot work: a missing database, a bad URL, TLS (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code when `--max-runtime` stopped the child, as timeout(1).
pub const EXIT_MAX_RUNTIME: u8 = 124;

/// Everything that can go wrong between parsing the command line and the child's exit.
///
/// `Display` gives one line, without the `lockwrap: ` prefix, that names the lock and the cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line cannot be used as given. Any server URL the text
    /// echoes is shown without its password ([`redact_urls_in`]).
    #[error("{}", redact_urls_in(.0))]
    Usage(String),

    /// The lock is held and `-n` (or `-w 0`) forbids waiting.
    #[error("{lock}: already locked{}", holder_suffix(.holder))]
    Conflict {
        /// The lock as the user wrote it.
        lock: String,
        /// Who holds it, when that is known and was asked for.
        holder: Option<String>,
    },

    /// `-w` expired before the lock could be taken.
    #[error("{lock}: timed out waiting for the lock{}", holder_suffix(.holder))]
    Timeout {
        /// The lock as the user wrote it.
        lock: String,
        /// Who holds it, when that is known and was asked for.
        holder: Option<String>,
    },

    /// The lock file, directory or fd cannot be opened or created.
    #[error("cannot open lock {lock}: {}{}", .errno.desc().to_lowercase(), hint_suffix(.hint))]
    Open {
        /// The lock as the user wrote it.
        lock: String,
        /// What the kernel said.
        errno: Errno,
        /// What the user can do about it.
        hint: &'static str,
    },

    /// The lock artifact exists but is something lockwrap must not touch.
    #[error("{lock}: {reason}")]
    Artifact {
        /// The lock as the user wrote it.
        lock: String,
        /// Why it cannot be used, and what to do.
        reason: String,
    },

    /// The lock call itself failed (not a conflict).
    #[error("{lock}: {what}: {}", .errno.desc().to_lowercase())]
    Lock {
        /// The lock as the user wrote it.
        lock: String,
        /// The operation that failed.
        what: &'static str,
        /// What the kernel said.
        errno: Errno,
    },

    /// The command could not be started.
    #[error("{lock}: failed to execute {program}: {}", .errno.desc().to_lowercase())]
    Exec {
        /// The lock as the user wrote it.
        lock: String,
        /// The program that was to run.
        program: String,
        /// Why it could not run.
        errno: Errno,
    },

    /// A forwarded signal (SIGTERM, SIGINT, ...) arrived before the child was started.
    #[error("{lock}: interrupted by {} before the command started", .signal.as_str())]
    Interrupted {
        /// The lock as the user wrote it.
        lock: String,
        /// The signal that arrived.
        signal: Signal,
    },

    /// A system call that should not fail did (out of memory, fds, ...).
    #[error("{context}: {}", .errno.desc().to_lowercase())]
    Os {
        /// What lockwrap was doing, naming the lock.
        context: String,
        /// What the kernel said.
        errno: Errno,
    },

    /// A lock server could not be reached, or the lock may no longer be ours:
    /// worth retrying later.
    #[error("{lock}: {}", one_line(.reason))]
    TempFail {
        /// The lock as the user wrote it (never with a password).
        lock: String,
        /// What happened.
        reason: String,
    },

    /// A lock server refused the login (wrong or missing password, no
    /// access) or a right lockwrap needs: retrying will not help.
    #[error("{lock}: {}", one_line(.reason))]
    Permission {
        /// The lock as the user wrote it (never with a password).
        lock: String,
        /// What the server refused, and what to do.
        reason: String,
    },

    /// A setting cannot work as given: a database that does not exist, a URL
    /// that cannot be parsed, TLS that this build or the URL cannot provide.
    #[error("{lock}: {}", one_line(.reason))]
    Config {
        /// The lock as the user wrote it (never with a password).
        lock: String,
        /// The setting at fault, and what to do.
        reason: String,
    },

    /// `--check DIR`: the directory cannot hold scratch locks.
    #[error("--check {dir}: cannot use the directory: {}{}", .errno.desc().to_lowercase(), hint_suffix(.hint))]
    CheckDir {
        /// The directory as the user gave it.
        dir: String,
        /// What the kernel said.
        errno: Errno,
        /// What the user can do about it.
        hint: &'static str,
        /// The exit code.
        code: u8,
    },

    /// `--replace` cannot take the lock from its holder.
    #[error("{lock}: cannot replace the holder: {reason}")]
    Replace {
        /// The lock as the user wrote it.
        lock: String,
        /// Why not.
        reason: String,
    },

    /// An unknown option or a missing option argument under flock(1)'s
    /// name, in glibc getopt's words ("invalid option -- 'Z'"). Printed
    /// after argv\[0\] as invoked and followed by flock's "Try" line
    /// ([`crate::program::invoked_as`]).
    #[error("{0}")]
    Getopt(String),

    /// The `--verbose` lines could not be written to stdout (a full disk):
    /// exit 1 once the command has run, as flock(1).
    #[error("cannot write the --verbose lines to stdout: {}", .errno.desc().to_lowercase())]
    Stdout {
        /// What the kernel said.
        errno: Errno,
    },

    /// Help, the version, or what `--generate` makes could not be written
    /// whole to stdout (a full disk): what was written must not be used.
    #[error("cannot write {what} to stdout: {} (what was written is incomplete)", .errno.desc().to_lowercase())]
    Print {
        /// What lockwrap was printing ("the man page").
        what: &'static str,
        /// What the kernel said.
        errno: Errno,
    },
}

/// The exit code an errno implies wherever it occurs while creating or
/// writing a lock: a full or read-only filesystem cannot create it (73), a
/// process or system out of memory or fds is an OS error (71). None for an
/// errno that says nothing by itself.
fn errno_exit_code(errno: Errno) -> Option<u8> {
    match errno {
        Errno::EROFS | Errno::ENOSPC | Errno::EDQUOT => Some(EXIT_CANNOT_CREATE),
        Errno::ENOMEM | Errno::EMFILE | Errno::ENFILE => Some(EXIT_OS_ERROR),
        _ => None,
    }
}

fn holder_suffix(holder: &Option<String>) -> String {
    holder
        .as_deref()
        .map(|h| format!(": {h}"))
        .unwrap_or_default()
}

/// Text from a server or a driver on one line: line breaks and other control
/// characters become single spaces, so that a multi-line reply (an HTTP
/// error page on a Redis port) cannot spill over several lines.
fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_control())
        .filter(|part| !part.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!(" ({hint})")
    }
}

impl Error {
    /// The process exit code for this error; `conflict_code` is the `-E` value.
    pub fn exit_code(&self, conflict_code: u8) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Conflict { .. } | Error::Timeout { .. } => conflict_code,
            Error::Open { errno, .. } => errno_exit_code(*errno).unwrap_or(EXIT_CANNOT_OPEN),
            Error::Artifact { .. } => EXIT_CANNOT_OPEN,
            Error::Lock { errno, .. } => match errno {
                Errno::ENOLCK | Errno::ENOMEM => EXIT_OS_ERROR,
                _ => EXIT_LOCK_FAILED,
            },
            Error::Exec { .. } => EXIT_CANNOT_EXEC,
            Error::Interrupted { signal, .. } => 128u8.wrapping_add(*signal as u8),
            Error::Os { errno, .. } => errno_exit_code(*errno).unwrap_or(EXIT_OS_ERROR),
            Error::TempFail { .. } => EXIT_TEMPFAIL,
            Error::Permission { .. } => EXIT_NOPERM,
            Error::Config { .. } => EXIT_CONFIG,
            Error::Replace { .. } => EXIT_LOCK_FAILED,
            Error::CheckDir { code, .. } => *code,
            Error::Getopt(_) => EXIT_USAGE,
            // flock(1)'s close_stdout() exit code.
            Error::Stdout { .. } => 1,
            Error::Print { errno, .. } => errno_exit_code(*errno).unwrap_or(EXIT_OS_ERROR),
        }
    }

    /// The message to print (after the program's name and `: `): as
    /// [`Display`](std::fmt::Display) says it, or, under flock's name,
    /// in flock(1)'s words where flock has words for it.
    pub fn message(&self) -> String {
        if crate::program::is_flock()
            && let Some(text) = self.flock_wording()
        {
            return text;
        }
        self.to_string()
    }

    /// Prints the message on stderr, after the program's name: one line,
    /// or getopt's message after argv\[0\] as invoked with flock(1)'s "Try"
    /// line. Never panics: a broken stderr loses the message.
    pub fn print(&self) {
        match self {
            Error::Getopt(text) => {
                use std::io::Write as _;
                let _ = write!(
                    std::io::stderr(),
                    "{}: {text}\nTry '{} --help' for more information.\n",
                    crate::program::invoked_as(),
                    crate::program::prefix()
                );
            }
            _ => crate::say!("{}", self.message()),
        }
    }

    /// flock(1)'s text for the errors it reports itself, with the C
    /// library's strerror; None for what flock(1) has no words for.
    fn flock_wording(&self) -> Option<String> {
        let strerror = |errno: &Errno| crate::program::strerror(*errno);
        Some(match self {
            Error::Conflict { .. } => "failed to get lock".to_owned(),
            Error::Timeout { .. } => "timeout while waiting to get lock".to_owned(),
            Error::Open { lock, errno, .. } => {
                format!("cannot open lock file {lock}: {}", strerror(errno))
            }
            Error::Lock { lock, errno, .. } => format!("{lock}: {}", strerror(errno)),
            Error::Exec { program, errno, .. } => {
                format!("failed to execute {program}: {}", strerror(errno))
            }
            Error::Stdout { errno } => format!("write error: {}", strerror(errno)),
            _ => return None,
        })
    }

    /// Whether this error is the ordinary "someone else holds it" outcome, which
    /// flock(1) reports silently unless `--verbose` is given.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. } | Error::Timeout { .. })
    }

    /// An [`Error::Open`] with the hint that fits the errno.
    pub fn open(lock: &str, errno: Errno) -> Self {
        let hint = match errno {
            Errno::ENOENT => "the parent directory does not exist; create it first",
            Errno::EACCES | Errno::EPERM => "run as the job's user or choose a writable path",
            Errno::EROFS => "read-only filesystem; choose a lock path on a writable one",
            Errno::ENOSPC | Errno::EDQUOT => "no space left; free some or choose another path",
            Errno::ENOTDIR => "a component of the path is not a directory",
            Errno::ELOOP => "a symlink is in the way; lockwrap does not follow it",
            _ => "",
        };
        Error::Open {
            lock: lock.to_owned(),
            errno,
            hint,
        }
    }

    /// An [`Error::CheckDir`] with the hint that fits the errno.
    pub fn check_dir(dir: &std::path::Path, errno: Errno) -> Self {
        let hint = match errno {
            Errno::ENOENT => "it does not exist; give an existing directory",
            Errno::ENOTDIR => "give a directory, not a file",
            Errno::EACCES | Errno::EPERM => {
                "not writable by this user; run the check as the user whose locks will live there"
            }
            Errno::EROFS => "read-only filesystem: no lock that needs a file can be taken there",
            Errno::ENOSPC | Errno::EDQUOT => "no space left; free some first",
            _ => "",
        };
        let code = match errno {
            Errno::EACCES | Errno::EPERM => EXIT_NOPERM,
            _ => errno_exit_code(errno).unwrap_or(EXIT_CANNOT_OPEN),
        };
        Error::CheckDir {
            dir: dir.display().to_string(),
            errno,
            hint,
            code,
        }
    }

    /// An [`Error::CheckDir`] for a directory that exists but in which the
    /// scratch directory cannot be created. ENOENT and EPERM there do not
    /// mean "missing" and "another user would do": /proc answers ENOENT and
    /// /sys (or a directory marked immutable) EPERM, even to root.
    pub fn check_dir_create(dir: &std::path::Path, errno: Errno) -> Self {
        match errno {
            Errno::ENOENT | Errno::EPERM | Errno::EINVAL | Errno::EOPNOTSUPP => Error::CheckDir {
                dir: dir.display().to_string(),
                errno,
                hint: "nothing can be created in it, as in /proc, /sys or an immutable directory; give one where lock files can live",
                code: EXIT_CANNOT_CREATE,
            },
            _ => Error::check_dir(dir, errno),
        }
    }

    /// An [`Error::Os`] for a failed system call, naming the lock.
    pub fn os(lock: &str, what: &str, errno: Errno) -> Self {
        Error::Os {
            context: format!("{lock}: {what}"),
            errno,
        }
    }
}
