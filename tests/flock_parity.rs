//! flock(1) parity: lockwrap installed under the name `flock` (a symlink in
//! the test's temporary directory) runs the same bash scripts as util-linux's
//! /usr/bin/flock, and both must give the same exit code, stdout (the
//! number in "took N seconds" masked) and stderr. The cases are those of
//! util-linux's tests/ts/flock (flock, unlock, close, range-lock) and the
//! messages and exit codes flock(1) documents. The installed flock (2.38)
//! has no --fcntl, --fd, --start or --length: those cases are checked
//! against what newer util-linux documents and expects
//! (tests/expected/flock/*) instead of against the binary.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Output, Sandbox, system_flock};

/// Which flock(1) a case can be compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reference {
    /// The installed /usr/bin/flock (2.38) runs it: both must give the
    /// expected output.
    Installed,
    /// Only newer util-linux has the options: lockwrap must give what that
    /// flock documents.
    Documented,
}

use Reference::{Documented, Installed};

/// A sandbox with lockwrap installed as `flock` in `work/bin`.
struct Parity {
    sb: Sandbox,
    ours: PathBuf,
    theirs: Option<PathBuf>,
}

impl Parity {
    fn new(name: &str) -> Parity {
        let sb = Sandbox::new(name);
        let bin = sb.work_path("bin");
        fs::create_dir(&bin).unwrap();
        let ours = bin.join("flock");
        std::os::unix::fs::symlink(common::bin(), &ours).unwrap();
        let theirs = system_flock();
        if theirs.is_none() {
            eprintln!(
                "{name}: /usr/bin/flock is not installed: lockwrap is checked against the expected outputs only"
            );
        }
        Parity { sb, ours, theirs }
    }

    /// The absolute path of a name in the sandbox's lock directory.
    fn lock(&self, name: &str) -> String {
        self.sb.locks.join(name).display().to_string()
    }

    /// Runs `script` with bash in the lock directory, `$FLOCK` set to
    /// `program` and SHELL to /bin/sh; returns what it gave, normalised.
    fn run(&self, program: &Path, script: &str) -> Output {
        let mut command = Command::new("bash");
        command
            .args(["-c", script])
            .env("FLOCK", program)
            .env("SHELL", "/bin/sh")
            .current_dir(&self.sb.locks);
        let out = self.sb.run(command);
        Output {
            status: out.status,
            stdout: normalise(&out.stdout, program),
            stderr: normalise(&out.stderr, program),
        }
    }

    /// Runs `script` with lockwrap as `flock` (and with flock(1) when
    /// `reference` is [`Installed`] and it is installed): each must exit
    /// with `code` and print exactly `stdout` and `stderr`, where `FLOCK`
    /// stands for the program's path and `<n>` for the seconds of "took N
    /// seconds".
    #[track_caller]
    fn check(&self, reference: Reference, script: &str, code: i32, stdout: &str, stderr: &str) {
        let mut programs = vec![("lockwrap as flock", self.ours.clone())];
        if let (Installed, Some(theirs)) = (reference, &self.theirs) {
            programs.push(("flock(1)", theirs.clone()));
        }
        for (who, program) in programs {
            let out = self.run(&program, script);
            assert_eq!(
                (out.status.code(), out.stdout.as_str(), out.stderr.as_str()),
                (Some(code), stdout, stderr),
                "{who} on: {script}"
            );
        }
    }
}

/// `text` with the program's path shown as `FLOCK` (getopt's messages name
/// the program as invoked) and the number of "took N seconds" as `<n>`, as
/// util-linux's own test does.
fn normalise(text: &str, program: &Path) -> String {
    let text = text.replace(program.to_str().unwrap(), "FLOCK");
    text.lines()
        .map(
            |line| match (line.find(" took "), line.strip_suffix(" seconds")) {
                (Some(at), Some(_)) => format!("{} took <n> seconds\n", &line[..at]),
                _ => format!("{line}\n"),
            },
        )
        .collect()
}

