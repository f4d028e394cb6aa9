//! Issue 13 (5, 6): `--fair` serves waiters first come, first served, and
//! `--status` lists who waits, on every local backend.

mod common;

use std::fs;

use common::{Backend, Proc, Sandbox, WAIT, wait_until};

/// A waiter as `--status --json` lists it: pid and queue position.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    pid: Option<i32>,
    position: Option<u32>,
    fair: bool,
    command: Option<String>,
}

/// `--status --json LOCK`, one line.
fn status_json(sb: &Sandbox, lock: &str) -> String {
    let out = sb.run(sb.lockwrap(["--status", "--json", lock]));
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "--status failed: {out:?}"
    );
    out.stdout
}

/// The value of `"key":` in one flat JSON object (as lockwrap writes it:
/// no spaces, strings escaped), None when null or absent.
fn field<'a>(object: &'a str, key: &str) -> Option<&'a str> {
    let start = object.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &object[start..];
    let value = if let Some(string) = rest.strip_prefix('"') {
        let mut end = 0;
        let bytes = string.as_bytes();
        while end < bytes.len() && bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        &rest[..end + 2]
    } else {
        &rest[..rest.find([',', '}']).unwrap_or(rest.len())]
    };
    (value != "null").then_some(value)
}

/// The waiters of a `--status --json` line, in the order listed.
fn waiters(json: &str) -> Vec<Listed> {
    let start = json
        .find("\"waiters\":[")
        .unwrap_or_else(|| panic!("no waiters array in {json}"))
        + "\"waiters\":[".len();
    let list = &json[start..];
    let list = &list[..list.find(']').expect("end of the waiters")];
    if list.is_empty() {
        return Vec::new();
    }
    list.split("},{")
        .map(|object| Listed {
            pid: field(object, "pid").map(|p| p.parse().unwrap()),
            position: field(object, "position").map(|p| p.parse().unwrap()),
            fair: field(object, "fair") == Some("true"),
            command: field(object, "command").map(str::to_owned),
        })
        .collect()
}

/// Waits until `--status --json` lists `pid` among the waiters, and returns it.
#[track_caller]
fn wait_listed(sb: &Sandbox, lock: &str, pid: i32) -> Listed {
    let mut found = None;
    wait_until(
        &format!("{lock}: pid {pid} to be listed waiting"),
        WAIT,
        || {
            found = waiters(&status_json(sb, lock))
                .into_iter()
                .find(|w| w.pid == Some(pid));
            found.is_some()
        },
    );
    found.unwrap()
}

/// A fair waiter whose command is a small process tree that appends its
/// number to `log` (from a background job of the shell, waited for).
fn start_fair_waiter(sb: &Sandbox, lock: &str, log: &std::path::Path, n: usize) -> Proc {
    let script = format!("(echo {n} >> '{}') & wait", log.display());
    let mut command = sb.lockwrap(["--fair", lock, "sh", "-c", &script]);
    command.env_remove("LOCKWRAP_REQUIRE_SERVERS");
    sb.spawn(command, &format!("fair{n}"))
}

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
        let listed = wait_listed(&sb, &lock, proc.pid());
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
        }
    )*};
}

fair_tests! {
    flock => Backend::Flock,
    fcntl => Backend::Fcntl,
    mkdir => Backend::Mkdir,
    excl => Backend::Excl,
}
