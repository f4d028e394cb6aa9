//! How lockwrap explains and installs itself: `-h` and `--help`, the man
//! page and the completion scripts of `--generate`, `--version`, and the
//! one-line errors of values that clap parses.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Output, Sandbox};

/// `lockwrap ARGS` with `COLUMNS` set, stdout a file (not a terminal).
fn lockwrap_at(sb: &Sandbox, columns: &str, args: &[&str]) -> Output {
    let mut cmd = sb.lockwrap(args);
    cmd.env("COLUMNS", columns);
    sb.run(cmd)
}

/// The headings of an options section in `-h` and `--help`: each line
/// under one of them is an option (or its help).
const OPTION_HEADINGS: &[&str] = &[
    "Options:",
    "flock(1) options:",
    "Beyond flock:",
    "Locks across machines:",
    "Status, checks and output:",
];

#[test]
fn help_fits_80_columns_and_short_help_is_one_line_per_option() {
    let sb = Sandbox::new("help80");
    let long = lockwrap_at(&sb, "80", &["--help"]);
    long.assert_code(0);
    let short = lockwrap_at(&sb, "80", &["-h"]);
    short.assert_code(0);
    for (name, out) in [("--help", &long), ("-h", &short)] {
        for line in out.stdout.lines() {
            assert!(
                line.chars().count() <= 80,
                "{name} at COLUMNS=80 has a line of {} columns: {line:?}",
                line.chars().count()
            );
        }
    }
    assert!(
        short.stdout.lines().count() * 2 < long.stdout.lines().count(),
        "-h ({} lines) is not much shorter than --help ({} lines)",
        short.stdout.lines().count(),
        long.stdout.lines().count()
    );
    // In -h every line of an options section is an option: none wraps.
    let mut in_options = false;
    for line in short.stdout.lines() {
        if OPTION_HEADINGS.contains(&line) {
            in_options = true;
        } else if line.is_empty() {
            in_options = false;
        } else if in_options {
            assert!(
                line.trim_start().starts_with('-'),
                "-h: an option's help takes more than one line: {line:?}\n{}",
                short.stdout
            );
        }
    }
    for heading in OPTION_HEADINGS {
        assert!(long.stdout.contains(heading), "--help lacks {heading}");
    }
    for section in [
        "Lock specs:",
        "Exit status:",
        "Environment:",
        "Examples:",
        "LOCKWRAP_TOKEN",
        "REDISCLI_AUTH",
        "PGPASSWORD",
        "SSL_CERT_FILE",
    ] {
        assert!(long.stdout.contains(section), "--help lacks {section}");
    }
    // Wider, it uses the width: a narrow terminal is not assumed.
    let wide = lockwrap_at(&sb, "100", &["--help"]);
    assert!(
        wide.stdout.lines().any(|l| l.chars().count() > 80),
        "--help at COLUMNS=100 is still cut at 80"
    );
}

#[test]
fn version_names_the_server_backends_built_in() {
    let sb = Sandbox::new("version");
    let out = sb.run(sb.lockwrap(["--version"]));
    out.assert_code(0);
    let mut features = Vec::new();
    if cfg!(feature = "redis") {
        features.push("redis");
    }
    if cfg!(feature = "postgres") {
        features.push("postgres");
    }
    let expected = if features.is_empty() {
        format!("lockwrap {}\n", env!("CARGO_PKG_VERSION"))
    } else {
        features.push("tls");
        format!(
            "lockwrap {} ({})\n",
            env!("CARGO_PKG_VERSION"),
            features.join(", ")
        )
    };
    assert_eq!(out.stdout, expected);
}

#[test]
fn man_page_renders_with_man_and_has_every_section() {
    let sb = Sandbox::new("man");
    let out = sb.run(sb.lockwrap(["--generate", "man"]));
    out.assert_code(0);
    let page = sb.work_path("lockwrap.1");
    std::fs::write(&page, &out.stdout).unwrap();
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .unwrap_or_else(|e| panic!("cannot run man ({e}): apt-get install man-db"));
    let text = String::from_utf8_lossy(&rendered.stdout);
    let warnings = String::from_utf8_lossy(&rendered.stderr);
    assert!(rendered.status.success(), "man -l failed: {warnings}");
    assert_eq!(warnings, "", "man -l warns about the page");
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "LOCK SPECS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(
            text.lines().any(|l| l == section),
            "the man page has no {section} section:\n{text}"
        );
    }
    for word in [
        "--no-fork",
        "mkdir:PATH",
        "LOCKWRAP_LOCK",
        "flock(1)",
        "lslocks(8)",
    ] {
        assert!(text.contains(word), "the man page does not mention {word}");
    }
}

