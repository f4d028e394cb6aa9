//! `--also LOCK`: several locks taken as one, all or none (issue 13, item
//! 4): in one canonical order (no deadlock between wrappers that name them
//! in different orders), under one `-n`/`-w`, each of them held as a single
//! lock would be (the tree rule, leases, the command's environment), and
//! `--status` covering all of them. Sets with server locks are in
//! tests/redis.rs and tests/postgres.rs.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::tree;
use common::{Backend, Output, Proc, Sandbox, WAIT, assert_no_overlap, wait_until};

/// Runs lockwrap with `args` to the end (bounded).
fn run(sb: &Sandbox, args: &[&str]) -> Output {
    sb.run(sb.lockwrap(args))
}

/// Whether `-n LOCK` finds `lock` held (1) or free (0).
#[track_caller]
fn is_held(sb: &Sandbox, lock: &str) -> bool {
    let out = run(sb, &["-n", lock, "true"]);
    match out.code() {
        0 => false,
        1 => true,
        _ => panic!("{lock}: {out:?}"),
    }
}

/// Asserts that nothing of lockwrap's own is left in `locks/` besides the
/// names in `allowed` (flock files stay, as with flock(1); a holder's
/// artifact): no artifact, temp name or queue file of a lock given up.
#[track_caller]
fn assert_only_entries(sb: &Sandbox, allowed: &[&str]) {
    for entry in sb.lock_dir_entries() {
        assert!(
            allowed.contains(&entry.as_str()),
            "left behind in the lock directory: {entry} (allowed: {allowed:?})"
        );
    }
}

/// Runs `lockwrap ARGS... sh -c 'touch ran'` and returns the outcome and
/// whether the command ran.
fn try_set(sb: &Sandbox, args: &[&str]) -> (Output, bool) {
    let marker = sb.work_path(&sb.label("ran"));
    let _ = fs::remove_file(&marker);
    let mut all: Vec<&str> = args.to_vec();
    let script = format!("touch '{}'", marker.display());
    all.extend(["sh", "-c", &script]);
    let out = run(sb, &all);
    (out, marker.exists())
}

/// A conflict on any lock of the set, under -n or when -w expires, takes
/// none: the command does not run, the exit code is the conflict's, and
/// the locks that were free are free again afterwards (nothing of theirs
/// is left on disk). Checked with the conflict on either lock, so on the
/// first and on the second in the canonical order.
#[test]
fn a_conflict_on_any_lock_takes_none() {
    for (a, b) in [
        (Backend::Flock, Backend::Mkdir),
        (Backend::Mkdir, Backend::Abstract),
        (Backend::Excl, Backend::Fcntl),
        (Backend::Mkdir, Backend::Excl),
    ] {
        for held in [0, 1] {
            let sb = Sandbox::new(&format!("none-{a:?}-{b:?}-{held}"));
            let specs = [a.spec(&sb, "a"), b.spec(&sb, "b")];
            let names = ["a", "b"];
            let free = 1 - held;
            let mut holder = sb.hold(&[], &specs[held]);
            for wait in [&["-n"][..], &["-w", "0.3"], &["-E", "9", "-w", "0.2"]] {
                let mut args = wait.to_vec();
                args.extend([specs[0].as_str(), "--also", specs[1].as_str()]);
                let (out, ran) = try_set(&sb, &args);
                let code = if wait[0] == "-E" { 9 } else { 1 };
                out.assert_code(code);
                assert!(out.stderr.is_empty(), "a conflict is silent: {out:?}");
                assert!(!ran, "{args:?}: the command ran with a lock held elsewhere");
                assert!(
                    !is_held(&sb, &specs[free]),
                    "{args:?}: {} stayed held after the conflict on {}",
                    specs[free],
                    specs[held]
                );
                let mut allowed = vec![];
                if [a, b][held].is_artifact() {
                    allowed.push(names[held]);
                }
                if matches!([a, b][free], Backend::Flock | Backend::Fcntl) {
                    allowed.push(names[free]);
                }
                if matches!([a, b][held], Backend::Flock | Backend::Fcntl) {
                    allowed.push(names[held]);
                }
                assert_only_entries(&sb, &allowed);
            }
            holder.release_and_finish().assert_code(0);
            let (out, ran) = try_set(&sb, &["-n", &specs[0], "--also", &specs[1]]);
            out.assert_code(0);
            assert!(ran);
        }
    }
}

