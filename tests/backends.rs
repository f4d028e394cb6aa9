//! The lock contract, checked for every backend: mutual exclusion, -n, -w,
//! what happens when the wrapper is killed or terminated, and -F.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use common::{
    Backend, Sandbox, WAIT, assert_no_overlap, become_subreaper, catches, critical_section_script,
    process_is_running, reap_adopted, wait_until,
};
use nix::sys::signal::Signal;

/// After a release: mkdir/excl leave nothing behind; flock/fcntl leave the
/// lock file they created, empty (never written); abstract creates no file.
#[track_caller]
fn assert_released_cleanly(backend: Backend, sb: &Sandbox) {
    let entries = sb.lock_dir_entries();
    match backend {
        Backend::Mkdir | Backend::Excl | Backend::Abstract => {
            assert!(entries.is_empty(), "left behind: {entries:?}")
        }
        Backend::Flock | Backend::Fcntl => {
            assert_eq!(entries, ["lk"]);
            assert_eq!(fs::read(sb.locks.join("lk")).unwrap(), b"");
        }
    }
}

/// Asserts the lock is free: a -n attempt runs its command and exits 0.
#[track_caller]
fn assert_free(sb: &Sandbox, spec: &str) {
    let marker = sb.work_path(&sb.label("free"));
    let out = sb.run(sb.lockwrap(["-n", spec, "touch", marker.to_str().unwrap()]));
    out.assert_code(0);
    assert!(marker.exists(), "the command did not run");
}

/// Asserts the lock is held: a -n attempt exits 1, silently, without running its command.
#[track_caller]
fn assert_held(sb: &Sandbox, spec: &str) {
    let marker = sb.work_path(&sb.label("held"));
    let out = sb.run(sb.lockwrap(["-n", spec, "touch", marker.to_str().unwrap()]));
    out.assert_code(1);
    assert_eq!(out.stderr, "", "a conflict is silent without --verbose");
    assert!(
        !marker.exists(),
        "the command ran although the lock is held"
    );
}

fn concurrent_wrappers_never_overlap(backend: Backend) {
    const WRAPPERS: usize = 5;
    let sb = Sandbox::new(&format!("overlap-{backend:?}"));
    let spec = backend.spec(&sb, "lk");
    let log = sb.work_path("log");
    let script = critical_section_script(&log);
    let mut wrappers: Vec<_> = (0..WRAPPERS)
        .map(|i| {
            let command = sb.lockwrap([spec.as_str(), "sh", "-c", &script]);
            sb.spawn(command, &format!("wrapper{i}"))
        })
        .collect();
    for wrapper in &mut wrappers {
        wrapper.finish().assert_code(0);
    }
    assert_no_overlap(&log, WRAPPERS);
    assert_released_cleanly(backend, &sb);
}

fn nonblocking_conflict_exits_1_or_the_e_value(backend: Backend) {
    let sb = Sandbox::new(&format!("nonblock-{backend:?}"));
    let spec = backend.spec(&sb, "lk");
    let mut holder = sb.hold(&[], &spec);
    assert_held(&sb, &spec);
    let marker = sb.work_path("ran");
    let out = sb.run(sb.lockwrap(["-n", "-E", "42", &spec, "touch", marker.to_str().unwrap()]));
    out.assert_code(42);
    assert_eq!(out.stderr, "");
    assert!(!marker.exists());
    holder.release_and_finish().assert_code(0);
    assert_released_cleanly(backend, &sb);
    assert_free(&sb, &spec);
}

fn wait_times_out_while_held_and_succeeds_when_released(backend: Backend) {
    let sb = Sandbox::new(&format!("wait-{backend:?}"));
    let spec = backend.spec(&sb, "lk");
    let log = sb.work_path("log");
    let mut holder = sb.hold(&[], &spec);

    let marker = sb.work_path("ran");
    let out = sb.run(sb.lockwrap([
        "-w",
        "0.3",
        "-E",
        "42",
        &spec,
        "touch",
        marker.to_str().unwrap(),
    ]));
    out.assert_code(42);
    assert_eq!(out.stderr, "", "a timeout is silent without --verbose");
    assert!(!marker.exists());

    let script = format!("echo waiter >> '{}'", log.display());
    let mut waiter = sb.spawn(
        sb.lockwrap(["-w", "30", &spec, "sh", "-c", &script]),
        "waiter",
    );
    wait_until("the waiter to set up", WAIT, || {
        catches(waiter.pid(), libc::SIGTERM)
    });
    assert!(!log.exists(), "the waiter ran while the lock was held");
    fs::write(&log, "holder leaves\n").unwrap();
    holder.release_and_finish().assert_code(0);
    waiter.finish().assert_code(0);
    assert_eq!(fs::read_to_string(&log).unwrap(), "holder leaves\nwaiter\n");
    assert_released_cleanly(backend, &sb);
}

