//! `lockwrap --check [DIR]`: proves, with real processes, that each lock
//! mechanism excludes on the filesystem of DIR (abstract sockets: in this
//! network namespace), and reports it as a table or JSON.
//!
//! For each mechanism a holder process (this binary again, run as
//! `/proc/self/exe --check-holder LOCK`) takes a scratch lock and says
//! `held` on a pipe; this process then tries the lock with `-n` and must be
//! refused; the holder releases it when its stdin is closed, and the lock
//! must then be free to this process. The scratch locks live in a directory
//! of their own in DIR, `.lockwrap-check-PID-RANDOM`, removed at the end;
//! a SIGINT or SIGTERM stops the holders, removes it, and then ends
//! lockwrap with that signal.
//!
//! The backends are used only through [`backend::open`] and the
//! [`Backend`] trait: this module knows how lock specs are written, not
//! how any of them locks.

use std::ffi::{OsStr, OsString};
use std::io::{Read as _, Write as _};
use std::os::fd::AsFd as _;
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;

use crate::backend::{self, Backend, Request};
use crate::child::Ending;
use crate::cli::{CheckQuery, Mode, WaitPolicy};
use crate::error::{EXIT_CANNOT_CREATE, EXIT_LOCK_FAILED, EXIT_OS_ERROR, Error};
use crate::spec::LockSpec;
use crate::status::json_string;
use crate::wait::{Signals, Waiter, poll_readable};

/// The mechanisms checked, in the order reported, with the lock spec
/// prefix that selects each.
const MECHANISMS: [(&str, &str); 5] = [
    ("flock", "flock:"),
    ("fcntl", "fcntl:"),
    ("mkdir", "mkdir:"),
    ("excl", "excl:"),
    ("abstract", "@"),
];

/// How long a holder may take to take its lock, or to let it go and exit:
/// far more than it needs, but a hung filesystem must not hang the check.
const HOLDER_WITHIN: Duration = Duration::from_secs(10);

/// What the holder says once it holds the lock.
const HELD: &[u8] = b"held\n";

/// The request of every check: an exclusive lock, recorded as lockwrap
/// --check's own.
fn request() -> Request<'static> {
    Request {
        mode: Mode::Exclusive,
        command: "lockwrap --check",
        stale_after: None,
        lease: None,
    }
}

/// `--check-holder LOCK`: takes the lock at once, writes `held` on stdout
/// and holds it until stdin closes (the checking process is done with it,
/// or gone), then releases it. Returns the exit code.
pub fn hold(spec: &OsStr) -> u8 {
    let lock = LockSpec::parse(spec);
    let name = lock.to_string();
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            let e = Error::os(&name, "cannot set up signal handling", e);
            crate::say!("{e}");
            return e.exit_code(1);
        }
    };
    let waiter = Waiter::new(&name, WaitPolicy::NonBlocking, &signals);
    let held = match backend::open(&lock).acquire(&request(), &waiter) {
        Ok(held) => held,
        Err(e) => {
            crate::say!("{e}");
            return e.exit_code(1);
        }
    };
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(HELD)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        let _ = held.release();
        return EXIT_OS_ERROR;
    }
    // Until EOF; signals do not end it (they are caught, and the read is
    // restarted): the checking process decides when to let go.
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    match held.release() {
        Ok(()) => 0,
        Err(e) => {
            crate::say!("{e}");
            e.exit_code(1)
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `flock`, `fcntl`, `mkdir`, `excl` or `abstract`.
    pub mechanism: &'static str,
    /// Whether it excluded another process and was free after release.
    pub works: bool,
    /// What was seen, or what went wrong.
    pub detail: String,
    /// False when the filesystem could not make the lock for want of
    /// space or because it is read-only: nothing was proven either way.
    pub checked: bool,
}

/// The filesystem a directory is on, as statfs(2) and the mount table
/// see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filesystem {
    /// statfs's `f_type` magic number.
    pub f_type: u64,
    /// The name statfs(2) gives that magic number, if known.
    pub statfs_name: Option<&'static str>,
    /// The mount's filesystem type in /proc/self/mountinfo (`ext4`).
    pub fstype: Option<String>,
    /// What is mounted (`/dev/sda1`, `server:/export`).
    pub source: Option<String>,
    /// Where it is mounted.
    pub mount_point: Option<String>,
}

