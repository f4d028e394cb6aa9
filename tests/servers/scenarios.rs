//! The server-lock scenarios that are the same for every [`Engine`], written
//! once. tests/redis.rs and tests/postgres.rs call them from thin `#[test]`
//! functions (so a failure names the engine) and add the checks that only
//! one engine has (fencing tokens, psql, a stopped server or session).

use std::ffi::OsStr;
use std::fs;
use std::time::{Duration, Instant};

use lockwrap::backend::{self, HolderInfo};
use lockwrap::spec::LockSpec;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Engine, free_port, hostname};
use crate::common::tree::{self, Detach, KillOnDrop, Stop, TreeScript};
use crate::common::{
    Holder, Output, Sandbox, WAIT, assert_no_overlap, become_subreaper, catches,
    critical_section_script, process_is_running, reap_adopted, wait_for_pid_file, wait_until,
};

/// The lease of holders whose lock a test takes away or abandons: short,
/// so that a lost lock is noticed and an abandoned one expires soon.
pub const SHORT_LEASE: [&str; 2] = ["--lease", "1500ms"];

/// Runs lockwrap with `args` to the end (bounded).
pub fn run(sb: &Sandbox, args: &[&str]) -> Output {
    sb.run(sb.lockwrap(args))
}

/// Asserts what the status of a server lock says about `holder`: the
/// wrapper's and the command's pids, this host, the command, an age.
#[track_caller]
pub fn assert_names_the_holder(info: &HolderInfo, holder: &Holder) {
    assert_eq!(info.pid, Some(holder.proc.pid()), "{info:?}");
    assert_eq!(info.child_pid, Some(holder.child_pid), "{info:?}");
    assert_eq!(info.host.as_deref(), Some(hostname().as_str()), "{info:?}");
    assert!(
        info.command
            .as_deref()
            .is_some_and(|c| c.starts_with("sh -c ")),
        "{info:?}"
    );
    assert!(info.age.is_some(), "{info:?}");
}

/// Six wrappers started at once run their commands one at a time. Returns
/// the LOCKWRAP_TOKEN each command saw, in the order they got the lock.
pub fn wrappers_exclude_each_other<E: Engine>(server: &E) -> Vec<String> {
    const WRAPPERS: usize = 6;
    let sb = Sandbox::new("mutex");
    let lock = server.lock("mutex");
    let log = sb.work_path("log");
    let tokens = sb.work_path("tokens");
    let script = format!(
        "echo \"$LOCKWRAP_TOKEN\" >> '{}'; {}",
        tokens.display(),
        critical_section_script(&log)
    );
    let mut wrappers: Vec<_> = (0..WRAPPERS)
        .map(|i| {
            let command = sb.lockwrap(["-w", "20", &lock, "sh", "-c", &script]);
            sb.spawn(command, &format!("wrapper{i}"))
        })
        .collect();
    for wrapper in &mut wrappers {
        wrapper.finish().assert_code(0);
    }
    assert_no_overlap(&log, WRAPPERS);
    let tokens: Vec<String> = fs::read_to_string(&tokens)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(tokens.len(), WRAPPERS, "{tokens:?}");
    tokens
}

/// With the lock held: -n fails at once and silently with 1 (or the -E
/// code), -w gives up with the -E code and leaves nothing queued on the
/// server, and a waiter the server knows about gets the lock when the
/// holder releases it. Returns the waiter's LOCKWRAP_TOKEN.
pub fn conflicts_time_out_and_a_release_wakes_the_waiter<E: Engine>(server: &E) -> String {
    let sb = Sandbox::new("busy");
    let lock = server.lock("busy");
    let mut holder = sb.hold(&[], &lock);
    let out = run(&sb, &["-n", &lock, "true"]);
    out.assert_code(1);
    assert!(out.stderr.is_empty(), "conflicts are silent: {out:?}");
    run(&sb, &["-n", "-E", "42", &lock, "true"]).assert_code(42);
    run(&sb, &["-w", "0.3", "-E", "7", &lock, "true"]).assert_code(7);
    // A wait given up leaves no waiter behind on the server.
    server.wait_for_waiters("busy", 0);

    let command = sb.lockwrap(["-w", "20", &lock, "sh", "-c", "echo \"$LOCKWRAP_TOKEN\""]);
    let mut waiter = sb.spawn(command, "waiter");
    server.wait_for_waiters("busy", 1);
    holder.release_and_finish().assert_code(0);
    let out = waiter.finish();
    out.assert_code(0);
    out.stdout.trim_end().to_owned()
}