/// `--verbose` names the lock that was held, and who holds it.
#[test]
fn verbose_names_the_lock_in_the_way() {
    let sb = Sandbox::new("verbose");
    let a = Backend::Flock.spec(&sb, "a");
    let b = Backend::Mkdir.spec(&sb, "b");
    let mut holder = sb.hold(&[], &b);
    let out = run(&sb, &["--verbose", "-n", &a, "--also", &b, "true"]);
    out.assert_error(1);
    assert!(
        out.stderr.starts_with(&format!(
            "lockwrap: {b}: already locked: held by pid {}",
            holder.proc.pid()
        )),
        "{out:?}"
    );
    holder.release_and_finish().assert_code(0);
}

/// Locks are taken in the canonical order, a waiter keeping the ones it
/// has while it waits for the next (documented): with the later lock held
/// elsewhere, a waiter holds the earlier one, and gets both (and runs)
/// once the later one is freed.
#[test]
fn a_waiter_keeps_the_earlier_locks_and_gets_all_when_freed() {
    let sb = Sandbox::new("ordered");
    // flock:… sorts before mkdir:…: the kind's name comes first.
    let first = Backend::Flock.spec(&sb, "z");
    let second = Backend::Mkdir.spec(&sb, "a");
    let mut holder = sb.hold(&[], &second);
    let marker = sb.work_path("ran");
    let script = format!("touch '{}'", marker.display());
    // Named in the other order: the order is the canonical one, not ours.
    let command = sb.lockwrap(["-w", "20", &second, "--also", &first, "sh", "-c", &script]);
    let mut waiter = sb.spawn(command, "waiter");
    wait_until("the waiter to hold the first lock", WAIT, || {
        run(&sb, &["--status", &first]).code() == 1
    });
    let status = run(&sb, &["--status", &first]);
    assert!(
        status
            .stdout
            .contains(&format!("held by pid {}", waiter.pid())),
        "{status:?}"
    );
    assert!(!marker.exists());
    holder.release_and_finish().assert_code(0);
    waiter.finish().assert_code(0);
    assert!(marker.exists());
    assert!(!is_held(&sb, &first) && !is_held(&sb, &second));
    assert_only_entries(&sb, &["z"]);
}

/// A flock lock reached through a dangling symlink (its file not created
/// yet: the first run, or after a cleanup) is ordered by the file the
/// symlink names, as it is once that file exists. Ordered by the symlink's
/// own name instead, a first wrapper would take the set in one order and
/// every later one in another: a deadlock. Here the symlink `z-sym` names
/// `a-file`, which sorts before `m`: the waiter takes it first and keeps
/// it while it waits for `m`.
#[test]
fn a_dangling_symlink_is_ordered_by_the_file_it_names() {
    let sb = Sandbox::new("dangling");
    std::os::unix::fs::symlink("a-file", sb.locks.join("z-sym")).unwrap();
    let through_symlink = Backend::Flock.spec(&sb, "z-sym");
    let target = Backend::Flock.spec(&sb, "a-file");
    let middle = Backend::Flock.spec(&sb, "m");
    let mut holder = sb.hold(&[], &middle);
    let command = sb.lockwrap(["-w", "60", &through_symlink, "--also", &middle, "true"]);
    let mut waiter = sb.spawn(command, "waiter");
    wait_until(
        "the waiter to hold the file the symlink names",
        WAIT,
        || run(&sb, &["--status", &target]).code() == 1,
    );
    holder.release_and_finish().assert_code(0);
    waiter.finish().assert_code(0);
    assert!(!is_held(&sb, &target) && !is_held(&sb, &middle));
}

