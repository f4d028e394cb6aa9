//! PostgreSQL locks against a real, throwaway cluster (initdb + pg_ctl).

#![cfg(feature = "postgres")]

mod servers;

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use lockwrap::backend;
use lockwrap::spec::LockSpec;
use nix::sys::signal::Signal;
use servers::{Holder, PgServer, process_alive, run, wait_exit, wait_until};

/// SQL for the advisory-lock rows of lock NAME (as the README documents the key).
fn lock_rows(name: &str, condition: &str) -> String {
    format!(
        "FROM pg_locks WHERE locktype = 'advisory' AND {condition} \
         AND classid = ((hashtextextended('{name}', 0) >> 32) & 4294967295)::oid \
         AND objid = (hashtextextended('{name}', 0) & 4294967295)::oid"
    )
}

#[test]
fn wrappers_exclude_each_other() {
    let Some(server) = PgServer::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let lock = server.lock("mutex");
    let script = format!(
        "mkdir {d}/inside || echo overlap >> {d}/errors; echo in >> {d}/log; \
         sleep 0.05; rmdir {d}/inside"
    );
    let mut wrappers: Vec<_> = (0..5)
        .map(|_| {
            Command::new(servers::lockwrap())
                .args(["-w", "25", &lock, "sh", "-c", &script])
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for w in &mut wrappers {
        assert_eq!(wait_exit(w, "a wrapper").code(), Some(0));
    }
    assert!(
        !dir.path().join("errors").exists(),
        "two commands overlapped"
    );
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert_eq!(log.lines().count(), 5);
}

#[test]
fn nonblocking_timeout_conflict_code_and_psql_interop() {
    let Some(server) = PgServer::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lock = server.lock("busy");
    let holder = Holder::start(&[], &lock, dir.path(), "h");
    let out = run(&["-n", &lock, "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.is_empty(), "conflicts are silent");
    assert_eq!(
        run(&["-n", "-E", "42", &lock, "true"]).status.code(),
        Some(42)
    );
    assert_eq!(
        run(&["-w", "0.3", "-E", "7", &lock, "true"]).status.code(),
        Some(7)
    );
    // A wait given up leaves no session queued for the lock.
    wait_until("the timed-out waiter to leave the queue", || {
        server.sql(&format!(
            "SELECT count(*) {}",
            lock_rows("busy", "NOT granted")
        )) == "0"
    });
    // psql takes the same lock with the documented expression.
    assert_eq!(
        server.sql("SELECT pg_try_advisory_lock(hashtextextended('busy', 0))"),
        "f"
    );
    let waiter = Command::new(servers::lockwrap())
        .args(["-w", "25", &lock, "true"])
        .spawn()
        .unwrap();
    wait_until("the waiter to queue", || {
        server.sql(&format!(
            "SELECT count(*) {}",
            lock_rows("busy", "NOT granted")
        )) == "1"
    });
    holder.finish();
    assert_eq!(holder.exit().0, Some(0));
    let mut waiter = waiter;
    assert_eq!(wait_exit(&mut waiter, "the waiter").code(), Some(0));
}

#[test]
fn shared_holders_coexist_and_status_names_them() {
    let Some(server) = PgServer::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lock = server.lock("readers");
    let backend = backend::open(&LockSpec::parse(OsStr::new(&lock)));
    assert!(!backend.status().unwrap().held);
    let a = Holder::start(&["-s"], &lock, dir.path(), "a");
    let b = Holder::start(&["-s", "-n"], &lock, dir.path(), "b");
    assert_eq!(run(&["-n", &lock, "true"]).status.code(), Some(1));
    let mut status = backend.status().unwrap();
    wait_until("both commands' pids in the status", || {
        status = backend.status().unwrap();
        status.holders.iter().all(|h| h.child_pid.is_some())
    });
    assert!(status.held && status.shared);
    let mut pids: Vec<_> = status.holders.iter().map(|h| h.pid).collect();
    pids.sort();
    let mut expected = vec![Some(a.child.id() as i32), Some(b.child.id() as i32)];
    expected.sort();
    assert_eq!(pids, expected);
    let info = status
        .holders
        .iter()
        .find(|h| h.pid == Some(a.child.id() as i32))
        .unwrap();
    assert_eq!(info.child_pid, Some(a.command_pid()));
    assert_eq!(info.host.as_deref(), Some(hostname().as_str()));
    assert!(info.command.as_deref().unwrap().starts_with("sh -c "));
    assert!(info.age.is_some());
    a.finish();
    b.finish();
    assert_eq!(a.exit().0, Some(0));
    assert_eq!(b.exit().0, Some(0));
    assert!(!backend.status().unwrap().held);
}

#[test]
fn a_terminated_session_stops_the_command_and_exits_75() {
    let Some(server) = PgServer::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lock = server.lock("lossy");
    let holder = Holder::start(&["--lease", "1500ms"], &lock, dir.path(), "h");
    let command = holder.command_pid();
    assert_eq!(
        server.sql(&format!(
            "SELECT count(pg_terminate_backend(pid)) {}",
            lock_rows("lossy", "granted")
        )),
        "1"
    );
    let (code, stderr) = holder.exit();
    assert_eq!(code, Some(75), "{stderr}");
    assert!(stderr.contains("lock lost"), "{stderr}");
    assert!(!process_alive(command), "the command was stopped");
    assert_eq!(run(&["-n", &lock, "true"]).status.code(), Some(0));
}

#[test]
fn a_stalled_session_stops_the_command_and_exits_75() {
    let Some(server) = PgServer::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lock = server.lock("stalled");
    let holder = Holder::start(&["--lease", "1500ms"], &lock, dir.path(), "h");
    let command = holder.command_pid();
    let backend: i32 = server
        .sql(&format!("SELECT pid {}", lock_rows("stalled", "granted")))
        .parse()
        .unwrap();
    let backend = nix::unistd::Pid::from_raw(backend);
    nix::sys::signal::kill(backend, Signal::SIGSTOP).unwrap();
    let (code, stderr) = holder.exit();
    nix::sys::signal::kill(backend, Signal::SIGCONT).unwrap();
    assert_eq!(code, Some(75), "{stderr}");
    assert!(stderr.contains("did not answer"), "{stderr}");
    assert!(!process_alive(command), "the command was stopped");
    // The session ends once the server sees the closed connection.
    assert_eq!(run(&["-w", "25", &lock, "true"]).status.code(), Some(0));
}

#[test]
fn a_vanished_holder_frees_the_lock_when_its_session_ends() {
    let Some(server) = PgServer::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lock = server.lock("vanish");
    let mut holder = Holder::start(&[], &lock, dir.path(), "h");
    let command = holder.command_pid();
    holder.child.kill().unwrap();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(command), Signal::SIGKILL);
    holder.child.wait().unwrap();
    assert_eq!(run(&["-w", "25", &lock, "true"]).status.code(), Some(0));
}

#[test]
fn unix_sockets_by_query_or_percent_encoded_host() {
    let Some(server) = PgServer::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let by_query = server.socket_lock("sock");
    let holder = Holder::start(&[], &by_query, dir.path(), "h");
    let encoded = format!(
        "postgresql://postgres@{}:{}/postgres#sock",
        server.socket_dir.display().to_string().replace('/', "%2F"),
        server.port
    );
    // Same server, same lock: over TCP too.
    assert_eq!(run(&["-n", &encoded, "true"]).status.code(), Some(1));
    assert_eq!(
        run(&["-n", &server.lock("sock"), "true"]).status.code(),
        Some(1)
    );
    holder.finish();
    assert_eq!(holder.exit().0, Some(0));
    assert_eq!(run(&["-n", &encoded, "true"]).status.code(), Some(0));
}

#[test]
fn unreachable_server_no_fork_and_passwords() {
    let Some(server) = PgServer::shared() else {
        return;
    };
    let nobody = format!(
        "postgres://postgres:hunter2@127.0.0.1:{}/postgres#x",
        servers::free_port()
    );
    let out = run(&[&nobody, "true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(stderr.contains("postgres:***@"), "{stderr}");

    let out = run(&["-F", &server.lock("x"), "true"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-fork"));

    let out = run(&[
        &format!("postgres://127.0.0.1:{}/postgres", server.port),
        "true",
    ]);
    assert_eq!(out.status.code(), Some(64), "a lock without #NAME");
}

#[test]
fn names_with_a_slot_suffix_are_separate_locks() {
    let Some(server) = PgServer::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let slot0 = Holder::start(&[], &server.lock("pool.slot0"), dir.path(), "s0");
    assert_eq!(
        run(&["-n", &server.lock("pool.slot1"), "true"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        run(&["-n", &server.lock("pool.slot0"), "true"])
            .status
            .code(),
        Some(1)
    );
    slot0.finish();
    assert_eq!(slot0.exit().0, Some(0));
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}
