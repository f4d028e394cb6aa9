//! The command line: clap definitions plus flock(1)'s positional rules,
//! turned into an [`Invocation`]. Nothing here touches a lock.

use std::ffi::{OsStr, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use clap::{CommandFactory as _, FromArgMatches as _, Parser};

use crate::duration::parse_duration;
use crate::error::Error;
use crate::generate;
use crate::program;
use crate::size::{SizeError, parse_size};
use crate::spec::{ByteRange, LockSpec};

/// `--version`: the version and the server backends built in, so a bug
/// report or a packager can tell which build this is.
#[cfg(all(feature = "redis", feature = "postgres"))]
pub(crate) const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (redis, postgres, tls)");
#[cfg(all(feature = "redis", not(feature = "postgres")))]
pub(crate) const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (redis, tls)");
#[cfg(all(not(feature = "redis"), feature = "postgres"))]
pub(crate) const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (postgres, tls)");
#[cfg(not(any(feature = "redis", feature = "postgres")))]
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The headings that group the options in `--help` and the man page.
const FLOCK: &str = "flock(1) options";
const BEYOND: &str = "Beyond flock";
const MACHINES: &str = "Locks across machines";
const OUTPUT: &str = "Status, checks and output";

/// The long description: `--help` and the man page's DESCRIPTION.
const LONG_ABOUT: &str = "\
Run a command while holding a lock: a drop-in for flock(1).

lockwrap takes LOCK, runs COMMAND, and releases the lock when the command \
is done (or lockwrap dies). With -n it fails at once if someone else holds \
the lock, with -w it waits at most so long, else it waits as long as it \
takes. Besides flock(1)'s file locks it knows lock directories, lock files, \
abstract sockets, and locks on a Redis or PostgreSQL server that exclude \
across machines. Installed under the name flock, it behaves as util-linux \
flock(1), messages included.";

/// Run a command while holding a lock: a drop-in for flock(1)
#[derive(Debug, Parser)]
#[command(
    name = "lockwrap",
    version = VERSION,
    long_about = LONG_ABOUT,
    override_usage = "lockwrap [OPTIONS] <LOCK> <COMMAND> [ARGS...]\n       \
                      lockwrap [OPTIONS] <LOCK> -c <COMMAND_STRING>\n       \
                      lockwrap [OPTIONS] <LOCK> --also <LOCK>... <COMMAND> [ARGS...]\n       \
                      lockwrap [OPTIONS] <FD>\n       \
                      lockwrap [OPTIONS] --fd <N> <COMMAND> [ARGS...]\n       \
                      lockwrap --status [--json] <LOCK>...\n       \
                      lockwrap --check [--json] [DIR]\n       \
                      lockwrap --generate <KIND>",
    after_help = generate::AFTER_SHORT_HELP,
    trailing_var_arg = true,
    infer_long_args = true,
    args_override_self = true,
    disable_help_subcommand = true
)]
struct Cli {
    /// Take a shared lock (readers)
    ///
    /// Several readers may hold it at once; a writer (-x) excludes them
    /// all. flock and fcntl locks only.
    #[arg(short = 's', long = "shared", overrides_with_all = ["exclusive", "unlock"], help_heading = FLOCK)]
    shared: bool,

    /// Take an exclusive lock (the default)
    ///
    /// One holder at a time (also -e).
    #[arg(short = 'x', short_alias = 'e', long = "exclusive", overrides_with_all = ["shared", "unlock"], help_heading = FLOCK)]
    exclusive: bool,

    /// Remove a lock of the caller's fd
    ///
    /// Useful with an fd of the caller, which still holds the lock after
    /// an earlier lockwrap N.
    #[arg(short = 'u', long = "unlock", overrides_with_all = ["shared", "exclusive"], help_heading = FLOCK)]
    unlock: bool,

    /// Fail at once if the lock is held
    ///
    /// Exit 1, or the -E value, without waiting (also --nb, --nonblock).
    #[arg(short = 'n', long = "nonblocking", aliases = ["nb", "nonblock"], help_heading = FLOCK)]
    nonblock: bool,

