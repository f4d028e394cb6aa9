//! Faults in the middle of taking or releasing a mkdir/excl lock (issue
//! 10): a full filesystem, and a SIGKILL at every system call. Whatever
//! happens, lockwrap leaves nothing behind that keeps the next wrapper out
//! once the fault is gone.

mod common;

use std::fs;
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Backend, Sandbox, WAIT};

/// A small tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as mount(8) takes it) at `dir`; Err says why not.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(dir.to_owned()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Fills it up with the file `filler`.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut file = fs::File::create(&path).expect("create the filler");
        let chunk = [b'x'; 4096];
        loop {
            if let Err(e) = file.write_all(&chunk) {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                return path;
            }
        }
    }

    /// The names in it.
    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Issue 10 (5): on a full filesystem a mkdir or excl lock cannot be
/// created: exit 73 (EX_CANTCREAT, as the README says), one line, and
/// nothing left behind, so that the lock works as soon as there is space.
#[test]
fn a_full_filesystem_gives_73_and_leaves_nothing_behind() {
    for (backend, prefix) in [(Backend::Mkdir, "mkdir"), (Backend::Excl, "excl")] {
        let sb = Sandbox::new(&format!("enospc-{backend:?}"));
        let tmpfs = match Tmpfs::mount(&sb.work_path("fs"), "64k") {
            Ok(tmpfs) => tmpfs,
            Err(why) => {
                eprintln!("skipped: cannot mount a 64 KiB tmpfs (needs root): {why}");
                return;
            }
        };
        let filler = tmpfs.fill();
        let lock = format!("{prefix}:{}", tmpfs.0.join("L").display());
        let marker = sb.work_path("ran");
        let out = sb.run(sb.lockwrap([&lock, "touch", marker.to_str().unwrap()]));
        out.assert_error(73);
        assert!(!marker.exists(), "{lock}: the command ran");
        assert_eq!(
            tmpfs.entries(),
            ["filler"],
            "{lock}: left behind on the full filesystem"
        );
        fs::remove_file(filler).unwrap();
        let out = sb.run(sb.lockwrap(["-n", &lock, "echo", "ran"]));
        assert_eq!(
            (out.status.code(), out.stdout.as_str()),
            (Some(0), "ran\n"),
            "{lock}: once there is space again: {out:?}"
        );
        assert_eq!(tmpfs.entries(), Vec::<String>::new(), "{lock}");
    }
}

/// Issue 13 (5): on a full filesystem a `--fair` waiter cannot join the
/// line: it fails with 73, one line, and leaves nothing, rather than wait
/// unfairly; a waiter without `--fair` waits without a ticket and gets the
/// lock.
#[test]
fn a_full_filesystem_fails_a_fair_waiter_with_73_and_lets_others_wait() {
    let sb = Sandbox::new("enospc-fair");
    let tmpfs = match Tmpfs::mount(&sb.work_path("fs"), "64k") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            eprintln!("skipped: cannot mount a 64 KiB tmpfs (needs root): {why}");
            return;
        }
    };
    let lock = tmpfs.0.join("L").display().to_string();
    let mut holder = sb.hold(&[], &lock);
    let filler = tmpfs.fill();
    let marker = sb.work_path("fair-ran");
    let out = sb.run(sb.lockwrap([
        "--fair",
        "-w",
        "5",
        &lock,
        "touch",
        marker.to_str().unwrap(),
    ]));
    out.assert_error(73);
    assert!(
        out.stderr.contains(&lock) && out.stderr.contains("--fair"),
        "{out:?}"
    );
    assert!(!marker.exists());
    assert_eq!(
        tmpfs.entries(),
        ["L", "filler"],
        "left behind on the full filesystem"
    );
    let marker = sb.work_path("plain-ran");
    let mut plain = sb.spawn(
        sb.lockwrap(["-w", "10", &lock, "touch", marker.to_str().unwrap()]),
        "plain",
    );
    common::wait_until("the plain waiter to block on the lock", WAIT, || {
        sb.run(sb.lockwrap(["--status", &lock]))
            .stdout
            .contains(&format!("waiting: pid {}", plain.pid()))
    });
    holder.release_and_finish().assert_code(0);
    plain.finish().assert_code(0);
    assert!(marker.exists());
    fs::remove_file(filler).unwrap();
    assert_eq!(tmpfs.entries(), ["L"]);
}