/// `--slots 2`: two holders get slots 0 and 1 (LOCKWRAP_SLOT), each slot is
/// the lock NAME.slotI, a third holder cannot get in, and `--status --slots 2`
/// lists both holders.
pub fn slots_let_two_holders_in<E: Engine>(server: &E) {
    let sb = Sandbox::new("slots");
    let lock = server.lock("pool");
    let slot_lock = |slot: &str| server.lock(&format!("pool.slot{slot}"));
    let (mut first, first_slot) = sb.hold_slot(&["--slots", "2"], &lock);
    let (mut second, second_slot) = sb.hold_slot(&["--slots", "2"], &lock);
    let slots = [first_slot, second_slot];
    let mut sorted = slots.clone();
    sorted.sort();
    assert_eq!(sorted, ["0", "1"], "{lock}: {slots:?}");

    // Both slots taken: a third holder cannot get in.
    let marker = sb.work_path("third-ran");
    let marker = marker.to_str().unwrap();
    let out = run(&sb, &["--slots", "2", "-n", &lock, "touch", marker]);
    out.assert_code(1);
    assert!(out.stderr.is_empty(), "conflicts are silent: {out:?}");
    assert!(!fs::exists(marker).unwrap(), "{lock}: a third holder ran");

    let lines: Vec<String> = [(&first, &slots[0]), (&second, &slots[1])]
        .iter()
        .map(|(holder, slot)| {
            format!(
                "{}: exclusive, held by pid {} (child {})",
                slot_lock(slot),
                holder.proc.pid(),
                holder.child_pid
            )
        })
        .collect();
    // Each wrapper records its command's pid just after starting it.
    let status = || run(&sb, &["--status", "--slots", "2", &lock]);
    let mut out = status();
    wait_until("--status to name both commands", WAIT, || {
        out = status();
        lines.iter().all(|line| out.stdout.contains(line))
    });
    out.assert_code(1);
    assert_eq!(out.stdout.lines().count(), 2, "{out:?}");
    assert_eq!(out.stdout.matches("held by").count(), 2, "{out:?}");

    // The slot the first holder leaves is free; the other one stays taken.
    first.release_and_finish().assert_code(0);
    run(&sb, &["-n", &slot_lock(&slots[0]), "true"]).assert_code(0);
    run(&sb, &["-n", &slot_lock(&slots[1]), "true"]).assert_code(1);
    // One slot free: the semaphore could be taken.
    status().assert_code(0);
    second.release_and_finish().assert_code(0);
    let out = status();
    out.assert_code(0);
    assert_eq!(out.stdout.matches(": free\n").count(), 2, "{out:?}");
}

/// A command that ends at once still leaves the lock released: the
/// SIGCHLD of its exit, arriving while lockwrap talks to the server, must
/// not break the connection (socket reads with a timeout fail with EINTR even
/// under SA_RESTART) and leave the lock to expire with its lease.
pub fn a_short_command_releases_the_lock<E: Engine>(server: &E) {
    let sb = Sandbox::new("short");
    let lock = server.lock("short");
    for round in 0..20 {
        run(&sb, &[&lock, "true"]).assert_code(0);
        let out = run(&sb, &["-n", &lock, "true"]);
        assert_eq!(
            out.code(),
            0,
            "round {round}: the lock was not released: {out:?}"
        );
    }
}

/// The status of a held lock names its holder; a released lock is free.
pub fn status_names_the_holder<E: Engine>(server: &E) {
    let sb = Sandbox::new("watched");
    let lock = server.lock("watched");
    let backend = backend::open(&LockSpec::parse(OsStr::new(&lock)));
    assert!(!backend.status().unwrap().held);
    let mut holder = sb.hold(&[], &lock);
    // The command's pid is recorded just after it starts.
    let mut status = backend.status().unwrap();
    wait_until("the command's pid in the record", WAIT, || {
        status = backend.status().unwrap();
        status
            .holders
            .first()
            .is_some_and(|h| h.child_pid == Some(holder.child_pid))
    });
    assert!(status.held && !status.shared, "{status:?}");
    assert_eq!(status.holders.len(), 1, "{status:?}");
    assert_names_the_holder(&status.holders[0], &holder);
    holder.release_and_finish().assert_code(0);
    assert!(!backend.status().unwrap().held);
}

