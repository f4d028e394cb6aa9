//! flock(1) compatibility: invocation forms, shared locks, fd mode, -o, -c,
//! and the exit-code table, side by side with /usr/bin/flock where the two
//! are meant to agree.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{
    ALL_BACKENDS, Backend, Output, Sandbox, become_subreaper, process_is_running, reap_adopted,
    system_flock,
};

/// Runs `program ARGS...` in the sandbox's work directory.
fn run_program(sb: &Sandbox, program: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(program);
    command.args(args).current_dir(&sb.work);
    sb.run(command)
}

/// Runs lockwrap with `args`, and flock(1) too when it is installed and
/// `compare` is set; asserts they exit with the same code. Returns lockwrap's output.
fn run_both(sb: &Sandbox, args: &[&str], compare: bool) -> Output {
    let ours = run_program(sb, &common::bin(), args);
    if let (true, Some(flock)) = (compare, system_flock()) {
        let theirs = run_program(sb, &flock, args);
        assert_eq!(
            ours.status.code(),
            theirs.status.code(),
            "lockwrap and flock(1) disagree on {args:?}:\nlockwrap: {ours:?}\nflock: {theirs:?}"
        );
    }
    ours
}

/// Runs a shell script with $LW set to `program`, in the work directory.
fn run_script(sb: &Sandbox, program: &Path, script: &str) -> Output {
    let mut command = Command::new("/bin/sh");
    command
        .args(["-c", script])
        .env("LW", program)
        .current_dir(&sb.work);
    sb.run(command)
}

/// The state of a user's file: None if absent, else its contents (a
/// directory reads as its sorted entry names).
fn snapshot(path: &Path) -> Option<Vec<u8>> {
    let meta = fs::symlink_metadata(path).ok()?;
    if meta.is_dir() {
        let mut names: Vec<String> = fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Some(format!("dir:{names:?}").into_bytes())
    } else {
        Some(fs::read(path).unwrap())
    }
}

#[test]
fn shared_holder_admits_shared_and_refuses_exclusive() {
    for backend in [Backend::Flock, Backend::Fcntl] {
        let sb = Sandbox::new(&format!("shared-{backend:?}"));
        let spec = backend.spec(&sb, "lk");
        let mut holder = sb.hold(&["-s"], &spec);
        let out = sb.run(sb.lockwrap(["-n", "-E", "123", &spec, "true"]));
        out.assert_code(123);
        assert_eq!(out.stderr, "");
        let marker = sb.work_path("ran");
        sb.run(sb.lockwrap(["-s", "-n", &spec, "touch", marker.to_str().unwrap()]))
            .assert_code(0);
        assert!(marker.exists(), "the second shared holder did not run");
        if let (Backend::Flock, Some(flock)) = (backend, system_flock()) {
            // Same flock(2) locks: flock(1) sees lockwrap's shared holder.
            run_program(&sb, &flock, &["-n", "-E", "123", &spec, "true"]).assert_code(123);
            run_program(&sb, &flock, &["-s", "-n", &spec, "true"]).assert_code(0);
        }
        holder.release_and_finish().assert_code(0);
        sb.run(sb.lockwrap(["-n", &spec, "true"])).assert_code(0);
    }
}

#[test]
fn lockwrap_and_flock1_exclude_each_other_on_the_same_file() {
    let Some(flock) = system_flock() else {
        eprintln!("skipped: /usr/bin/flock is not installed");
        return;
    };
    let sb = Sandbox::new("interop");
    let lock = sb.locks.join("lk");
    let lock = lock.to_str().unwrap();
    // flock(1) holds, lockwrap conflicts.
    let ready = sb.work_path("ready");
    let gate = sb.fifo("gate");
    let script = format!(
        ": > '{}' && read line < '{}'",
        ready.display(),
        gate.display()
    );
    let mut command = Command::new(&flock);
    command.args([lock, "sh", "-c", &script]);
    let mut theirs = sb.spawn(command, "flock-holder");
    common::wait_for_file(&ready, common::WAIT);
    sb.run(sb.lockwrap(["-n", lock, "true"])).assert_code(1);
    common::open_gate(&gate);
    theirs.finish().assert_code(0);
    // lockwrap holds, flock(1) conflicts.
    let mut ours = sb.hold(&[], lock);
    run_program(&sb, &flock, &["-n", "-E", "9", lock, "true"]).assert_code(9);
    ours.release_and_finish().assert_code(0);
    run_program(&sb, &flock, &["-n", lock, "true"]).assert_code(0);
}