/// The names of the system calls lockwrap itself (not its command) makes
/// when it runs with `args`, in the order of their first use.
fn syscalls(sb: &Sandbox, args: &[&str]) -> Vec<String> {
    let trace = sb.work_path("trace");
    let mut command = Command::new("strace");
    command
        .args(["-qq", "-o"])
        .arg(&trace)
        .arg(common::bin())
        .args(args);
    sb.run(command).assert_code(0);
    let mut names: Vec<String> = Vec::new();
    for line in fs::read_to_string(&trace).unwrap().lines() {
        let Some((name, _)) = line.split_once('(') else {
            continue;
        };
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if valid && !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    assert!(names.len() > 10, "too few system calls traced: {names:?}");
    names
}

/// Issue 10 (7): whatever system call of lockwrap (taking the lock,
/// running the command, releasing it) a SIGKILL interrupts, the lock it
/// leaves is taken by the next `lockwrap -n` (at once, or once the killed
/// wrapper's short command has exited), and nothing is left behind after
/// that one releases it. strace injects the SIGKILL at the Nth call of each
/// system call in turn, N = 1, 2, ... until a run completes without it.
#[test]
fn a_sigkill_at_any_system_call_leaves_a_lock_the_next_wrapper_takes() {
    if !common::strace_usable() {
        return;
    }
    for backend in [Backend::Mkdir, Backend::Excl] {
        let sb = Sandbox::new(&format!("sigkill-everywhere-{backend:?}"));
        let lock = backend.spec(&sb, "lk");
        let mut kills = 0;
        for name in syscalls(&sb, &[&lock, "true"]) {
            for n in 1.. {
                assert!(n < 1000, "{name}: the injection never stops firing");
                let inject = format!("inject={name}:signal=SIGKILL:when={n}");
                let mut command = Command::new("strace");
                command
                    .args(["-qq", "-o", "/dev/null", "-e", &inject])
                    .arg(common::bin())
                    .args([&lock, "true"]);
                let out = sb.run(command);
                let killed = out.status.signal() == Some(libc::SIGKILL)
                    || out.status.code() == Some(128 + libc::SIGKILL);
                if !killed {
                    out.assert_code(0);
                    break;
                }
                kills += 1;
                let at = format!("{backend:?}, SIGKILL at call {n} of {name}");
                let mut last = None;
                let taken = std::time::Instant::now();
                while taken.elapsed() < WAIT {
                    let probe = sb.run(sb.lockwrap(["-n", &lock, "true"]));
                    match probe.status.code() {
                        Some(0) => {
                            last = None;
                            break;
                        }
                        Some(1) => last = Some(probe),
                        _ => panic!("{at}: the next wrapper failed: {probe:?}"),
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                if let Some(probe) = last {
                    let status = sb.run(sb.lockwrap(["--status", &lock]));
                    panic!(
                        "{at}: the lock is stuck ({WAIT:?} later -n still fails: {probe:?}); \
                         --status: {}",
                        status.stdout.trim_end()
                    );
                }
                assert_eq!(
                    sb.lock_dir_entries(),
                    Vec::<String>::new(),
                    "{at}: left behind after the next wrapper's release"
                );
            }
        }
        assert!(kills > 50, "{backend:?}: only {kills} injections fired");
    }
}

/// Out of fds (`ulimit -n`) at any point of an acquire or release: lockwrap
/// fails with 71 or warns, and whatever it leaves carries an identity the
/// next wrapper can judge, so a normal run afterwards cleans it all up.
#[test]
fn running_out_of_fds_leaves_nothing_the_next_wrapper_cannot_clean() {
    let sb = Sandbox::new("emfile");
    for backend in [Backend::Mkdir, Backend::Excl] {
        let lock = backend.spec(&sb, "lk");
        for limit in 4..12 {
            let script = format!("ulimit -n {limit}; exec \"$0\" '{lock}' true");
            let mut command = Command::new("sh");
            command.args(["-c", &script, common::bin().to_str().unwrap()]);
            let out = sb.run(command);
            assert!(
                matches!(out.status.code(), Some(0 | 71)),
                "{lock} under ulimit -n {limit}: {out:?}"
            );
        }
        sb.run(sb.lockwrap(["-n", &lock, "true"])).assert_code(0);
        assert_eq!(
            sb.lock_dir_entries(),
            Vec::<String>::new(),
            "{lock}: left behind after a normal run"
        );
    }
}

/// Issue 13 (5): a `--fair` waiter SIGKILLed at any system call of joining,
/// waiting in and leaving the line (on every thread) never holds up the
/// line: `--status` lists only the live fair waiter ahead of it, in first
/// place, and that one gets the lock on the release. Afterwards nothing is
/// left beside the lock.
#[test]
fn a_fair_waiter_killed_at_any_line_system_call_never_blocks_the_line() {
    if !common::strace_usable() {
        return;
    }
    let sb = Sandbox::new("sigkill-fair");
    let lock = Backend::Flock.spec(&sb, "lk");
    let mut holder = sb.hold(&[], &lock);
    let ahead_ran = sb.work_path("ahead-ran");
    let mut ahead = sb.spawn(
        sb.lockwrap(["--fair", &lock, "touch", ahead_ran.to_str().unwrap()]),
        "ahead",
    );
    let only_ahead = |json: &str| {
        let waiters = json.split_once("\"waiters\":").map_or("", |(_, w)| w);
        waiters.matches("\"pid\":").count() == 1
            && waiters.contains(&format!("\"pid\":{},", ahead.pid()))
            && waiters.contains("\"position\":1}")
    };
    common::wait_until("the waiter ahead to be in line", WAIT, || {
        only_ahead(&sb.run(sb.lockwrap(["--status", "--json", &lock])).stdout)
    });
    // The calls of a fair waiter that joins the line, waits behind the one
    // ahead until -w expires, and leaves.
    let args = ["--fair", "-w", "0.1", lock.as_str(), "true"];
    let names = calls_made(
        &sb,
        &args,
        &[
            "openat",
            "mkdir",
            "flock",
            "pwrite64",
            "unlinkat",
            "getdents64",
            "newfstatat",
            "fstat",
            "close",
            "clone3",
            "clone",
        ],
    );
    assert!(
        names.iter().any(|n| n == "flock") && names.iter().any(|n| n == "unlinkat"),
        "{names:?}"
    );
    let mut kills = 0;
    for name in &names {
        for n in 1.. {
            assert!(n < 1000, "{name}: the injection never stops firing");
            if !killed_at(&sb, name, n, &args) {
                break;
            }
            kills += 1;
            let json = sb.run(sb.lockwrap(["--status", "--json", &lock])).stdout;
            assert!(
                only_ahead(&json),
                "SIGKILL at call {n} of {name}: the line is not just the waiter ahead: {json}"
            );
        }
    }
    assert!(kills > 20, "only {kills} injections fired");
    holder.release_and_finish().assert_code(0);
    ahead.finish().assert_code(0);
    assert!(ahead_ran.exists());
    sb.run(sb.lockwrap(["--fair", "-n", &lock, "true"]))
        .assert_code(0);
    assert_eq!(sb.lock_dir_entries(), ["lk"], "left behind beside the lock");
}

/// Issue 15 (hand-off): a mkdir or excl waiter prepares its artifact while
/// it waits. SIGKILLed at any system call of its wait (the room, the watch,
/// the artifact it prepares, the attempts, giving up at `-w`), it leaves
/// nothing that keeps the lock from the next wrapper once the holder
/// releases it, and that wrapper's release removes whatever it left.
#[test]
fn a_waiter_killed_at_any_system_call_leaves_nothing_stuck() {
    if !common::strace_usable() {
        return;
    }
    for backend in [Backend::Mkdir, Backend::Excl] {
        let sb = Sandbox::new(&format!("sigkill-waiter-{backend:?}"));
        let lock = backend.spec(&sb, "lk");
        let mut holder = sb.hold(&[], &lock);
        let args = ["-w", "0.2", lock.as_str(), "true"];
        // The calls of a waiter that waits until -w expires.
        let names = calls_made(
            &sb,
            &args,
            &[
                "openat",
                "mkdir",
                "mkdirat",
                "flock",
                "write",
                "pwrite64",
                "linkat",
                "renameat2",
                "unlinkat",
                "inotify_add_watch",
                "fstat",
                "close",
            ],
        );
        assert!(
            names.iter().any(|n| n == "renameat2" || n == "linkat"),
            "{lock}: the waiter made no attempt: {names:?}"
        );
        let mut kills = 0;
        for name in &names {
            for n in 1.. {
                assert!(n < 1000, "{name}: the injection never stops firing");
                if !killed_at(&sb, name, n, &args) {
                    break;
                }
                kills += 1;
            }
        }
        assert!(kills > 20, "{lock}: only {kills} injections fired");
        holder.release_and_finish().assert_code(0);
        sb.run(sb.lockwrap(["-n", &lock, "true"])).assert_code(0);
        assert_eq!(
            sb.lock_dir_entries(),
            Vec::<String>::new(),
            "{lock}: left behind after the next wrapper's release"
        );
    }
}

/// Runs `lockwrap ARGS` under strace with a SIGKILL injected at the `n`th
/// call of `name`: true when the kill fired (the run died of it), false
/// when the run no longer makes that many such calls (it must then have
/// ended with exit 1, a conflict).
fn killed_at(sb: &Sandbox, name: &str, n: usize, args: &[&str]) -> bool {
    let inject = format!("inject={name}:signal=SIGKILL:when={n}");
    let mut command = Command::new("strace");
    command
        .args(["-f", "-qq", "-o", "/dev/null", "-e", &inject])
        .arg(common::bin())
        .args(args);
    let out = sb.run(command);
    let killed = out.status.signal() == Some(libc::SIGKILL)
        || out.status.code() == Some(128 + libc::SIGKILL);
    if !killed {
        out.assert_code(1);
    }
    killed
}

/// Runs `lockwrap ARGS` (which must end in a conflict, exit 1) under
/// `strace -f` and returns which of the system calls `wanted` it made, in
/// the order of their first call.
fn calls_made(sb: &Sandbox, args: &[&str], wanted: &[&str]) -> Vec<String> {
    let trace = sb.work_path("trace");
    let mut command = Command::new("strace");
    command
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg(common::bin())
        .args(args);
    sb.run(command).assert_code(1);
    let mut names: Vec<String> = Vec::new();
    for line in fs::read_to_string(&trace).unwrap().lines() {
        let call = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.split_once('('));
        if let Some((name, _)) = call
            && wanted.contains(&name)
            && !names.iter().any(|n| n == name)
        {
            names.push(name.to_owned());
        }
    }
    names
}