/// util-linux tests/ts/flock/flock, for flock(2) locks: a shared holder;
/// non-blocking, no-fork, shared, exclusive and fd-mode attempts.
#[test]
fn upstream_flock_cases() {
    let p = Parity::new("parity-flock");
    let mut holder = p.sb.hold(&["--shared"], &p.lock("lockfile"));
    let never = "You will never see this!";
    for options in [
        "--nonblock --conflict-exit-code 123",
        "--no-fork --nonblock --conflict-exit-code 123",
        "--nonblock --exclusive --conflict-exit-code 123",
        "-nE123",
        "-w 0 -E 123",
        "--wait 0 -E 123",
    ] {
        let script = format!(r#""$FLOCK" {options} lockfile echo "{never}""#);
        p.check(Installed, &script, 123, "", "");
    }
    p.check(
        Installed,
        r#""$FLOCK" --shared lockfile echo "Have shared lock""#,
        0,
        "Have shared lock\n",
        "",
    );
    p.check(
        Installed,
        r#"exec 4<>lockfile
"$FLOCK" --nonblock --exclusive --conflict-exit-code 123 4; rc=$?
[ -f 4 ] && echo "fd file should not exist"
exit $rc"#,
        123,
        "",
        "",
    );
    holder.release_and_finish().assert_code(0);
}

/// The same with --fcntl (flock(1) 2.41): OFD locks, which are
/// independent of flock(2) locks on the same file (fcntl-vs-flock).
#[test]
fn upstream_fcntl_cases() {
    let p = Parity::new("parity-fcntl");
    let mut holder = p.sb.hold(&["--shared", "--fcntl"], &p.lock("lockfile"));
    for options in [
        "--fcntl --nonblock --conflict-exit-code 123",
        "--fcntl --no-fork --nonblock --conflict-exit-code 123",
        "--fcntl --nonblock --exclusive --conflict-exit-code 123",
    ] {
        let script = format!(r#""$FLOCK" {options} lockfile echo never"#);
        p.check(Documented, &script, 123, "", "");
    }
    p.check(
        Documented,
        r#""$FLOCK" --fcntl --shared lockfile echo "Have shared lock""#,
        0,
        "Have shared lock\n",
        "",
    );
    p.check(
        Documented,
        r#"exec 4<>lockfile
"$FLOCK" --fcntl --nonblock --exclusive --conflict-exit-code 123 4; rc=$?
[ -f 4 ] && echo "fd file should not exist"
exit $rc"#,
        123,
        "",
        "",
    );
    p.check(
        Documented,
        r#""$FLOCK" --nonblock --exclusive lockfile echo "flock vs fcntl""#,
        0,
        "flock vs fcntl\n",
        "",
    );
    holder.release_and_finish().assert_code(0);
}

/// util-linux's timeout and time-check cases: a waiter with `--timeout`
/// gets the lock once the holder (the program itself, shared, for 2
/// seconds) lets go; it waited at least that long and not until its own
/// timeout. The holder signals through a FIFO that it holds the lock.
#[test]
fn upstream_timeout_and_time_check() {
    let p = Parity::new("parity-time");
    let script = |api: &str| {
        format!(
            r#"rm -f ready; mkfifo ready
"$FLOCK" {api} --shared lockfile sh -c 'echo go > ready; sleep 2' &
read line < ready
"$FLOCK" {api} --timeout 10 --conflict-exit-code 5 lockfile echo "After timeout."; rc=$?
wait
exit $rc"#
        )
    };
    let mut programs = vec![("", p.ours.clone()), ("--fcntl", p.ours.clone())];
    if let Some(theirs) = &p.theirs {
        programs.push(("", theirs.clone()));
    }
    for (api, program) in programs {
        let started = Instant::now();
        let out = p.run(&program, &script(api));
        let took = started.elapsed();
        assert_eq!(
            (out.code(), out.stdout.as_str(), out.stderr.as_str()),
            (0, "After timeout.\n", ""),
            "{program:?} {api}"
        );
        assert!(
            took >= Duration::from_secs(2),
            "{program:?} {api}: did not wait for the holder ({took:?})"
        );
    }
}

/// `-w` expiring: the -E code, silent without --verbose, one line with it;
/// the wait lasts at least the timeout.
#[test]
fn timeouts_and_conflicts_exit_with_the_conflict_code() {
    let p = Parity::new("parity-expire");
    let mut holder = p.sb.hold(&[], &p.lock("lockfile"));
    p.check(
        Installed,
        r#""$FLOCK" -w 0.3 -E 5 lockfile true"#,
        5,
        "",
        "",
    );
    for program in [Some(&p.ours), p.theirs.as_ref()].into_iter().flatten() {
        let started = Instant::now();
        p.run(program, r#""$FLOCK" -w 0.3 lockfile true"#)
            .assert_code(1);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300),
            "{program:?}: {waited:?}"
        );
    }
    p.check(
        Installed,
        r#""$FLOCK" --verbose -w 0.3 -E 5 lockfile true"#,
        5,
        "",
        "flock: timeout while waiting to get lock\n",
    );
    p.check(
        Installed,
        r#""$FLOCK" --verbose -n lockfile true"#,
        1,
        "",
        "flock: failed to get lock\n",
    );
    p.check(
        Installed,
        r#""$FLOCK" --verbose -w 0 lockfile true"#,
        1,
        "",
        "flock: failed to get lock\n",
    );
    holder.release_and_finish().assert_code(0);
}

/// util-linux tests/ts/flock/unlock: --verbose lines go to stdout, in
/// flock's words; -u releases the caller's fd; --wait 0 is --nonblock.
#[test]
fn upstream_unlock_and_verbose_lines_on_stdout() {
    let p = Parity::new("parity-unlock");
    p.check(
        Installed,
        r#"exec 10<>lock
"$FLOCK" --exclusive --nonblock --verbose 10
"$FLOCK" --unlock 10
"$FLOCK" --exclusive --wait 0 --verbose lock true"#,
        0,
        "flock: getting lock took <n> seconds\n\
         flock: getting lock took <n> seconds\n\
         flock: executing true\n",
        "",
    );
    // Not a terminal: flock's stdout is block-buffered, so its lines come
    // after the command's output, and are lost when -F execs.
    p.check(
        Installed,
        r#""$FLOCK" --verbose lock echo hi"#,
        0,
        "hi\nflock: getting lock took <n> seconds\nflock: executing echo\n",
        "",
    );
    p.check(
        Installed,
        r#""$FLOCK" --verbose lock -c 'echo hi'"#,
        0,
        "hi\nflock: getting lock took <n> seconds\nflock: executing /bin/sh\n",
        "",
    );
    p.check(
        Installed,
        r#""$FLOCK" -F --verbose lock echo hi"#,
        0,
        "hi\n",
        "",
    );
    // A failed write of them turns the exit status into 1 (after the
    // command ran), as close_stdout() does.
    p.check(
        Installed,
        r#""$FLOCK" --verbose lock sh -c 'echo ran >&2; exit 5' >/dev/full"#,
        1,
        "",
        "ran\nflock: write error: No space left on device\n",
    );
}

/// util-linux tests/ts/flock/close (flock(1) with --fd): with --close the
/// command does not inherit fd 10, so a flock on it fails with EBADF (65);
/// without, it locks the same open file description again (0).
#[test]
fn upstream_close() {
    let p = Parity::new("parity-close");
    p.check(
        Documented,
        r#"exec 10<>lock
"$FLOCK" --exclusive --close --fd 10 --command '"$FLOCK" --exclusive --nonblock --fd 10 true'
echo "exit code: $?"
"$FLOCK" --exclusive --fd 10 --command '"$FLOCK" --exclusive --nonblock --fd 10 true'
echo "exit code: $?""#,
        0,
        "exit code: 65\nexit code: 0\n",
        "flock: 10: Bad file descriptor\n",
    );
}

/// util-linux tests/ts/flock/range-lock: --start 1 --length 2 locks bytes
/// 1 to 2, as the kernel lists them (lslocks' START and END). The shell
/// exec'd by --no-fork holds the lock and reads its own fdinfo.
#[test]
fn upstream_range_lock() {
    let p = Parity::new("parity-range");
    let out = p.run(
        &p.ours,
        r#""$FLOCK" --shared --fcntl --start 1 --length 2 --no-fork . -c 'cat /proc/$$/fdinfo/* 2>/dev/null | grep "^lock:"'"#,
    );
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{out:?}");
    let words: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(words[2..5], ["OFDLCK", "ADVISORY", "READ"], "{out:?}");
    assert_eq!(
        words[words.len() - 2..],
        ["1", "2"],
        "start and end: {out:?}"
    );
    assert_eq!(out.stderr, "");
}

/// Runtime messages in flock(1)'s words, and its exit codes.
#[test]
fn messages_and_exit_codes_match() {
    let p = Parity::new("parity-messages");
    for (script, code, stderr) in [
        (
            r#""$FLOCK" missing/lk true"#,
            66,
            "flock: cannot open lock file missing/lk: No such file or directory\n",
        ),
        (
            r#""$FLOCK" lk /nonexistent/command"#,
            69,
            "flock: failed to execute /nonexistent/command: No such file or directory\n",
        ),
        (
            r#"SHELL=/nonexistent/shell "$FLOCK" lk -c true"#,
            69,
            "flock: failed to execute /nonexistent/shell: No such file or directory\n",
        ),
        (
            r#"exec 10>&-; "$FLOCK" 10"#,
            65,
            "flock: 10: Bad file descriptor\n",
        ),
        (r#""$FLOCK" lk -c 'exit 3'"#, 3, ""),
        (r#""$FLOCK" -E " +5" -n lk sh -c 'exit 5'"#, 5, ""),
        (r#""$FLOCK" -s lk sh -c 'kill -TERM $$'"#, 143, ""),
        (r#""$FLOCK" -x -s -u lk true"#, 0, ""),
        (
            r#""$FLOCK" lk -w 5 true"#,
            69,
            "flock: failed to execute -w: No such file or directory\n",
        ),
    ] {
        p.check(Installed, script, code, "", stderr);
    }
}

/// Usage errors: 64 and flock(1) 2.38's words; getopt's messages name the
/// program as invoked and add the "Try" line.
#[test]
fn usage_errors_match() {
    let p = Parity::new("parity-usage");
    let try_help = "Try 'flock --help' for more information.\n";
    let cases: Vec<(&str, String)> = vec![
        ("", format!("flock: not enough arguments\n{try_help}")),
        (
            "-n",
            "flock: requires file descriptor, file or directory\n".into(),
        ),
        ("lk", "flock: bad file descriptor: 'lk'\n".into()),
        (
            "99999999999",
            "flock: bad file descriptor: '99999999999': Numerical result out of range\n".into(),
        ),
        (
            "-Z lk true",
            format!("FLOCK: invalid option -- 'Z'\n{try_help}"),
        ),
        (
            "-nZ lk true",
            format!("FLOCK: invalid option -- 'Z'\n{try_help}"),
        ),
        (
            "--bogus lk true",
            format!("FLOCK: unrecognized option '--bogus'\n{try_help}"),
        ),
        (
            "--bogus=1 lk true",
            format!("FLOCK: unrecognized option '--bogus=1'\n{try_help}"),
        ),
        (
            "-n -w",
            format!("FLOCK: option requires an argument -- 'w'\n{try_help}"),
        ),
        (
            "-nw",
            format!("FLOCK: option requires an argument -- 'w'\n{try_help}"),
        ),
        (
            "-E",
            format!("FLOCK: option requires an argument -- 'E'\n{try_help}"),
        ),
        (
            "--timeout",
            format!("FLOCK: option '--timeout' requires an argument\n{try_help}"),
        ),
        (
            "--time",
            format!("FLOCK: option '--timeout' requires an argument\n{try_help}"),
        ),
        (
            "--verbose=1 lk true",
            format!("FLOCK: option '--verbose' doesn't allow an argument\n{try_help}"),
        ),
        (
            "-c true lk",
            format!("FLOCK: invalid option -- 'c'\n{try_help}"),
        ),
        ("-E x lk true", "flock: invalid exit code: 'x'\n".into()),
        (
            "-E 256 lk true",
            "flock: exit code out of range (expected 0 to 255)\n".into(),
        ),
        (
            "-E -1 lk true",
            "flock: exit code out of range (expected 0 to 255)\n".into(),
        ),
        (
            "-E 99999999999 lk true",
            "flock: invalid exit code: '99999999999': Numerical result out of range\n".into(),
        ),
        (
            "-w abc lk true",
            "flock: invalid timeout value: 'abc'\n".into(),
        ),
        ("-w '' lk true", "flock: invalid timeout value: ''\n".into()),
        (
            "-F -o lk true",
            "flock: the --no-fork and --close options are incompatible\n".into(),
        ),
        (
            "lk -c",
            "flock: -c requires exactly one command argument\n".into(),
        ),
        (
            "lk --command a b",
            "flock: --command requires exactly one command argument\n".into(),
        ),
    ];
    for (args, stderr) in &cases {
        p.check(Installed, &format!(r#""$FLOCK" {args}"#), 64, "", stderr);
    }
    assert_eq!(
        p.sb.lock_dir_entries(),
        Vec::<String>::new(),
        "nothing created"
    );
}

/// --fcntl, --fd, --start and --length as newer flock(1) documents them.
#[test]
fn newer_options_follow_documented_behaviour() {
    let p = Parity::new("parity-newer");
    fs::create_dir(p.sb.locks.join("d")).unwrap();
    for (script, code, stderr) in [
        // An exclusive fcntl lock needs a writable fd, a shared one a readable one.
        (
            r#""$FLOCK" --fcntl -x d true"#,
            65,
            "flock: d: Is a directory\n",
        ),
        (r#""$FLOCK" --fcntl -s d true"#, 0, ""),
        (
            r#": >> lk; exec 9<lk; "$FLOCK" --fcntl -x 9"#,
            65,
            "flock: 9: Bad file descriptor\n",
        ),
        (
            r#"exec 9>lk; "$FLOCK" --fcntl -s 9"#,
            65,
            "flock: 9: Bad file descriptor\n",
        ),
        (r#": >> lk; exec 9<lk; "$FLOCK" -x 9"#, 0, ""),
        (
            r#""$FLOCK" --start -1 lk true"#,
            64,
            "flock: invalid as start offset: '-1': Invalid argument\n",
        ),
        (
            r#""$FLOCK" --length abc lk true"#,
            64,
            "flock: invalid as length of lock range: 'abc': Invalid argument\n",
        ),
        (
            r#"exec 9>lk; "$FLOCK" --fd 9"#,
            64,
            "flock: missing command\n",
        ),
        (
            r#""$FLOCK" --fd x true"#,
            64,
            "flock: invalid file descriptor: 'x'\n",
        ),
        (
            r#"exec 9>lk; "$FLOCK" --fd 9 --start 1KB --length 1K sh -c 'cat /proc/$$/fdinfo/9 | grep -c " 1000 2023$"'"#,
            0,
            "",
        ),
    ] {
        let stdout = if script.contains("grep -c") {
            "1\n"
        } else {
            ""
        };
        p.check(Documented, script, code, stdout, stderr);
    }
}

/// stdout is a pipe nobody reads any more: writing the --verbose lines
/// kills flock(1) with SIGPIPE (after the command ran), and lockwrap too,
/// under either name.
#[test]
fn a_reader_gone_from_stdout_kills_with_sigpipe() {
    use std::os::unix::process::ExitStatusExt as _;
    let p = Parity::new("parity-sigpipe");
    let lock = p.lock("lk");
    let mut programs = vec![p.ours.clone(), common::bin()];
    programs.extend(p.theirs.clone());
    for program in programs {
        let marker = p.sb.work_path("ran");
        let _ = fs::remove_file(&marker);
        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader);
        let mut child = Command::new(&program)
            .args(["--verbose", &lock, "touch", marker.to_str().unwrap()])
            .stdout(std::process::Stdio::from(writer))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut status = None;
        common::wait_until("the program to end", common::WAIT, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        assert_eq!(
            status.unwrap().signal(),
            Some(libc::SIGPIPE),
            "{program:?}: {status:?}"
        );
        assert!(marker.exists(), "{program:?}: the command did not run");
    }
}

/// Only a program whose name, after the last `/` as glibc reads it, is
/// `flock` speaks as flock(1): near misses stay lockwrap.
#[test]
fn only_the_name_flock_switches() {
    use std::os::unix::process::CommandExt as _;
    let p = Parity::new("parity-argv0");
    for (argv0, flock) in [
        ("flock", true),
        ("/usr/bin/flock", true),
        ("./flock", true),
        ("flock/", false),
        ("flocker", false),
        ("xflock", false),
        ("flock.exe", false),
        ("FLOCK", false),
        ("", false),
    ] {
        let mut command = Command::new(common::bin());
        command.arg0(argv0).arg("-Z");
        let out = p.sb.run(command);
        assert_eq!(out.status.code(), Some(64), "{argv0:?}: {out:?}");
        assert_eq!(
            out.stderr
                .starts_with(&format!("{argv0}: invalid option -- 'Z'\n")),
            flock,
            "{argv0:?}: {out:?}"
        );
    }
}

/// lockwrap's --status under flock's name is lockwrap's: the lock is named
/// as a lock spec, so an fcntl lock (a byte range) is told from a flock(2)
/// lock on the same file, in the text and in the JSON, as under lockwrap's
/// name.
#[test]
fn status_names_fcntl_locks_under_either_name() {
    let p = Parity::new("parity-status");
    for program in [p.ours.clone(), common::bin()] {
        let out = p.run(
            &program,
            r#""$FLOCK" --status --start 5 lk; "$FLOCK" --status --fcntl lk; "$FLOCK" --status lk; "$FLOCK" --status --json --length 1 lk | grep -o '"lock":"[^"]*"'"#,
        );
        assert_eq!(
            (out.status.code(), out.stdout.as_str(), out.stderr.as_str()),
            (
                Some(0),
                "fcntl:lk (bytes 5-EOF): free\nfcntl:lk: free\nlk: free\n\"lock\":\"fcntl:lk\"\n",
                ""
            ),
            "{program:?}"
        );
    }
}

/// Found by a differential fuzz against /usr/bin/flock: values flock(1)
/// reads with strtol/strtold (leading blanks and `+`, hexadecimal
/// timeouts, trailing blanks refused), a negative fd, and an empty path,
/// which flock tries to open.
#[test]
fn number_edges_match() {
    let p = Parity::new("parity-numbers");
    for (script, code, stdout, stderr) in [
        (r#""$FLOCK" -w 0x10 lk echo hi"#, 0, "hi\n", ""),
        (r#""$FLOCK" -w 0x1.8p1 lk echo hi"#, 0, "hi\n", ""),
        (
            r#""$FLOCK" -w '5 ' lk echo hi"#,
            64,
            "",
            "flock: invalid timeout value: '5 '\n",
        ),
        (
            r#""$FLOCK" -E '7 ' lk echo hi"#,
            64,
            "",
            "flock: invalid exit code: '7 '\n",
        ),
        (
            r#""$FLOCK" -E ' +7' -n lk "$FLOCK" -E ' +7' -n lk true"#,
            7,
            "",
            "",
        ),
        (r#"exec 9>lk; "$FLOCK" ' 9'; echo $?"#, 0, "0\n", ""),
        (r#"exec 9>lk; "$FLOCK" +9; echo $?"#, 0, "0\n", ""),
        (
            r#""$FLOCK" -- -1"#,
            65,
            "",
            "flock: -1: Bad file descriptor\n",
        ),
        (
            r#""$FLOCK" '' true"#,
            66,
            "",
            "flock: cannot open lock file : No such file or directory\n",
        ),
    ] {
        p.check(Installed, script, code, stdout, stderr);
    }
}

/// flock(1) 2.42's own long options may be shortened to any prefix that is
/// unambiguous among them (`--st` is --start), even where lockwrap's extra
/// options (--status, --stale-after, --lease) share the prefix.
#[test]
fn prefixes_of_flocks_options_are_flocks() {
    let p = Parity::new("parity-prefixes");
    p.check(
        Documented,
        r#"exec 9>lk; "$FLOCK" --st 1KB --le 1K --fd 9 sh -c 'grep -c " 1000 2023$" /proc/$$/fdinfo/9'"#,
        0,
        "1\n",
        "",
    );
    p.check(
        Documented,
        r#"exec 9>lk; "$FLOCK" --sta=5 --len=1 9; grep -c " 5 5$" /proc/$$/fdinfo/9"#,
        0,
        "1\n",
        "",
    );
    // The command's own words are not options.
    p.check(
        Documented,
        r#""$FLOCK" --st 0 lk echo --st"#,
        0,
        "--st\n",
        "",
    );
}

/// flock(1) reads every -w and -E as it comes, so a bad one is refused even
/// when a later one (or -n) overrides it; and a command-line error wins
/// over the empty LOCK it comes with.
#[test]
fn every_value_given_is_checked() {
    let p = Parity::new("parity-every-value");
    for (args, stderr) in [
        ("-w x -w 1 lk true", "flock: invalid timeout value: 'x'\n"),
        ("-n -w x lk true", "flock: invalid timeout value: 'x'\n"),
        (
            "-E 300 -E 3 lk true",
            "flock: exit code out of range (expected 0 to 255)\n",
        ),
        ("'' -c", "flock: -c requires exactly one command argument\n"),
    ] {
        p.check(Installed, &format!(r#""$FLOCK" {args}"#), 64, "", stderr);
    }
}