#[test]
fn fd_mode_locks_the_callers_fd_and_unlock_releases_it() {
    let sb = Sandbox::new("fdmode");
    let lock = sb.locks.join("lk");
    // $LW -n 9 locks the shell's fd 9 and exits 0; the lock stays on that fd
    // after it exits, so a new open of the file conflicts until -u 9.
    let script = format!(
        r#"exec 9>'{f}'
"$LW" -n 9 || exit 10
"$LW" -n '{f}' true; held=$?
"$LW" -u 9 || exit 11
"$LW" -n '{f}' true; freed=$?
echo "$held $freed""#,
        f = lock.display()
    );
    let ours = run_script(&sb, &common::bin(), &script);
    ours.assert_code(0);
    assert_eq!(ours.stdout, "1 0\n", "{ours:?}");
    assert_eq!(ours.stderr, "");
    assert!(
        !sb.work.join("9").exists(),
        "fd mode must not create a file named 9"
    );
    if let Some(flock) = system_flock() {
        let theirs = run_script(&sb, &flock, &script);
        assert_eq!(theirs.stdout, ours.stdout, "flock(1): {theirs:?}");
    }
}

#[test]
fn fd_mode_with_fcntl_takes_an_ofd_lock() {
    let sb = Sandbox::new("fdmode-fcntl");
    let lock = sb.locks.join("lk");
    let script = format!(
        r#"exec 9>'{f}'
"$LW" --fcntl -n 9 || exit 10
"$LW" -n 'fcntl:{f}' true; echo $?"#,
        f = lock.display()
    );
    let out = run_script(&sb, &common::bin(), &script);
    out.assert_code(0);
    assert_eq!(out.stdout, "1\n", "{out:?}");
}

#[test]
fn a_number_with_a_command_is_a_path_as_in_flock1() {
    // `lockwrap 9 true`: two positionals, so 9 is a lock file in the cwd.
    let sb = Sandbox::new("numeric-path");
    run_both(&sb, &["9", "true"], true).assert_code(0);
    assert!(sb.work.join("9").is_file());
}

#[test]
fn close_option_leaves_the_lock_to_the_wrapper_only() {
    become_subreaper();
    for backend in ALL_BACKENDS {
        let sb = Sandbox::new(&format!("close-{backend:?}"));
        let spec = backend.spec(&sb, "lk");
        let mut holder = sb.hold(&["-o"], &spec);
        sb.run(sb.lockwrap(["-n", &spec, "true"])).assert_code(1);
        holder.proc.kill_and_reap();
        assert!(process_is_running(holder.child_pid));
        let out = sb.run(sb.lockwrap(["-n", &spec, "true"]));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{backend:?}: with -o, the lock must be free once the wrapper is gone, \
             although its command still runs: {out:?}"
        );
        holder.release();
        reap_adopted(holder.child_pid);
    }
}

#[test]
fn option_parsing_stops_at_the_lock() {
    let sb = Sandbox::new("stop-at-lock");
    let lock = sb.locks.join("lk");
    fs::write(&lock, "user data\n").unwrap();
    // `-w` after the lock is the command: it cannot be executed.
    let out = run_both(&sb, &[lock.to_str().unwrap(), "-w", "5", "true"], true);
    out.assert_error(69);
    assert!(out.stderr.contains("-w"), "{out:?}");
    assert_eq!(fs::read(&lock).unwrap(), b"user data\n");
    // ... and a command's own options reach it.
    let out = run_both(
        &sb,
        &[
            "-n",
            lock.to_str().unwrap(),
            "sh",
            "-c",
            "echo $0 $1",
            "-x",
            "-n",
        ],
        true,
    );
    out.assert_code(0);
    assert_eq!(out.stdout, "-x -n\n");
}