    /// Wait at most this long for the lock
    ///
    /// Seconds (2.5) or 500ms, 30s, 5m, 2h; then fail as -n does. 0 is the
    /// same as -n (also --wait).
    #[arg(
        short = 'w',
        long = "timeout",
        alias = "wait",
        value_name = "SECS",
        allow_hyphen_values = true,
        action = clap::ArgAction::Append,
        help_heading = FLOCK
    )]
    // Every value given, the last one counting: flock(1) refuses a bad
    // one even when a later one overrides it. Parsed here, not by a clap
    // value parser: flock(1)'s exact messages must come out under its name.
    timeout: Vec<String>,

    /// Exit code if held (-n) or -w expires
    ///
    /// 0 to 255; without it, 1.
    #[arg(
        short = 'E',
        long = "conflict-exit-code",
        value_name = "N",
        allow_hyphen_values = true,
        action = clap::ArgAction::Append,
        help_heading = FLOCK
    )]
    // Every value given, as for -w, and parsed here for the same reason.
    conflict_exit_code: Vec<String>,

    /// The command does not inherit the lock
    ///
    /// Only lockwrap holds it, so a daemon the command leaves behind does
    /// not keep it.
    #[arg(short = 'o', long = "close", help_heading = FLOCK)]
    close: bool,

    /// Run this string with $SHELL -c
    ///
    /// /bin/sh when SHELL is unset; after the LOCK, or with --fd.
    #[arg(
        short = 'c',
        long = "command",
        value_name = "COMMAND_STRING",
        allow_hyphen_values = true,
        help_heading = FLOCK
    )]
    command: Option<OsString>,

    /// Exec the command in place (same PID)
    ///
    /// Instead of forking: the command then holds the lock itself.
    #[arg(short = 'F', long = "no-fork", help_heading = FLOCK)]
    no_fork: bool,

    /// Report waits and holders
    ///
    /// How long the lock took and what runs (on stdout), and who holds it
    /// on a conflict (on stderr).
    #[arg(long, help_heading = FLOCK)]
    verbose: bool,

    /// Use OFD fcntl locks (NFS-safe)
    ///
    /// Open-file-description fcntl locks for a PATH or an fd, which work
    /// on NFS (a PATH may also be written fcntl:PATH).
    #[arg(long, help_heading = FLOCK)]
    fcntl: bool,

    /// Lock bytes from OFFSET on
    ///
    /// 4096, 4K (KiB), 4KB (1000 bytes), 1M...; implies --fcntl.
    #[arg(long, value_name = "OFFSET", allow_hyphen_values = true, help_heading = FLOCK)]
    // A byte size, parsed here as -w is: flock(1) 2.42's messages.
    start: Option<String>,

    /// Lock N bytes (default: to the end)
    ///
    /// 0, the default, locks to the end of the file; implies --fcntl.
    #[arg(long, value_name = "N", allow_hyphen_values = true, help_heading = FLOCK)]
    length: Option<String>,

    /// Lock this open fd, run the command
    ///
    /// An fd the caller opened: lockwrap --fd 9 COMMAND.
    #[arg(long, value_name = "N", allow_hyphen_values = true, help_heading = FLOCK)]
    // Parsed here: flock(1)'s messages for a bad fd.
    fd: Option<String>,

    /// Let up to N holders run at once
    ///
    /// A semaphore of N from 1 to 10000; the command gets LOCKWRAP_SLOT.
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = slots_value, help_heading = BEYOND)]
    slots: Option<u32>,

    /// Take the lock from its current holder
    ///
    /// SIGTERM the holder, SIGKILL it after --kill-grace.
    #[arg(long, help_heading = BEYOND)]
    replace: bool,

    /// Stop the command after this long
    ///
    /// SIGTERM, then SIGKILL after --kill-grace, and exit 124; 0: no
    /// limit.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true, value_parser = duration_value, help_heading = BEYOND)]
    max_runtime: Option<Duration>,

    /// Time from SIGTERM to SIGKILL
    ///
    /// For --replace and --max-runtime; default 10s.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true, value_parser = duration_value, help_heading = BEYOND)]
    kill_grace: Option<Duration>,

    /// Reclaim a mkdir/excl lock this old
    ///
    /// A lock whose owner cannot be proven dead (another host, a
    /// different boot) is taken over once it is older than this.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true, value_parser = duration_value, help_heading = BEYOND)]
    stale_after: Option<Duration>,

    /// Also take this lock, all or none
    ///
    /// Repeatable, any kinds; may also follow LOCK: lockwrap A --also B
    /// COMMAND.
    #[arg(long, value_name = "LOCK", action = clap::ArgAction::Append, help_heading = BEYOND)]
    also: Vec<OsString>,

    /// Serve waiters first come, first served
    ///
    /// Waiters without --fair may still overtake.
    #[arg(long, help_heading = BEYOND)]
    fair: bool,

    /// How long a server keeps a lock unrenewed
    ///
    /// Redis and PostgreSQL locks: the server keeps a lock whose holder
    /// stops renewing it this long (default 30s); renewed every third.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true, value_parser = positive_duration_value, help_heading = MACHINES)]
    lease: Option<Duration>,

    // --- issue 13, item 7: once per interval across a fleet ---
    /// Keep the lock this long after taking it
    ///
    /// Even when the command ends sooner (or fails), so that a fleet whose
    /// cron jobs fire seconds apart runs the job once. Redis hands the rest
    /// to the server and exits at once; other locks keep lockwrap until
    /// then.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true, value_parser = duration_value, help_heading = BEYOND)]
    min_hold: Option<Duration>,

    /// Show who holds each LOCK
    ///
    /// Free or held, mode, pids, command, age; exit as -n would: 0 if it
    /// could be taken now, else the -E code.
    #[arg(long, help_heading = OUTPUT)]
    status: bool,

    /// JSON output for --status and --check
    ///
    /// With --status, one object per lock; with --check, one object.
    #[arg(long, help_heading = OUTPUT)]
    json: bool,

    // --- issue 13, item 8: does locking work here? ---
    /// Prove that locking works in DIR
    ///
    /// Real processes try each lock mechanism on the filesystem of DIR
    /// (default: the current directory); exit 0 if all exclude, 65 if one
    /// does not. Leaves nothing in DIR.
    #[arg(long, conflicts_with = "status", help_heading = OUTPUT)]
    check: bool,

    /// Print the man page or a completion script
    ///
    /// KIND: man, complete-bash, complete-zsh or complete-fish, to stdout;
    /// README.md says where to install them.
    #[arg(long, value_name = "KIND", hide_possible_values = true, exclusive = true, help_heading = OUTPUT)]
    generate: Option<generate::Kind>,

    /// Internal to --check: take LOCK, say so on stdout, hold it until
    /// stdin closes
    #[arg(long, hide = true, value_name = "LOCK")]
    check_holder: Option<OsString>,

    /// The lock, then the command and its arguments (or a single FD)
    #[arg(value_name = "LOCK", num_args = 0..)]
    args: Vec<OsString>,
}

