//! Telling people who holds a lock: the `--status` lines (text and JSON) and
//! the "held by pid N (command) for 12m3s" phrase used on conflicts and in
//! the waiting display.

use std::fmt::Write as _;

use crate::backend::{HolderInfo, LockStatus, WaiterInfo};
use crate::duration::human;
use crate::spec::ByteRange;

/// The version of the `--status --json` objects (the `schema` field): it
/// grows only when a field changes meaning or goes away; new fields may
/// appear within a version.
pub const JSON_SCHEMA: u32 = 1;

/// "held by pid 4121 (backup.sh --full) for 12m3s", or "held, owner unknown".
pub fn describe_holders(status: &LockStatus) -> String {
    if !status.held {
        return "free".to_owned();
    }
    if status.holders.is_empty() {
        return "held, owner unknown".to_owned();
    }
    let me = nix::unistd::getuid().as_raw();
    let here = crate::holder::hostname();
    let holders: Vec<String> = status
        .holders
        .iter()
        .map(|h| {
            let mut text = match h.pid {
                Some(pid) => format!("pid {pid}"),
                None => "an unknown process".to_owned(),
            };
            if let Some(child) = h.child_pid {
                let _ = write!(text, " (child {child})");
            }
            if let Some(host) = h.host.as_deref().filter(|host| *host != here) {
                let _ = write!(text, " on {}", escape_controls(host));
            }
            if let Some(uid) = h.uid.filter(|uid| *uid != me) {
                let _ = write!(text, " of uid {uid}");
            }
            if let Some(command) = &h.command {
                let _ = write!(text, " ({})", escape_controls(command));
            }
            text
        })
        .collect();
    let mut text = format!("held by {}", holders.join(", "));
    if let Some(age) = status.holders.iter().filter_map(|h| h.age).max() {
        let _ = write!(text, " for {}", human(age));
    }
    text
}

/// `text` with control characters (escape sequences, bells, newlines)
/// shown as `\u{1b}`: a holder's command is someone else's text, and a
/// terminal must not interpret it. Bidirectional controls and line
/// separators too: a terminal that honours U+202E (right-to-left override)
/// would show the rest of the line reversed, disguising what the holder
/// runs (the "Trojan Source" trick).
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || is_bidi_or_separator(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The characters that reorder or break a line without being control
/// characters (Unicode's Cf bidi controls, and the Zl/Zp separators).
fn is_bidi_or_separator(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
            | '\u{2028}' | '\u{2029}'
    )
}

/// One lock's `--status` text: "LOCK: free", "LOCK: exclusive, held by
/// ..." or "LOCK: stale, held by ... (gone; ...)", then one indented line per
/// waiter, first come first. A byte range other than the whole file follows
/// the lock: "fcntl:/x (bytes 0-9): free".
pub fn text_line(lock: &str, status: &LockStatus) -> String {
    let lock = match status.range {
        Some(range) if range != ByteRange::WHOLE => format!("{lock} ({range})"),
        _ => lock.to_owned(),
    };
    let mut text = if !status.held {
        format!("{lock}: free")
    } else if status.stale {
        format!(
            "{lock}: stale, {} (gone; the next lockwrap reclaims it)",
            describe_holders(status)
        )
    } else {
        let mode = if status.shared { "shared" } else { "exclusive" };
        format!("{lock}: {mode}, {}", describe_holders(status))
    };
    for waiter in &status.waiters {
        let _ = write!(text, "\n  waiting: {}", describe_waiter(waiter));
    }
    text
}

/// "pid 4122 (backup.sh) for 3s, fair #1".
fn describe_waiter(w: &WaiterInfo) -> String {
    let me = nix::unistd::getuid().as_raw();
    let here = crate::holder::hostname();
    let mut text = match w.pid {
        Some(pid) => format!("pid {pid}"),
        None => "an unknown process".to_owned(),
    };
    if let Some(host) = w.host.as_deref().filter(|host| *host != here) {
        let _ = write!(text, " on {}", escape_controls(host));
    }
    if let Some(uid) = w.uid.filter(|uid| *uid != me) {
        let _ = write!(text, " of uid {uid}");
    }
    if let Some(command) = &w.command {
        let _ = write!(text, " ({})", escape_controls(command));
    }
    if let Some(waited) = waiting_for(w) {
        let _ = write!(text, " for {}", human(waited));
    }
    if let Some(position) = w.position {
        let _ = write!(text, ", fair #{position}");
    }
    text
}