#[test]
fn command_string_uses_shell_or_bin_sh() {
    let sb = Sandbox::new("shell");
    let lock = sb.locks.join("lk");
    let lock = lock.to_str().unwrap();
    let used = sb.work_path("shell-used");
    let fake_shell = sb.work_path("fakesh");
    fs::write(
        &fake_shell,
        format!(
            "#!/bin/sh\necho \"$@\" > '{}'\nexec /bin/sh \"$@\"\n",
            used.display()
        ),
    )
    .unwrap();
    fs::set_permissions(
        &fake_shell,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let mut command = sb.lockwrap([lock, "-c", "echo ran"]);
    command.env("SHELL", &fake_shell);
    let out = sb.run(command);
    out.assert_code(0);
    assert_eq!(out.stdout, "ran\n");
    assert_eq!(fs::read_to_string(&used).unwrap(), "-c echo ran\n");

    // Unset or empty SHELL: /bin/sh, which is what $0 names.
    for shell in [None, Some("")] {
        let mut programs = vec![common::bin()];
        programs.extend(system_flock());
        for program in programs {
            let mut command = Command::new(&program);
            command.args([lock, "-c", "echo $0"]).current_dir(&sb.work);
            match shell {
                None => command.env_remove("SHELL"),
                Some(s) => command.env("SHELL", s),
            };
            let out = sb.run(command);
            out.assert_code(0);
            assert_eq!(out.stdout, "/bin/sh\n", "{program:?} SHELL={shell:?}");
        }
    }

    // A SHELL that does not exist cannot be executed: 69, as flock(1).
    for program in [Some(common::bin()), system_flock()].into_iter().flatten() {
        let mut command = Command::new(&program);
        command
            .args([lock, "-c", "true"])
            .env("SHELL", "/nonexistent/shell")
            .current_dir(&sb.work);
        let out = sb.run(command);
        assert_eq!(out.status.code(), Some(69), "{program:?}: {out:?}");
        if program == common::bin() {
            out.assert_error(69);
        }
    }
}

/// A usage error: 64, one line, and the lock file neither created (when it
/// did not exist) nor touched (when it did).
#[track_caller]
fn assert_usage_error_leaves_lock_alone(args: &[&str], compare_with_flock: bool) {
    let sb = Sandbox::new("usage");
    let lock = sb.locks.join("lk");
    let lock_text = lock.to_str().unwrap();
    let args: Vec<&str> = args
        .iter()
        .map(|a| if *a == "LOCK" { lock_text } else { a })
        .collect();
    run_both(&sb, &args, compare_with_flock).assert_error(64);
    assert!(!lock.exists(), "{args:?} created the lock file");
    fs::write(&lock, "user data\n").unwrap();
    sb.run(sb.lockwrap(&args)).assert_error(64);
    assert_eq!(fs::read(&lock).unwrap(), b"user data\n", "{args:?}");
}

#[test]
fn usage_errors_exit_64() {
    // Where flock(1) exits 64 as well.
    for args in [
        &["LOCK"][..],
        &["--bogus", "LOCK", "true"],
        &["-Z", "LOCK", "true"],
        &["-F", "-o", "LOCK", "true"],
        &["-o", "-F", "LOCK", "true"],
        &["-E", "256", "LOCK", "true"],
        &["-E", "x", "LOCK", "true"],
        &["-w", "abc", "LOCK", "true"],
        &["LOCK", "-c"],
        &["LOCK", "-c", "true", "extra"],
        &["-n", "-w"],
        &[],
    ] {
        assert_usage_error_leaves_lock_alone(args, true);
    }
    // flock(1) exits 71 ("cannot set up timer") here; lockwrap calls them
    // usage errors, as its README says.
    for args in [
        &["-w", "-1", "LOCK", "true"][..],
        &["-w", "nan", "LOCK", "true"],
        &["-w", "inf", "LOCK", "true"],
        &["-E", "-1", "LOCK", "true"],
    ] {
        assert_usage_error_leaves_lock_alone(args, false);
    }
}

#[test]
fn missing_parent_directory_exits_66() {
    let sb = Sandbox::new("noparent");
    let missing = sb.locks.join("missing");
    let lock = missing.join("lk");
    let out = run_both(&sb, &[lock.to_str().unwrap(), "true"], true);
    out.assert_error(66);
    assert!(!missing.exists());
    for backend in ["fcntl:", "mkdir:", "excl:"] {
        let spec = format!("{backend}{}", lock.display());
        sb.run(sb.lockwrap([spec.as_str(), "true"]))
            .assert_error(66);
        assert!(!missing.exists(), "{spec}");
    }
}

#[test]
fn command_not_found_exits_69_and_leaves_the_lock_file_alone() {
    let sb = Sandbox::new("notfound");
    let lock = sb.locks.join("lk");
    fs::write(&lock, "user data\n").unwrap();
    let out = run_both(
        &sb,
        &[lock.to_str().unwrap(), "lockwrap-test-no-such-command"],
        true,
    );
    out.assert_error(69);
    assert_eq!(fs::read(&lock).unwrap(), b"user data\n");
    // The other backends: 69 too, no artifact left, and the lock free again.
    for backend in [
        Backend::Fcntl,
        Backend::Mkdir,
        Backend::Excl,
        Backend::Abstract,
    ] {
        let sb = Sandbox::new(&format!("notfound-{backend:?}"));
        let spec = backend.spec(&sb, "lk");
        sb.run(sb.lockwrap([spec.as_str(), "lockwrap-test-no-such-command"]))
            .assert_error(69);
        sb.run(sb.lockwrap(["-F", &spec, "lockwrap-test-no-such-command"]))
            .assert_error(69);
        let expected: &[&str] = if backend == Backend::Fcntl {
            &["lk"]
        } else {
            &[]
        };
        assert_eq!(sb.lock_dir_entries(), expected, "{backend:?}");
        sb.run(sb.lockwrap(["-n", &spec, "true"])).assert_code(0);
    }
}

#[test]
fn child_killed_by_a_signal_gives_128_plus_n() {
    let sb = Sandbox::new("childsig");
    let lock = sb.locks.join("lk");
    for (signal, code) in [("SEGV", 139), ("KILL", 137), ("TERM", 143), ("USR1", 138)] {
        let script = format!("kill -{signal} $$");
        let out = run_both(&sb, &[lock.to_str().unwrap(), "sh", "-c", &script], true);
        assert_eq!(out.status.code(), Some(code), "SIG{signal}: {out:?}");
    }
}

#[test]
fn mkdir_lock_on_a_regular_file_exits_66_and_leaves_it() {
    let sb = Sandbox::new("mkdir-on-file");
    let path = sb.locks.join("lk");
    fs::write(&path, "user data\n").unwrap();
    let marker = sb.work_path("ran");
    for args in [&[][..], &["-n"], &["-w", "5"]] {
        let spec = format!("mkdir:{}", path.display());
        let mut all: Vec<&str> = args.to_vec();
        all.extend([spec.as_str(), "touch", marker.to_str().unwrap()]);
        sb.run(sb.lockwrap(&all)).assert_error(66);
        assert_eq!(fs::read(&path).unwrap(), b"user data\n");
        assert!(!marker.exists());
        assert_eq!(sb.lock_dir_entries(), ["lk"], "no temp files left");
    }
}

#[test]
fn excl_lock_on_a_directory_exits_66_and_leaves_it() {
    let sb = Sandbox::new("excl-on-dir");
    let path = sb.locks.join("lk");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("inside"), "user data\n").unwrap();
    let before = snapshot(&path);
    let marker = sb.work_path("ran");
    for args in [&[][..], &["-n"], &["-w", "5"]] {
        let spec = format!("excl:{}", path.display());
        let mut all: Vec<&str> = args.to_vec();
        all.extend([spec.as_str(), "touch", marker.to_str().unwrap()]);
        sb.run(sb.lockwrap(&all)).assert_error(66);
        assert_eq!(snapshot(&path), before);
        assert_eq!(fs::read(path.join("inside")).unwrap(), b"user data\n");
        assert!(!marker.exists());
        assert_eq!(sb.lock_dir_entries(), ["lk"], "no temp files left");
    }
}

