//! Issue 13 (5, 6): `--fair` serves waiters first come, first served, and
//! `--status` lists who waits, on every local backend.

mod common;

use std::fs;
use std::time::Duration;

use common::waiters::{start_fair_waiter, status_json, wait_listed, wait_listed_fair, waiters};
use common::{Backend, Proc, Sandbox, WAIT, wait_until};
use nix::sys::signal::Signal;

/// Five fair waiters, each started once the one before is visibly waiting,
/// get the lock in the order they came; the third, SIGKILLed while it
/// waits, neither runs nor holds anyone up.
fn fair_order_survives_a_killed_waiter(backend: Backend) {
    let sb = Sandbox::new(&format!("fair-order-{backend:?}"));
    let lock = backend.spec(&sb, "lk");
    let log = sb.work_path("order.log");
    let mut holder = sb.hold(&[], &lock);
    let mut waiters_started = Vec::new();
    for n in 1..=5 {
        let proc = start_fair_waiter(&sb, &lock, &log, n);
        let listed = wait_listed_fair(&sb, &lock, proc.pid());
        assert!(listed.fair, "{backend:?}: waiter {n} is fair: {listed:?}");
        assert_eq!(
            listed.position,
            Some(n as u32),
            "{backend:?}: waiter {n}'s place in the queue"
        );
        waiters_started.push(proc);
    }
    let json = status_json(&sb, &lock);
    assert_eq!(
        waiters(&json)
            .iter()
            .filter_map(|w| w.position)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "{json}"
    );
    assert!(json.contains("\"schema\":1"), "{json}");
    // The one in the middle dies without a word.
    waiters_started[2].kill_and_reap();
    let killed = waiters_started[2].pid();
    wait_until("the killed waiter to leave the list", WAIT, || {
        !waiters(&status_json(&sb, &lock))
            .iter()
            .any(|w| w.pid == Some(killed))
    });
    holder.release_and_finish().assert_code(0);
    for (n, proc) in waiters_started.iter_mut().enumerate() {
        if n != 2 {
            proc.finish().assert_code(0);
        }
    }
    let order = fs::read_to_string(&log).unwrap();
    assert_eq!(order, "1\n2\n4\n5\n", "{backend:?}: served out of order");
    let json = status_json(&sb, &lock);
    assert!(waiters(&json).is_empty(), "{json}");
    let left: Vec<String> = sb
        .lock_dir_entries()
        .into_iter()
        .filter(|e| e != "lk")
        .collect();
    assert!(left.is_empty(), "{backend:?}: left behind {left:?}");
}

/// A waiter without `--fair` is listed too (pid, command, not fair, no
/// place), in text and JSON.
fn plain_waiters_are_listed(backend: Backend) {
    let sb = Sandbox::new(&format!("waiters-{backend:?}"));
    let lock = backend.spec(&sb, "lk");
    let mut holder = sb.hold(&[], &lock);
    let marker = sb.work_path("ran");
    let mut waiter = sb.spawn(
        sb.lockwrap([&lock, "touch", marker.to_str().unwrap()]),
        "plain",
    );
    let listed = wait_listed(&sb, &lock, waiter.pid());
    assert!(!listed.fair, "{backend:?}: {listed:?}");
    assert_eq!(listed.position, None, "{backend:?}: {listed:?}");
    let command = listed.command.unwrap_or_default();
    assert!(command.contains("touch"), "{backend:?}: {command}");
    let text = sb.run(sb.lockwrap(["--status", &lock])).stdout;
    assert!(
        text.contains(&format!("waiting: pid {}", waiter.pid())),
        "{backend:?}: {text}"
    );
    holder.release_and_finish().assert_code(0);
    waiter.finish().assert_code(0);
    assert!(marker.exists());
    assert!(waiters(&status_json(&sb, &lock)).is_empty());
}