/// Runs the check and prints the report. Returns 0 when every mechanism
/// works, [`EXIT_LOCK_FAILED`] when one does not, or the signal that
/// interrupted it (after cleaning up).
pub fn run(query: &CheckQuery) -> Result<Ending, Error> {
    let given = query.dir.as_path();
    let signals = Signals::install().map_err(|e| {
        Error::os(
            &given.display().to_string(),
            "cannot set up signal handling",
            e,
        )
    })?;
    let dir = std::fs::canonicalize(given).map_err(|e| Error::check_dir(given, errno_of(&e)))?;
    let metadata = std::fs::metadata(&dir).map_err(|e| Error::check_dir(given, errno_of(&e)))?;
    if !metadata.is_dir() {
        return Err(Error::check_dir(given, Errno::ENOTDIR));
    }
    let nonce = nonce();
    let scratch =
        Scratch::create(&dir, &nonce).map_err(|errno| Error::check_dir_create(given, errno))?;
    let filesystem = filesystem_of(&dir, metadata.dev());
    let net_namespace = net_namespace();
    let mut outcomes = Vec::new();
    for (mechanism, prefix) in MECHANISMS {
        let mut spec = OsString::from(prefix);
        if prefix == "@" {
            spec.push(format!("lockwrap-check-{nonce}"));
        } else {
            spec.push(scratch.path.join(mechanism));
        }
        match prove(mechanism, &spec, &signals) {
            Ok(mut outcome) => {
                if prefix == "@" && outcome.works {
                    outcome.detail.push_str(&format!(
                        " (in network namespace {}; abstract sockets do not depend on DIR)",
                        net_namespace.map_or("unknown".to_owned(), |n| n.to_string())
                    ));
                }
                outcomes.push(outcome);
            }
            Err(signal) => {
                drop(scratch);
                return Ok(Ending::DieOf(signal));
            }
        }
    }
    drop(scratch);
    if let Some(signal) = terminating(&signals) {
        return Ok(Ending::DieOf(signal));
    }
    let report = if query.json {
        json_report(&dir, &filesystem, &outcomes, net_namespace)
    } else {
        text_report(&dir, &filesystem, &outcomes)
    };
    let mut out = std::io::stdout().lock();
    out.write_all(report.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| {
            Error::os(
                &format!("--check {}", given.display()),
                "cannot write the report",
                errno_of(&e),
            )
        })?;
    Ok(Ending::Code(exit_code(&outcomes)))
}

/// 0 when every mechanism works; 65 when one was seen not to; else 73
/// when one could not be checked because the filesystem is full or
/// read-only (saying 65 then would claim that locking does not work there).
fn exit_code(outcomes: &[Outcome]) -> u8 {
    if outcomes.iter().any(|o| !o.works && o.checked) {
        EXIT_LOCK_FAILED
    } else if outcomes.iter().any(|o| !o.checked) {
        EXIT_CANNOT_CREATE
    } else {
        0
    }
}

/// Checks one mechanism on the lock `spec`. Err: a terminating signal
/// arrived (the holder is stopped and reaped before this returns).
fn prove(mechanism: &'static str, spec: &OsStr, signals: &Signals) -> Result<Outcome, Signal> {
    let outcome = |works: bool, detail: String| Outcome {
        mechanism,
        works,
        detail,
        checked: true,
    };
    // The filesystem could not make the lock (full, read-only).
    let unchecked = |detail: String| Outcome {
        mechanism,
        works: false,
        detail: format!("could not be checked: {detail}"),
        checked: false,
    };
    let cannot_create = |e: &Error| e.exit_code(1) == EXIT_CANNOT_CREATE;
    let lock = LockSpec::parse(spec);
    let name = lock.to_string();
    let backend = backend::open(&lock);
    let mut holder = match Holder::start(spec) {
        Ok(holder) => holder,
        Err(e) => {
            return Ok(outcome(
                false,
                format!("cannot start a holder process: {e}"),
            ));
        }
    };
    if let Err(why) = holder.wait_until_held(signals)? {
        let why = format!("a process cannot take the lock: {why}");
        return Ok(
            if holder.exit_code() == Some(i32::from(EXIT_CANNOT_CREATE)) {
                unchecked(why)
            } else {
                outcome(false, why)
            },
        );
    }
    match try_lock(backend.as_ref(), &name, signals) {
        Err(Error::Conflict { .. }) => {}
        Ok(()) => {
            return Ok(outcome(
                false,
                "another process took the lock while it was held: it does not exclude here".into(),
            ));
        }
        Err(e) if cannot_create(&e) => {
            return Ok(unchecked(format!("trying the held lock failed: {e}")));
        }
        Err(e) => return Ok(outcome(false, format!("trying the held lock failed: {e}"))),
    }
    if let Err(why) = holder.release(signals)? {
        return Ok(outcome(false, why));
    }
    Ok(match try_lock(backend.as_ref(), &name, signals) {
        Ok(()) => outcome(
            true,
            "a second process was refused while it was held, and took it after the release".into(),
        ),
        Err(Error::Conflict { .. }) => outcome(
            false,
            "still held after its holder released it and exited".into(),
        ),
        Err(e) if cannot_create(&e) => unchecked(format!("taking the released lock failed: {e}")),
        Err(e) => outcome(false, format!("taking the released lock failed: {e}")),
    })
}

