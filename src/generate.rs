//! `lockwrap --generate man|complete-bash|complete-zsh|complete-fish`, and
//! the reference texts (lock specs, exit codes, environment, examples) that
//! both `--help` and the man page show. Everything is rendered from the
//! clap definitions of [`crate::cli`], so the man page, the completions and
//! `--help` cannot drift apart. Nothing here parses a command line or
//! touches a lock.

use clap::ValueEnum;

/// What `--generate` writes to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// The man page, roff: `lockwrap --generate man > lockwrap.1`.
    Man,
    /// A bash completion script.
    CompleteBash,
    /// A zsh completion script (`_lockwrap`).
    CompleteZsh,
    /// A fish completion script.
    CompleteFish,
}

impl Kind {
    /// What it is, for messages: "the man page".
    pub fn what(self) -> &'static str {
        match self {
            Kind::Man => "the man page",
            _ => "the completion script",
        }
    }
}

/// One entry of a reference table: a term and what it means.
pub(crate) type Entry = (&'static str, &'static str);

/// What a LOCK can be, as `--help` and LOCK SPECS in the man page list it.
pub(crate) const LOCK_SPECS: &[Entry] = &[
    (
        "PATH, flock:PATH",
        "flock(2) on a file or directory (created if missing, never written).",
    ),
    (
        "fcntl:PATH",
        "Open-file-description fcntl locks (also --fcntl PATH); they work on NFS.",
    ),
    (
        "mkdir:PATH",
        "An atomic lock directory, removed on release.",
    ),
    (
        "excl:PATH",
        "An O_CREAT|O_EXCL lock file, removed on release.",
    ),
    (
        "@NAME, abstract:NAME",
        "A Linux abstract unix socket: no file at all.",
    ),
    (
        "redis://HOST[:PORT][/DB]#NAME",
        "A lease on a Redis server, across machines (rediss:// for TLS).",
    ),
    (
        "redis+sentinel://HOST:PORT[,...]/MASTER#NAME",
        "The same on the master that Sentinel names.",
    ),
    (
        "postgres://[USER@]HOST[:PORT]/DB#NAME",
        "A PostgreSQL session advisory lock.",
    ),
];

/// The exit statuses, as `--help` and EXIT STATUS list them.
pub(crate) const EXIT_CODES: &[Entry] = &[
    (
        "the command's",
        "Once the command has run: its status, 128+N if signal N killed it.",
    ),
    (
        "1 (or the -E value)",
        "The lock is held (-n), or -w expired.",
    ),
    ("64", "Usage error."),
    ("65", "A lock call failed."),
    ("66", "The lock cannot be opened."),
    ("69", "The command cannot be run."),
    ("71", "System error."),
    ("73", "Read-only or full filesystem."),
    ("75", "Lock server unreachable, or the lock was lost."),
    (
        "77",
        "Refused: a server's login or a right; --check's DIR not writable.",
    ),
    (
        "78",
        "A setting that cannot work: a server URL, database, TLS certificate.",
    ),
    ("124", "--max-runtime expired and the command was stopped."),
    ("128+N", "lockwrap got signal N while waiting for the lock."),
];

/// The environment read or set, as `--help` and ENVIRONMENT list it.
pub(crate) const ENVIRONMENT: &[Entry] = &[
    ("LOCKWRAP_LOCK", "Set for the command: the LOCK as given."),
    (
        "LOCKWRAP_LOCKS",
        "Set for the command with --also: every lock of the set, one a line.",
    ),
    (
        "LOCKWRAP_SLOT",
        "Set for the command with --slots N: the slot it holds (0..N-1).",
    ),
    (
        "LOCKWRAP_TOKEN",
        "Set for the command of a Redis or PostgreSQL lock: a fencing token \
         that grows with every acquisition.",
    ),
    (
        "LOCKWRAP_TOKENS",
        "Set with --also: each server lock's token and lock, one a line.",
    ),
    ("SHELL", "The shell of -c (/bin/sh when unset or empty)."),
    (
        "REDISCLI_AUTH",
        "The Redis password when the URL has none, as for redis-cli.",
    ),
    (
        "PGHOST, PGPORT, PGUSER, PGDATABASE",
        "What a postgres:// URL leaves out, as libpq reads them.",
    ),
    (
        "PGPASSWORD, PGPASSFILE, HOME",
        "The PostgreSQL password: PGPASSWORD, else the line of PGPASSFILE \
         (default ~/.pgpass) that matches.",
    ),
    (
        "PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY",
        "TLS to PostgreSQL, as libpq reads them.",
    ),
    (
        "SSL_CERT_FILE, SSL_CERT_DIR",
        "The CA certificates that rediss:// and verified PostgreSQL TLS trust \
         instead of the system's.",
    ),
    (
        "COLUMNS",
        "The width of --help when no stdio is a terminal (40 to 100), and \
         of the waiting line when the terminal does not tell its own.",
    ),
    (
        "TERM",
        "TERM=dumb: no live waiting line (such a terminal cannot redraw one). \
         lockwrap prints no colour, so NO_COLOR has nothing to turn off.",
    ),
];