fn sigkill_of_the_wrapper_leaves_the_lock_with_the_running_child(backend: Backend) {
    become_subreaper();
    let sb = Sandbox::new(&format!("sigkill-{backend:?}"));
    let spec = backend.spec(&sb, "lk");
    let mut holder = sb.hold(&[], &spec);
    if let Some(record) = backend.record_path(&sb, "lk") {
        // The wrapper records the command's pid just after spawning it; a
        // SIGKILL before that is a known bug with its own (ignored) test,
        // sigkill_right_after_the_command_started_still_leaves_the_lock_held.
        let wanted = format!("child_pid={}\n", holder.child_pid);
        wait_until("the holder record to name the command", WAIT, || {
            fs::read_to_string(&record).is_ok_and(|r| r.contains(&wanted))
        });
    }
    holder.proc.kill_and_reap();
    assert!(process_is_running(holder.child_pid));
    assert_held(&sb, &spec);

    // The command, now an orphan adopted by this test process, ends.
    holder.release();
    let status = reap_adopted(holder.child_pid);
    assert!(
        matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
        "{status:?}"
    );
    // Now nobody holds it: flock/fcntl/abstract locks went with the last fd;
    // a mkdir/excl lock is stale (all recorded pids are gone) and reclaimed.
    assert_free(&sb, &spec);
    assert_released_cleanly(backend, &sb);
}

fn sigterm_reaches_the_child_and_the_wrapper_exits_143(backend: Backend) {
    let sb = Sandbox::new(&format!("sigterm-{backend:?}"));
    let spec = backend.spec(&sb, "lk");
    let ready = sb.work_path("ready");
    let script = format!("echo $$ > '{r}' && exec sleep 60", r = ready.display());
    let mut wrapper = sb.spawn(sb.lockwrap([spec.as_str(), "sh", "-c", &script]), "wrapper");
    let child = common::wait_for_pid_file(&ready);
    assert!(process_is_running(child));
    wrapper.signal(Signal::SIGTERM);
    let out = wrapper.finish();
    // A normal exit with 128+15: the wrapper survived, the child died of it.
    assert_eq!(out.status.signal(), None, "{out:?}");
    out.assert_code(143);
    assert_eq!(out.stderr, "");
    assert!(!process_is_running(child), "the child is still running");
    assert_released_cleanly(backend, &sb);
    assert_free(&sb, &spec);
}

fn no_fork_program_keeps_the_lock_until_it_exits(backend: Backend) {
    let sb = Sandbox::new(&format!("nofork-{backend:?}"));
    let spec = backend.spec(&sb, "lk");
    let mut holder = sb.hold(&["-F"], &spec);
    assert_eq!(
        holder.child_pid,
        holder.proc.pid(),
        "-F must exec the command in place"
    );
    assert_held(&sb, &spec);
    holder.release_and_finish().assert_code(0);
    // mkdir/excl: nobody is left to remove the artifact; the next wrapper
    // finds its holder gone and reclaims it.
    assert_free(&sb, &spec);
    assert_released_cleanly(backend, &sb);
}

fn shared_is_a_usage_error_without_shared_holders(backend: Backend) {
    let sb = Sandbox::new(&format!("shared-{backend:?}"));
    let spec = backend.spec(&sb, "lk");
    let marker = sb.work_path("ran");
    for option in ["-s", "--shared"] {
        let out = sb.run(sb.lockwrap([option, &spec, "touch", marker.to_str().unwrap()]));
        out.assert_error(64);
        assert!(!marker.exists());
        assert_eq!(sb.lock_dir_entries(), Vec::<String>::new());
    }
}

