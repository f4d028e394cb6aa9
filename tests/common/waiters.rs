//! Who waits for a lock, as `--status --json` lists it (issue 13, items 5
//! and 6), and fair waiters whose order shows in a log: for the local
//! backends (tests/fair.rs) and the servers alike.

use std::path::Path;

use super::{Proc, Sandbox, WAIT, wait_until};

/// A waiter as `--status --json` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub pid: Option<i32>,
    pub position: Option<u32>,
    pub fair: bool,
    pub command: Option<String>,
    pub host: Option<String>,
    pub since_ms: Option<u64>,
}

/// `--status --json LOCK`, one line.
#[track_caller]
pub fn status_json(sb: &Sandbox, lock: &str) -> String {
    let out = sb.run(sb.lockwrap(["--status", "--json", lock]));
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "--status failed: {out:?}"
    );
    out.stdout
}

/// The value of `"key":` in one flat JSON object (as lockwrap writes it:
/// no spaces, strings escaped), None when null or absent. Strings keep
/// their quotes.
pub fn field<'a>(object: &'a str, key: &str) -> Option<&'a str> {
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
#[track_caller]
pub fn waiters(json: &str) -> Vec<Listed> {
    let start = json
        .find("\"waiters\":[")
        .unwrap_or_else(|| panic!("no waiters array in {json}"))
        + "\"waiters\":[".len();
    let list = &json[start..];
    let list = &list[..list.find(']').expect("end of the waiters")];
    if list.is_empty() {
        return Vec::new();
    }
    let unquote = |s: &str| s.trim_matches('"').to_owned();
    list.split("},{")
        .map(|object| Listed {
            pid: field(object, "pid").map(|p| p.parse().unwrap()),
            position: field(object, "position").map(|p| p.parse().unwrap()),
            fair: field(object, "fair") == Some("true"),
            command: field(object, "command").map(unquote),
            host: field(object, "host").map(unquote),
            since_ms: field(object, "waiting_since_ms").map(|t| t.parse().unwrap()),
        })
        .collect()
}

/// Waits until `--status --json` lists `pid` among the waiters, and returns it.
#[track_caller]
pub fn wait_listed(sb: &Sandbox, lock: &str, pid: i32) -> Listed {
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

/// Waits until `--status --json` lists `pid` as a `--fair` waiter (its
/// ticket, not only its request blocked in the kernel, which /proc/locks
/// may show first), and returns it.
#[track_caller]
pub fn wait_listed_fair(sb: &Sandbox, lock: &str, pid: i32) -> Listed {
    let mut found = None;
    wait_until(
        &format!("{lock}: pid {pid} to be listed waiting with --fair"),
        WAIT,
        || {
            found = waiters(&status_json(sb, lock))
                .into_iter()
                .find(|w| w.pid == Some(pid) && w.fair);
            found.is_some()
        },
    );
    found.unwrap()
}

/// Waits until `--status --json` no longer lists `pid`.
#[track_caller]
pub fn wait_unlisted(sb: &Sandbox, lock: &str, pid: i32) {
    wait_until(
        &format!("{lock}: pid {pid} to leave the list"),
        WAIT,
        || {
            !waiters(&status_json(sb, lock))
                .iter()
                .any(|w| w.pid == Some(pid))
        },
    );
}

/// A waiter with `args` (`--fair`, `-w 1`...) whose command is a small
/// process tree that appends `n` to `log` (from a background job of the
/// shell, waited for).
pub fn start_logging_waiter(sb: &Sandbox, args: &[&str], lock: &str, log: &Path, n: usize) -> Proc {
    let script = format!("(echo {n} >> '{}') & wait", log.display());
    let mut command = sb.lockwrap(args);
    command.args([lock, "sh", "-c", &script]);
    sb.spawn(command, &format!("waiter{n}"))
}

/// A `--fair` waiter, as [`start_logging_waiter`].
pub fn start_fair_waiter(sb: &Sandbox, lock: &str, log: &Path, n: usize) -> Proc {
    start_logging_waiter(sb, &["--fair"], lock, log, n)
}