/// Examples: what it does, then the command line (each short enough for
/// an 80-column terminal).
pub(crate) const EXAMPLES: &[Entry] = &[
    (
        "A cron job that skips its run while the last one still runs:",
        "*/5 * * * * lockwrap -n /run/lock/backup.lock /usr/local/bin/backup",
    ),
    (
        "Wait up to 30 seconds, then run a shell command:",
        "lockwrap -w 30s mkdir:/var/tmp/deploy.lock -c 'make deploy'",
    ),
    (
        "Once across machines (a Redis lease), $LOCKWRAP_TOKEN to the command:",
        "lockwrap -n redis://locks.internal#nightly ./nightly.sh",
    ),
];

/// The text after the options in `--help`: the reference tables, each
/// entry's meaning on its own indented line, which clap wraps to the
/// terminal keeping that indentation.
pub(crate) fn after_long_help() -> String {
    let mut text = String::new();
    let mut section = |title: &str, entries: &[Entry]| {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(title);
        text.push_str(":\n");
        for (term, meaning) in entries {
            // A short term shares its line with a meaning that fits 80
            // columns; else the meaning goes on lines of its own, which
            // clap wraps at that indentation.
            if term.len() < 8 && meaning.len() <= 70 {
                text.push_str(&format!("  {term:<8}{meaning}\n"));
            } else {
                text.push_str(&format!("  {term}\n          {meaning}\n"));
            }
        }
    };
    section("Lock specs", LOCK_SPECS);
    section("Exit status", EXIT_CODES);
    section("Environment", ENVIRONMENT);
    text.push_str("\nExamples:\n");
    for (what, command) in EXAMPLES {
        text.push_str(&format!("  # {what}\n  {command}\n"));
    }
    text.push_str(
        "\nThe manual: lockwrap --generate man | man -l -   (see README.md to install it)\n",
    );
    text
}

/// The text after the options in `-h`.
pub(crate) const AFTER_SHORT_HELP: &str = "\
LOCK: PATH, fcntl:PATH, mkdir:PATH, excl:PATH, @NAME, redis://HOST#NAME, \
postgres://HOST/DB#NAME

--help has more: lock specs, exit status, environment, examples.";

/// The man page, or a completion script for a shell, from the clap
/// definitions in `cmd`.
pub fn render(kind: Kind, cmd: clap::Command) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::new();
    let shell = match kind {
        Kind::Man => {
            man_page(cmd, &mut out)?;
            return Ok(out);
        }
        Kind::CompleteBash => clap_complete::Shell::Bash,
        Kind::CompleteZsh => clap_complete::Shell::Zsh,
        Kind::CompleteFish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut without_hidden(cmd), "lockwrap", &mut out);
    Ok(out)
}

/// `cmd` without its hidden options (`--check-holder`, internal to
/// `--check`): --help and the man page leave them out, but clap_complete
/// would offer them.
fn without_hidden(cmd: clap::Command) -> clap::Command {
    clap::Command::new("lockwrap")
        .version(crate::cli::VERSION)
        .args(
            cmd.get_arguments()
                .filter(|arg| !arg.is_hide_set())
                .cloned(),
        )
}

/// clap_mangen's title, NAME, SYNOPSIS, DESCRIPTION and OPTIONS, then the
/// reference sections in roff.
fn man_page(cmd: clap::Command, out: &mut Vec<u8>) -> Result<(), std::io::Error> {
    use std::io::Write as _;
    // The title line by hand: clap_mangen writes an empty date as nothing
    // at all, which moves the version into the date's place and the
    // manual's name into the version's.
    writeln!(
        out,
        ".TH {} 1 \"\" \"{} {}\" \"User Commands\"",
        roff_text(cmd.get_name()),
        roff_text(cmd.get_name()),
        roff_text(cmd.get_version().unwrap_or_default()),
    )?;
    let man = clap_mangen::Man::new(cmd);
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    let mut table = |title: &str, entries: &[Entry]| -> std::io::Result<()> {
        writeln!(out, ".SH \"{}\"", roff_text(title))?;
        for (term, meaning) in entries {
            writeln!(
                out,
                ".TP\n\\fB{}\\fR\n{}",
                roff_text(term),
                roff_line(meaning)
            )?;
        }
        Ok(())
    };
    table("LOCK SPECS", LOCK_SPECS)?;
    table("EXIT STATUS", EXIT_CODES)?;
    table("ENVIRONMENT", ENVIRONMENT)?;
    writeln!(out, ".SH EXAMPLES")?;
    for (what, command) in EXAMPLES {
        writeln!(
            out,
            ".PP\n{}\n.PP\n.RS 4\n.nf\n{}\n.fi\n.RE",
            roff_line(what),
            roff_line(command)
        )?;
    }
    writeln!(
        out,
        ".SH \"SEE ALSO\"\n\\fBflock\\fR(1), \\fBlslocks\\fR(8), \\fBflock\\fR(2), \\fBfcntl\\fR(2)"
    )?;
    Ok(())
}

/// Text for roff: backslashes and dashes escaped, so `--fcntl` stays two
/// ASCII hyphens (copy-pasteable) and `\` stays itself.
fn roff_text(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

/// A line of text for roff: as [`roff_text`], and protected from being
/// read as a request (a line that starts with `.` or `'`).
fn roff_line(text: &str) -> String {
    let text = roff_text(text);
    if text.starts_with(['.', '\'']) {
        format!("\\&{text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_escapes_what_roff_would_read_otherwise() {
        assert_eq!(roff_line("--also"), "\\-\\-also");
        assert_eq!(roff_line(".x"), "\\&.x");
        assert_eq!(roff_text("a\\b"), "a\\eb");
    }
}