/// How to lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `-s`: several shared holders may hold it at once.
    Shared,
    /// `-x` (default): one holder.
    Exclusive,
    /// `-u`: drop a lock held through the same open file description.
    Unlock,
}

/// How long to wait for a held lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitPolicy {
    /// `-n` or `-w 0`: fail at once.
    NonBlocking,
    /// `-w SECS`: wait at most this long.
    Timeout(Duration),
    /// The default: wait as long as it takes.
    Forever,
}

/// What to do once the arguments are understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// Take the lock, run the command, release.
    Run {
        /// The lock.
        lock: LockSpec,
        /// The lock exactly as given, for `LOCKWRAP_LOCK`.
        lock_text: OsString,
        /// argv of the command.
        command: Vec<OsString>,
    },
    /// flock(1)'s fd mode: lock (or unlock) an fd of the caller; with
    /// `--fd`, run a command while it is held.
    Fd {
        /// The caller's file descriptor.
        fd: RawFd,
        /// OFD fcntl locks on this byte range instead of flock(2)
        /// (`--fcntl`, `--start`, `--length`).
        fcntl: Option<ByteRange>,
        /// argv of the command, if any.
        command: Option<Vec<OsString>>,
    },
}

/// Everything the library needs to act; built only by [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// What to do.
    pub task: Task,
    /// Shared, exclusive or unlock.
    pub mode: Mode,
    /// Whether and how long to wait.
    pub wait: WaitPolicy,
    /// `--lease`: the lease of a server lock (None: the backend's default).
    pub lease: Option<Duration>,
    /// The `-E` value.
    pub conflict_exit_code: u8,
    /// `-o`: the child does not inherit the lock.
    pub close_in_child: bool,
    /// `-F`: exec in place.
    pub no_fork: bool,
    /// `--verbose`.
    pub verbose: bool,
    /// `--slots N` (1 without it).
    pub slots: u32,
    /// `--replace`.
    pub replace: bool,
    /// `--max-runtime`.
    pub max_runtime: Option<Duration>,
    /// `--kill-grace`.
    pub kill_grace: Duration,
    /// `--stale-after`.
    pub stale_after: Option<Duration>,
    /// `--also`: more locks taken with the LOCK of [`Task::Run`], all or
    /// none; each with its text as given, for `LOCKWRAP_LOCKS`.
    pub also: Vec<(LockSpec, OsString)>,
    /// `--min-hold`: keep the lock this long after taking it (None: release
    /// when the command is done).
    pub min_hold: Option<Duration>,
    /// `--fair`: wait in line behind the fair waiters that came first.
    pub fair: bool,
}

/// `lockwrap --status LOCK...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusQuery {
    /// The locks to report on.
    pub locks: Vec<LockSpec>,
    /// `--json`.
    pub json: bool,
    /// `-s`: a shared holder does not count as a conflict.
    pub shared: bool,
    /// `--slots N`: report on every slot.
    pub slots: u32,
    /// The `-E` value, the exit code when a lock is held.
    pub conflict_exit_code: u8,
}

/// `lockwrap --check [DIR]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckQuery {
    /// The directory whose filesystem is checked, as given (`.` by default).
    pub dir: std::path::PathBuf,
    /// `--json`.
    pub json: bool,
}

/// The outcome of parsing: something to do, or text to print and exit 0.
#[derive(Debug)]
pub enum Parsed {
    /// Run this (boxed: it is much larger than the other variants).
    Invocation(Box<Invocation>),
    /// `--status`: report on these locks.
    Status(StatusQuery),
    /// `--check`: prove that locking works in a directory.
    Check(CheckQuery),
    /// `--check-holder LOCK`: a holder process of `--check`.
    CheckHolder(OsString),
    /// `--generate KIND`: print the man page or a completion script.
    Generate(generate::Kind),
    /// `--help` or `--version`: print this to stdout and exit 0.
    Info(String),
}

/// Parses argv (including argv\[0\]) the way flock(1) does.
pub fn parse<I: IntoIterator<Item = OsString>>(argv: I) -> Result<Parsed, Error> {
    let argv: Vec<OsString> = argv.into_iter().collect();
    if argv.len() < 2 && program::is_flock() {
        return Err(Error::Usage(format!(
            "not enough arguments\n{}",
            flock_try_help()
        )));
    }
    let argv = if program::is_flock() {
        expand_flock_prefixes(argv)
    } else {
        argv
    };
    // The terminal's width and the long help's closing sections are for
    // --help only: a run that takes a lock neither reads the terminal nor
    // formats text it never shows.
    let parsed = Cli::command()
        .try_get_matches_from(&argv)
        .and_then(|mut matches| Cli::from_arg_matches_mut(&mut matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp => {
                    let help = match help_command()
                        .term_width(help_width())
                        .try_get_matches_from(&argv)
                    {
                        Err(again) => again.render().to_string(),
                        // Not reached: the same words ask for help again.
                        Ok(_) => e.render().to_string(),
                    };
                    Ok(Parsed::Info(help))
                }
                ErrorKind::DisplayVersion => Ok(Parsed::Info(e.render().to_string())),
                ErrorKind::ValueValidation => Err(invalid_value(&e)),
                _ if program::is_flock() => Err(getopt_error(&e, &argv)),
                _ => Err(usage(first_line_of(&e.render().to_string()))),
            };
        }
    };
    if let Some(lock) = cli.check_holder {
        return Ok(Parsed::CheckHolder(lock));
    }
    if let Some(kind) = cli.generate {
        return Ok(Parsed::Generate(kind));
    }
    if cli.check {
        return cli.into_check_query().map(Parsed::Check);
    }
    if cli.json && !cli.status {
        return Err(usage("--json goes with --status or --check"));
    }
    if cli.status {
        return cli.into_status_query().map(Parsed::Status);
    }
    cli.into_invocation()
        .map(|i| Parsed::Invocation(Box::new(i)))
}