/// `-w` is one deadline for the whole set, not one per lock: a waiter that
/// got the first lock late still gives up at the deadline counted from its
/// start, and then frees the first lock.
#[test]
fn w_is_one_deadline_for_the_whole_set() {
    let sb = Sandbox::new("deadline");
    let first = Backend::Excl.spec(&sb, "a");
    let second = Backend::Excl.spec(&sb, "b");
    let mut holds_first = sb.hold(&[], &first);
    let _holds_second = sb.hold(&[], &second);
    let started = Instant::now();
    let command = sb.lockwrap(["-w", "4", &first, "--also", &second, "true"]);
    let mut waiter = sb.spawn(command, "waiter");
    // Not a synchronisation: the first lock is to be freed late in the wait.
    std::thread::sleep(Duration::from_millis(2500));
    holds_first.release_and_finish().assert_code(0);
    let out = waiter.finish();
    let took = started.elapsed();
    out.assert_code(1);
    // One deadline: about 4 s after the start. A deadline per lock would
    // give up 4 s after the first lock was taken (6.5 s or later).
    assert!(took < Duration::from_millis(6000), "gave up after {took:?}");
    assert!(
        took >= Duration::from_millis(3900),
        "gave up after {took:?}"
    );
    assert!(!is_held(&sb, &first), "the first lock was kept");
}

/// A wrapper SIGKILLed while it holds the first lock and waits for the
/// second leaves nothing that keeps the next wrapper out: a mkdir lock
/// whose holder is provably dead is reclaimed at once.
#[test]
fn a_waiter_killed_with_the_first_lock_held_leaves_it_reclaimable() {
    let sb = Sandbox::new("killed");
    let first = Backend::Mkdir.spec(&sb, "a");
    let second = Backend::Mkdir.spec(&sb, "b");
    let mut holder = sb.hold(&[], &second);
    let command = sb.lockwrap(["-w", "20", &first, "--also", &second, "true"]);
    let mut waiter = sb.spawn(command, "waiter");
    wait_until("the waiter to hold the first lock", WAIT, || {
        run(&sb, &["--status", &first]).code() == 1
    });
    waiter.kill_and_reap();
    run(&sb, &["-n", &first, "true"]).assert_code(0);
    holder.release_and_finish().assert_code(0);
    run(&sb, &["-n", &first, "--also", &second, "true"]).assert_code(0);
    assert_only_entries(&sb, &[]);
}

/// A shell loop of `ITERATIONS` runs of lockwrap with `args`, failing at
/// the first run that does not exit 0.
fn loop_of(sb: &Sandbox, label: &str, args: &[&str], log: &Path) -> Proc {
    const ITERATIONS: usize = 40;
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let section = common::critical_section_script(log).replace('\'', "'\\''");
    let script = format!(
        "i=0; while [ $i -lt {ITERATIONS} ]; do i=$((i+1)); '{bin}' {args} sh -c '{section}' || exit 1; done",
        bin = common::bin().display(),
        args = quoted.join(" "),
    );
    let mut command = std::process::Command::new("sh");
    command.args(["-c", &script]).current_dir(&sb.work);
    sb.spawn(command, label)
}

/// Two shell loops, one naming A then B and the other B then A, both
/// waiting (no -n): they never deadlock (both finish) and their commands
/// never overlap.
#[test]
fn opposite_orders_never_deadlock_or_overlap() {
    let sb = Sandbox::new("opposite");
    let a = Backend::Flock.spec(&sb, "a");
    let b = Backend::Mkdir.spec(&sb, "b");
    let c = Backend::Abstract.spec(&sb, "c");
    let log = sb.work_path("log");
    let mut one = loop_of(&sb, "one", &[&a, "--also", &b, "--also", &c], &log);
    let mut two = loop_of(&sb, "two", &[&c, "--also", &b, "--also", &a], &log);
    let patience = Duration::from_secs(60);
    let first = one.wait_timeout(patience);
    let second = two.wait_timeout(patience);
    assert!(first.success() && second.success(), "{first:?} {second:?}");
    assert_no_overlap(&log, 80);
    assert_only_entries(&sb, &["a"]);
}