/// What bash's completion for lockwrap offers for the last word of `line`,
/// the script sourced in a non-interactive bash.
fn bash_completions(sb: &Sandbox, script: &Path, words: &[&str]) -> Vec<String> {
    let driver = r#"
        source "$1"; shift
        COMP_WORDS=("$@")
        COMP_CWORD=$(( $# - 1 ))
        COMP_LINE="$*"
        COMP_POINT=${#COMP_LINE}
        _lockwrap lockwrap "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(driver)
        .arg("bash")
        .arg(script)
        .args(words);
    let out = sb.run(cmd);
    out.assert_code(0);
    assert_eq!(out.stderr, "", "the completion script fails in bash");
    out.stdout.lines().map(|l| l.trim().to_owned()).collect()
}

#[test]
fn bash_completion_completes_options() {
    let sb = Sandbox::new("bash");
    let out = sb.run(sb.lockwrap(["--generate", "complete-bash"]));
    out.assert_code(0);
    let script = sb.work_path("lockwrap.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    assert_eq!(
        bash_completions(&sb, &script, &["lockwrap", "--no-f"]),
        ["--no-fork"]
    );
    let kinds = bash_completions(&sb, &script, &["lockwrap", "--generate", "complete-"]);
    assert_eq!(kinds, ["complete-bash", "complete-zsh", "complete-fish"]);
}

#[test]
fn zsh_and_fish_completions_are_generated() {
    let sb = Sandbox::new("zshfish");
    for (kind, marker) in [
        ("complete-zsh", "#compdef lockwrap"),
        ("complete-fish", "complete -c lockwrap"),
    ] {
        let out = sb.run(sb.lockwrap(["--generate", kind]));
        out.assert_code(0);
        assert!(out.stdout.contains(marker), "{kind}: no {marker}");
        assert!(out.stdout.contains("no-fork"), "{kind} lacks --no-fork");
    }
    sb.run(sb.lockwrap(["--generate", "complete-tcsh"]))
        .assert_error(64);
}

/// Values that clap parses give the same one-line usage error as those
/// parsed by hand: `lockwrap: invalid OPTION: why (see 'lockwrap --help')`.
#[test]
fn refused_values_are_one_line_usage_errors() {
    let sb = Sandbox::new("values");
    for (args, expected) in [
        (
            &["--slots", "0", "lk", "true"][..],
            "lockwrap: invalid --slots: '0' is not a number from 1 to 10000 (see 'lockwrap --help')\n",
        ),
        (
            &["--kill-grace", "soon", "lk", "true"],
            "lockwrap: invalid --kill-grace: 'soon' is not a duration (use e.g. 2.5, 500ms, 30s, 5m, 2h) (see 'lockwrap --help')\n",
        ),
        (
            &["--lease", "0", "lk", "true"],
            "lockwrap: invalid --lease: '0' must be positive (see 'lockwrap --help')\n",
        ),
        (
            &["--slots", "-1", "lk", "true"],
            "lockwrap: invalid --slots: '-1' is not a number from 1 to 10000 (see 'lockwrap --help')\n",
        ),
        (
            &["--max-runtime", "-5", "lk", "true"],
            "lockwrap: invalid --max-runtime: '-5' is not a duration (it must be a finite number >= 0) (see 'lockwrap --help')\n",
        ),
        (
            &["--min-hold", "-1", "lk", "true"],
            "lockwrap: invalid --min-hold: '-1' is not a duration (it must be a finite number >= 0) (see 'lockwrap --help')\n",
        ),
    ] {
        let out = sb.run(sb.lockwrap(args));
        out.assert_error(64);
        assert_eq!(out.stderr, expected, "{args:?}");
    }
}

/// A man page that cannot be written whole (a full disk) is an error that
/// says so, exit 73 as for any full filesystem, not a silent exit 1.
#[test]
fn a_full_disk_is_reported() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(common::bin())
        .args(["--generate", "man"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(73), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "lockwrap: cannot write the man page to stdout: no space left on device (what was written is incomplete)\n"
    );
}

/// COLUMNS that no terminal has (0, 1, garbage) or wider than anyone reads
/// (10000): --help stays between 40 and 100 columns, neither one word a
/// line nor a 400-column paragraph.
#[test]
fn help_width_stays_between_40_and_100_columns() {
    let sb = Sandbox::new("helpwidth");
    let at_40 = lockwrap_at(&sb, "40", &["--help"]);
    at_40.assert_code(0);
    for columns in ["0", "1", "20", "-3", "garbage", "10000"] {
        let out = lockwrap_at(&sb, columns, &["--help"]);
        out.assert_code(0);
        let widest = out.stdout.lines().map(|l| l.chars().count()).max();
        assert!(
            widest <= Some(100),
            "--help at COLUMNS={columns} has a line of {widest:?} columns"
        );
        assert!(
            out.stdout.lines().count() <= at_40.stdout.lines().count(),
            "--help at COLUMNS={columns} is narrower than at 40:\n{}",
            out.stdout
        );
    }
}

/// The man page's header and footer: the manual's name in the header, the
/// version in the footer (not in the date's place, centre bottom).
#[test]
fn man_page_header_names_the_manual_and_footer_the_version() {
    let sb = Sandbox::new("manth");
    let out = sb.run(sb.lockwrap(["--generate", "man"]));
    out.assert_code(0);
    let page = sb.work_path("lockwrap.1");
    std::fs::write(&page, &out.stdout).unwrap();
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&rendered.stdout);
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().unwrap_or_default();
    let footer = lines.next_back().unwrap_or_default();
    assert!(
        header.contains("User Commands"),
        "header: {header:?}\nfooter: {footer:?}"
    );
    let version = format!("lockwrap {}", env!("CARGO_PKG_VERSION"));
    assert!(
        footer.starts_with(&version),
        "footer: {footer:?} does not start with {version:?}"
    );
}

/// `--check-holder` is internal to --check: --help hides it, and so must
/// every completion script.
#[test]
fn completions_offer_no_hidden_option() {
    let sb = Sandbox::new("hidden");
    for kind in ["complete-bash", "complete-zsh", "complete-fish", "man"] {
        let out = sb.run(sb.lockwrap(["--generate", kind]));
        out.assert_code(0);
        assert!(
            !out.stdout.contains("check-holder") && !out.stdout.contains("check\\-holder"),
            "{kind} offers the internal --check-holder"
        );
        assert!(out.stdout.contains("check"), "{kind} lacks --check");
    }
}

/// `--generate KIND` prints and exits: anything else on the command line
/// is a mistake to report, not to ignore.
#[test]
fn generate_refuses_other_arguments() {
    let sb = Sandbox::new("genextra");
    for args in [
        &["--generate", "man", "extra"][..],
        &["-n", "--generate", "man"],
        &["--generate", "complete-bash", "--status", "lk"],
    ] {
        let out = sb.run(sb.lockwrap(args));
        out.assert_error(64);
        assert_eq!(out.stdout, "", "{args:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("--generate"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

/// A value with a newline or an escape sequence is shown escaped: the
/// usage error stays one line, and the terminal interprets nothing.
#[test]
fn usage_errors_escape_control_characters() {
    let sb = Sandbox::new("ctrl");
    for args in [
        &["-w", "a\nb", "lk", "true"][..],
        &["-E", "a\nb", "lk", "true"],
        &["--lease", "a\nb", "lk", "true"],
        &["--slots", "\u{1b}[31m", "lk", "true"],
        &["--start", "a\nb", "lk", "true"],
        &["a\nb"],
    ] {
        let out = sb.run(sb.lockwrap(args));
        out.assert_error(64);
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains('\u{1b}'), "{args:?}: {}", out.stderr);
    }
}

/// The package description is the Debian synopsis of `cargo deb`, which
/// must fit one line: cargo-deb wraps a longer one, and `apt show` then
/// shows it cut, its last word as the first line of the long description.
#[test]
fn package_description_fits_a_debian_synopsis() {
    let description = env!("CARGO_PKG_DESCRIPTION");
    assert!(
        description.chars().count() < 80,
        "{} characters: {description:?}",
        description.chars().count()
    );
}