/// The head of the line is stopped (SIGSTOP) when the lock is released:
/// the fair waiter behind it leaves the free lock alone (a waiter without
/// `--fair` would take it), and gets it only after the head, once that
/// continues.
fn a_fair_waiter_never_overtakes_the_one_ahead(backend: Backend) {
    let sb = Sandbox::new(&format!("fair-stopped-{backend:?}"));
    let lock = backend.spec(&sb, "lk");
    let log = sb.work_path("order.log");
    let mut holder = sb.hold(&[], &lock);
    let mut first = start_fair_waiter(&sb, &lock, &log, 1);
    wait_listed(&sb, &lock, first.pid());
    let mut second = start_fair_waiter(&sb, &lock, &log, 2);
    wait_listed(&sb, &lock, second.pid());
    first.signal(Signal::SIGSTOP);
    // Every thread stopped, none in a lock call: a thread the stop woke
    // just as the lock was released could take it on its way out (its
    // turn: no overtaking, but not this test).
    wait_until("the head of the line to stop", WAIT, || {
        all_threads_stopped(first.pid())
    });
    holder.release_and_finish().assert_code(0);
    // A negative, so it is watched for a while: the lock stays free and
    // the second waiter stays in line (without --fair it takes the lock
    // within milliseconds, or for mkdir/excl within the second after which
    // a waiter queued behind a stopped one looks at the lock itself).
    let watched = std::time::Instant::now();
    while watched.elapsed() < Duration::from_millis(1500) {
        let out = sb.run(sb.lockwrap(["--status", "--json", &lock]));
        assert!(
            out.stdout.contains("\"held\":false"),
            "{backend:?}: the lock was taken while the head of the line was stopped: {out:?}"
        );
        assert!(
            waiters(&out.stdout)
                .iter()
                .any(|w| w.pid == Some(second.pid())),
            "{out:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.signal(Signal::SIGCONT);
    first.finish().assert_code(0);
    second.finish().assert_code(0);
    assert_eq!(fs::read_to_string(&log).unwrap(), "1\n2\n", "{backend:?}");
}

/// Whether every thread of `pid` is stopped (state T).
fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                == Some("T")
        })
    })
}

/// Fair and plain waiters on one lock: never two in the critical section,
/// everyone gets it once.
fn fair_and_plain_waiters_still_exclude_each_other(backend: Backend) {
    let sb = Sandbox::new(&format!("fair-mixed-{backend:?}"));
    let lock = backend.spec(&sb, "lk");
    let log = sb.work_path("sections.log");
    let script = common::critical_section_script(&log);
    let mut holder = sb.hold(&[], &lock);
    let mut procs: Vec<Proc> = (0..6)
        .map(|i| {
            let mut args = vec![lock.as_str(), "sh", "-c", script.as_str()];
            if i % 2 == 0 {
                args.insert(0, "--fair");
            }
            sb.spawn(sb.lockwrap(args), &format!("mixed{i}"))
        })
        .collect();
    for proc in &procs {
        wait_listed(&sb, &lock, proc.pid());
    }
    holder.release_and_finish().assert_code(0);
    for proc in &mut procs {
        proc.finish().assert_code(0);
    }
    common::assert_no_overlap(&log, 6);
}

/// A fair waiter that gives up (-w) or is stopped by SIGTERM leaves the
/// line; the one behind moves up.
fn a_fair_waiter_that_gives_up_leaves_the_line(backend: Backend) {
    let sb = Sandbox::new(&format!("fair-give-up-{backend:?}"));
    let lock = backend.spec(&sb, "lk");
    let log = sb.work_path("order.log");
    let mut holder = sb.hold(&[], &lock);
    let mut first = start_fair_waiter(&sb, &lock, &log, 1);
    wait_listed(&sb, &lock, first.pid());
    let mut impatient = sb.spawn(
        sb.lockwrap(["--fair", "-w", "0.3", &lock, "true"]),
        "impatient",
    );
    assert_eq!(
        wait_listed_fair(&sb, &lock, impatient.pid()).position,
        Some(2)
    );
    let mut third = start_fair_waiter(&sb, &lock, &log, 3);
    assert_eq!(wait_listed_fair(&sb, &lock, third.pid()).position, Some(3));
    impatient.finish().assert_code(1);
    first.signal(Signal::SIGTERM);
    let out = first.finish();
    out.assert_code(143);
    let json = status_json(&sb, &lock);
    let listed = waiters(&json);
    assert_eq!(listed.len(), 1, "{json}");
    assert_eq!(
        (listed[0].pid, listed[0].position),
        (Some(third.pid()), Some(1)),
        "{json}"
    );
    holder.release_and_finish().assert_code(0);
    third.finish().assert_code(0);
    assert_eq!(fs::read_to_string(&log).unwrap(), "3\n");
}

