//! Redis locks against a real, throwaway redis-server.

#![cfg(feature = "redis")]

mod servers;

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use lockwrap::backend;
use lockwrap::spec::LockSpec;
use nix::sys::signal::Signal;
use servers::{Holder, RedisServer, process_alive, run, wait_exit, wait_until};

#[test]
fn wrappers_exclude_each_other_and_tokens_only_grow() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let lock = server.lock("mutex");
    // mkdir fails if another command is inside at the same time.
    let script = format!(
        "mkdir {d}/inside || echo overlap >> {d}/errors; echo $LOCKWRAP_TOKEN >> {d}/tokens; \
         sleep 0.05; rmdir {d}/inside"
    );
    let mut wrappers: Vec<_> = (0..6)
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
    let tokens: Vec<u64> = std::fs::read_to_string(dir.path().join("tokens"))
        .unwrap()
        .lines()
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(tokens.len(), 6);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens in entry order: {tokens:?}"
    );
}

#[test]
fn nonblocking_timeout_and_conflict_code() {
    let Some(server) = RedisServer::start() else {
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
    // A waiter gets the lock when the holder releases it.
    let waiter = Command::new(servers::lockwrap())
        .args(["-w", "25", &lock, "sh", "-c", "echo $LOCKWRAP_TOKEN"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    holder.finish();
    assert_eq!(holder.exit().0, Some(0));
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
}

#[test]
fn names_with_a_slot_suffix_are_separate_locks() {
    let Some(server) = RedisServer::start() else {
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

#[test]
fn status_names_the_holder() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lock = server.lock("watched");
    let backend = backend::open(&LockSpec::parse(OsStr::new(&lock)));
    assert!(!backend.status().unwrap().held);
    let holder = Holder::start(&[], &lock, dir.path(), "h");
    // The command's pid is recorded just after it starts.
    let mut status = backend.status().unwrap();
    wait_until("the command's pid in the record", || {
        status = backend.status().unwrap();
        status.holders[0].child_pid == Some(holder.command_pid())
    });
    assert!(status.held && !status.shared);
    let info = &status.holders[0];
    assert_eq!(info.pid, Some(holder.child.id() as i32));
    assert_eq!(info.host.as_deref(), Some(hostname().as_str()));
    assert!(info.command.as_deref().unwrap().starts_with("sh -c "));
    assert!(info.age.is_some());
    holder.finish();
    assert_eq!(holder.exit().0, Some(0));
    assert!(!backend.status().unwrap().held);
}

#[test]
fn a_stalled_server_stops_the_command_and_exits_75() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lock = server.lock("lossy");
    let holder = Holder::start(&["--lease", "1500ms"], &lock, dir.path(), "h");
    let command = holder.command_pid();
    server.signal(Signal::SIGSTOP);
    let (code, stderr) = holder.exit();
    server.signal(Signal::SIGCONT);
    assert_eq!(code, Some(75), "{stderr}");
    assert!(stderr.contains("lock lost"), "{stderr}");
    assert!(!process_alive(command), "the command was stopped");
    // The lease runs out on the server, and another wrapper gets the lock.
    assert_eq!(run(&["-w", "25", &lock, "true"]).status.code(), Some(0));
}

#[test]
fn a_lock_taken_away_on_the_server_stops_the_command() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lock = server.lock("stolen");
    let holder = Holder::start(&["--lease", "1500ms"], &lock, dir.path(), "h");
    let command = holder.command_pid();
    assert!(
        server
            .command(&["SET", "lockwrap:stolen", "someone-else"])
            .starts_with("+OK")
    );
    let (code, stderr) = holder.exit();
    assert_eq!(code, Some(75), "{stderr}");
    assert!(stderr.contains("gone or taken"), "{stderr}");
    assert!(!process_alive(command), "the command was stopped");
    // The owner check kept our release from deleting the other holder's key.
    assert_eq!(
        server.command(&["GET", "lockwrap:stolen"]),
        "$12\r\nsomeone-else\r\n"
    );
}

#[test]
fn a_vanished_holder_frees_the_lock_within_the_lease() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lock = server.lock("vanish");
    let mut holder = Holder::start(&["--lease", "1500ms"], &lock, dir.path(), "h");
    let command = holder.command_pid();
    holder.child.kill().unwrap();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(command), Signal::SIGKILL);
    holder.child.wait().unwrap();
    wait_until("the killed command to go", || !process_alive(command));
    assert_eq!(run(&["-w", "25", &lock, "true"]).status.code(), Some(0));
}

#[test]
fn unreachable_server_no_fork_and_passwords() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let nobody = format!("redis://127.0.0.1:{}#x", servers::free_port());
    let out = run(&[&nobody, "true"]);
    assert_eq!(out.status.code(), Some(75));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));

    let out = run(&["-F", &server.lock("x"), "true"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-fork"));

    // The server has no password: AUTH fails, and the message hides ours.
    let with_password = format!("redis://:hunter2@127.0.0.1:{}#x", server.port);
    let out = run(&[&with_password, "true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(stderr.contains(":***@"), "{stderr}");

    let out = run(&["-s", &server.lock("x"), "true"]);
    assert_eq!(out.status.code(), Some(64));
    for lease in ["0", "50ms", "soon"] {
        let out = run(&["--lease", lease, &server.lock("x"), "true"]);
        assert_eq!(out.status.code(), Some(64), "--lease {lease}");
    }
}

#[test]
fn a_release_wakes_the_waiter_through_pub_sub() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lock = server.lock("notify");
    let holder = Holder::start(&[], &lock, dir.path(), "h");
    let waiter = Command::new(servers::lockwrap())
        .args(["-w", "25", &lock, "true"])
        .spawn()
        .unwrap();
    // The waiter subscribes to the release channel.
    wait_until("the waiter to subscribe", || {
        server
            .command(&["PUBSUB", "NUMSUB", "lockwrap:notify:released"])
            .ends_with(":1\r\n")
    });
    holder.finish();
    assert_eq!(holder.exit().0, Some(0));
    let mut waiter = waiter;
    assert_eq!(wait_exit(&mut waiter, "the waiter").code(), Some(0));
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}
