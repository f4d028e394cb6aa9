//! Who holds a lock: the holder record that mkdir and excl locks carry, how
//! to tell whether its processes are still alive, and the identity of this
//! process. Knows nothing about any particular backend.

use std::fmt::Write as _;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;

use crate::spec::ByteRange;

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
    /// When the lock was taken, milliseconds since the epoch.
    pub acquired_ms: u64,
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

/// The longest command a record keeps, in bytes: a longer one is truncated
/// (at a character boundary) when the record is written, so that every
/// record lockwrap writes can be read back.
pub const MAX_COMMAND: usize = 1024 * 1024;

/// The longest record a reader accepts: [`MAX_COMMAND`] plus ample room for
/// the other fields (a host name is at most 64 bytes, a boot id 36).
pub const MAX_RECORD: usize = MAX_COMMAND + 4096;

impl HolderRecord {
    /// A record for this process about to run `command`.
    ///
    /// Fails (typically EMFILE under a low `ulimit -n`) when /proc does not
    /// tell who this process is: a record or temp name without a start time
    /// or boot id could never be judged, so nothing must be created with one.
    /// What it read is kept for the rest of the run (see [`own_start_time`]).
    pub fn for_this_process(command: &str) -> Result<HolderRecord, Errno> {
        let pid = std::process::id() as i32;
        let unknown = |found: bool| if found { Ok(()) } else { Err(Errno::EMFILE) };
        let start_time = own_start_time().ok_or(Errno::EMFILE)?;
        let boot_id = boot_id();
        unknown(!boot_id.is_empty())?;
        let pid_ns = pid_namespace();
        unknown(pid_ns != 0)?;
        Ok(HolderRecord {
            pid,
            start_time,
            boot_id,
            host: hostname(),
            pid_ns,
            uid: nix::unistd::getuid().as_raw(),
            acquired_ms: unix_millis(),
            command: command.replace(['\n', '\r'], " "),
            child: None,
        })
    }

    /// The record as text, one `key=value` per line. The child's lines come
    /// last, so the record of a spawned child is the record without it plus
    /// those lines: they can be appended in place, and a reader that sees only
    /// part of them sees a complete record without the child (the parser
    /// needs a final newline and both child fields).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{MAGIC}");
        let _ = writeln!(out, "pid={}", self.pid);
        let _ = writeln!(out, "start_time={}", self.start_time);
        let _ = writeln!(out, "boot_id={}", self.boot_id);
        let _ = writeln!(out, "host={}", self.host);
        let _ = writeln!(out, "pid_ns={}", self.pid_ns);
        let _ = writeln!(out, "uid={}", self.uid);
        let _ = writeln!(out, "acquired_ms={}", self.acquired_ms);
        let _ = writeln!(out, "command={}", truncated(&self.command, MAX_COMMAND));
        if let Some((pid, start)) = self.child {
            let _ = writeln!(out, "child_pid={pid}");
            let _ = writeln!(out, "child_start_time={start}");
        }
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
                "acquired_ms" => record.acquired_ms = value.parse().ok()?,
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

    /// Whether it was written on this host, boot and pid namespace, so that
    /// its pids name processes here.
    pub fn is_from_this_system(&self) -> bool {
        self.host == hostname() && self.boot_id == boot_id() && self.pid_ns == pid_namespace()
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
        if is_running(self.pid, self.start_time)
            || self
                .child
                .is_some_and(|(pid, start)| is_running(pid, start))
        {
            Liveness::Alive
        } else {
            Liveness::Dead
        }
    }

    /// Fds that become readable when the recorded processes exit, so a
    /// waiter can reclaim the lock at once instead of at its next recheck.
    /// Empty for a record from another host or namespace.
    pub fn exit_watchers(&self) -> Vec<OwnedFd> {
        if self.host != hostname() || self.boot_id != boot_id() || self.pid_ns != pid_namespace() {
            return Vec::new();
        }
        std::iter::once((self.pid, self.start_time))
            .chain(self.child)
            .filter_map(|(pid, start)| {
                // Open first, then check the start time: a pid reused in
                // between fails the check instead of being watched.
                let fd = pidfd_open(pid)?;
                is_running(pid, start).then_some(fd)
            })
            .collect()
    }

