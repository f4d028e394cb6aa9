//! Stale mkdir/excl locks are reclaimed only when their holder is provably
//! gone, and exactly one of several racing reclaimers wins.

mod common;

use std::fs;
use std::path::Path;

use common::records::{
    ARTIFACTS, dead_process, hostname, live_process, now_ms, plant, record, start_time,
};
use common::tree::KillOnDrop;
use common::{
    Backend, Proc, Sandbox, WAIT, become_subreaper, open_gate, process_is_running, reap_adopted,
    wait_for_pid_file, wait_until,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn sigkill_of_wrapper_and_child_leaves_a_lock_the_next_wrapper_reclaims() {
    become_subreaper();
    for backend in ARTIFACTS {
        let sb = Sandbox::new(&format!("sigkill-{backend:?}"));
        let lock = backend.spec(&sb, "lk");
        let path = sb.locks.join("lk");
        let mut holder = sb.hold(&[], &lock);
        let child_pid = holder.child_pid;
        // --status names the command once the wrapper has recorded it.
        let wanted = format!("\"child_pid\":{child_pid}");
        wait_until("--status to name the command", WAIT, || {
            sb.run(sb.lockwrap(["--status", "--json", &lock]))
                .stdout
                .contains(&wanted)
        });
        holder.proc.kill_and_reap();
        kill(Pid::from_raw(child_pid), Signal::SIGKILL).expect("kill the command");
        // The command, adopted by this test process, stays a zombie until
        // reaped below: dead, though its pid still has a /proc entry.
        wait_until("the command to be a zombie", WAIT, || {
            !process_is_running(child_pid)
        });
        assert!(
            Path::new(&format!("/proc/{child_pid}")).exists(),
            "not reaped yet"
        );
        assert!(path.exists(), "the artifact outlives its SIGKILLed holder");
        let out = sb.run(sb.lockwrap(["-n", &lock, "echo", "reclaimed"]));
        out.assert_code(0);
        assert_eq!(out.stdout, "reclaimed\n", "{backend:?}: {out:?}");
        assert!(
            !path.exists(),
            "{backend:?}: the reclaimed lock was released"
        );
        let status = reap_adopted(child_pid);
        assert!(
            matches!(
                status,
                nix::sys::wait::WaitStatus::Signaled(_, Signal::SIGKILL, _)
            ),
            "{status:?}"
        );
    }
}

#[test]
fn pid_reuse_does_not_fool_the_liveness_check() {
    let sb = Sandbox::new("pid-reuse");
    let mut live = live_process(&sb);
    let pid = live.pid();
    let start = start_time(pid);
    for backend in ARTIFACTS {
        // A live pid with the wrong start time: the recorded process is gone.
        let name = format!("{backend:?}-reused");
        let lock = plant(
            &sb,
            backend,
            &name,
            &record(pid, start + 1, &hostname(), now_ms()),
        );
        let out = sb.run(sb.lockwrap(["-n", &lock, "true"]));
        assert_eq!(
            out.code(),
            0,
            "{backend:?}: a reused pid must count as dead: {out:?}"
        );
        assert!(
            !sb.locks.join(&name).exists(),
            "{backend:?}: the reclaimed lock was released"
        );

        // A live pid with the right start time: held.
        let name = format!("{backend:?}-alive");
        let planted = record(pid, start, &hostname(), now_ms());
        let lock = plant(&sb, backend, &name, &planted);
        let out = sb.run(sb.lockwrap(["-n", &lock, "true"]));
        assert_eq!(
            out.code(),
            1,
            "{backend:?}: a live holder must not be reclaimed: {out:?}"
        );
        let record_file = backend.record_path(&sb, &name).unwrap();
        assert_eq!(fs::read_to_string(record_file).unwrap(), planted);
    }
    live.kill_and_reap();
}

#[test]
fn what_cannot_be_proven_dead_is_kept_unless_stale_after_says_otherwise() {
    let sb = Sandbox::new("unprovable");
    let (pid, start) = dead_process(&sb);
    let hour_ago = now_ms() - 3_600_000;
    let code = |args: &[&str]| sb.run(sb.lockwrap(args)).code();
    for backend in ARTIFACTS {
        // Another host (a shared NFS directory): never reclaimed on sight.
        let name = format!("{backend:?}-remote");
        let lock = plant(
            &sb,
            backend,
            &name,
            &record(pid, start, "some-other-host", hour_ago),
        );
        assert_eq!(
            code(&["-n", &lock, "true"]),
            1,
            "{backend:?}: remote holder"
        );
        assert_eq!(code(&["-n", "--stale-after", "2h", &lock, "true"]), 1);
        let out = sb.run(sb.lockwrap(["-n", "--stale-after", "30m", &lock, "true"]));
        assert_eq!(
            out.code(),
            0,
            "{backend:?}: older than --stale-after: {out:?}"
        );
        assert!(!sb.locks.join(&name).exists());

        // No parseable record: owner unknown, and the file is left as it is.
        let name = format!("{backend:?}-garbage");
        let lock = plant(&sb, backend, &name, "not a record\n");
        let record_file = backend.record_path(&sb, &name).unwrap();
        assert_eq!(code(&["-n", &lock, "true"]), 1);
        assert_eq!(
            code(&["-n", "--stale-after", "1h", &lock, "true"]),
            1,
            "just made"
        );
        assert_eq!(fs::read_to_string(&record_file).unwrap(), "not a record\n");
    }
}

#[test]
fn a_record_from_another_boot_is_stale() {
    let sb = Sandbox::new("rebooted");
    let text = record(1, 1, &hostname(), now_ms()).replace("boot_id=", "boot_id=0");
    let lock = plant(&sb, Backend::Excl, "rebooted", &text);
    let out = sb.run(sb.lockwrap(["-n", &lock, "true"]));
    assert_eq!(out.code(), 0, "{out:?}");
    assert!(
        !sb.locks.join("rebooted").exists(),
        "the reclaimed lock was released"
    );
}

#[test]
fn racing_reclaimers_never_both_win() {
    const RACERS: usize = 8;
    const ROUNDS: usize = 15;
    let sb = Sandbox::new("race");
    let (pid, start) = dead_process(&sb);
    for round in 0..ROUNDS {
        for backend in ARTIFACTS {
            let name = format!("{backend:?}-race{round}");
            let lock = plant(
                &sb,
                backend,
                &name,
                &record(pid, start, &hostname(), now_ms()),
            );
            let winners = sb.work_path(&format!("{backend:?}-winners{round}"));
            let gate = sb.fifo(&format!("{backend:?}-gate{round}"));
            // A winner records itself and holds the lock until released, so a
            // second winner could only be a reclaim race.
            let script = format!(
                "echo $$ >> '{}' && read line < '{}'",
                winners.display(),
                gate.display()
            );
            let mut racers: Vec<Proc> = (0..RACERS)
                .map(|i| {
                    let command = sb.lockwrap(["-n", &lock, "sh", "-c", &script]);
                    sb.spawn(command, &format!("{backend:?}-racer{round}-{i}"))
                })
                .collect();
            wait_until("all racers but the winner to give up", WAIT, || {
                racers
                    .iter_mut()
                    .map(|r| !r.is_running() as usize)
                    .sum::<usize>()
                    >= RACERS - 1
            });
            // `>>` creates the file before it writes the line.
            wait_until("the winner's line", WAIT, || {
                fs::read_to_string(&winners).is_ok_and(|text| text.ends_with('\n'))
            });
            let lines = fs::read_to_string(&winners).unwrap();
            assert_eq!(
                lines.lines().count(),
                1,
                "{backend:?} round {round}: winners {lines:?}"
            );
            open_gate(&gate);
            let codes: Vec<i32> = racers.iter_mut().map(|r| r.finish().code()).collect();
            assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
            assert_eq!(
                codes.iter().filter(|c| **c == 1).count(),
                RACERS - 1,
                "{codes:?}"
            );
            assert!(
                !sb.locks.join(&name).exists(),
                "the winner released the lock"
            );
        }
    }
}

#[test]
fn a_symlink_at_the_lock_path_is_never_followed() {
    let sb = Sandbox::new("symlink");
    let target = sb.work_path("precious");
    fs::write(&target, "keep me").unwrap();
    for backend in ARTIFACTS {
        let name = format!("{backend:?}-link");
        let link = sb.locks.join(&name);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let out = sb.run(sb.lockwrap(["-n", &backend.spec(&sb, &name), "true"]));
        out.assert_error(66);
        assert!(out.stderr.contains("symlink"), "{backend:?}: {out:?}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep me");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}

/// Issue 10 (4): a record with a 20 kB command is read, so the lock of a
/// SIGKILLed holder that ran a long command line is reclaimed at once
/// instead of staying "owner unknown" forever.
#[test]
fn a_dead_holder_with_a_20_kb_command_is_reclaimed_at_once() {
    become_subreaper();
    for backend in ARTIFACTS {
        let sb = Sandbox::new(&format!("long-{backend:?}"));
        let lock = backend.spec(&sb, "long");
        let long = format!(": {}", "x".repeat(20_000));
        let mut holder = sb.hold_after(&[], &lock, &long);
        let child_pid = holder.child_pid;
        let record_file = backend.record_path(&sb, "long").unwrap();
        let wanted = format!("child_pid={child_pid}\n");
        wait_until("the record to name the command", WAIT, || {
            fs::read_to_string(&record_file).is_ok_and(|r| r.contains(&wanted))
        });
        holder.proc.kill_and_reap();
        kill(Pid::from_raw(child_pid), Signal::SIGKILL).expect("kill the command");
        wait_until("the command to die", WAIT, || {
            !process_is_running(child_pid)
        });
        let out = sb.run(sb.lockwrap(["-n", &lock, "echo", "reclaimed"]));
        assert_eq!(
            (out.status.code(), out.stdout.as_str()),
            (Some(0), "reclaimed\n"),
            "{backend:?}: the dead holder's 20 kB record was not read: {out:?}"
        );
        assert_eq!(sb.lock_dir_entries(), Vec::<String>::new());
        reap_adopted(child_pid);
    }
}

/// Issue 10 (5): the guard (the flock the command's processes inherit)
/// stays on the inode at the lock path, also after the record names the
/// command. The wrapper is SIGKILLed after its command has exited, leaving
/// a background process of the command: the record's processes are all
/// dead, but the lock is held while that background process runs.
#[test]
fn the_guard_keeps_the_lock_while_a_background_process_of_the_command_runs() {
    become_subreaper();
    for backend in ARTIFACTS {
        let sb = Sandbox::new(&format!("guard-{backend:?}"));
        let lock = backend.spec(&sb, "bg");
        let sh_file = sb.work_path("sh.pid");
        let bg_file = sb.work_path("bg.pid");
        let script = format!(
            "echo $$ > '{}'; sleep 1000 & echo $! > '{}'",
            sh_file.display(),
            bg_file.display()
        );
        let mut wrapper = sb.spawn(sb.lockwrap([&lock, "sh", "-c", &script]), "wrapper");
        let sh = wait_for_pid_file(&sh_file);
        let bg = wait_for_pid_file(&bg_file);
        let _guard = KillOnDrop(vec![bg]);
        let record_file = backend.record_path(&sb, "bg").unwrap();
        let wanted = format!("child_pid={sh}\n");
        wait_until("the record to name the command", WAIT, || {
            fs::read_to_string(&record_file).is_ok_and(|r| r.contains(&wanted))
        });
        wait_until(
            "the command (not its background process) to exit",
            WAIT,
            || !process_is_running(sh),
        );
        wrapper.kill_and_reap();
        assert!(process_is_running(bg));
        let out = sb.run(sb.lockwrap(["-n", &lock, "true"]));
        assert_eq!(
            out.status.code(),
            Some(1),
            "{backend:?}: the lock was taken while a process of the command ran: {out:?}"
        );
        kill(Pid::from_raw(bg), Signal::SIGKILL).expect("kill the background process");
        reap_adopted(bg);
        sb.run(sb.lockwrap(["-n", &lock, "true"])).assert_code(0);
        assert_eq!(sb.lock_dir_entries(), Vec::<String>::new());
    }
}

/// Issue 10 (7): `--stale-after` is for locks whose owner is unknown; it
/// never takes the lock of a holder that is provably alive, however old.
#[test]
fn stale_after_never_takes_a_live_holders_lock() {
    for backend in ARTIFACTS {
        let sb = Sandbox::new(&format!("stale-after-live-{backend:?}"));
        let lock = backend.spec(&sb, "live");
        let mut holder = sb.hold(&[], &lock);
        let since = std::time::Instant::now();
        let log = sb.work_path("second");
        let script = format!("echo SECOND >> '{}'", log.display());
        // Older than --stale-after: the age is what is under test.
        wait_until("the holder to be older than 1s", WAIT, || {
            since.elapsed() > std::time::Duration::from_millis(1200)
        });
        for attempt in 0..20 {
            let out =
                sb.run(sb.lockwrap(["-n", "--stale-after", "1s", &lock, "sh", "-c", &script]));
            assert!(
                out.status.code() == Some(1) && !log.exists(),
                "{backend:?}, attempt {attempt}: --stale-after took a live holder's lock: {out:?}"
            );
        }
        holder.release_and_finish().assert_code(0);
        assert_eq!(sb.lock_dir_entries(), Vec::<String>::new());
    }
}

/// Issue 10 (10): `--stale-after` and `--lease` with a backend where they
/// mean nothing are usage errors naming the backend, not ignored.
#[test]
fn stale_after_and_lease_where_they_mean_nothing_are_usage_errors() {
    let sb = Sandbox::new("meaningless");
    let word = |backend: Backend| match backend {
        Backend::Flock => "flock",
        Backend::Fcntl => "fcntl",
        Backend::Mkdir => "mkdir",
        Backend::Excl => "excl",
        Backend::Abstract => "abstract",
    };
    let mut cases: Vec<(&str, &str, String, &str)> = Vec::new();
    for backend in [Backend::Flock, Backend::Fcntl, Backend::Abstract] {
        cases.push(("--stale-after", "1s", backend.spec(&sb, "s"), word(backend)));
    }
    for backend in common::ALL_BACKENDS {
        cases.push(("--lease", "5s", backend.spec(&sb, "l"), word(backend)));
    }
    #[cfg(feature = "redis")]
    cases.push((
        "--stale-after",
        "1s",
        "redis://127.0.0.1:1#s".to_owned(),
        "redis",
    ));
    #[cfg(feature = "postgres")]
    cases.push((
        "--stale-after",
        "1s",
        "postgres://u@127.0.0.1:1/db#s".to_owned(),
        "postgres",
    ));
    let marker = sb.work_path("ran");
    for (option, value, lock, name) in cases {
        let out = sb.run(sb.lockwrap([option, value, &lock, "touch", marker.to_str().unwrap()]));
        out.assert_error(64);
        let text = out.stderr.to_lowercase();
        assert!(
            text.contains(option) && text.contains(name),
            "{option} with {lock}: the usage error names the option and the backend ({name}): {out:?}"
        );
        assert!(!marker.exists(), "{option} with {lock}: the command ran");
    }
}

/// Issue 15 (attack): a waiter's prepared artifact, left beside the lock for
/// the whole wait, is swept at a release only when its owner is gone by
/// its name AND its guard flock is free: a /proc mounted with hidepid hides
/// another user's live waiter, whose pid then looks gone. Here the temp
/// name names a dead process, but someone holds its flock: it stays.
#[test]
fn a_leftover_whose_flock_is_held_is_not_swept() {
    let sb = Sandbox::new("sweep-guard");
    let boot: String = fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .chars()
        .take(8)
        .collect();
    let pid_ns = {
        use std::os::unix::fs::MetadataExt as _;
        fs::metadata("/proc/self/ns/pid").unwrap().ino()
    };
    let (pid, start) = dead_process(&sb);
    let temp = sb
        .locks
        .join(format!(".lk.lockwrap-{boot}-{pid_ns}-{pid}-{start}-1.tmp"));
    fs::create_dir(&temp).unwrap();
    let guard = fs::File::open(&temp).unwrap();
    nix::fcntl::Flock::lock(guard, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map(|held| {
            let spec = Backend::Mkdir.spec(&sb, "lk");
            sb.run(sb.lockwrap([spec.as_str(), "true"])).assert_code(0);
            assert!(temp.exists(), "a temp whose guard is held was swept");
            drop(held);
            // Its flock free, the dead owner's leftover goes at the next release.
            sb.run(sb.lockwrap([spec.as_str(), "true"])).assert_code(0);
            assert!(!temp.exists(), "a dead owner's free leftover was kept");
        })
        .unwrap_or_else(|(_, e)| panic!("flock the temp: {e}"));
}