/// The width that `--help` is wrapped to: the terminal's (stdout, stderr or
/// stdin, as clap looks), else `COLUMNS`, else 100; never under 40 (a
/// narrower text is one word a line, and `COLUMNS=0` or `1` is no terminal
/// anyone reads) nor over 100 (longer lines are hard to read).
fn help_width() -> usize {
    terminal_size::terminal_size()
        .map(|(terminal_size::Width(columns), _)| usize::from(columns))
        .or_else(|| {
            std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.trim().parse::<usize>().ok())
        })
        .filter(|columns| *columns > 0)
        .unwrap_or(100)
        .clamp(40, 100)
}

/// flock(1)'s long options: util-linux 2.42's, with `--fd` and `--command`
/// of its development version.
const FLOCK_LONG_OPTIONS: &[&str] = &[
    "shared",
    "exclusive",
    "unlock",
    "nonblocking",
    "nb",
    "timeout",
    "wait",
    "conflict-exit-code",
    "close",
    "command",
    "no-fork",
    "verbose",
    "fcntl",
    "start",
    "length",
    "fd",
    "help",
    "version",
];

/// Under flock's name, writes out in full each long option that abbreviates
/// exactly one of flock(1)'s own (`--st` is `--start`, `--le` `--length`),
/// as its getopt_long would read it, before clap, which knows lockwrap's
/// extra options too and would find `--st` ambiguous with `--status`. Only
/// the options before the LOCK: the command's words are left alone.
fn expand_flock_prefixes(argv: Vec<OsString>) -> Vec<OsString> {
    let command = Cli::command();
    let longs: Vec<(String, bool)> = command
        .get_arguments()
        .flat_map(|arg| {
            let takes_value = arg.get_action().takes_values();
            arg.get_long()
                .into_iter()
                .chain(arg.get_all_aliases().unwrap_or_default())
                .map(move |long| (long.to_owned(), takes_value))
        })
        .collect();
    let value_shorts: Vec<char> = command
        .get_arguments()
        .filter(|arg| arg.get_action().takes_values())
        .filter_map(|arg| arg.get_short())
        .collect();
    let mut out = Vec::with_capacity(argv.len());
    let mut words = argv.into_iter();
    out.extend(words.next());
    while let Some(word) = words.next() {
        let Some(text) = word.to_str() else {
            out.push(word);
            break;
        };
        if text == "--" || !text.starts_with('-') || text == "-" {
            out.push(word);
            break;
        }
        let mut takes_value = false;
        if let Some(long) = text.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            let known = |name: &str| longs.iter().find(|(long, _)| long == name);
            let mut full = known(name);
            let mut flocks = FLOCK_LONG_OPTIONS.iter().filter(|o| o.starts_with(name));
            if let (None, Some(only), None) = (full, flocks.next(), flocks.next()) {
                full = known(only);
                let mut expanded = format!("--{only}");
                if let Some(value) = value {
                    expanded.push('=');
                    expanded.push_str(value);
                }
                out.push(OsString::from(expanded));
            } else {
                // One of lockwrap's own, maybe shortened (`--slot 2`).
                let mut ours = longs.iter().filter(|(long, _)| long.starts_with(name));
                if let (None, Some(only), None) = (full, ours.next(), ours.next()) {
                    full = Some(only);
                }
                out.push(word.clone());
            }
            takes_value = value.is_none() && full.is_some_and(|(_, value)| *value);
        } else {
            // A bundle of short options: one that takes a value takes the
            // rest of the word, or the next word when it ends the bundle.
            let shorts = &text[1..];
            if let Some(at) = shorts.find(|c| value_shorts.contains(&c)) {
                takes_value = at + 1 == shorts.len();
            }
            out.push(word.clone());
        }
        if takes_value {
            out.extend(words.next());
        }
    }
    out.extend(words);
    out
}

/// The clap definitions, for `--generate`: the man page and the completion
/// scripts are rendered from the same definitions as `--help`.
pub fn command() -> clap::Command {
    help_command()
}

/// The clap definitions with everything only help shows: the long help's
/// sections after the options (lock specs, exit status, environment,
/// examples).
fn help_command() -> clap::Command {
    Cli::command().after_long_help(generate::after_long_help())
}

/// A value that a clap value parser refused, in the words of the values
/// parsed by hand: `invalid --slots: '0' is not a number from 1 to 10000`.
fn invalid_value(e: &clap::Error) -> Error {
    use clap::error::{ContextKind, ContextValue};
    let option = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.split(' ').next().unwrap_or_default(),
        _ => "value",
    };
    match std::error::Error::source(e) {
        Some(why) => usage(format!("invalid {option}: {why}")),
        None => usage(first_line_of(&e.render().to_string())),
    }
}

/// `--slots N`: 1 to 10000 (beyond, the slot files and waits cost more
/// than a semaphore is worth).
fn slots_value(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| format!("'{text}' is not a number from 1 to 10000"))
}

/// A DURATION option: 2.5, 500ms, 30s, 5m, 2h.
fn duration_value(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

/// A DURATION that must be more than 0 (`--lease`).
fn positive_duration_value(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err(format!("'{text}' must be positive")),
        d => Ok(d),
    }
}