    /// Makes the acquisition time now (a record written before a wait is
    /// published when the wait ends).
    pub fn stamp_now(&mut self) {
        self.acquired_ms = unix_millis();
    }

    /// How long ago the lock was taken.
    pub fn age(&self) -> Duration {
        Duration::from_millis(unix_millis().saturating_sub(self.acquired_ms))
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends at a
/// character boundary.
fn truncated(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// pidfd_open(2), which nix does not wrap: an fd (close-on-exec) that
/// becomes readable when the process exits, and that signals reach only the
/// process it was opened on.
pub fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: the syscall takes two integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a non-negative result is a new fd that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether the process `pid` that started at `start_time` still runs. A
/// zombie does not: it has closed everything, only its parent has not reaped
/// it yet (an orphan waits for init).
pub fn is_running(pid: i32, start_time: u64) -> bool {
    let Some((state, start)) = process_state_and_start(pid) else {
        return false;
    };
    start == start_time && !matches!(state, 'Z' | 'X' | 'x')
}

/// Field 22 of /proc/PID/stat (start time in clock ticks since boot), or
/// None when the process does not exist.
pub fn process_start_time(pid: i32) -> Option<u64> {
    process_state_and_start(pid).map(|(_, start)| start)
}

/// Fields 3 (state) and 22 (start time) of /proc/PID/stat.
fn process_state_and_start(pid: i32) -> Option<(char, u64)> {
    process_stat(pid).map(|stat| (stat.state, stat.start_time))
}

/// The fields of /proc/PID/stat that tell who a process is and whether it runs.
#[derive(Debug, Clone, Copy)]
pub struct ProcessStat {
    /// Field 3: R, S, D, T, Z, ...
    pub state: char,
    /// Field 4: the parent's pid.
    pub ppid: i32,
    /// Field 5: the process group.
    pub pgrp: i32,
    /// Field 22: start time in clock ticks since boot.
    pub start_time: u64,
}

impl ProcessStat {
    /// Whether the process still runs: a zombie (or a dying task) has closed
    /// everything and only waits to be reaped.
    pub fn is_alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// Whether it is stopped by a signal (not traced).
    pub fn is_stopped(&self) -> bool {
        self.state == 'T'
    }
}

/// Reads /proc/PID/stat; None when the process does not exist.
pub fn process_stat(pid: i32) -> Option<ProcessStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: the
    // fields we want start after the last ')'.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    // Field 22 is the 17th after the process group (field 5).
    let start_time = rest.nth(16)?.parse().ok()?;
    Some(ProcessStat {
        state,
        ppid,
        pgrp,
        start_time,
    })
}

/// This boot's id, or "" if /proc does not tell.
/// Read once successfully, then remembered.
pub fn boot_id() -> String {
    static BOOT_ID: OnceLock<String> = OnceLock::new();
    remembered(&BOOT_ID, || {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_owned())
    })
    .unwrap_or_default()
}

/// `cell`'s value, or `read`'s if it succeeds (then kept in `cell`): what
/// this process learns about itself does not change during a run, and must
/// not be lost when fds run out later.
fn remembered<T: Clone>(cell: &OnceLock<T>, read: impl FnOnce() -> Option<T>) -> Option<T> {
    if let Some(value) = cell.get() {
        return Some(value.clone());
    }
    let value = read()?;
    Some(cell.get_or_init(|| value).clone())
}

/// This process's start time (see [`process_start_time`]), remembered.
pub fn own_start_time() -> Option<u64> {
    static START: OnceLock<u64> = OnceLock::new();
    remembered(&START, || process_start_time(std::process::id() as i32))
}

/// This machine's host name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The inode of this process's pid namespace.
pub fn pid_namespace() -> u64 {
    static PID_NS: OnceLock<u64> = OnceLock::new();
    remembered(&PID_NS, || {
        std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
    })
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
        let mut r = HolderRecord::for_this_process("backup.sh --full").unwrap();
        r.child = Some((42, 7));
        assert_eq!(HolderRecord::parse(&r.encode()), Some(r));
    }

