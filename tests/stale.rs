//! Stale mkdir/excl locks are reclaimed only when their holder is provably
//! gone, and exactly one of several racing reclaimers wins.

mod common;

use std::fs;
use std::path::Path;

use common::records::{
    ARTIFACTS, dead_process, hostname, live_process, now_ms, plant, record, start_time,
};
use common::{
    Backend, Proc, Sandbox, WAIT, become_subreaper, open_gate, process_is_running, reap_adopted,
    wait_until,
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