/// How long `w` has waited, when known.
fn waiting_for(w: &WaiterInfo) -> Option<std::time::Duration> {
    let since = w.since_ms?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as u64;
    Some(std::time::Duration::from_millis(now.saturating_sub(since)))
}

/// One `--status --json` object, on one line. `range` is the byte range of
/// an fcntl lock (`{"start":0,"length":0}`: the whole file), null for the
/// other kinds.
pub fn json_line(lock: &str, status: &LockStatus) -> String {
    let mode = match (status.held, status.shared) {
        (false, _) => "null".to_owned(),
        (true, true) => json_string("shared"),
        (true, false) => json_string("exclusive"),
    };
    let holders: Vec<String> = status.holders.iter().map(json_holder).collect();
    let waiters: Vec<String> = status.waiters.iter().map(json_waiter).collect();
    let range = status.range.map_or("null".to_owned(), |r| {
        format!("{{\"start\":{},\"length\":{}}}", r.start, r.length)
    });
    format!(
        "{{\"schema\":{JSON_SCHEMA},\"lock\":{},\"range\":{range},\"held\":{},\"stale\":{},\"mode\":{mode},\"holders\":[{}],\"waiters\":[{}]}}",
        json_string(lock),
        status.held,
        status.stale,
        holders.join(","),
        waiters.join(",")
    )
}

fn json_waiter(w: &WaiterInfo) -> String {
    let number = |n: Option<i64>| n.map_or("null".to_owned(), |n| n.to_string());
    let string = |s: &Option<String>| s.as_deref().map_or("null".to_owned(), json_string);
    format!(
        "{{\"pid\":{},\"uid\":{},\"host\":{},\"command\":{},\"waiting_since_ms\":{},\"waiting_seconds\":{},\"fair\":{},\"position\":{}}}",
        number(w.pid.map(i64::from)),
        number(w.uid.map(i64::from)),
        string(&w.host),
        string(&w.command),
        number(w.since_ms.map(|ms| ms as i64)),
        waiting_for(w).map_or("null".to_owned(), |d| format!("{:.3}", d.as_secs_f64())),
        w.fair,
        number(w.position.map(i64::from)),
    )
}

fn json_holder(h: &HolderInfo) -> String {
    let number = |n: Option<i64>| n.map_or("null".to_owned(), |n| n.to_string());
    let string = |s: &Option<String>| s.as_deref().map_or("null".to_owned(), json_string);
    format!(
        "{{\"pid\":{},\"child_pid\":{},\"uid\":{},\"host\":{},\"command\":{},\"age_seconds\":{}}}",
        number(h.pid.map(i64::from)),
        number(h.child_pid.map(i64::from)),
        number(h.uid.map(i64::from)),
        string(&h.host),
        string(&h.command),
        h.age
            .map_or("null".to_owned(), |a| format!("{:.3}", a.as_secs_f64())),
    )
}

/// A JSON string literal.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn describes_free_unknown_and_known_holders() {
        assert_eq!(describe_holders(&LockStatus::default()), "free");
        let unknown = LockStatus {
            held: true,
            ..LockStatus::default()
        };
        assert_eq!(describe_holders(&unknown), "held, owner unknown");
        let known = LockStatus {
            held: true,
            shared: false,
            holders: vec![HolderInfo {
                pid: Some(4121),
                command: Some("backup.sh --full".into()),
                age: Some(Duration::from_secs(723)),
                ..HolderInfo::default()
            }],
            ..LockStatus::default()
        };
        assert_eq!(
            describe_holders(&known),
            "held by pid 4121 (backup.sh --full) for 12m3s"
        );
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        let line = json_line("/x", &LockStatus::default());
        assert_eq!(
            line,
            "{\"schema\":1,\"lock\":\"/x\",\"range\":null,\"held\":false,\"stale\":false,\"mode\":null,\"holders\":[],\"waiters\":[]}"
        );
    }
}
