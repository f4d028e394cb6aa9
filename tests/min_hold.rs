//! `--min-hold`: once per interval across a fleet. The lock stays taken
//! until the given time after it was acquired, even when the command ends
//! sooner; a signal ends that wait at once.

mod common;

use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};

use common::{Backend, Sandbox, WAIT, min_hold_run, wait_for_pid_file};
use nix::sys::signal::Signal;

/// A fast job that fails keeps a flock lock for the whole two seconds; the
/// wrapper stays that long and then exits with the job's status.
#[test]
fn a_fast_job_keeps_a_flock_lock_for_the_minimum_hold() {
    let sb = Sandbox::new("min-hold-flock");
    let lock = Backend::Flock.spec(&sb, "fleet");
    let run = min_hold_run(&sb, &[], &lock, "2s");
    run.assert_held_two_seconds();
    assert!(run.wrapper_gone >= Duration::from_millis(1800), "{run:?}");
}

/// The same with a lock directory, which lockwrap keeps itself; nothing is
/// left behind afterwards.
#[test]
fn a_fast_job_keeps_a_mkdir_lock_for_the_minimum_hold() {
    let sb = Sandbox::new("min-hold-mkdir");
    let lock = Backend::Mkdir.spec(&sb, "fleet");
    let run = min_hold_run(&sb, &[], &lock, "2s");
    run.assert_held_two_seconds();
    assert!(run.wrapper_gone >= Duration::from_millis(1800), "{run:?}");
    assert!(
        sb.lock_dir_entries().is_empty(),
        "{:?}",
        sb.lock_dir_entries()
    );
}

/// Starts `lockwrap --min-hold 60s LOCK sh -c 'echo $$ > READY'` and
/// returns it once its job is over and the lock is still held.
fn holding_after_the_job(sb: &Sandbox, lock: &str) -> common::Proc {
    let ready = sb.work_path(&sb.label("ready"));
    let mut command = sb.lockwrap(["--min-hold", "60s", lock, "sh", "-c"]);
    command.arg(format!("echo $$ > '{}'", ready.display()));
    let wrapper = sb.spawn(command, &sb.label("wrapper"));
    wait_for_pid_file(&ready);
    common::wait_until("the job to end", WAIT, || {
        !common::process_is_running(common::read_pid_file(&ready).unwrap())
    });
    probe(sb, lock).assert_code(1);
    wrapper
}

fn probe(sb: &Sandbox, lock: &str) -> common::Output {
    sb.run(sb.lockwrap(["-n", lock, "true"]))
}

/// SIGTERM during the minimum hold (systemd stopping the unit, a CI
/// cancel) releases the lock at once; the job had finished, so lockwrap
/// exits with its status. SIGINT makes it die of SIGINT, so that a shell
/// loop stops.
#[test]
fn a_signal_ends_the_minimum_hold_at_once() {
    let sb = Sandbox::new("min-hold-signal");
    for backend in [Backend::Flock, Backend::Mkdir] {
        let lock = backend.spec(&sb, &format!("{backend:?}"));
        let mut wrapper = holding_after_the_job(&sb, &lock);
        let asked = Instant::now();
        wrapper.signal(Signal::SIGTERM);
        wrapper.finish().assert_code(0);
        assert!(asked.elapsed() < Duration::from_secs(10), "{backend:?}");
        probe(&sb, &lock).assert_code(0);

        let mut wrapper = holding_after_the_job(&sb, &lock);
        wrapper.signal(Signal::SIGINT);
        let status = wrapper.wait_timeout(WAIT);
        assert_eq!(
            status.signal(),
            Some(libc::SIGINT),
            "{backend:?}: {status:?}"
        );
        probe(&sb, &lock).assert_code(0);
    }
    // The flock file stays, as with flock(1); the lock directory is gone.
    assert_eq!(sb.lock_dir_entries(), ["Flock"]);
}

/// A command stopped on request is not held for: the SIGTERM was for the
/// whole run, even when the command handles it and exits 0.
#[test]
fn a_command_stopped_by_a_signal_is_not_held_for() {
    let sb = Sandbox::new("min-hold-stopped");
    let lock = Backend::Flock.spec(&sb, "stopped");
    let ready = sb.work_path("ready");
    let script = format!(
        "trap 'exit 0' TERM; echo $$ > '{}'; while :; do sleep 0.05; done",
        ready.display()
    );
    let mut command = sb.lockwrap(["--min-hold", "60s", &lock, "sh", "-c", &script]);
    command.current_dir(&sb.work);
    let mut wrapper = sb.spawn(command, "wrapper");
    wait_for_pid_file(&ready);
    wrapper.signal(Signal::SIGTERM);
    wrapper.finish().assert_code(0);
    probe(&sb, &lock).assert_code(0);
}

/// Where lockwrap cannot stay after the command, `--min-hold` is refused.
#[test]
fn min_hold_without_a_wrapper_that_stays_is_a_usage_error() {
    let sb = Sandbox::new("min-hold-usage");
    let lock = Backend::Flock.spec(&sb, "usage");
    for args in [
        &["-F", "--min-hold", "1s", &lock, "true"][..],
        &["--min-hold", "1s", "0"],
        &["-u", "--min-hold", "1s", &lock, "true"],
        &["--min-hold", "-1", &lock, "true"],
        &["--min-hold", "soon", &lock, "true"],
    ] {
        let out = sb.run(sb.lockwrap(args));
        out.assert_error(64);
        assert!(
            out.stderr.contains("--min-hold") && !out.stderr.contains("unexpected argument"),
            "{args:?}: {out:?}"
        );
    }
    assert!(sb.lock_dir_entries().is_empty());
}
