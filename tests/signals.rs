//! Signals: forwarding to the command, the command's signal mask and
//! dispositions, signals while waiting for the lock, and -w under a caller
//! that blocked SIGALRM.

mod common;

use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Command;

use common::{ALL_BACKENDS, Backend, Sandbox, WAIT, catches, wait_for_pid_file, wait_until};
use nix::sys::signal::Signal;

/// Makes `command` start with `signals` blocked (all of them when None), as
/// a caller such as a language runtime or an RPM scriptlet may do.
fn with_blocked(command: &mut Command, signals: Option<&[libc::c_int]>) {
    let signals = signals.map(<[libc::c_int]>::to_vec);
    // SAFETY: between fork and exec the closure only calls sigemptyset,
    // sigfillset, sigaddset and sigprocmask, which are async-signal-safe, on
    // a sigset on its stack.
    unsafe {
        command.pre_exec(move || {
            let mut set: libc::sigset_t = std::mem::zeroed();
            match &signals {
                None => {
                    libc::sigfillset(&mut set);
                }
                Some(list) => {
                    libc::sigemptyset(&mut set);
                    for s in list {
                        libc::sigaddset(&mut set, *s);
                    }
                }
            }
            if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Makes `command` start with `signal` ignored, as nohup does with SIGHUP.
fn with_ignored(command: &mut Command, signal: libc::c_int) {
    // SAFETY: signal(2) with SIG_IGN is async-signal-safe and installs no code.
    unsafe {
        command.pre_exec(move || {
            if libc::signal(signal, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A signal mask line ("SigBlk", "SigIgn", "SigCgt") of a /proc status text.
fn mask(status: &str, field: &str) -> u64 {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

fn bit(signal: libc::c_int) -> u64 {
    1 << (signal - 1)
}

/// A command that traps SIG`name` (appending the name to `got` and exiting
/// with `code`), then writes its pid to `ready` and idles.
///
/// It idles in a loop of short foreground sleeps, after each of which the
/// shell runs a pending trap, rather than in `sleep & wait`: dash 0.5.12's
/// `wait` can miss a signal that arrives just before it blocks (seen 14
/// times in 300 runs), and the background sleep would outlive the shell
/// holding the inherited lock fd.
fn trapping_script(name: &str, got: &Path, code: i32, ready: &Path) -> String {
    format!(
        "trap 'echo {name} >> \"{got}\"; exit {code}' {name}
echo $$ > '{ready}'
while :; do sleep 0.05; done",
        got = got.display(),
        ready = ready.display()
    )
}

/// The signals lockwrap forwards, by name as sh's trap knows them.
const FORWARDED: [(Signal, &str); 6] = [
    (Signal::SIGTERM, "TERM"),
    (Signal::SIGINT, "INT"),
    (Signal::SIGHUP, "HUP"),
    (Signal::SIGUSR1, "USR1"),
    (Signal::SIGQUIT, "QUIT"),
    (Signal::SIGUSR2, "USR2"),
];

/// Sends `signal` to a running wrapper (kill(2): SI_USER) and checks that
/// the command's trap saw it (once: the trap exits) and that the wrapper exited with the status
/// the trap chose. `block_all`: the caller had every signal blocked.
fn assert_forwarded(signal: Signal, name: &str, block_all: bool) {
    let sb = Sandbox::new(&format!("forward-{name}"));
    let lock = sb.locks.join("lk");
    let ready = sb.work_path("ready");
    let got = sb.work_path("got");
    let code = 70 + signal as i32;
    let script = trapping_script(name, &got, code, &ready);
    let mut command = sb.lockwrap([lock.to_str().unwrap(), "sh", "-c", &script]);
    if block_all {
        with_blocked(&mut command, None);
    }
    let mut wrapper = sb.spawn(command, "wrapper");
    wait_for_pid_file(&ready);
    wrapper.signal(signal);
    let out = wrapper.finish();
    assert_eq!(
        out.status.signal(),
        None,
        "lockwrap died of SIG{name} instead of forwarding it: {out:?}"
    );
    assert_eq!(
        fs::read_to_string(&got).ok().as_deref(),
        Some(format!("{name}\n").as_str()),
        "the command did not get SIG{name}: {out:?}"
    );
    out.assert_code(code);
    // lockwrap says nothing. The signal went to the command's whole process
    // group, as it would have without lockwrap, so the shell may report the
    // idle `sleep` it killed ("Terminated").
    assert!(!out.stderr.contains("lockwrap"), "{out:?}");
    // The lock went with the wrapper.
    sb.run(sb.lockwrap(["-n", lock.to_str().unwrap(), "true"]))
        .assert_code(0);
}

#[test]
fn forwarded_signals_reach_the_command() {
    for (signal, name) in FORWARDED {
        assert_forwarded(signal, name, false);
    }
}

#[test]
fn forwarding_works_when_the_caller_blocked_every_signal() {
    for (signal, name) in [FORWARDED[0], FORWARDED[1]] {
        assert_forwarded(signal, name, true);
    }
}

#[test]
fn command_starts_with_an_empty_signal_mask() {
    let sb = Sandbox::new("sigmask");
    let lock = sb.locks.join("lk");
    let lock = lock.to_str().unwrap();

    // Control: the blocked mask does reach a program started this way.
    let mut control = Command::new("cat");
    control.arg("/proc/self/status");
    with_blocked(&mut control, None);
    let out = sb.run(control);
    out.assert_code(0);
    assert_ne!(mask(&out.stdout, "SigBlk"), 0, "the harness blocks nothing");

    for no_fork in [false, true] {
        for blocked in [None, Some(&[libc::SIGALRM, libc::SIGTERM][..])] {
            let mut args = vec![];
            if no_fork {
                args.push("-F");
            }
            args.extend([lock, "cat", "/proc/self/status"]);
            let mut command = sb.lockwrap(&args);
            with_blocked(&mut command, blocked);
            let out = sb.run(command);
            out.assert_code(0);
            assert_eq!(
                mask(&out.stdout, "SigBlk"),
                0,
                "-F: {no_fork}, caller blocked {blocked:?}"
            );
            // lockwrap's handlers do not survive exec: nothing is caught
            // that cat did not catch itself.
            assert_eq!(mask(&out.stdout, "SigCgt"), 0, "-F: {no_fork}");
            // The Rust runtime ignores SIGPIPE in lockwrap; the command
            // must not inherit that.
            assert_eq!(
                mask(&out.stdout, "SigIgn") & bit(libc::SIGPIPE),
                0,
                "-F: {no_fork}: SIGPIPE ignored"
            );
        }
    }
}

#[test]
fn signals_the_caller_ignored_stay_ignored() {
    let sb = Sandbox::new("sigign");
    let lock = sb.locks.join("lk");
    let lock = lock.to_str().unwrap();
    let mut command = sb.lockwrap([lock, "cat", "/proc/self/status"]);
    with_ignored(&mut command, libc::SIGHUP);
    let out = sb.run(command);
    out.assert_code(0);
    let ignored = mask(&out.stdout, "SigIgn");
    assert_ne!(ignored & bit(libc::SIGHUP), 0, "SIGHUP no longer ignored");
    assert_eq!(
        ignored & bit(libc::SIGTERM),
        0,
        "SIGTERM ignored although the caller did not ignore it"
    );

    // The wrapper itself keeps ignoring it: a SIGHUP neither kills it nor
    // reaches the command.
    let ready = sb.work_path("ready");
    let got = sb.work_path("got");
    let script = trapping_script("TERM", &got, 5, &ready);
    let mut command = sb.lockwrap([lock, "sh", "-c", &script]);
    with_ignored(&mut command, libc::SIGHUP);
    let mut wrapper = sb.spawn(command, "wrapper");
    wait_for_pid_file(&ready);
    let status = fs::read_to_string(format!("/proc/{}/status", wrapper.pid())).unwrap();
    assert_ne!(mask(&status, "SigIgn") & bit(libc::SIGHUP), 0);
    wrapper.signal(Signal::SIGHUP);
    wrapper.signal(Signal::SIGTERM);
    let out = wrapper.finish();
    out.assert_code(5);
    assert_eq!(fs::read_to_string(&got).unwrap(), "TERM\n");
}

#[test]
fn wait_times_out_when_the_caller_blocked_sigalrm() {
    let sb = Sandbox::new("sigalrm");
    let lock = sb.locks.join("lk");
    let lock = lock.to_str().unwrap();
    let mut holder = sb.hold(&[], lock);
    for blocked in [Some(&[libc::SIGALRM][..]), None] {
        let marker = sb.work_path(&sb.label("ran"));
        let mut command = sb.lockwrap([
            "-w",
            "0.3",
            "-E",
            "7",
            lock,
            "touch",
            marker.to_str().unwrap(),
        ]);
        with_blocked(&mut command, blocked);
        // Bounded by WAIT: a -w that never fires fails here instead of hanging.
        let out = sb.run(command);
        out.assert_code(7);
        assert!(!marker.exists());
    }
    holder.release_and_finish().assert_code(0);
}

#[test]
fn a_signal_while_waiting_for_the_lock_exits_128_plus_n() {
    for backend in ALL_BACKENDS {
        for (signal, code) in [(Signal::SIGTERM, 143), (Signal::SIGINT, 130)] {
            let sb = Sandbox::new(&format!("waitsig-{backend:?}"));
            let spec = backend.spec(&sb, "lk");
            let mut holder = sb.hold(&[], &spec);
            let marker = sb.work_path("ran");
            let mut waiter = sb.spawn(
                sb.lockwrap(["-w", "30", &spec, "touch", marker.to_str().unwrap()]),
                "waiter",
            );
            wait_until("the waiter to install its handlers", WAIT, || {
                catches(waiter.pid(), signal as i32)
            });
            waiter.signal(signal);
            let out = waiter.finish();
            assert_eq!(out.status.signal(), None, "{backend:?}: {out:?}");
            out.assert_error(code);
            assert!(!marker.exists(), "{backend:?}: the command ran");
            // The holder is unaffected and still holds the lock.
            assert!(holder.proc.is_running());
            sb.run(sb.lockwrap(["-n", &spec, "true"])).assert_code(1);
            holder.release_and_finish().assert_code(0);
            if backend == Backend::Mkdir || backend == Backend::Excl {
                assert_eq!(sb.lock_dir_entries(), Vec::<String>::new());
            }
        }
    }
}

#[test]
fn the_command_starts_with_sigpipe_at_its_default() {
    // Documented difference from flock(1): the command always starts with
    // SIGPIPE at its default, so `cmd | head` ends quietly, whatever the
    // caller (or Rust's runtime in lockwrap) did with it.
    let sb = Sandbox::new("sigpipe-default");
    let lock = sb.locks.join("lk");
    let lock = lock.to_str().unwrap();
    for no_fork in [false, true] {
        let mut args = vec![];
        if no_fork {
            args.push("-F");
        }
        args.extend([lock, "cat", "/proc/self/status"]);
        let mut command = Command::new(common::bin());
        command.args(&args).current_dir(&sb.work);
        with_ignored(&mut command, libc::SIGPIPE);
        let out = sb.run(command);
        out.assert_code(0);
        assert_eq!(
            mask(&out.stdout, "SigIgn") & bit(libc::SIGPIPE),
            0,
            "-F: {no_fork}: SIGPIPE still ignored"
        );
    }
}