/// A usage error with the pointer to --help that every usage error ends with.
/// Control characters of the values quoted in it (a newline, an escape
/// sequence) are shown escaped: the message stays one line, and the
/// terminal interprets nothing of what the caller typed.
fn usage(message: impl AsRef<str>) -> Error {
    Error::Usage(format!(
        "{} (see '{} --help')",
        crate::status::escape_controls(message.as_ref()),
        program::prefix()
    ))
}

/// A usage error in lockwrap's words, or, under flock's name, in flock(1)'s
/// (util-linux 2.38's where it has the option, newer ones' for --fd,
/// --start and --length), which add no pointer to --help.
fn usage_as(lockwrap: impl AsRef<str>, flock: impl Into<String>) -> Error {
    if program::is_flock() {
        Error::Usage(flock.into())
    } else {
        usage(lockwrap)
    }
}

fn flock_try_help() -> String {
    format!("Try '{} --help' for more information.", program::prefix())
}

/// clap's complaint about an option in glibc getopt's words, as flock(1)
/// prints them (argv: the command line as given, to quote the option the
/// way it was typed).
fn getopt_error(e: &clap::Error, argv: &[OsString]) -> Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.split(' ').next().unwrap_or_default(),
        _ => "",
    };
    let typed = |prefix: &str| {
        argv.iter()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .find(|a| !prefix.is_empty() && a.starts_with(prefix))
    };
    let last = argv
        .last()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = match e.kind() {
        ErrorKind::UnknownArgument if arg.starts_with("--") => format!(
            "unrecognized option '{}'",
            typed(arg).unwrap_or_else(|| arg.to_owned())
        ),
        ErrorKind::UnknownArgument if arg.starts_with('-') => {
            format!("invalid option -- '{}'", &arg[1..])
        }
        // The option that lacks its argument ends the command line.
        ErrorKind::InvalidValue if last.starts_with("--") => {
            // getopt names the option in full; a word that does not
            // abbreviate clap's name is an alias (--wait for --timeout).
            let name = if arg.starts_with(&last) { arg } else { &last };
            format!("option '{name}' requires an argument")
        }
        ErrorKind::InvalidValue if last.starts_with('-') => format!(
            "option requires an argument -- '{}'",
            last.chars().last().unwrap_or('?')
        ),
        ErrorKind::TooManyValues if !arg.is_empty() => {
            format!("option '{arg}' doesn't allow an argument")
        }
        _ => first_line_of(&e.render().to_string()),
    };
    Error::Getopt(text)
}

/// clap's message up to its first blank line, on one line.
fn first_line_of(clap_message: &str) -> String {
    let words: Vec<&str> = clap_message
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let line = words.join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_owned()
}

/// argv for `-c STRING`: `$SHELL -c STRING`, or `/bin/sh` when SHELL is unset or empty.
fn shell_command(script: OsString) -> Vec<OsString> {
    let shell = std::env::var_os("SHELL")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| OsString::from("/bin/sh"));
    vec![shell, OsString::from("-c"), script]
}

/// Whether `word` is `--also` or `--also=LOCK`.
fn is_also(word: &OsStr) -> bool {
    word == "--also" || word.as_encoded_bytes().starts_with(b"--also=")
}

/// For `--also LOCK` or `--also=LOCK` among the positionals: the LOCK
/// (taken from `rest` after a bare `--also`); None for any other word.
fn also_value(
    word: &OsStr,
    rest: &mut impl Iterator<Item = impl AsRef<OsStr>>,
) -> Result<Option<OsString>, Error> {
    if word == "--also" {
        return match rest.next() {
            Some(lock) => Ok(Some(lock.as_ref().to_owned())),
            None => Err(usage("--also needs a LOCK after it")),
        };
    }
    Ok(word
        .as_encoded_bytes()
        .strip_prefix(b"--also=")
        .map(|lock| OsStr::from_bytes(lock).to_owned()))
}

fn parse_fd(text: &str) -> Result<RawFd, Error> {
    text.trim_start()
        .parse::<RawFd>()
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| {
            let message = format!("invalid file descriptor: '{text}'");
            usage_as(&message, message.clone())
        })
}

/// A single positional that is an fd number as flock(1)'s strtol reads
/// it: leading blanks, a sign, decimal digits and nothing after them. The
/// number without the blanks and the `+`.
fn fd_number(text: &str) -> Option<&str> {
    let number = text.trim_start();
    let digits = number.strip_prefix(['+', '-']).unwrap_or(number);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(number.strip_prefix('+').unwrap_or(number))
}

/// flock(1) 2.38's words for a single argument that is not an fd number.
fn flock_bad_fd(text: &str) -> String {
    if fd_number(text).is_some() {
        format!("bad file descriptor: '{text}': Numerical result out of range")
    } else {
        format!("bad file descriptor: '{text}'")
    }
}

/// `--start` or `--length` (0 when not given); refused in lockwrap's words
/// or flock(1) 2.42's (`flock`: what strtosize_or_err() is told).
fn parse_byte_option(
    text: &Option<String>,
    option: &str,
    what: &str,
    flock: &str,
) -> Result<u64, Error> {
    let Some(text) = text else {
        return Ok(0);
    };
    parse_size(text).map_err(|e| match e {
        SizeError::Invalid => usage_as(
            format!(
                "invalid {option}: '{text}' is not {what} (a number of bytes, with K, M, G... for 1024s or KB, MB, GB... for 1000s)"
            ),
            format!("{flock}: '{text}': Invalid argument"),
        ),
        SizeError::TooLarge => usage_as(
            format!("invalid {option}: '{text}' is larger than a file offset can be (2^63 - 1)"),
            format!("{flock}: '{text}': Numerical result out of range"),
        ),
    })
}