macro_rules! backend_tests {
    ($($module:ident => $backend:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[test]
            fn concurrent_wrappers_never_overlap() {
                super::concurrent_wrappers_never_overlap($backend);
            }

            #[test]
            fn nonblocking_conflict_exits_1_or_the_e_value() {
                super::nonblocking_conflict_exits_1_or_the_e_value($backend);
            }

            #[test]
            fn wait_times_out_while_held_and_succeeds_when_released() {
                super::wait_times_out_while_held_and_succeeds_when_released($backend);
            }

            #[test]
            fn sigkill_of_the_wrapper_leaves_the_lock_with_the_running_child() {
                super::sigkill_of_the_wrapper_leaves_the_lock_with_the_running_child($backend);
            }

            #[test]
            fn sigterm_reaches_the_child_and_the_wrapper_exits_143() {
                super::sigterm_reaches_the_child_and_the_wrapper_exits_143($backend);
            }

            #[test]
            fn no_fork_program_keeps_the_lock_until_it_exits() {
                super::no_fork_program_keeps_the_lock_until_it_exits($backend);
            }
        }
    )*};
}

backend_tests! {
    flock => Backend::Flock,
    fcntl => Backend::Fcntl,
    mkdir => Backend::Mkdir,
    excl => Backend::Excl,
    abstract_socket => Backend::Abstract,
}

#[test]
fn shared_is_refused_for_mkdir_excl_and_abstract() {
    for backend in [Backend::Mkdir, Backend::Excl, Backend::Abstract] {
        shared_is_a_usage_error_without_shared_holders(backend);
    }
}

#[test]
fn a_stale_lock_is_reclaimed_by_one_waiter_at_a_time() {
    const WRAPPERS: usize = 5;
    for backend in [Backend::Mkdir, Backend::Excl] {
        let sb = Sandbox::new(&format!("stale-race-{backend:?}"));
        let spec = backend.spec(&sb, "lk");
        // -F: the program exits without anyone removing the artifact.
        let mut program = sb.spawn(sb.lockwrap(["-F", &spec, "true"]), "nofork");
        program.finish().assert_code(0);
        assert_eq!(sb.lock_dir_entries(), ["lk"], "{backend:?}: no stale lock");
        let log = sb.work_path("log");
        let script = critical_section_script(&log);
        let mut wrappers: Vec<_> = (0..WRAPPERS)
            .map(|i| {
                let command = sb.lockwrap([spec.as_str(), "sh", "-c", &script]);
                sb.spawn(command, &format!("wrapper{i}"))
            })
            .collect();
        for wrapper in &mut wrappers {
            wrapper.finish().assert_code(0);
        }
        assert_no_overlap(&log, WRAPPERS);
        assert_released_cleanly(backend, &sb);
    }
}

/// The open fds of a shell, as "number target" (a socket as "socket"),
/// listed by an `ls` it runs, so the listing has no fds of its own.
const LIST_FDS: &str = "ls -l /proc/$$/fd";

fn parse_fds(listing: &str) -> std::collections::BTreeMap<u32, String> {
    listing
        .lines()
        .filter_map(|line| {
            let (left, target) = line.split_once(" -> ")?;
            let fd = left.rsplit(' ').next()?.parse().ok()?;
            let target = if target.starts_with("socket:") {
                "socket".to_owned()
            } else {
                target.to_owned()
            };
            Some((fd, target))
        })
        .collect()
}

#[test]
fn the_command_inherits_the_lock_fd_and_nothing_else() {
    for backend in common::ALL_BACKENDS {
        let sb = Sandbox::new(&format!("fds-{backend:?}"));
        let spec = backend.spec(&sb, "lk");
        // What a command started without lockwrap has (cargo may pass on
        // jobserver fds and the like).
        let mut direct = Command::new("sh");
        direct.args(["-c", LIST_FDS]);
        let baseline = parse_fds(&sb.run(direct).stdout);
        assert!(baseline.contains_key(&0) && baseline.contains_key(&2));
        for close in [false, true] {
            let mut args = vec![];
            if close {
                args.push("-o");
            }
            args.extend([spec.as_str(), "sh", "-c", LIST_FDS]);
            let out = sb.run(sb.lockwrap(&args));
            out.assert_code(0);
            let fds = parse_fds(&out.stdout);
            for fd in baseline.keys() {
                assert!(fds.contains_key(fd), "fd {fd} lost: {out:?}");
            }
            let extra: Vec<&String> = fds
                .iter()
                .filter(|(fd, _)| !baseline.contains_key(fd))
                .map(|(_, target)| target)
                .collect();
            let lock_file = sb.locks.join("lk").display().to_string();
            // mkdir/excl: the owner's flock guard on the artifact (for excl,
            // the inode was published from a temp name, since removed).
            let matches: fn(&str, &str) -> bool = match backend {
                Backend::Flock | Backend::Fcntl | Backend::Mkdir => |t, lock| t == lock,
                Backend::Excl => |t, lock| {
                    t.starts_with(&format!(
                        "{}/.lk.lockwrap-",
                        lock.rsplit_once('/').unwrap().0
                    ))
                },
                Backend::Abstract => |t, _| t == "socket",
            };
            if close {
                assert!(extra.is_empty(), "{backend:?} -o: {out:?}");
            } else {
                assert!(
                    extra.len() == 1 && matches(extra[0], &lock_file),
                    "{backend:?}: {extra:?} {out:?}"
                );
            }
        }
    }
}