/// A set of flock, mkdir and abstract locks: while held, each lock is held
/// (by the one wrapper), `--status` reports every one of them (given as
/// several LOCKs or with --also), and all are free again after.
#[test]
fn mixed_backends_are_held_together_and_status_covers_them() {
    let sb = Sandbox::new("mixed");
    let a = Backend::Flock.spec(&sb, "a");
    let b = Backend::Mkdir.spec(&sb, "b");
    let c = Backend::Abstract.spec(&sb, "c");
    let mut holder = sb.hold(&["--also", &b, "--also", &c], &a);
    let pid = holder.proc.pid();
    for lock in [&a, &b, &c] {
        assert!(is_held(&sb, lock), "{lock} is not held");
    }
    for args in [
        vec!["--status", &a, &b, &c],
        vec!["--status", &a, "--also", &b, "--also", &c],
        vec!["--status", "--also", &b, "--also", &c, &a],
    ] {
        let out = run(&sb, &args);
        out.assert_code(1);
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{args:?}: {out:?}");
        for (line, lock) in lines.iter().zip([&a, &b, &c]) {
            assert!(
                line.starts_with(&format!("{lock}: exclusive, held by pid {pid}")),
                "{args:?}: {out:?}"
            );
        }
    }
    // Free only when every one of them is.
    let out = run(&sb, &["--status", "-E", "7", &a, "--also", &b]);
    out.assert_code(7);
    holder.release_and_finish().assert_code(0);
    let out = run(&sb, &["--status", &a, "--also", &b, "--also", &c]);
    out.assert_code(0);
    assert_eq!(out.stdout, format!("{a}: free\n{b}: free\n{c}: free\n"));
    assert_only_entries(&sb, &["a"]);
}

/// The command gets LOCKWRAP_LOCK (the first lock, as given) and
/// LOCKWRAP_LOCKS (every lock as given, one per line, in the order given),
/// with `--also` before the LOCK or right after it.
#[test]
fn the_command_gets_lockwrap_lock_and_lockwrap_locks() {
    let sb = Sandbox::new("env");
    let a = Backend::Mkdir.spec(&sb, "a");
    let b = format!("{}/", Backend::Flock.spec(&sb, "b"));
    let c = Backend::Abstract.spec(&sb, "c");
    fs::create_dir(sb.locks.join("b")).unwrap();
    let show = "printf '%s|%s' \"$LOCKWRAP_LOCK\" \"$LOCKWRAP_LOCKS\"";
    let expected = format!("{c}|{c}\n{a}\n{b}");
    let out = run(&sb, &[&c, "--also", &a, "--also", &b, "sh", "-c", show]);
    out.assert_code(0);
    assert_eq!(out.stdout, expected);
    let out = run(&sb, &["--also", &a, "--also", &b, &c, "-c", show]);
    out.assert_code(0);
    assert_eq!(out.stdout, expected);
    let out = run(
        &sb,
        &[
            &format!("--also={a}"),
            &c,
            &format!("--also={b}"),
            "-c",
            show,
        ],
    );
    out.assert_code(0);
    assert_eq!(out.stdout, expected);
    // A single lock: LOCKWRAP_LOCKS is that lock.
    let out = run(&sb, &[&a, "sh", "-c", show]);
    out.assert_code(0);
    assert_eq!(out.stdout, format!("{a}|{a}"));
}

/// The tree rule holds for the set: with a lock that lockwrap keeps
/// itself (mkdir) lockwrap keeps all of them until the last process of the
/// command's tree has exited; with only fd-carried locks (flock, abstract)
/// it exits with the command and the worker keeps them, as flock(1).
#[test]
fn an_orphaned_worker_keeps_every_lock_of_the_set() {
    let sb = Sandbox::new("orphan-mixed");
    let a = Backend::Flock.spec(&sb, "a");
    let b = Backend::Mkdir.spec(&sb, "b");
    tree::an_orphaned_worker_keeps_the_lock(&sb, &["--also", &b], &a, true, Duration::ZERO);
    assert!(!is_held(&sb, &a) && !is_held(&sb, &b));

    let sb = Sandbox::new("orphan-kernel");
    let a = Backend::Flock.spec(&sb, "a");
    let c = Backend::Abstract.spec(&sb, "c");
    tree::an_orphaned_worker_keeps_the_lock(&sb, &["--also", &c], &a, false, Duration::ZERO);
    assert!(!is_held(&sb, &a) && !is_held(&sb, &c));
}