#[test]
fn abstract_names_longer_than_107_bytes_are_usage_errors() {
    let sb = Sandbox::new("abstract-len");
    let base = sb.abstract_name("");
    let longest = format!("@{base}{}", "a".repeat(107 - base.len()));
    sb.run(sb.lockwrap([longest.as_str(), "true"]))
        .assert_code(0);
    let marker = sb.work_path("ran");
    for len in [108, 200] {
        let spec = format!("@{base}{}", "a".repeat(len - base.len()));
        sb.run(sb.lockwrap([spec.as_str(), "touch", marker.to_str().unwrap()]))
            .assert_error(64);
        assert!(!marker.exists());
    }
    sb.run(sb.lockwrap(["@", "true"])).assert_error(64);
}

#[test]
fn fd_that_is_not_open_exits_65() {
    let sb = Sandbox::new("fd-not-open");
    let ours = run_script(&sb, &common::bin(), "exec 9>&-; exec \"$LW\" 9");
    ours.assert_error(65);
    assert!(!sb.work.join("9").exists());
    if let Some(flock) = system_flock() {
        let theirs = run_script(&sb, &flock, "exec 9>&-; exec \"$LW\" 9");
        assert_eq!(theirs.status.code(), Some(65), "{theirs:?}");
    }
}

#[test]
fn conflicts_and_timeouts_match_flock1() {
    let sb = Sandbox::new("conflict-codes");
    let lock = sb.locks.join("lk");
    let lock = lock.to_str().unwrap();
    let mut holder = sb.hold(&[], lock);
    for (args, code) in [
        (&["-n", lock, "true"][..], 1),
        (&["-n", "-E", "42", lock, "true"], 42),
        (&["-nE42", lock, "true"], 42),
        (&["--nonblock", "--conflict-exit-code=0", lock, "true"], 0),
        (&["-w", "0", "-E", "7", lock, "true"], 7),
        (&["-w", "0.2", "-E", "7", lock, "true"], 7),
        (&["-w", "1e-7", lock, "true"], 1),
        (&["-w0.2", "-E4", lock, "true"], 4),
        (&["--nonb", "--conflict=3", lock, "true"], 3),
        (&["--nb", "-E", "5", lock, "true"], 5),
        (&["--nonblocking", "-E", "6", lock, "true"], 6),
        (&["--time=0.2", "-E", "4", lock, "true"], 4),
        (&["--timeout", "0.2", "-E", "4", lock, "true"], 4),
        (&["--wait=0.2", "-E", "4", lock, "true"], 4),
        (&["-w", "5", "-n", "-E", "8", lock, "true"], 8),
    ] {
        let out = run_both(&sb, args, true);
        out.assert_code(code);
        assert_eq!(out.stderr, "", "{args:?}: conflicts are silent");
    }
    holder.release_and_finish().assert_code(0);
}