/// Takes away the lock of a holder with a short lease by calling `lose`,
/// and checks that lockwrap stops the command and exits 75 (EX_TEMPFAIL),
/// saying `message`. What `lose` returns (a [`super::Stopped`] guard, say)
/// is dropped once the wrapper has exited. Returns the test's sandbox.
pub fn losing_the_lock_stops_the_command<E: Engine, G>(
    server: &E,
    name: &str,
    lose: impl FnOnce() -> G,
    message: &str,
) -> Sandbox {
    let sb = Sandbox::new(name);
    let mut holder = sb.hold(&SHORT_LEASE, &server.lock(name));
    let out = {
        let _lost = lose();
        holder.proc.finish()
    };
    out.assert_code(75);
    assert!(out.stderr.contains(message), "no '{message}' in {out:?}");
    assert!(
        !process_is_running(holder.child_pid),
        "the command was not stopped: {out:?}"
    );
    sb
}

/// A holder SIGKILLed together with its command frees the lock (Redis: its
/// lease runs out; PostgreSQL: its session ends).
pub fn a_killed_holder_frees_the_lock<E: Engine>(server: &E) {
    // The command, orphaned when its wrapper dies, is adopted and reaped here.
    become_subreaper();
    let sb = Sandbox::new("vanish");
    let lock = server.lock("vanish");
    let mut holder = sb.hold(E::abandoned_holder_args(), &lock);
    holder.proc.kill_and_reap();
    let _ = kill(Pid::from_raw(holder.child_pid), Signal::SIGKILL);
    reap_adopted(holder.child_pid);
    run(&sb, &["-w", "20", &lock, "true"]).assert_code(0);
}

/// An unreachable server fails with 75 and one line that masks the
/// password; -F, a bad --lease, and a lock without a name are usage
/// errors (64).
pub fn unreachable_server_and_usage_errors<E: Engine>(server: &E) {
    let sb = Sandbox::new("refusals");
    let nobody = E::url(free_port(), Some("hunter2"));
    let out = run(&sb, &[&format!("{nobody}#x"), "true"]);
    out.assert_error(75);
    assert!(out.stderr.contains("cannot connect"), "{out:?}");
    assert!(!out.stderr.contains("hunter2"), "{out:?}");
    let masked = nobody.replace("hunter2", "***");
    assert!(out.stderr.contains(&masked), "no '{masked}' in {out:?}");

    let lock = server.lock("x");
    let out = run(&sb, &["-F", &lock, "true"]);
    out.assert_error(64);
    assert!(out.stderr.contains("--no-fork"), "{out:?}");
    for lease in ["0", "50ms", "soon"] {
        let out = run(&sb, &["--lease", lease, &lock, "true"]);
        out.assert_error(64);
        assert!(out.stderr.contains("lease"), "--lease {lease}: {out:?}");
    }
    let url = E::url(server.port(), None);
    run(&sb, &[&url, "true"]).assert_error(64);
    run(&sb, &[&format!("{url}#"), "true"]).assert_error(64);
}

/// A worker the command left behind in a session of its own keeps the
/// lock: the wrapper stays, renews the lease (held here for longer than the
/// short lease) and releases the lock once the worker has exited.
pub fn an_orphaned_worker_keeps_the_lock<E: Engine>(server: &E) {
    let sb = Sandbox::new("orphan");
    let lock = server.lock("orphan");
    tree::an_orphaned_worker_keeps_the_lock(
        &sb,
        &SHORT_LEASE,
        &lock,
        true,
        Duration::from_millis(2500),
    );
}

/// --max-runtime stops the command's grandchildren too, also one in a
/// session of its own; the lock stays held until they are gone.
pub fn max_runtime_stops_the_tree<E: Engine>(server: &E) {
    let sb = Sandbox::new("max-tree");
    let lock = server.lock("max-tree");
    for detach in [Detach::Background, Detach::Setsid] {
        tree::stopping_stops_the_tree(&sb, &[], &lock, Stop::MaxRuntime, detach);
    }
}

/// A SIGTERM to the wrapper stops the command's grandchildren too (SIGKILL
/// after --kill-grace for those that ignore it); exit 143 once they are gone.
pub fn sigterm_stops_the_tree<E: Engine>(server: &E) {
    let sb = Sandbox::new("term-tree");
    let lock = server.lock("term-tree");
    tree::stopping_stops_the_tree(&sb, &[], &lock, Stop::Sigterm, Detach::Background);
}

