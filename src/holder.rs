//! Who holds a lock: the holder record that mkdir and excl locks carry, how
//! to tell whether its processes are still alive, and the identity of this
//! process. Knows nothing about any particular backend.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A holder as recorded in a lock artifact: enough to prove it dead.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HolderRecord {
    /// The wrapper's pid (or the exec'd program's, with -F).
    pub pid: i32,
    /// Field 22 of /proc/PID/stat: start time in clock ticks since boot.
    pub start_time: u64,
    /// /proc/sys/kernel/random/boot_id.
    pub boot_id: String,
    /// The host name.
    pub host: String,
    /// Inode of /proc/self/ns/pid: pids mean nothing in another namespace.
    pub pid_ns: u64,
    /// The real uid.
    pub uid: u32,
    /// When the lock was taken, seconds since the epoch.
    pub acquired: u64,
    /// The command, its words joined by spaces.
    pub command: String,
    /// The child's pid and start time, once spawned.
    pub child: Option<(i32, u64)>,
}

/// What can be said about a recorded holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// A recorded process is still running.
    Alive,
    /// Every recorded process is provably gone.
    Dead,
    /// It cannot be proven either way (another host or namespace).
    Unknown,
}

const MAGIC: &str = "lockwrap-holder 1";

impl HolderRecord {
    /// A record for this process about to run `command`.
    pub fn for_this_process(command: &str) -> HolderRecord {
        let pid = std::process::id() as i32;
        HolderRecord {
            pid,
            start_time: process_start_time(pid).unwrap_or(0),
            boot_id: boot_id(),
            host: hostname(),
            pid_ns: pid_namespace(),
            uid: nix::unistd::getuid().as_raw(),
            acquired: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            command: command.replace(['\n', '\r'], " "),
            child: None,
        }
    }

    /// The record as text, one `key=value` per line.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{MAGIC}");
        let _ = writeln!(out, "pid={}", self.pid);
        let _ = writeln!(out, "start_time={}", self.start_time);
        let _ = writeln!(out, "boot_id={}", self.boot_id);
        let _ = writeln!(out, "host={}", self.host);
        let _ = writeln!(out, "pid_ns={}", self.pid_ns);
        let _ = writeln!(out, "uid={}", self.uid);
        let _ = writeln!(out, "acquired={}", self.acquired);
        if let Some((pid, start)) = self.child {
            let _ = writeln!(out, "child_pid={pid}");
            let _ = writeln!(out, "child_start_time={start}");
        }
        let _ = writeln!(out, "command={}", self.command);
        out
    }

    /// Parses a record; `None` for anything that is not a complete record
    /// (a reader treats that as "owner unknown", never as stale).
    pub fn parse(text: &str) -> Option<HolderRecord> {
        let mut lines = text.lines();
        if lines.next()? != MAGIC || !text.ends_with('\n') {
            return None;
        }
        let mut record = HolderRecord::default();
        let (mut child_pid, mut child_start) = (None, None);
        let mut seen_command = false;
        for line in lines {
            let (key, value) = line.split_once('=')?;
            match key {
                "pid" => record.pid = value.parse().ok()?,
                "start_time" => record.start_time = value.parse().ok()?,
                "boot_id" => record.boot_id = value.to_owned(),
                "host" => record.host = value.to_owned(),
                "pid_ns" => record.pid_ns = value.parse().ok()?,
                "uid" => record.uid = value.parse().ok()?,
                "acquired" => record.acquired = value.parse().ok()?,
                "child_pid" => child_pid = Some(value.parse().ok()?),
                "child_start_time" => child_start = Some(value.parse().ok()?),
                "command" => {
                    record.command = value.to_owned();
                    seen_command = true;
                }
                _ => {}
            }
        }
        if !seen_command || record.pid <= 0 {
            return None;
        }
        record.child = child_pid.zip(child_start);
        Some(record)
    }

    /// Whether the recorded processes still run. Pid reuse cannot fool it:
    /// a pid counts as the holder only with the recorded start time.
    pub fn liveness(&self) -> Liveness {
        if self.host != hostname() {
            return Liveness::Unknown;
        }
        if self.boot_id != boot_id() {
            // Same host, another boot: every recorded process is gone.
            return Liveness::Dead;
        }
        if self.pid_ns != pid_namespace() {
            return Liveness::Unknown;
        }
        let alive = |pid: i32, start: u64| process_start_time(pid) == Some(start);
        if alive(self.pid, self.start_time) || self.child.is_some_and(|(p, s)| alive(p, s)) {
            Liveness::Alive
        } else {
            Liveness::Dead
        }
    }

    /// How long ago the lock was taken.
    pub fn age(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Duration::from_secs(now.saturating_sub(self.acquired))
    }
}

/// Field 22 of /proc/PID/stat (start time in clock ticks since boot), or
/// None when the process does not exist.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: the
    // fields we want start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts with field 3 (state); field 22 is the 20th from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This boot's id, or "" if /proc does not tell.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// This machine's host name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The inode of this process's pid namespace.
pub fn pid_namespace() -> u64 {
    std::fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino())
        .unwrap_or(0)
}

/// The command line of a process, words joined by spaces.
pub fn process_command(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let mut r = HolderRecord::for_this_process("backup.sh --full");
        r.child = Some((42, 7));
        assert_eq!(HolderRecord::parse(&r.encode()), Some(r));
    }

    #[test]
    fn partial_or_foreign_records_do_not_parse() {
        let text = HolderRecord::for_this_process("x").encode();
        assert!(HolderRecord::parse(&text[..text.len() - 3]).is_none());
        assert!(HolderRecord::parse("").is_none());
        assert!(HolderRecord::parse("12345\n").is_none());
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_dead() {
        let mut r = HolderRecord::for_this_process("x");
        assert_eq!(r.liveness(), Liveness::Alive);
        r.start_time += 1;
        assert_eq!(r.liveness(), Liveness::Dead);
        r.host.push_str(".elsewhere");
        assert_eq!(r.liveness(), Liveness::Unknown);
    }

    #[test]
    fn start_time_parses_names_with_parens() {
        assert!(process_start_time(std::process::id() as i32).is_some());
    }
}