#[test]
fn the_commands_exit_status_is_passed_through() {
    let sb = Sandbox::new("status");
    let lock = sb.locks.join("lk");
    for code in [0, 1, 3, 64, 255] {
        let script = format!("exit {code}");
        run_both(&sb, &[lock.to_str().unwrap(), "sh", "-c", &script], true).assert_code(code);
        run_both(&sb, &[lock.to_str().unwrap(), "-c", &script], true).assert_code(code);
    }
}

#[test]
fn the_command_gets_lockwrap_lock() {
    for backend in ALL_BACKENDS {
        let sb = Sandbox::new(&format!("env-{backend:?}"));
        let spec = backend.spec(&sb, "lk");
        let out = sb.run(sb.lockwrap([spec.as_str(), "sh", "-c", "echo \"$LOCKWRAP_LOCK\""]));
        out.assert_code(0);
        assert_eq!(out.stdout, format!("{spec}\n"));
    }
}

#[test]
fn the_lock_file_is_created_if_missing_and_never_written() {
    let sb = Sandbox::new("lockfile");
    let lock = sb.locks.join("lk");
    run_both(&sb, &[lock.to_str().unwrap(), "true"], true).assert_code(0);
    assert_eq!(fs::read(&lock).unwrap(), b"");
    fs::write(&lock, "user data\n").unwrap();
    for extra in [&[][..], &["-s"], &["-n"], &["-u"], &["--fcntl"]] {
        let mut args = extra.to_vec();
        args.extend([lock.to_str().unwrap(), "true"]);
        // flock(1) 2.38 has no --fcntl.
        run_both(&sb, &args, extra != ["--fcntl"]).assert_code(0);
        assert_eq!(fs::read(&lock).unwrap(), b"user data\n", "{extra:?}");
    }
}

#[test]
fn a_directory_can_be_the_lock() {
    let sb = Sandbox::new("dirlock");
    let dir = sb.locks.join("d");
    fs::create_dir(&dir).unwrap();
    let spec = dir.to_str().unwrap();
    let mut holder = sb.hold(&[], spec);
    run_both(&sb, &["-n", "-E", "5", spec, "true"], true).assert_code(5);
    holder.release_and_finish().assert_code(0);
    run_both(&sb, &["-n", spec, "true"], true).assert_code(0);
    assert!(dir.is_dir());
}