/// One `-E` value: 0..255, read as flock(1)'s strtol reads it.
fn exit_code_value(text: &str) -> Result<u8, Error> {
    // Leading blanks and a `+` are read, trailing ones refused, as
    // flock(1)'s strtol does.
    let number = text.trim_start();
    number.parse::<u8>().map_err(|_| {
        // flock(1) 2.38 reads an int, then checks the range.
        let flock = match number.parse::<i32>() {
            Ok(_) => "exit code out of range (expected 0 to 255)".to_owned(),
            Err(e)
                if matches!(
                    e.kind(),
                    std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow
                ) =>
            {
                format!("invalid exit code: '{text}': Numerical result out of range")
            }
            Err(_) => format!("invalid exit code: '{text}'"),
        };
        usage_as(
            format!("invalid exit code (allowed values: 0-255): '{text}'"),
            flock,
        )
    })
}

impl Cli {
    fn slots(&self) -> Result<u32, Error> {
        Ok(self.slots.unwrap_or(1))
    }

    /// The last `-E` value (1 without one); every one given must be valid.
    fn conflict_exit_code(&self) -> Result<u8, Error> {
        let mut code = 1;
        for text in &self.conflict_exit_code {
            code = exit_code_value(text)?;
        }
        Ok(code)
    }

    fn into_check_query(self) -> Result<CheckQuery, Error> {
        let dir = match self.args.as_slice() {
            [] => std::path::PathBuf::from("."),
            [dir] => std::path::PathBuf::from(dir),
            _ => return Err(usage("--check takes at most one DIR")),
        };
        Ok(CheckQuery {
            dir,
            json: self.json,
        })
    }

    fn into_status_query(self) -> Result<StatusQuery, Error> {
        if self.args.is_empty() {
            return Err(usage("--status needs at least one LOCK"));
        }
        let mut texts = Vec::new();
        let mut words = self.args.iter();
        while let Some(word) = words.next() {
            // `--status A --also B`: positionals are all locks anyway.
            texts.push(also_value(word, &mut words)?.unwrap_or_else(|| word.clone()));
        }
        texts.extend(self.also.iter().cloned());
        let locks = texts
            .iter()
            .map(|text| {
                // As -n would refuse them.
                self.checked_lock(LockSpec::parse(text))
            })
            .collect::<Result<_, _>>()?;
        Ok(StatusQuery {
            locks,
            json: self.json,
            shared: self.shared,
            slots: self.slots()?,
            conflict_exit_code: self.conflict_exit_code()?,
        })
    }

    fn into_invocation(mut self) -> Result<Invocation, Error> {
        self.take_also_after_lock()?;
        if self.no_fork && self.close {
            let message = "the --no-fork and --close options are incompatible";
            return Err(usage_as(message, message));
        }
        let mode = if self.shared {
            Mode::Shared
        } else if self.unlock {
            Mode::Unlock
        } else {
            Mode::Exclusive
        };
        let conflict_exit_code = self.conflict_exit_code()?;
        let mut timeout = None;
        for text in &self.timeout {
            timeout = Some(parse_duration(text).map_err(|e| {
                usage_as(
                    format!("invalid timeout: {e}"),
                    format!("invalid timeout value: '{text}'"),
                )
            })?);
        }
        let wait = match (timeout, self.nonblock) {
            (_, true) => WaitPolicy::NonBlocking,
            (None, false) => WaitPolicy::Forever,
            (Some(d), false) if d.is_zero() => WaitPolicy::NonBlocking,
            (Some(d), false) => WaitPolicy::Timeout(d),
        };
        let task = self.task()?;
        let slots = self.slots()?;
        if slots > 1 && !matches!(task, Task::Run { .. }) {
            return Err(usage("--slots needs a LOCK, not an fd"));
        }
        if self.replace && !matches!(task, Task::Run { .. }) {
            return Err(usage("--replace needs a LOCK, not an fd"));
        }
        let min_hold = self.min_hold(&task)?;
        if self.fair && !matches!(task, Task::Run { .. }) {
            return Err(usage("--fair needs a LOCK, not an fd"));
        }
        if self.no_fork && self.max_runtime.is_some() {
            return Err(usage(
                "--max-runtime needs lockwrap to stay: it cannot be used with -F/--no-fork",
            ));
        }
        let also = self.also_locks(&task, slots)?;
        Ok(Invocation {
            task,
            mode,
            wait,
            lease: self.lease,
            conflict_exit_code,
            close_in_child: self.close,
            no_fork: self.no_fork,
            verbose: self.verbose,
            slots,
            replace: self.replace,
            // 0 means no limit, as in timeout(1).
            max_runtime: self.max_runtime.filter(|limit| !limit.is_zero()),
            kill_grace: self.kill_grace.unwrap_or(crate::DEFAULT_KILL_GRACE),
            stale_after: self.stale_after,
            also,
            min_hold,
            fair: self.fair,
        })
    }

    /// `LOCK --also B [--also C] COMMAND`: `--also` right after the LOCK is
    /// an option, not the command (as `LOCK -c STRING` is). Moves those
    /// locks to `self.also`.
    fn take_also_after_lock(&mut self) -> Result<(), Error> {
        if self.fd.is_some() || self.args.len() < 2 {
            return Ok(());
        }
        let mut rest = self.args.split_off(1).into_iter().peekable();
        while let Some(word) = rest.next_if(|w| is_also(w)) {
            if let Some(lock) = also_value(&word, &mut rest)? {
                self.also.push(lock);
            }
        }
        self.args.extend(rest);
        Ok(())
    }