#[test]
fn a_plain_mkdir_excludes_lockwrap_until_it_is_removed() {
    // Shell scripts that lock with `mkdir PATH` (no holder record: "held,
    // owner unknown") and lockwrap's mkdir: locks exclude each other.
    let sb = Sandbox::new("plain-mkdir");
    let path = sb.locks.join("lk");
    let spec = Backend::Mkdir.spec(&sb, "lk");
    fs::create_dir(&path).unwrap();
    assert_held(&sb, &spec);
    let out = sb.run(sb.lockwrap(["-w", "0.3", "-E", "9", &spec, "true"]));
    out.assert_code(9);
    assert!(path.is_dir(), "a lock of unknown owner was removed");
    let log = sb.work_path("log");
    let script = format!("echo waiter >> '{}'", log.display());
    let mut waiter = sb.spawn(
        sb.lockwrap(["-w", "30", &spec, "sh", "-c", &script]),
        "waiter",
    );
    wait_until("the waiter to set up", WAIT, || {
        catches(waiter.pid(), libc::SIGTERM)
    });
    assert!(!log.exists());
    fs::remove_dir(&path).unwrap(); // the script's `rmdir PATH`
    waiter.finish().assert_code(0);
    assert_eq!(fs::read_to_string(&log).unwrap(), "waiter\n");
    assert_released_cleanly(Backend::Mkdir, &sb);
}

#[test]
fn a_plain_existing_file_excludes_excl_locks() {
    // A script's `set -C; : > PATH` lock file (no holder record).
    let sb = Sandbox::new("plain-excl");
    let path = sb.locks.join("lk");
    let spec = Backend::Excl.spec(&sb, "lk");
    fs::write(&path, "").unwrap();
    assert_held(&sb, &spec);
    assert!(path.is_file());
    fs::remove_file(&path).unwrap();
    assert_free(&sb, &spec);
    assert_released_cleanly(Backend::Excl, &sb);
}

#[test]
fn a_background_process_of_the_command_keeps_fd_carried_locks() {
    // As with flock(1): the lock fd is inherited, so a background process
    // the command leaves behind keeps the lock after lockwrap exits.
    for backend in [Backend::Flock, Backend::Fcntl, Backend::Abstract] {
        let sb = Sandbox::new(&format!("background-{backend:?}"));
        let spec = backend.spec(&sb, "lk");
        let ready = sb.work_path("ready");
        let gate = sb.fifo("gate");
        let script = format!(
            "(read line < '{g}') > /dev/null 2>&1 &
echo $! > '{r}'",
            g = gate.display(),
            r = ready.display()
        );
        let mut wrapper = sb.spawn(sb.lockwrap([spec.as_str(), "sh", "-c", &script]), "w");
        wrapper.finish().assert_code(0);
        let background = common::wait_for_pid_file(&ready);
        assert!(process_is_running(background));
        assert_held(&sb, &spec);
        common::open_gate(&gate);
        wait_until("the background process to end", WAIT, || {
            !process_is_running(background)
        });
        assert_free(&sb, &spec);
    }
}

#[test]
fn sigkill_right_after_the_command_started_still_leaves_the_lock_held() {
    // Probabilistic by nature: kill as early as the command can tell it runs,
    // many times. A correct lockwrap passes every round.
    const ROUNDS: usize = 40;
    become_subreaper();
    for backend in [Backend::Mkdir, Backend::Excl] {
        let sb = Sandbox::new(&format!("early-kill-{backend:?}"));
        let spec = backend.spec(&sb, "lk");
        for round in 0..ROUNDS {
            let mut holder = sb.hold(&[], &spec);
            holder.proc.kill_and_reap();
            let out = sb.run(sb.lockwrap(["-n", &spec, "true"]));
            let child_running = process_is_running(holder.child_pid);
            holder.release();
            reap_adopted(holder.child_pid);
            assert!(child_running);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{backend:?}, round {round}: the lock was free while the command still ran"
            );
            assert_free(&sb, &spec);
        }
    }
}