#[test]
fn a_symlink_at_a_mkdir_or_excl_path_exits_66_and_is_left_alone() {
    let sb = Sandbox::new("symlink");
    let target_dir = sb.work_path("target-dir");
    let target_file = sb.work_path("target-file");
    fs::create_dir(&target_dir).unwrap();
    fs::write(&target_file, "user data\n").unwrap();
    let marker = sb.work_path("ran");
    for (scheme, target) in [
        ("mkdir:", &target_dir),
        ("excl:", &target_file),
        ("excl:", &target_dir),
        ("mkdir:", &target_file),
    ] {
        let link = sb.locks.join("lk");
        std::os::unix::fs::symlink(target, &link).unwrap();
        let spec = format!("{scheme}{}", link.display());
        for wait in ["-n", "-w5"] {
            sb.run(sb.lockwrap([wait, &spec, "touch", marker.to_str().unwrap()]))
                .assert_error(66);
            assert!(!marker.exists());
            assert_eq!(fs::read_link(&link).unwrap(), *target, "{spec}");
            assert_eq!(sb.lock_dir_entries(), ["lk"], "{spec}: temp files left");
            assert_eq!(fs::read(&target_file).unwrap(), b"user data\n");
            assert_eq!(fs::read_dir(&target_dir).unwrap().count(), 0);
        }
        fs::remove_file(&link).unwrap();
    }
}

#[test]
fn fd_option_runs_a_command_while_the_callers_fd_is_locked() {
    let sb = Sandbox::new("fd-option");
    let lock = sb.locks.join("lk");
    let script = format!(
        r#"exec 9>'{f}'
"$LW" --fd 9 -n sh -c '"$LW" -n "$0" true; echo "inside $?"' '{f}' || exit 10
"$LW" -n '{f}' true; echo "after $?""#,
        f = lock.display()
    );
    let out = run_script(&sb, &common::bin(), &script);
    out.assert_code(0);
    // Inside, the lock is held; after, it stays on the caller's fd 9.
    assert_eq!(out.stdout, "inside 1\nafter 1\n", "{out:?}");
}

#[test]
fn help_and_version_print_to_stdout_and_exit_0() {
    let sb = Sandbox::new("help");
    for option in ["-h", "--help", "-V", "--version"] {
        let out = run_both(&sb, &[option], true);
        out.assert_code(0);
        assert!(!out.stdout.is_empty(), "{option}");
        assert_eq!(out.stderr, "", "{option}");
    }
    let out = sb.run(sb.lockwrap(["--help"]));
    for word in ["mkdir:", "excl:", "fcntl:", "--no-fork", "--close"] {
        assert!(out.stdout.contains(word), "--help does not mention {word}");
    }
}

/// `--verbose`: the lines flock(1) prints on stdout (how long the lock
/// took, what runs) go to stdout, naming the lock, before the command's
/// output; conflicts and errors stay on stderr.
#[test]
fn verbose_reports_on_stdout_and_conflicts_on_stderr() {
    let sb = Sandbox::new("verbose");
    let lock = sb.locks.join("lk");
    let lock = lock.to_str().unwrap();
    let out = sb.run(sb.lockwrap(["--verbose", lock, "echo", "hi"]));
    out.assert_code(0);
    let took = out.stdout.lines().next().unwrap_or_default();
    let number = took
        .strip_prefix(&format!("lockwrap: {lock}: getting lock took "))
        .and_then(|rest| rest.strip_suffix(" seconds"))
        .unwrap_or_else(|| panic!("{out:?}"));
    // flock(1)'s format: seconds and six digits of microseconds.
    let (seconds, micros) = number.split_once('.').unwrap();
    assert!(
        seconds.parse::<u64>().is_ok() && micros.len() == 6,
        "{out:?}"
    );
    assert_eq!(
        out.stdout.lines().skip(1).collect::<Vec<_>>(),
        [&format!("lockwrap: {lock}: executing echo"), "hi"],
        "{out:?}"
    );
    assert_eq!(out.stderr, "");

    let mut holder = sb.hold(&[], lock);
    let out = sb.run(sb.lockwrap(["--verbose", "-n", lock, "true"]));
    out.assert_error(1);
    assert_eq!(out.stdout, "");
    holder.release_and_finish().assert_code(0);
}