macro_rules! fair_tests {
    ($($module:ident => $backend:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[test]
            fn fair_order_survives_a_killed_waiter() {
                super::fair_order_survives_a_killed_waiter($backend);
            }

            #[test]
            fn plain_waiters_are_listed() {
                super::plain_waiters_are_listed($backend);
            }

            #[test]
            fn a_fair_waiter_never_overtakes_the_one_ahead() {
                super::a_fair_waiter_never_overtakes_the_one_ahead($backend);
            }

            #[test]
            fn fair_and_plain_waiters_still_exclude_each_other() {
                super::fair_and_plain_waiters_still_exclude_each_other($backend);
            }

            #[test]
            fn a_fair_waiter_that_gives_up_leaves_the_line() {
                super::a_fair_waiter_that_gives_up_leaves_the_line($backend);
            }
        }
    )*};
}

fair_tests! {
    flock => Backend::Flock,
    fcntl => Backend::Fcntl,
    mkdir => Backend::Mkdir,
    excl => Backend::Excl,
    abstract_socket => Backend::Abstract,
}

/// `--slots` with `--fair`: one line for the whole semaphore (slot 0's,
/// where `--status --slots` lists it); fair waiters take the slots freed in
/// the order they came.
#[test]
fn fair_waiters_of_a_semaphore_share_one_line() {
    for backend in [Backend::Flock, Backend::Abstract] {
        let sb = Sandbox::new(&format!("fair-slots-{backend:?}"));
        let lock = backend.spec(&sb, "sem");
        let log = sb.work_path("order.log");
        let (mut first_holder, _) = sb.hold_slot(&["--slots", "2"], &lock);
        let (mut second_holder, _) = sb.hold_slot(&["--slots", "2"], &lock);
        let listed = |pid: i32| {
            let out = sb.run(sb.lockwrap(["--status", "--json", "--slots", "2", &lock]));
            let slot0 = out.stdout.lines().next().unwrap_or_default().to_owned();
            waiters(&slot0).into_iter().find(|w| w.pid == Some(pid))
        };
        let mut procs = Vec::new();
        for n in 1..=3 {
            let script = format!("echo {n} >> '{}'", log.display());
            let proc = sb.spawn(
                sb.lockwrap(["--fair", "--slots", "2", &lock, "sh", "-c", &script]),
                &format!("sem{n}"),
            );
            let mut place = None;
            wait_until(&format!("{backend:?}: waiter {n} in line"), WAIT, || {
                place = listed(proc.pid()).and_then(|w| w.position);
                place.is_some()
            });
            assert_eq!(place, Some(n), "{backend:?}");
            procs.push(proc);
        }
        first_holder.release_and_finish().assert_code(0);
        for proc in &mut procs {
            proc.finish().assert_code(0);
        }
        second_holder.release_and_finish().assert_code(0);
        assert_eq!(
            fs::read_to_string(&log).unwrap(),
            "1\n2\n3\n",
            "{backend:?}"
        );
    }
}

#[test]
fn fair_needs_a_lock_that_can_queue() {
    let sb = Sandbox::new("fair-usage");
    let out = sb.run(sb.lockwrap(["--fair", "--fd", "0", "true"]));
    out.assert_error(64);
    assert!(out.stderr.contains("--fair"), "{out:?}");
    let out = sb.run(sb.lockwrap(["--fair", "-n", "9"]));
    out.assert_error(64);
}