/// -F: the exec'd command keeps every lock of the set.
#[test]
fn no_fork_keeps_every_lock() {
    let sb = Sandbox::new("nofork");
    let a = Backend::Flock.spec(&sb, "a");
    let b = Backend::Mkdir.spec(&sb, "b");
    let bin = common::bin();
    let script = format!(
        "'{bin}' -n '{a}' true; echo $?; '{bin}' -n '{b}' true; echo $?",
        bin = bin.display()
    );
    let out = run(&sb, &["-F", &a, "--also", &b, "sh", "-c", &script]);
    out.assert_code(0);
    assert_eq!(out.stdout, "1\n1\n", "{out:?}");
    assert!(!is_held(&sb, &a) && !is_held(&sb, &b));
}

/// What cannot work is refused before any lock is touched, in one line
/// (64): the same lock twice (also spelt differently), --slots, --replace
/// or --fd with --also, -s with a lock that has no shared holders, -F with
/// a lock server, --stale-after when no lock of the set can be stale, a
/// missing or empty --also.
#[test]
fn what_cannot_work_is_a_usage_error() {
    let sb = Sandbox::new("usage");
    let a = Backend::Flock.spec(&sb, "a");
    let relative_a = "../locks/a".to_owned();
    let dotted_a = format!("{}/./a", sb.locks.display());
    let m = Backend::Mkdir.spec(&sb, "m");
    let m_slash = format!("{m}/");
    let flock_m = format!("flock:{}", sb.locks.join("m").display());
    let c = Backend::Abstract.spec(&sb, "c");
    let c_long = format!("abstract:{}", sb.abstract_name("c"));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![&a, "--also", &a, "true"], "twice"),
        (vec![&a, "--also", &relative_a, "true"], "twice"),
        (vec![&dotted_a, "--also", &a, "true"], "twice"),
        (vec![&m, "--also", &m_slash, "true"], "twice"),
        (vec![&m, "--also", &flock_m, "true"], "twice"),
        (vec![&c, "--also", &c_long, "true"], "twice"),
        (vec!["--slots", "2", &a, "--also", &m, "true"], "--slots"),
        (vec!["--replace", &a, "--also", &m, "true"], "--replace"),
        (vec!["--fd", "1", "--also", &m, "true"], "--fd"),
        (vec!["-s", &a, "--also", &m, "true"], "-s"),
        (
            vec!["-F", &a, "--also", "redis://127.0.0.1:1#x", "true"],
            "--no-fork",
        ),
        (
            vec!["--stale-after", "1h", &a, "--also", &c, "true"],
            "--stale-after",
        ),
        (vec!["--lease", "10s", &a, "--also", &m, "true"], "--lease"),
        (vec![&a, "--also"], "--also"),
        (vec![&a, "--also", "", "true"], "empty"),
        (vec!["--also", "", &a, "true"], "empty"),
        (vec!["--also", "x\ny", &a, "true"], "newline"),
    ];
    for (args, needle) in cases {
        let out = run(&sb, &args);
        out.assert_error(64);
        assert!(
            out.stderr.contains(needle),
            "{args:?}: no '{needle}' in {out:?}"
        );
        assert_only_entries(&sb, &[]);
    }
    // A file and a hard link to it are one lock.
    fs::write(sb.locks.join("h"), "").unwrap();
    fs::hard_link(sb.locks.join("h"), sb.locks.join("h2")).unwrap();
    let (h, h2) = (
        Backend::Flock.spec(&sb, "h"),
        Backend::Fcntl.spec(&sb, "h2"),
    );
    let out = run(&sb, &[&h, "--also", &h2, "true"]);
    out.assert_error(64);
    assert!(out.stderr.contains("twice"), "{out:?}");
    // Where some lock of the set can use them, they apply to those.
    run(&sb, &["--stale-after", "1h", &a, "--also", &m, "true"]).assert_code(0);
    run(&sb, &["-s", &a, "--also", "fcntl:../locks/f", "true"]).assert_code(0);
}