    /// The `--also` locks, parsed as LOCK is, or why they cannot be used
    /// with the rest of the command line.
    fn also_locks(&self, task: &Task, slots: u32) -> Result<Vec<(LockSpec, OsString)>, Error> {
        if self.also.is_empty() {
            return Ok(Vec::new());
        }
        let Task::Run { lock_text, .. } = task else {
            return Err(usage(
                "--also needs a LOCK, not an fd (--fd or a single FD)",
            ));
        };
        if slots > 1 {
            return Err(usage("--also cannot be combined with --slots"));
        }
        if self.start.is_some() || self.length.is_some() {
            return Err(usage(
                "--start and --length cannot be combined with --also (lock a byte range on its own)",
            ));
        }
        if self.replace {
            return Err(usage(
                "--replace cannot be combined with --also (replace the holder of each lock on its own first)",
            ));
        }
        let also: Vec<(LockSpec, OsString)> = self
            .also
            .iter()
            .map(|text| Ok((self.checked_lock(LockSpec::parse(text))?, text.clone())))
            .collect::<Result<_, _>>()?;
        for text in std::iter::once(lock_text).chain(also.iter().map(|(_, text)| text)) {
            if text.as_encoded_bytes().contains(&b'\n') {
                // Shown as a lock spec (a server URL's password is
                // redacted), on one line.
                let lock = crate::status::escape_controls(&LockSpec::parse(text).to_string());
                return Err(usage(format!(
                    "'{lock}': a lock of a set cannot contain a newline (LOCKWRAP_LOCKS lists them one per line)"
                )));
            }
        }
        Ok(also)
    }

    /// `--min-hold DURATION` (0: none). Someone must keep the lock once the
    /// command is done: with -F nobody is left (even a Redis lock, which the
    /// server could keep, needs lockwrap to renew it while the command
    /// runs), and without a command there is nothing to hold it after.
    fn min_hold(&self, task: &Task) -> Result<Option<Duration>, Error> {
        let Some(hold) = self.min_hold.filter(|hold| !hold.is_zero()) else {
            return Ok(None);
        };
        if self.no_fork {
            return Err(usage(
                "--min-hold needs lockwrap to keep the lock after the command: it cannot be used with -F/--no-fork",
            ));
        }
        if self.unlock || matches!(task, Task::Fd { command: None, .. }) {
            return Err(usage(
                "--min-hold needs a command to hold the lock for (not -u, nor an fd alone)",
            ));
        }
        Ok(Some(hold))
    }

    /// flock(1)'s positional rules: with `--fd`, every positional is the
    /// command; one positional is an fd number; two or more start with a path.
    fn task(&self) -> Result<Task, Error> {
        let mut positional = self.args.clone();
        if let Some(fd_text) = &self.fd {
            let fd = parse_fd(fd_text)?;
            let command = match (&self.command, positional.is_empty()) {
                (Some(script), true) => shell_command(script.clone()),
                (Some(_), false) => {
                    let message = "-c requires exactly one command argument";
                    return Err(usage_as(message, message));
                }
                (None, false) => self.split_command(positional)?,
                (None, true) => {
                    return Err(usage_as("missing command after --fd N", "missing command"));
                }
            };
            return Ok(Task::Fd {
                fd,
                fcntl: self.fcntl_range()?,
                command: Some(command),
            });
        }
        if self.command.is_some() {
            if program::is_flock() {
                // flock(1) 2.38 knows -c only after the file.
                return Err(Error::Getopt("invalid option -- 'c'".to_owned()));
            }
            return Err(usage(
                "-c before the lock is only valid with --fd; write: lockwrap LOCK -c 'COMMAND'",
            ));
        }
        match positional.len() {
            0 => Err(usage_as(
                "missing lock: give a LOCK and a COMMAND, or an FD",
                "requires file descriptor, file or directory",
            )),
            1 => {
                let text = positional.remove(0);
                let text = text.to_string_lossy();
                if let Some(digits) = fd_number(&text) {
                    if program::is_flock()
                        && digits.starts_with('-')
                        && digits.parse::<i32>().is_ok()
                    {
                        // flock(1) 2.38 reads an int and calls flock() on it.
                        return Err(Error::Lock {
                            lock: digits.to_owned(),
                            what: "not an open file descriptor",
                            errno: nix::errno::Errno::EBADF,
                        });
                    }
                    let fd = parse_fd(&text).map_err(|e| {
                        if program::is_flock() {
                            Error::Usage(flock_bad_fd(&text))
                        } else {
                            e
                        }
                    })?;
                    Ok(Task::Fd {
                        fd,
                        fcntl: self.fcntl_range()?,
                        command: None,
                    })
                } else {
                    // Shown as a lock spec: a server URL's password is redacted.
                    let lock = LockSpec::parse(text.as_ref().as_ref());
                    Err(usage_as(
                        format!(
                            "{lock}: missing command (lockwrap LOCK COMMAND [ARGS...], or lockwrap LOCK -c 'COMMAND')"
                        ),
                        flock_bad_fd(&text),
                    ))
                }
            }
            _ => {
                let lock_text = positional.remove(0);
                let mut lock = LockSpec::parse(&lock_text);
                if lock_text.is_empty() && program::is_flock() {
                    // flock(1) opens "" as any path, once the command line
                    // has been found usable.
                    self.split_command(positional)?;
                    return Err(Error::open("", nix::errno::Errno::ENOENT));
                }
                lock = self.checked_lock(lock)?;
                let command = self.split_command(positional)?;
                Ok(Task::Run {
                    lock,
                    lock_text,
                    command,
                })
            }
        }
    }