/// A SIGKILLed wrapper of a server lock takes its command with it
/// (PR_SET_PDEATHSIG): nobody is left to renew the lease or keep the
/// session, so the command must not go on believing it holds the lock.
pub fn sigkill_of_the_wrapper_takes_the_command_with_it<E: Engine>(server: &E) {
    // The command, orphaned when its wrapper dies, is adopted and reaped here.
    become_subreaper();
    let sb = Sandbox::new("pdeath");
    let lock = server.lock("pdeath");
    let mut holder = sb.hold(E::abandoned_holder_args(), &lock);
    let _guard = KillOnDrop(vec![holder.child_pid]);
    holder.proc.kill_and_reap();
    wait_until("the command to die with its wrapper", WAIT, || {
        !process_is_running(holder.child_pid)
    });
    reap_adopted(holder.child_pid);
    run(&sb, &["-w", "20", &lock, "true"]).assert_code(0);
}

/// Takes away the lock (by calling `lose`) of a holder with a short lease
/// whose command has grandchildren that ignore SIGTERM: by the time the
/// wrapper has exited 75, none of them runs. What `lose` returns is dropped
/// once the wrapper has exited.
pub fn losing_the_lock_stops_the_tree<E: Engine, G>(
    server: &E,
    name: &str,
    lose: impl FnOnce() -> G,
) -> Sandbox {
    become_subreaper();
    let sb = Sandbox::new(name);
    let tree = TreeScript::new(&sb, "tree", Detach::Background, true);
    let mut command = sb.lockwrap(SHORT_LEASE);
    command.args([&server.lock(name), "sh", "-c", &tree.script]);
    let mut wrapper = sb.spawn(command, "wrapper");
    let pids = tree
        .wait_for_pids(&mut wrapper)
        .expect("the wrapper exited before its command's tree started");
    let _guard = KillOnDrop(pids.clone());
    let out = {
        let _lost = lose();
        wrapper.finish()
    };
    let running = tree::still_running(&pids);
    assert!(
        running.is_empty(),
        "the wrapper exited while pids {running:?} of the tree {pids:?} still ran: {out:?}"
    );
    out.assert_code(75);
    sb
}

/// A holder stopped by --max-runtime keeps renewing its lease while its
/// command takes long to stop (it ignores SIGTERM and gets SIGKILL only after
/// --kill-grace 4s, four leases later): no other wrapper gets the lock
/// until the command is gone.
pub fn a_long_stop_keeps_the_lease<E: Engine>(server: &E) {
    let sb = Sandbox::new("long-stop");
    let lock = server.lock("long-stop");
    let ready = sb.work_path("ready");
    let log = sb.work_path("probes");
    let script = format!("trap \"\" TERM; echo $$ > '{}'; sleep 100", ready.display());
    let command = sb.lockwrap([
        "--lease",
        "1s",
        "--max-runtime",
        "0.5",
        "--kill-grace",
        "4",
        &lock,
        "sh",
        "-c",
        &script,
    ]);
    let mut wrapper = sb.spawn(command, "wrapper");
    let child = wait_for_pid_file(&ready);
    let _guard = KillOnDrop(vec![child]);
    let seen = Instant::now();
    let held = tree::probe_until_exit(&sb, &[], &lock, &mut wrapper, &[child], &log);
    let stopped_after = seen.elapsed();
    let out = wrapper.finish();
    tree::assert_no_overlap(&log, "a holder stopping its command");
    out.assert_code(124);
    assert!(held > 0, "no probe found the lock held: {out:?}");
    // SIGTERM at 0.5s, SIGKILL at 4.5s: the probes covered the whole stop.
    assert!(
        stopped_after >= Duration::from_secs(3),
        "the command was stopped after {stopped_after:?} only, not after --kill-grace: {out:?}"
    );
    run(&sb, &["-n", &lock, "true"]).assert_code(0);
}

/// Issue 10 (2): `--replace` of a real lockwrap holder revokes its lease on
/// the server instead of signalling a pid the server named: the replacer
/// gets the lock and runs its command; the old holder's lockwrap notices the
/// loss at its next renewal, stops its command and exits 75.
pub fn replace_revokes_the_holders_lease<E: Engine>(server: &E) {
    let sb = Sandbox::new("replaced");
    let lock = server.lock("replaced");
    let mut holder = sb.hold(&SHORT_LEASE, &lock);
    let _guard = KillOnDrop(vec![holder.child_pid]);
    let out = run(&sb, &["--replace", "-w", "20", &lock, "echo", "replaced"]);
    out.assert_code(0);
    assert_eq!(out.stdout, "replaced\n", "{out:?}");
    let old = holder.proc.finish();
    assert_eq!(
        old.status.code(),
        Some(75),
        "the replaced holder's lockwrap exits 75 (lock lost), not of a signal: {old:?}"
    );
    assert!(
        old.stderr.starts_with("lockwrap: ") && old.stderr.lines().count() == 1,
        "{old:?}"
    );
    assert!(
        !process_is_running(holder.child_pid),
        "the replaced holder's command was not stopped: {old:?}"
    );
    run(&sb, &["-n", &lock, "true"]).assert_code(0);
}