/// A plain flock(1) blocked on the file is listed, from /proc/locks.
#[test]
fn a_plain_flock_waiter_is_listed() {
    let Some(flock) = common::system_flock() else {
        eprintln!("skipped: no /usr/bin/flock");
        return;
    };
    let sb = Sandbox::new("fair-flock1");
    let lock = Backend::Flock.spec(&sb, "lk");
    let mut holder = sb.hold(&[], &lock);
    let mut command = std::process::Command::new(flock);
    command.args([&lock, "true"]);
    let mut plain = sb.spawn(command, "flock1");
    let listed = wait_listed(&sb, &lock, plain.pid());
    assert!(!listed.fair && listed.position.is_none(), "{listed:?}");
    assert!(listed.command.unwrap_or_default().contains("flock"));
    holder.release_and_finish().assert_code(0);
    plain.finish().assert_code(0);
}

/// Another process (any user who may read the line) takes a flock on the
/// tickets of the fair waiters ahead as they leave: on the ticket of one
/// that is SIGKILLed and on the one of the head, which leaves the line
/// when it gets the lock. The fair waiter behind is not held up by either
/// (the tickets' records show their waiters gone), and `--status` no
/// longer lists the dead one.
#[test]
fn a_flock_taken_on_a_ticket_by_someone_else_holds_nobody_up() {
    let Some(flock) = common::system_flock() else {
        eprintln!("skipped: no /usr/bin/flock");
        return;
    };
    let sb = Sandbox::new("fair-squatted");
    let lock = Backend::Flock.spec(&sb, "lk");
    let log = sb.work_path("order.log");
    let mut holder = sb.hold(&[], &lock);
    let mut ahead = Vec::new();
    let mut squatters = Vec::new();
    let uid = nix::unistd::geteuid().as_raw();
    for n in 1..=2 {
        let proc = start_fair_waiter(&sb, &lock, &log, n);
        wait_listed(&sb, &lock, proc.pid());
        let ticket = sb
            .locks
            .join(format!(".lk.lockwrap-line-{uid}"))
            .join(format!("{n}.fair"));
        // Queued behind the waiter's own flock: granted when it leaves.
        let mut command = std::process::Command::new(&flock);
        command.args([ticket.to_str().unwrap(), "sleep", "600"]);
        squatters.push(sb.spawn(command, &format!("squatter{n}")));
        ahead.push(proc);
    }
    let mut last = start_fair_waiter(&sb, &lock, &log, 3);
    assert_eq!(wait_listed_fair(&sb, &lock, last.pid()).position, Some(3));
    ahead[1].kill_and_reap();
    let killed = ahead[1].pid();
    wait_until("the killed waiter to leave the list", WAIT, || {
        !waiters(&status_json(&sb, &lock))
            .iter()
            .any(|w| w.pid == Some(killed))
    });
    holder.release_and_finish().assert_code(0);
    ahead[0].finish().assert_code(0);
    last.finish().assert_code(0);
    assert_eq!(fs::read_to_string(&log).unwrap(), "1\n3\n");
    for squatter in &mut squatters {
        squatter.kill_and_reap();
    }
}

/// Someone holding the line's numbering lock of `lock` (named `lk`) and
/// never letting go: the line directory's flock, or the abstract line's
/// turnstile name. Lets go when dropped.
struct StuckLine {
    _turnstile: Option<std::os::unix::net::UnixListener>,
    _dir_locker: Option<common::Proc>,
}

/// Makes the line of `lk` stuck (None: skipped, no flock(1) installed).
fn stick_the_line(sb: &Sandbox, backend: Backend) -> Option<StuckLine> {
    if backend == Backend::Abstract {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("{}\0t", sb.abstract_name("lk"));
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
        let turnstile = std::os::unix::net::UnixListener::bind_addr(&address).unwrap();
        return Some(StuckLine {
            _turnstile: Some(turnstile),
            _dir_locker: None,
        });
    }
    let Some(flock) = common::system_flock() else {
        eprintln!("skipped: no /usr/bin/flock");
        return None;
    };
    let uid = nix::unistd::geteuid().as_raw();
    let dir = sb.locks.join(format!(".lk.lockwrap-line-{uid}"));
    fs::create_dir(&dir).unwrap();
    let taken = sb.work_path("taken");
    let mut command = std::process::Command::new(flock);
    command.args([
        dir.to_str().unwrap(),
        "sh",
        "-c",
        &format!("touch '{}'; exec sleep 600", taken.display()),
    ]);
    let locker = sb.spawn(command, "dir-locker");
    common::wait_for_file(&taken, WAIT);
    Some(StuckLine {
        _turnstile: None,
        _dir_locker: Some(locker),
    })
}