    #[test]
    fn a_long_command_is_truncated_to_the_bound_and_still_parses() {
        let r = HolderRecord::for_this_process(&"é".repeat(MAX_COMMAND)).unwrap();
        let text = r.encode();
        assert!(text.len() <= MAX_RECORD);
        let parsed = HolderRecord::parse(&text).unwrap();
        assert!(parsed.command.len() <= MAX_COMMAND);
        assert!(r.command.starts_with(&parsed.command));
    }

    #[test]
    fn a_reader_of_the_appended_child_lines_sees_the_record_with_or_without_the_child() {
        let mut r = HolderRecord::for_this_process("x").unwrap();
        let before = r.encode();
        r.child = Some((4242, 99));
        let after = r.encode();
        assert!(after.starts_with(&before));
        for end in before.len()..=after.len() {
            let child = HolderRecord::parse(&after[..end]).map(|s| s.child);
            if end == after.len() {
                assert_eq!(child, Some(Some((4242, 99))));
            } else {
                assert!(matches!(child, None | Some(None)), "{end}: {child:?}");
            }
        }
    }

    #[test]
    fn partial_or_foreign_records_do_not_parse() {
        let text = HolderRecord::for_this_process("x").unwrap().encode();
        assert!(HolderRecord::parse(&text[..text.len() - 3]).is_none());
        assert!(HolderRecord::parse("").is_none());
        assert!(HolderRecord::parse("12345\n").is_none());
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_dead() {
        let mut r = HolderRecord::for_this_process("x").unwrap();
        assert_eq!(r.liveness(), Liveness::Alive);
        r.start_time += 1;
        assert_eq!(r.liveness(), Liveness::Dead);
        r.host.push_str(".elsewhere");
        assert_eq!(r.liveness(), Liveness::Unknown);
    }

    #[test]
    fn lock_lines_parse() {
        let l = parse_lock_line("1: FLOCK  ADVISORY  WRITE 1234 00:2d:5678 0 EOF").unwrap();
        assert_eq!(
            (l.kind.as_str(), l.write, l.pid, l.dev_ino.as_str()),
            ("FLOCK", true, 1234, "00:2d:5678")
        );
        assert_eq!((l.first, l.last), (0, None));
        let l = parse_lock_line("3: OFDLCK ADVISORY  WRITE -1 00:2d:5678 1000 2023").unwrap();
        assert_eq!((l.first, l.last), (1000, Some(2023)));
        assert!(parse_lock_line("1: -> FLOCK  ADVISORY  WRITE 99 00:2d:5678 0 EOF").is_none());
        let w = parse_waiter_line("1:  -> FLOCK  ADVISORY  WRITE 99 00:2d:5678 0 EOF").unwrap();
        assert_eq!((w.pid, w.dev_ino.as_str()), (99, "00:2d:5678"));
        assert!(parse_waiter_line("1: FLOCK  ADVISORY  WRITE 1234 00:2d:5678 0 EOF").is_none());
        assert!(
            !parse_lock_line("2: OFDLCK ADVISORY  READ  -1 fd:01:7 0 EOF")
                .unwrap()
                .write
        );
    }

    #[test]
    fn start_time_parses_names_with_parens() {
        assert!(process_start_time(std::process::id() as i32).is_some());
    }
}

/// How long ago process `pid` started, from /proc.
pub fn process_age(pid: i32) -> Option<Duration> {
    let start_ticks = process_start_time(pid)?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let age = uptime - start_ticks as f64 / ticks_per_second;
    Duration::try_from_secs_f64(age.max(0.0)).ok()
}

/// Whether process `pid` is a lockwrap, which forwards the signals it is
/// sent to its command: it runs the same executable as this process, or
/// one named `lockwrap` (another installed copy). Only decides whether a
/// command needs a SIGTERM of its own, so a process that merely calls
/// itself lockwrap gains nothing: its command is still killed after the
/// grace period.
pub fn is_lockwrap(pid: i32) -> bool {
    let same_file =
        |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
    let same_exe = std::fs::metadata(format!("/proc/{pid}/exe"))
        .ok()
        .zip(std::fs::metadata("/proc/self/exe").ok())
        .is_some_and(|(theirs, ours)| same_file(&theirs, &ours));
    same_exe
        || std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim_end_matches('\n') == "lockwrap")
}