#[test]
fn a_holder_that_exited_but_is_not_reaped_is_stale() {
    for backend in [Backend::Mkdir, Backend::Excl] {
        let sb = Sandbox::new(&format!("zombie-{backend:?}"));
        let spec = backend.spec(&sb, "lk");
        // -F: the recorded holder is the program itself, our direct child.
        // It exits; we deliberately do not reap it yet.
        let program = sb.spawn(sb.lockwrap(["-F", &spec, "true"]), "nofork");
        let pid = program.pid();
        wait_until("the program to exit", WAIT, || {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit(')').next().unwrap().trim_start().starts_with('Z'))
        });
        // The zombie holds no fd, no lock, runs no code: the lock is stale.
        assert_free(&sb, &spec);
        drop(program);
    }
}

#[test]
fn verbose_conflict_names_the_holder() {
    for backend in common::ALL_BACKENDS {
        let sb = Sandbox::new(&format!("verbose-{backend:?}"));
        let spec = backend.spec(&sb, "lk");
        let mut holder = sb.hold(&[], &spec);
        let out = sb.run(sb.lockwrap(["-n", "--verbose", &spec, "true"]));
        out.assert_error(1);
        assert!(
            out.stderr.contains(&holder.proc.pid().to_string()),
            "{backend:?}: the holder (pid {}) is not named: {out:?}",
            holder.proc.pid()
        );
        holder.release_and_finish().assert_code(0);
    }
}

/// Issue 10 (9): lock paths are normalised before use. `mkdir:/`,
/// `mkdir:..`, a trailing slash on a mkdir or excl path: each is either a
/// usage error (64, one line) or works (the command runs under the lock and
/// nothing is left behind), with -n and without, and never waits or spins.
#[test]
fn odd_lock_paths_are_refused_or_work_and_never_spin() {
    let sb = Sandbox::new("odd-paths");
    let missing = sb.locks.join("x");
    // Run in work/: `..` is the sandbox's root, which exists.
    let cases = [
        "mkdir:/".to_owned(),
        "mkdir:..".to_owned(),
        format!("mkdir:{}/", sb.locks.join("lk").display()),
        format!("excl:{}/", missing.display()),
    ];
    for lock in &cases {
        for wait in [&["-n"][..], &[]] {
            let mut args: Vec<&str> = wait.to_vec();
            args.extend([lock.as_str(), "echo", "ran"]);
            let out = sb.run(sb.lockwrap(&args));
            match out.status.code() {
                Some(64) => {
                    out.assert_error(64);
                    assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
                }
                Some(0) => assert_eq!(
                    (out.stdout.as_str(), out.stderr.as_str()),
                    ("ran\n", ""),
                    "{args:?}: {out:?}"
                ),
                _ => panic!("{args:?}: neither a usage error nor a lock taken: {out:?}"),
            }
            assert_eq!(
                sb.lock_dir_entries(),
                Vec::<String>::new(),
                "{args:?}: left behind"
            );
            assert!(sb.work.is_dir() && sb.locks.is_dir(), "{args:?}");
        }
    }
}

/// A file the command leaves inside its mkdir lock keeps the directory from
/// being removed; the lock then keeps its record (it is stale, with a named
/// holder), instead of turning into "held, owner unknown" for good.
#[test]
fn a_file_left_in_a_mkdir_lock_keeps_its_record() {
    let sb = Sandbox::new("left-file");
    let dir = sb.locks.join("lk");
    let lock = format!("mkdir:{}", dir.display());
    let script = format!("echo x > '{}'", dir.join("extra").display());
    let out = sb.run(sb.lockwrap([&lock, "sh", "-c", &script]));
    assert!(out.stderr.contains("did not create"), "{out:?}");
    let status = sb.run(sb.lockwrap(["--status", &lock]));
    assert!(
        !status.stdout.contains("owner unknown") && status.stdout.contains("pid"),
        "{status:?}"
    );
}