/// As flock(1): when the --verbose lines cannot be written, the command
/// still runs, and lockwrap then exits 1 with one line.
#[test]
fn a_failed_verbose_write_exits_1_after_the_command() {
    let sb = Sandbox::new("verbose-full");
    let lock = sb.locks.join("lk");
    let marker = sb.work_path("ran");
    let script = format!(
        "\"$LW\" --verbose '{}' sh -c 'touch \"$0\"; exit 5' '{}' >/dev/full",
        lock.display(),
        marker.display()
    );
    let out = run_script(&sb, &common::bin(), &script);
    out.assert_error(1);
    assert!(out.stderr.contains("stdout"), "{out:?}");
    assert!(marker.exists(), "the command did not run");
    // Without --verbose nothing is written, so nothing fails.
    let script = format!("\"$LW\" '{}' sh -c 'exit 5' >/dev/full", lock.display());
    run_script(&sb, &common::bin(), &script).assert_code(5);
}

#[test]
fn repeated_options_are_accepted_and_the_last_one_wins() {
    let sb = Sandbox::new("repeated");
    let lock = sb.locks.join("lk");
    let lock = lock.to_str().unwrap();
    for args in [
        &["-n", "-n", lock, "true"][..],
        &["-nn", lock, "true"],
        &["-x", "-x", lock, "true"],
        &["-e", "-x", lock, "true"],
        &["-s", "-s", lock, "true"],
        &["-o", "-o", lock, "true"],
        &["-F", "-F", lock, "true"],
        &["-w", "1", "-w", "2", lock, "true"],
        &["-E", "3", "-E", "4", lock, "true"],
        &["--verbose", "--verbose", lock, "true"],
    ] {
        run_both(&sb, args, true).assert_code(0);
    }
    let mut holder = sb.hold(&[], lock);
    run_both(&sb, &["-E", "9", "-E", "10", "-n", lock, "true"], true).assert_code(10);
    run_both(
        &sb,
        &["-w", "30", "-w", "0.2", "-E", "7", lock, "true"],
        true,
    )
    .assert_code(7);
    holder.release_and_finish().assert_code(0);
}

/// `lockwrap -n -E 9 ARGS LOCK true`: 0 if the lock could be taken, 9 if it
/// is held.
fn probe(sb: &Sandbox, args: &[&str], lock: &str) -> i32 {
    let mut all = vec!["-n", "-E", "9"];
    all.extend(args);
    all.extend([lock, "true"]);
    let out = sb.run(sb.lockwrap(&all));
    assert!(
        matches!(out.status.code(), Some(0 | 9)) && out.stderr.is_empty(),
        "{all:?}: {out:?}"
    );
    out.code()
}

#[test]
fn byte_ranges_conflict_only_where_they_overlap() {
    let sb = Sandbox::new("ranges");
    let lock = sb.locks.join("lk");
    let lock = lock.to_str().unwrap();
    // Bytes 100-109, exclusive.
    let mut holder = sb.hold(&["--start", "100", "--length", "10"], lock);
    for (args, code) in [
        (&["--start", "105", "--length", "1"][..], 9),
        (&["--start", "109", "--length", "1"], 9),
        (&["--start", "90", "--length", "11"], 9),
        (&["--start", "0"], 9),
        (&["--fcntl"], 9),
        (&["--start", "110", "--length", "1"], 0),
        (&["--start", "110"], 0),
        (&["--start", "0", "--length", "100"], 0),
        // A shared lock is refused on held bytes, granted beside them.
        (&["-s", "--start", "100", "--length", "1"], 9),
        (&["-s", "--start", "99", "--length", "1"], 0),
        // flock(2) locks are independent of fcntl locks, as with flock(1).
        (&[], 0),
    ] {
        assert_eq!(probe(&sb, args, lock), code, "{args:?}");
    }
    holder.release_and_finish().assert_code(0);
    assert_eq!(probe(&sb, &["--start", "105", "--length", "1"], lock), 0);

    // A length of 0 (the default) runs to the end of the file and beyond.
    let mut holder = sb.hold(&["--start", "200"], lock);
    assert_eq!(probe(&sb, &["--start", "1T", "--length", "1"], lock), 9);
    assert_eq!(probe(&sb, &["--start", "150", "--length", "50"], lock), 0);
    holder.release_and_finish().assert_code(0);

    // Shared holders of overlapping bytes admit each other.
    let mut holder = sb.hold(&["-s", "--start", "0", "--length", "10"], lock);
    assert_eq!(
        probe(&sb, &["-s", "--start", "5", "--length", "10"], lock),
        0
    );
    assert_eq!(probe(&sb, &["--start", "9", "--length", "1"], lock), 9);
    holder.release_and_finish().assert_code(0);
}