    /// `--fcntl`, `--start`, `--length`: None for flock(2) locks, else the
    /// byte range of an OFD fcntl lock (the whole file for `--fcntl` alone).
    fn fcntl_range(&self) -> Result<Option<ByteRange>, Error> {
        if !self.fcntl && self.start.is_none() && self.length.is_none() {
            return Ok(None);
        }
        Ok(Some(ByteRange {
            start: parse_byte_option(
                &self.start,
                "--start",
                "a byte offset",
                "invalid as start offset",
            )?,
            length: parse_byte_option(
                &self.length,
                "--length",
                "a byte count",
                "invalid as length of lock range",
            )?,
        }))
    }

    /// A LOCK made an OFD fcntl lock on its byte range when `--fcntl`,
    /// `--start` or `--length` asks for one; they apply to file locks only.
    /// A lock named on the command line, as it will be taken: refused when
    /// it names nothing, normalised, and given the byte range of
    /// `--start`/`--length`.
    fn checked_lock(&self, lock: LockSpec) -> Result<LockSpec, Error> {
        if lock.is_empty() {
            // The spec, not the text: a server URL's password is redacted
            // in the spec's Display.
            return Err(usage(format!(
                "'{lock}': the lock has an empty path or name"
            )));
        }
        self.kernel_lock(lock.normalised().map_err(usage)?)
    }

    fn kernel_lock(&self, lock: LockSpec) -> Result<LockSpec, Error> {
        let Some(range) = self.fcntl_range()? else {
            return Ok(lock);
        };
        lock.with_fcntl(range).map_err(|other| {
            let options = if self.start.is_some() || self.length.is_some() {
                "--start and --length apply"
            } else {
                "--fcntl applies"
            };
            usage(format!(
                "{other}: {options} to file locks only (PATH or fcntl:PATH), not to {} locks",
                other.kind()
            ))
        })
    }

    /// `-c STRING` after the lock, or a plain argv.
    fn split_command(&self, words: Vec<OsString>) -> Result<Vec<OsString>, Error> {
        let first = words.first().and_then(|w| w.to_str());
        match first {
            Some(flag @ ("-c" | "--command")) => {
                if words.len() != 2 {
                    let message = format!("{flag} requires exactly one command argument");
                    return Err(usage_as(&message, message.clone()));
                }
                Ok(shell_command(words[1].clone()))
            }
            _ => Ok(words),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(args: &[&str]) -> Result<Invocation, Error> {
        let argv = std::iter::once("lockwrap")
            .chain(args.iter().copied())
            .map(OsString::from);
        match parse(argv)? {
            Parsed::Invocation(i) => Ok(*i),
            _ => panic!("not an invocation"),
        }
    }

    #[test]
    fn options_stop_at_the_lock() {
        let i = inv(&["-n", "lk", "-w", "5", "true"]).unwrap();
        assert_eq!(i.wait, WaitPolicy::NonBlocking);
        match i.task {
            Task::Run { command, .. } => assert_eq!(command, ["-w", "5", "true"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn single_number_is_an_fd_and_two_positionals_start_with_a_path() {
        assert!(matches!(inv(&["9"]).unwrap().task, Task::Fd { fd: 9, .. }));
        assert!(matches!(
            inv(&["9", "true"]).unwrap().task,
            Task::Run { .. }
        ));
        assert!(inv(&["lk"]).is_err());
    }

    #[test]
    fn last_mode_wins_and_wait_zero_is_nonblocking() {
        assert_eq!(inv(&["-s", "-x", "l", "t"]).unwrap().mode, Mode::Exclusive);
        assert_eq!(inv(&["-x", "-s", "l", "t"]).unwrap().mode, Mode::Shared);
        assert_eq!(
            inv(&["-w", "0", "l", "t"]).unwrap().wait,
            WaitPolicy::NonBlocking
        );
        assert_eq!(
            inv(&["-w0.5", "l", "t"]).unwrap().wait,
            WaitPolicy::Timeout(Duration::from_millis(500))
        );
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["-E", "256", "l", "t"][..],
            &["-E", "-1", "l", "t"],
            &["-w", "-1", "l", "t"],
            &["-w", "nan", "l", "t"],
            &["-F", "-o", "l", "t"],
            &["--bogus", "l", "t"],
            &["l", "-c"],
            &["l", "-c", "a", "b"],
            &["-c", "x", "l"],
            &[],
        ] {
            let e = inv(args).unwrap_err();
            assert_eq!(e.exit_code(1), 64, "{args:?}");
        }
    }

    #[test]
    fn repeated_options_are_allowed_as_in_flock() {
        assert_eq!(
            inv(&["-n", "-n", "--verbose", "--verbose", "l", "t"])
                .unwrap()
                .wait,
            WaitPolicy::NonBlocking
        );
        assert_eq!(
            inv(&["-E", "3", "-E", "4", "l", "t"])
                .unwrap()
                .conflict_exit_code,
            4
        );
    }

    #[test]
    fn long_prefixes_and_aliases_work() {
        assert_eq!(
            inv(&["--nonb", "l", "t"]).unwrap().wait,
            WaitPolicy::NonBlocking
        );
        assert_eq!(
            inv(&["--nb", "l", "t"]).unwrap().wait,
            WaitPolicy::NonBlocking
        );
        assert_eq!(
            inv(&["--conflict=7", "l", "t"]).unwrap().conflict_exit_code,
            7
        );
        assert_eq!(inv(&["-e", "l", "t"]).unwrap().mode, Mode::Exclusive);
    }
}