/// Someone holds the line's numbering lock (the line directory's flock, or
/// the abstract line's turnstile name) and never lets go: a waiter without
/// `--fair`, which joins the line only to be visible, is not held up by it
/// beyond a moment: `-w 1` still ends after about a second, not after the
/// 5 s a `--fair` waiter without a deadline tries for its place.
fn a_stuck_line_does_not_hold_up_a_plain_waiter(backend: Backend) {
    let sb = Sandbox::new(&format!("fair-stuck-line-{backend:?}"));
    let lock = backend.spec(&sb, "lk");
    let mut holder = sb.hold(&[], &lock);
    let Some(stuck) = stick_the_line(&sb, backend) else {
        return;
    };
    let started = std::time::Instant::now();
    let out = sb.run(sb.lockwrap(["-w", "1", &lock, "true"]));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{backend:?}: -w 1 took {:?}",
        started.elapsed()
    );
    holder.release_and_finish().assert_code(0);
    drop(stuck);
}

/// The same stuck line holds a `--fair` waiter, which needs its place, no
/// longer than its wait allows: `-w 1` ends it with the conflict code
/// after about a second (not 71 after the 5 s it tries without a deadline),
/// and SIGTERM ends it at once (143), as any other wait.
fn a_stuck_line_ends_with_a_fair_waiters_wait(backend: Backend) {
    let sb = Sandbox::new(&format!("fair-stuck-fair-{backend:?}"));
    let lock = backend.spec(&sb, "lk");
    let mut holder = sb.hold(&[], &lock);
    let Some(stuck) = stick_the_line(&sb, backend) else {
        return;
    };
    let started = std::time::Instant::now();
    let out = sb.run(sb.lockwrap(["--fair", "-w", "1", &lock, "true"]));
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{backend:?}: {out:?}");
    assert!(
        took < Duration::from_secs(3),
        "{backend:?}: -w 1 took {took:?}"
    );

    let mut waiter = sb.spawn(sb.lockwrap(["--fair", &lock, "true"]), "fair-term");
    wait_until("the fair waiter to catch SIGTERM", WAIT, || {
        common::catches(waiter.pid(), libc::SIGTERM)
    });
    let signalled = std::time::Instant::now();
    waiter.signal(Signal::SIGTERM);
    let out = waiter.finish();
    let took = signalled.elapsed();
    out.assert_code(143);
    assert!(
        took < Duration::from_secs(3),
        "{backend:?}: SIGTERM took {took:?}"
    );
    holder.release_and_finish().assert_code(0);
    drop(stuck);
}

#[test]
fn a_stuck_line_does_not_hold_up_a_plain_waiter_flock() {
    a_stuck_line_does_not_hold_up_a_plain_waiter(Backend::Flock);
}

#[test]
fn a_stuck_line_does_not_hold_up_a_plain_waiter_abstract() {
    a_stuck_line_does_not_hold_up_a_plain_waiter(Backend::Abstract);
}

#[test]
fn a_stuck_line_ends_with_a_fair_waiters_wait_flock() {
    a_stuck_line_ends_with_a_fair_waiters_wait(Backend::Flock);
}

#[test]
fn a_stuck_line_ends_with_a_fair_waiters_wait_abstract() {
    a_stuck_line_ends_with_a_fair_waiters_wait(Backend::Abstract);
}