/// Tries the lock once, as `-n` would, and releases it if taken.
fn try_lock(backend: &dyn Backend, name: &str, signals: &Signals) -> Result<(), Error> {
    let waiter = Waiter::new(name, WaitPolicy::NonBlocking, signals);
    backend.acquire(&request(), &waiter)?.release()
}

/// The first terminating signal that arrived, if any (others are dropped:
/// there is no command to forward them to).
fn terminating(signals: &Signals) -> Option<Signal> {
    std::iter::from_fn(|| signals.take())
        .map(|received| received.signal)
        .find(|signal| {
            matches!(
                signal,
                Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP | Signal::SIGQUIT
            )
        })
}

/// A `--check-holder` process. Dropping it closes its stdin (it releases
/// and exits) and reaps it, killing it if it does not go in time.
struct Holder {
    child: Child,
}

impl Holder {
    fn start(spec: &OsStr) -> std::io::Result<Holder> {
        let mut command = Command::new("/proc/self/exe");
        command
            .arg("--check-holder")
            .arg(spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group: a Ctrl-C is for this process, which
        // stops the holder itself, after it let go of its lock.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command.spawn().map(|child| Holder { child })
    }

    /// Waits until the holder says it holds the lock. Ok(Err(why)) if it
    /// could not; Err if a terminating signal arrived.
    fn wait_until_held(&mut self, signals: &Signals) -> Result<Result<(), String>, Signal> {
        let give_up = Instant::now() + HOLDER_WITHIN;
        let mut said = Vec::new();
        loop {
            let Some(stdout) = &mut self.child.stdout else {
                return Ok(Err("no pipe to the holder".into()));
            };
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Err(format!(
                    "it did not take the lock within {}s",
                    HOLDER_WITHIN.as_secs()
                )));
            }
            let ready = match poll_readable(&[signals.as_fd(), stdout.as_fd()], Some(left)) {
                Ok(ready) => ready,
                Err(e) => return Ok(Err(format!("cannot wait for the holder: {e}"))),
            };
            if ready[0]
                && let Some(signal) = terminating(signals)
            {
                return Err(signal);
            }
            if !ready[1] {
                continue;
            }
            let mut buf = [0u8; 64];
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => return Ok(Err(self.why_it_failed())),
                Ok(n) => said.extend_from_slice(&buf[..n]),
            }
            if said.starts_with(HELD) {
                return Ok(Ok(()));
            }
            if !HELD.starts_with(&said) {
                return Ok(Err("the holder said something unexpected".into()));
            }
        }
    }

    /// The holder exited without holding: what it said on stderr.
    fn why_it_failed(&mut self) -> String {
        let mut text = String::new();
        if let Some(stderr) = &mut self.child.stderr {
            let _ = stderr.take(4096).read_to_string(&mut text);
        }
        let line = text.lines().next().unwrap_or("").trim();
        let line = line.strip_prefix("lockwrap: ").unwrap_or(line);
        if line.is_empty() {
            "the holder process failed".to_owned()
        } else {
            line.to_owned()
        }
    }

    /// The holder's exit code once it has exited (it does at once after
    /// failing to take the lock); None if it did not in time or died of a
    /// signal.
    fn exit_code(&mut self) -> Option<i32> {
        let give_up = Instant::now() + HOLDER_WITHIN;
        while Instant::now() < give_up {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.code(),
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => return None,
            }
        }
        None
    }

    /// Closes the holder's stdin and waits for it to release and exit
    /// (SIGCHLD wakes the wait). Ok(Err(why)) if it did not go well.
    fn release(&mut self, signals: &Signals) -> Result<Result<(), String>, Signal> {
        drop(self.child.stdin.take());
        let give_up = Instant::now() + HOLDER_WITHIN;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(Ok(())),
                Ok(Some(_)) => {
                    return Ok(Err(format!(
                        "releasing the lock failed: {}",
                        self.why_it_failed()
                    )));
                }
                Ok(None) => {}
                Err(e) => return Ok(Err(format!("cannot wait for the holder: {e}"))),
            }
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Err(format!(
                    "the holder did not release the lock within {}s",
                    HOLDER_WITHIN.as_secs()
                )));
            }
            let _ = poll_readable(
                &[signals.as_fd()],
                Some(left.min(Duration::from_millis(100))),
            );
            if let Some(signal) = terminating(signals) {
                return Err(signal);
            }
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let give_up = Instant::now() + Duration::from_secs(2);
        while Instant::now() < give_up {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The directory of the scratch locks in DIR, removed with everything in
/// it when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn create(dir: &Path, nonce: &str) -> Result<Scratch, Errno> {
        let path = dir.join(format!(".lockwrap-check-{nonce}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| errno_of(&e))?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // remove_dir_all does not follow symlinks.
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            crate::say!(
                "warning: cannot remove the scratch directory {}: {} (remove it by hand)",
                self.path.display(),
                e
            );
        }
    }
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// This process's pid and 32 random bits: a name no other check uses.
fn nonce() -> String {
    let mut bytes = [0u8; 4];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    let bits = if random {
        u32::from_ne_bytes(bytes)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    };
    format!("{}-{bits:08x}", std::process::id())
}

/// The inode of this process's network namespace (/proc/self/ns/net
/// reads `net:[4026531840]`): the scope of abstract socket names.
fn net_namespace() -> Option<u64> {
    let link = std::fs::read_link("/proc/self/ns/net").ok()?;
    let text = link.to_str()?;
    text.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// What statfs(2) and /proc/self/mountinfo say about the filesystem of
/// `dir` (canonical), whose device is `dev`.
fn filesystem_of(dir: &Path, dev: u64) -> Filesystem {
    let f_type = nix::sys::statfs::statfs(dir)
        .map(|s| s.filesystem_type().0 as u64)
        .unwrap_or(0);
    let mut filesystem = Filesystem {
        f_type,
        statfs_name: statfs_name(f_type),
        ..Filesystem::default()
    };
    let Ok(table) = std::fs::read("/proc/self/mountinfo") else {
        return filesystem;
    };
    let dev = format!(
        "{}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    // The deepest mount above `dir` of its device (bind mounts show a
    // device more than once); the deepest mount above it at all if no
    // entry names the device (some filesystems report another).
    let mut best: Option<(bool, usize, Mount)> = None;
    for line in table.split(|b| *b == b'\n') {
        let Some(mount) = Mount::parse(line) else {
            continue;
        };
        if !dir.starts_with(&mount.mount_point) {
            continue;
        }
        let key = (mount.dev == dev, mount.mount_point.as_os_str().len());
        if best
            .as_ref()
            .is_none_or(|(same, len, _)| key >= (*same, *len))
        {
            best = Some((key.0, key.1, mount));
        }
    }
    if let Some((_, _, mount)) = best {
        filesystem.fstype = Some(mount.fstype);
        filesystem.source = Some(mount.source);
        filesystem.mount_point = Some(mount.mount_point.display().to_string());
    }
    filesystem
}

/// One line of /proc/self/mountinfo.
struct Mount {
    dev: String,
    mount_point: PathBuf,
    fstype: String,
    source: String,
}

impl Mount {
    /// `36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw`:
    /// the device is the third field, the mount point the fifth; the type
    /// and source follow the ` - `.
    fn parse(line: &[u8]) -> Option<Mount> {
        let split = line.windows(3).position(|w| w == b" - ")?;
        let before: Vec<&[u8]> = line[..split].split(|b| *b == b' ').collect();
        let mut after = line[split + 3..].split(|b| *b == b' ');
        let text = |field: &[u8]| String::from_utf8_lossy(&unescape(field)).into_owned();
        Some(Mount {
            dev: text(before.get(2)?),
            mount_point: PathBuf::from(OsString::from_vec(unescape(before.get(4)?))),
            fstype: text(after.next()?),
            source: text(after.next()?),
        })
    }
}

/// A mountinfo field with its octal escapes (`\040` for a space) decoded.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|digits| field[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// The names statfs(2) documents for the magic numbers of filesystems
/// locks are commonly put on.
fn statfs_name(f_type: u64) -> Option<&'static str> {
    Some(match f_type {
        0xEF53 => "ext2/ext3/ext4",
        0x0102_1994 => "tmpfs",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x2FC1_2FC1 => "zfs",
        0xF2F5_2010 => "f2fs",
        0x6969 => "nfs",
        0xFF53_4D42 => "cifs",
        0xFE53_4D42 => "smb2",
        0x517B => "smb",
        0x0102_1997 => "v9fs",
        0x00C3_6400 => "ceph",
        0x0BD0_0BD0 => "lustre",
        0x4750_4653 => "gpfs",
        0x7461_636F => "ocfs2",
        0x0116_1970 => "gfs2",
        0x6573_5546 => "fuse",
        0x794C_7630 => "overlayfs",
        0x8584_58F6 => "ramfs",
        0xF15F => "ecryptfs",
        0x4D44 => "msdos/vfat",
        0x2011_BAB0 => "exfat",
        0x5346_544E => "ntfs",
        0x7371_7368 => "squashfs",
        0x3153_464A => "jfs",
        0x5265_4973 => "reiserfs",
        0x9FA0 => "proc",
        0x6265_6572 => "sysfs",
        _ => return None,
    })
}

impl Filesystem {
    /// `ext4 (/dev/sda1 on /; statfs f_type 0xef53, ext2/ext3/ext4)`.
    pub fn describe(&self) -> String {
        let statfs = match self.statfs_name {
            Some(name) => format!("statfs f_type 0x{:x}, {name}", self.f_type),
            None => format!("statfs f_type 0x{:x}", self.f_type),
        };
        match (&self.fstype, &self.source, &self.mount_point) {
            (Some(fstype), Some(source), Some(at)) => {
                format!("{fstype} ({source} on {at}; {statfs})")
            }
            _ => format!("unknown mount ({statfs})"),
        }
    }
}

fn text_report(dir: &Path, filesystem: &Filesystem, outcomes: &[Outcome]) -> String {
    let mut text = format!(
        "{}: {}\n",
        crate::status::escape_controls(&dir.display().to_string()),
        crate::status::escape_controls(&filesystem.describe())
    );
    text.push_str("mechanism  works  detail\n");
    for o in outcomes {
        text.push_str(&format!(
            "{:<9}  {:<5}  {}\n",
            o.mechanism,
            match (o.works, o.checked) {
                (true, _) => "yes",
                (false, true) => "no",
                (false, false) => "?",
            },
            crate::status::escape_controls(&o.detail)
        ));
    }
    text
}

fn json_report(
    dir: &Path,
    filesystem: &Filesystem,
    outcomes: &[Outcome],
    net_namespace: Option<u64>,
) -> String {
    let string = |s: &Option<String>| s.as_deref().map_or("null".to_owned(), json_string);
    let mechanisms: Vec<String> = outcomes
        .iter()
        .map(|o| {
            let netns = if o.mechanism == "abstract" {
                format!(
                    ",\"net_namespace\":{}",
                    net_namespace.map_or("null".to_owned(), |n| n.to_string())
                )
            } else {
                String::new()
            };
            format!(
                "{{\"mechanism\":{},\"works\":{},\"checked\":{},\"detail\":{}{netns}}}",
                json_string(o.mechanism),
                o.works,
                o.checked,
                json_string(&o.detail)
            )
        })
        .collect();
    format!(
        "{{\"version\":1,\"dir\":{},\"filesystem\":{{\"type\":{},\"source\":{},\"mount_point\":{},\"f_type\":{},\"statfs_name\":{}}},\"mechanisms\":[{}],\"all_work\":{}}}\n",
        json_string(&dir.display().to_string()),
        string(&filesystem.fstype),
        string(&filesystem.source),
        string(&filesystem.mount_point),
        json_string(&format!("0x{:x}", filesystem.f_type)),
        filesystem
            .statfs_name
            .map_or("null".to_owned(), json_string),
        mechanisms.join(","),
        outcomes.iter().all(|o| o.works)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_parsed_and_unescaped() {
        let mount = Mount::parse(
            b"36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 - ext4 /dev/sda1 rw,errors=continue",
        )
        .unwrap();
        assert_eq!(mount.dev, "98:0");
        assert_eq!(mount.mount_point, Path::new("/mnt/my disk"));
        assert_eq!(mount.fstype, "ext4");
        assert_eq!(mount.source, "/dev/sda1");
        assert!(Mount::parse(b"garbage").is_none());
        assert_eq!(unescape(b"a\\134b\\0"), b"a\\b\\0");
    }

    #[test]
    fn the_filesystem_is_described_on_one_line() {
        let fs = Filesystem {
            f_type: 0xEF53,
            statfs_name: statfs_name(0xEF53),
            fstype: Some("ext4".into()),
            source: Some("/dev/sda1".into()),
            mount_point: Some("/".into()),
        };
        assert_eq!(
            fs.describe(),
            "ext4 (/dev/sda1 on /; statfs f_type 0xef53, ext2/ext3/ext4)"
        );
        let json = json_report(Path::new("/x"), &fs, &[], Some(7));
        assert!(json.contains("\"f_type\":\"0xef53\""), "{json}");
        assert!(json.ends_with("\"all_work\":true}\n"), "{json}");
    }
}