/// Issue 10 (6): a port where some other server listens (it answers with
/// a multi-line HTTP error): one line, exit 75, for a lock and for --status.
pub fn a_server_of_another_kind_is_one_line_and_75<E: Engine>(_server: &E) {
    let sb = Sandbox::new("not-a-server");
    let lock = format!("{}#x", E::url(super::http_server(), None));
    run(&sb, &[&lock, "true"]).assert_error(75);
    run(&sb, &["--status", &lock]).assert_error(75);
}

/// Issue 11 (3): against a server that accepts the connection and never
/// answers, `-w 1` gives up within 2.5 s (a timeout, 1, or a failure to
/// connect, 75).
pub fn connecting_honours_w<E: Engine>(_server: &E) {
    let sb = Sandbox::new("silent");
    let (port, _) = super::silent_server();
    let lock = format!("{}#x", E::url(port, None));
    let mut bounded = sb.spawn(sb.lockwrap(["-w", "1", &lock, "true"]), "bounded");
    let status = bounded.wait_timeout(Duration::from_millis(2500));
    let out = bounded.output(status);
    match out.status.code() {
        Some(75) => {
            out.assert_error(75);
        }
        Some(1) => assert!(out.stderr.lines().count() <= 1, "{lock}: {out:?}"),
        _ => panic!("{lock}: -w 1 ended neither with 1 nor 75: {out:?}"),
    }
}

/// Issue 11 (3): a SIGTERM 0.5 s into connecting to a server that never
/// answers ends lockwrap with 143 within 1 s.
pub fn sigterm_while_connecting_exits_143<E: Engine>(_server: &E) {
    let sb = Sandbox::new("silent-term");
    let (port, accepted) = super::silent_server();
    let lock = format!("{}#x", E::url(port, None));
    let started = Instant::now();
    let mut plain = sb.spawn(sb.lockwrap([&lock, "true"]), "plain");
    accepted
        .recv_timeout(WAIT)
        .expect("lockwrap to connect to the silent server");
    wait_until("the wrapper to catch SIGTERM", WAIT, || {
        catches(plain.pid(), libc::SIGTERM)
    });
    std::thread::sleep(Duration::from_millis(500).saturating_sub(started.elapsed()));
    assert!(plain.is_running(), "{lock}: it ended before the signal");
    plain.signal(Signal::SIGTERM);
    let status = plain.wait_timeout(Duration::from_secs(1));
    plain.output(status).assert_code(143);
}

/// Issue 11 (2): the waiting line on a terminal names the holder from what
/// the waiter learns on its own connection: it opens no connection of its
/// own each time it is drawn (four draws here). Runs under script(1), which
/// gives lockwrap a terminal.
pub fn the_waiting_line_opens_no_connections<E: Engine>(server: &E) {
    let Some(script) = ["/usr/bin/script", "/bin/script"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("skipped: script(1) from util-linux is not installed");
        return;
    };
    let sb = Sandbox::new("line-conns");
    let lock = server.counted_lock("line");
    let mut holder = sb.hold(&[], &lock);
    let before = server.connections_opened("line");
    let screen = sb.work_path("screen");
    // A wide terminal: the line is cut to its width, and must keep the
    // holder's pid after the server URL.
    let inner = format!(
        "stty cols 300 && '{}' '{lock}' true",
        crate::common::bin().display()
    );
    use std::os::unix::process::CommandExt as _;
    let mut command = std::process::Command::new(script);
    command
        .args(["-qefc", &inner, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&screen).unwrap())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let mut terminal = command.spawn().expect("script(1)");
    let draws = || {
        std::fs::read_to_string(&screen)
            .unwrap_or_default()
            .matches(": waiting ")
            .count()
    };
    wait_until("four draws of the waiting line", 3 * WAIT, || draws() >= 4);
    let opened = server.connections_opened("line") - before;
    let shown = std::fs::read_to_string(&screen).unwrap_or_default();
    holder.release_and_finish().assert_code(0);
    let ended = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        matches!(terminal.try_wait(), Ok(Some(_)))
    });
    if !ended {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(terminal.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = terminal.wait();
    }
    assert!(
        opened <= 4,
        "{lock}: {opened} connections opened while the line was drawn four times"
    );
    assert!(
        shown.contains(&format!("pid {}", holder.proc.pid())),
        "{lock}: the line does not name the holder: {shown:?}"
    );
}