/// Two fair waiters whose "waiting since" is not in the order they took
/// their places (the first took its time between reading the clock and
/// joining): `--status` lists a user's line in the line's order, #1 first.
#[test]
fn a_users_line_is_listed_in_its_order_whatever_the_clocks_say() {
    let sb = Sandbox::new("fair-listed-order");
    let lock = Backend::Flock.spec(&sb, "lk");
    let log = sb.work_path("order.log");
    let mut holder = sb.hold(&[], &lock);
    let mut first = start_fair_waiter(&sb, &lock, &log, 1);
    wait_listed(&sb, &lock, first.pid());
    let mut second = start_fair_waiter(&sb, &lock, &log, 2);
    wait_listed(&sb, &lock, second.pid());
    let uid = nix::unistd::geteuid().as_raw();
    let ticket = sb
        .locks
        .join(format!(".lk.lockwrap-line-{uid}"))
        .join("1.fair");
    let record = fs::read_to_string(&ticket).unwrap();
    let later: String = record
        .lines()
        .map(|line| match line.strip_prefix("acquired_ms=") {
            Some(ms) => format!("acquired_ms={}\n", ms.parse::<u64>().unwrap() + 60_000),
            None => format!("{line}\n"),
        })
        .collect();
    fs::write(&ticket, later).unwrap();
    let json = status_json(&sb, &lock);
    let listed: Vec<_> = waiters(&json).iter().map(|w| (w.pid, w.position)).collect();
    assert_eq!(
        listed,
        [(Some(first.pid()), Some(1)), (Some(second.pid()), Some(2))],
        "{json}"
    );
    holder.release_and_finish().assert_code(0);
    first.finish().assert_code(0);
    second.finish().assert_code(0);
}

/// A ticket with the highest number there is (planted, and kept alive by
/// a flock or a bound name) is not taken for a ticket: a fair waiter that
/// comes next neither fails (its number would overflow) nor goes ahead of
/// anyone.
fn a_ticket_numbered_at_the_top_is_ignored(backend: Backend) {
    let sb = Sandbox::new(&format!("fair-top-{backend:?}"));
    let lock = backend.spec(&sb, "lk");
    let _planted;
    let mut flocker = None;
    if backend == Backend::Abstract {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "{}\0l\0{}\0f\01\0{}",
            sb.abstract_name("lk"),
            u64::MAX,
            std::process::id()
        );
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
        _planted = std::os::unix::net::UnixListener::bind_addr(&address).unwrap();
    } else {
        let Some(flock) = common::system_flock() else {
            eprintln!("skipped: no /usr/bin/flock");
            return;
        };
        let uid = nix::unistd::geteuid().as_raw();
        let dir = sb.locks.join(format!(".lk.lockwrap-line-{uid}"));
        fs::create_dir(&dir).unwrap();
        let ticket = dir.join(format!("{}.fair", u64::MAX));
        let taken = sb.work_path("taken");
        let mut command = std::process::Command::new(flock);
        command.args([
            ticket.to_str().unwrap(),
            "sh",
            "-c",
            &format!("touch '{}'; exec sleep 600", taken.display()),
        ]);
        flocker = Some(sb.spawn(command, "flocker"));
        common::wait_for_file(&taken, WAIT);
    }
    let log = sb.work_path("order.log");
    let mut holder = sb.hold(&[], &lock);
    let mut first = start_fair_waiter(&sb, &lock, &log, 1);
    wait_listed(&sb, &lock, first.pid());
    let mut second = start_fair_waiter(&sb, &lock, &log, 2);
    assert_eq!(wait_listed_fair(&sb, &lock, second.pid()).position, Some(2));
    holder.release_and_finish().assert_code(0);
    first.finish().assert_code(0);
    second.finish().assert_code(0);
    assert_eq!(fs::read_to_string(&log).unwrap(), "1\n2\n");
    if let Some(mut flocker) = flocker {
        flocker.kill_and_reap();
    }
}

#[test]
fn a_ticket_numbered_at_the_top_is_ignored_flock() {
    a_ticket_numbered_at_the_top_is_ignored(Backend::Flock);
}

#[test]
fn a_ticket_numbered_at_the_top_is_ignored_abstract() {
    a_ticket_numbered_at_the_top_is_ignored(Backend::Abstract);
}