#[test]
fn byte_range_sizes_are_read_as_flock1_reads_them() {
    let sb = Sandbox::new("range-sizes");
    let lock = sb.locks.join("lk");
    let lock = lock.to_str().unwrap();
    // 1KB = 1000, 1K = 1024: bytes 1000-2023, as in util-linux's strtosize.
    let mut holder = sb.hold(&["--start", "1KB", "--length", "1K"], lock);
    for (start, code) in [
        ("999", 0),
        ("1000", 9),
        ("0x3e8", 9),
        ("1KiB", 9),
        ("2KB", 9),
        ("2023", 9),
        ("2024", 0),
        ("1.5K", 9),
        ("1M", 0),
    ] {
        assert_eq!(
            probe(&sb, &["--start", start, "--length", "1"], lock),
            code,
            "--start {start}"
        );
    }
    holder.release_and_finish().assert_code(0);
}

#[test]
fn bad_byte_ranges_are_usage_errors() {
    for args in [
        &["--start", "-1", "LOCK", "true"][..],
        &["--start", "abc", "LOCK", "true"],
        &["--start", "", "LOCK", "true"],
        &["--length", "1.5", "LOCK", "true"],
        &["--length", "1B", "LOCK", "true"],
        &["--length", "-5", "LOCK", "true"],
        &["--start", "9223372036854775808", "LOCK", "true"],
        &["--length", "8E", "LOCK", "true"],
        &["--start", "1", "--status", "--length", "x", "LOCK"],
    ] {
        // flock(1) 2.38 has no --start or --length.
        assert_usage_error_leaves_lock_alone(args, false);
    }
    // They apply to file locks only.
    let sb = Sandbox::new("range-kinds");
    let marker = sb.work_path("ran");
    for backend in [Backend::Mkdir, Backend::Excl, Backend::Abstract] {
        let spec = backend.spec(&sb, "lk");
        for option in ["--start", "--length"] {
            let out = sb.run(sb.lockwrap([option, "1", &spec, "touch", marker.to_str().unwrap()]));
            out.assert_error(64);
            assert!(out.stderr.contains(option), "{out:?}");
            sb.run(sb.lockwrap([option, "1", "--status", &spec]))
                .assert_error(64);
        }
        assert!(!marker.exists());
        assert_eq!(sb.lock_dir_entries(), Vec::<String>::new());
    }
}

#[test]
fn byte_ranges_apply_to_the_callers_fd() {
    let sb = Sandbox::new("range-fd");
    let lock = sb.locks.join("lk");
    let script = format!(
        r#"exec 9<>'{f}'
"$LW" -n --start 0 --length 5 9 || exit 10
"$LW" -n -E 7 --start 4 --length 1 '{f}' true; a=$?
"$LW" -n -E 7 --start 5 --length 1 '{f}' true; b=$?
"$LW" --fd 9 --start 10 --length 1 sh -c '"$LW" -n -E 7 --start 10 "$0" true; echo "inside $?"' '{f}' || exit 11
"$LW" -u --start 0 --length 5 9 || exit 12
"$LW" -n -E 7 --start 4 --length 1 '{f}' true; c=$?
"$LW" -n -E 7 --start 10 --length 1 '{f}' true; d=$?
echo "$a $b $c $d""#,
        f = lock.display()
    );
    let out = run_script(&sb, &common::bin(), &script);
    out.assert_code(0);
    // Bytes 0-4 held, then released by -u; byte 10 stays locked on fd 9.
    assert_eq!(out.stdout, "inside 7\n7 0 0 7\n", "{out:?}");
    assert_eq!(out.stderr, "");
}