/// The real uid of a process (first field of "Uid:" in /proc/PID/status):
/// who started it, which a setuid program does not change.
pub fn process_real_uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The real uid of process `pid`.
pub fn process_uid(pid: i32) -> Option<u32> {
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// One lock the kernel reports in /proc/locks or a "lock:" line of fdinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KernelLockLine {
    kind: String,
    write: bool,
    pid: i32,
    dev_ino: String,
    /// The first byte locked.
    first: u64,
    /// The last byte locked; None: to the end of the file ("EOF").
    last: Option<u64>,
}

/// Parses "1: FLOCK  ADVISORY  WRITE 1234 00:2d:5678 0 EOF" (the last two
/// fields are the first and last byte locked); None for a waiter
/// ("1: -> FLOCK ...") or anything else.
fn parse_lock_line(line: &str) -> Option<KernelLockLine> {
    let mut words = line.split_whitespace();
    words.next()?.strip_suffix(':')?;
    let kind = words.next()?;
    if kind == "->" {
        return None;
    }
    let _advisory = words.next()?;
    let write = match words.next()? {
        "WRITE" => true,
        "READ" => false,
        _ => return None,
    };
    let pid = words.next()?.parse().ok()?;
    let dev_ino = words.next()?.to_owned();
    let first = words.next()?.parse().ok()?;
    let last = match words.next()? {
        "EOF" => None,
        last => Some(last.parse().ok()?),
    };
    Some(KernelLockLine {
        kind: kind.to_owned(),
        write,
        pid,
        dev_ino,
        first,
        last,
    })
}

/// The holders of a kernel lock of `kind` ("FLOCK" or "OFDLCK") on the file
/// with this device and inode, on bytes that overlap `range`: whether it is
/// held shared, and the pids that hold an fd carrying it (a child that
/// inherited the fd counts). None when the kernel reports no such lock.
pub fn kernel_lock_holders(
    kind: &str,
    dev: u64,
    ino: u64,
    range: ByteRange,
) -> Option<(bool, Vec<i32>)> {
    let wanted = format!(
        "{:02x}:{:02x}:{ino}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    let matches = |l: &KernelLockLine| {
        l.kind == kind && l.dev_ino == wanted && range.overlaps(l.first, l.last)
    };
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let held: Vec<KernelLockLine> = locks
        .lines()
        .filter_map(parse_lock_line)
        .filter(matches)
        .collect();
    if held.is_empty() {
        return None;
    }
    let shared = held.iter().all(|l| !l.write);
    let mut pids = pids_with_lock_fd(&matches);
    if pids.is_empty() {
        pids = held.iter().map(|l| l.pid).filter(|p| *p > 0).collect();
    }
    pids.sort_unstable();
    pids.dedup();
    Some((shared, pids))
}

/// The requests blocked on a kernel lock of `kind` ("FLOCK" or "OFDLCK")
/// on the file with this device and inode ("N: -> FLOCK ..." lines of
/// /proc/locks): the waiting pid of each, None where the kernel names none
/// (OFD locks belong to no process).
pub fn kernel_lock_waiters(kind: &str, dev: u64, ino: u64) -> Vec<Option<i32>> {
    let wanted = format!(
        "{:02x}:{:02x}:{ino}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    locks
        .lines()
        .filter_map(parse_waiter_line)
        .filter(|l| l.kind == kind && l.dev_ino == wanted)
        .map(|l| (l.pid > 0).then_some(l.pid))
        .collect()
}

/// Parses a blocked request, "1: -> FLOCK  ADVISORY  WRITE 1234 00:2d:5678
/// 0 EOF" (more spaces before the arrow the deeper it is nested).
fn parse_waiter_line(line: &str) -> Option<KernelLockLine> {
    let (number, rest) = line.split_once(':')?;
    number.trim().parse::<u64>().ok()?;
    let rest = rest.trim_start().strip_prefix("->")?;
    parse_lock_line(&format!("{number}: {rest}"))
}

/// Pids whose fdinfo lists a lock that `matches`.
fn pids_with_lock_fd(matches: &dyn Fn(&KernelLockLine) -> bool) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fdinfo")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_to_string(fd.path()).is_ok_and(|info| {
                info.lines()
                    .filter_map(|l| l.strip_prefix("lock:"))
                    .filter_map(parse_lock_line)
                    .any(|l| matches(&l))
            })
        });
        if holds {
            pids.push(pid);
        }
    }
    pids
}