/// More slots than a waiter starts threads for (65): it blocks on one
/// slot at a time for a moment (250 ms) and looks at all of them again.
/// A `--fair` waiter whose join is held up (the turnstile of slot 0's
/// line taken for a second) is not cut short by that moment: it joins
/// once the turnstile is free, and takes a slot when one is freed.
#[test]
fn a_fair_waiter_of_many_slots_joins_a_line_held_up_longer_than_a_rescan() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    let sb = Sandbox::new("fair-rescan");
    let bind = |name: String| {
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(name).unwrap()).unwrap()
    };
    let mut slots: Vec<UnixListener> = (0..65)
        .map(|i| bind(format!("{}.slot{i}", sb.abstract_name("sem"))))
        .collect();
    let turnstile = bind(format!("{}.slot0\0t", sb.abstract_name("sem")));
    let lock = Backend::Abstract.spec(&sb, "sem");
    let mut waiter = sb.spawn(
        sb.lockwrap(["--fair", "--slots", "65", &lock, "true"]),
        "fair-rescan",
    );
    wait_until("the waiter to catch SIGTERM", WAIT, || {
        common::catches(waiter.pid(), libc::SIGTERM)
    });
    // Held up for several of the waiter's looks at the slots.
    std::thread::sleep(Duration::from_secs(1));
    drop(turnstile);
    let listed = |pid: i32| {
        let out = sb.run(sb.lockwrap(["--status", "--json", "--slots", "65", &lock]));
        let slot0 = out.stdout.lines().next().unwrap_or_default().to_owned();
        waiters(&slot0).into_iter().find(|w| w.pid == Some(pid))
    };
    let mut place = None;
    wait_until("the fair waiter in line", WAIT, || {
        place = listed(waiter.pid()).and_then(|w| w.position);
        place.is_some()
    });
    assert_eq!(place, Some(1));
    drop(slots.pop());
    waiter.finish().assert_code(0);
}

/// Someone who only looks at the line (`--status`, or a releasing holder
/// deciding whether to tidy) takes a shared flock on each ticket for a
/// moment, without the line directory's lock: when that moment falls
/// between a fair waiter's creation of its ticket and its own flock on it,
/// the waiter tries again instead of failing ("cannot join the line",
/// exit 66, with the lock taken meanwhile by its blocked attempt). strace
/// widens the moment: every flock of the waiter is delayed on entry while
/// the test holds a shared flock on the new ticket.
#[test]
fn a_fair_waiter_joins_while_someone_looks_at_its_new_ticket() {
    if !common::strace_usable() {
        return;
    }
    let sb = Sandbox::new("fair-looked-at");
    let lock = Backend::Flock.spec(&sb, "lk");
    let mut holder = sb.hold(&[], &lock);
    let ran = sb.work_path("ran");
    let mut command = std::process::Command::new("strace");
    command
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=flock"])
        .args(["-e", "inject=flock:delay_enter=300000"])
        .arg(common::bin())
        .args(["--fair", lock.as_str(), "touch"])
        .arg(&ran);
    let mut waiter = sb.spawn(command, "waiter");
    let uid = nix::unistd::geteuid().as_raw();
    let ticket = sb
        .locks
        .join(format!(".lk.lockwrap-line-{uid}"))
        .join("1.fair");
    let mut look = None;
    wait_until("the waiter's new ticket", WAIT, || {
        look = fs::File::open(&ticket).ok().and_then(|file| {
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock).ok()
        });
        look.is_some()
    });
    // Longer than the waiter's delayed flock on its ticket.
    std::thread::sleep(Duration::from_millis(800));
    drop(look);
    // In line (its flock on the ticket held), or gone.
    wait_until("the waiter in line", WAIT, || {
        !waiter.is_running()
            || fs::File::open(&ticket).is_ok_and(|file| {
                nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock).is_err()
            })
    });
    holder.release_and_finish().assert_code(0);
    waiter.finish().assert_code(0);
    assert!(ran.exists(), "{lock}: the waiter's command did not run");
}
