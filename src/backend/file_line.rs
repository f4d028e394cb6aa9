//! The line of waiters of a lock on a path (flock, fcntl, mkdir, excl): a
//! directory beside the lock, `.NAME.lockwrap-line-UID`, holding one
//! ticket file per waiter, named `SEQ.fair` or `SEQ.wait`, that carries
//! the waiter's record and is flock'd (LOCK_EX) by its waiter for as long
//! as it waits. See FAIR-DESIGN.md.
//!
//! Liveness is the kernel's: a ticket whose flock can be taken is dead,
//! whatever the file says, and the flock of a SIGKILLed waiter is gone at
//! once. A fair waiter waits for the live fair ticket just ahead of it with
//! a blocking LOCK_SH on that file, which is granted exactly when that
//! waiter leaves (it won, gave up or died), then looks again.
//!
//! Order: tickets are created under a flock on the line directory, each
//! with the highest number in it plus one, so the numbers of the tickets
//! present are in the order they were created (a number may be used again
//! once every ticket above it is gone, which orders nothing wrongly). The
//! same directory flock keeps others from judging a ticket in the moment
//! between its creation and its waiter's flock: only a ticket that was
//! flock'd at least once, or whose creator died, can be found unlocked.
//!
//! One line per user (0755, owned by that user, nobody else may write to
//! it): a user's waiters trust only their own line and remove only their
//! own dead tickets; `--status` reads every user's line. So `--fair`
//! orders one user's waiters; to each other, the waiters of two users are
//! like waiters without `--fair`.
//!
//! Kill safety: whatever instant a waiter dies at, what it leaves is a
//! ticket nobody holds (removed by the next waiter that looks, or the next
//! release, under the directory flock), or an empty line directory (removed
//! by the same). Neither blocks anyone: an unlocked ticket is never waited
//! for.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode as Perm, SFlag, fstat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::path_artifact::{self, FileId, Location, io_errno};
use super::{Line, LineEntry, Ticket, WaiterInfo};
use crate::error::Error;
use crate::holder::Liveness;
use crate::wait::{Interruptible, Waiter};

/// How long a `--fair` waiter without a deadline (`-w`) tries for the line
/// directory's flock, which others hold only for the few calls that create
/// a ticket or remove dead ones: a process stopped (SIGSTOP) in that
/// moment, or someone else who may read the directory and flocks it, is
/// the only way to exceed it. One with a deadline tries until it; a signal
/// ends either at once.
const DIR_LOCK_AT_MOST: Duration = Duration::from_secs(5);

/// How long a waiter without `--fair` tries for it: its place only makes it
/// visible, which must not delay its wait for the lock (nor its `-w`).
const DIR_LOCK_VISIBLE_ONLY: Duration = Duration::from_millis(100);

/// How often the line directory's flock is tried again meanwhile.
const DIR_LOCK_AGAIN: Duration = Duration::from_millis(1);

/// How often a fair waiter whose turn depends on a ticket's flock also
/// looks at the ticket's name and record: someone else may hold the flock
/// of a ticket whose waiter left or died (a flock needs only read access).
const RECHECK: Duration = Duration::from_secs(1);

/// How often a waiter starts over when the line directory vanished under it
/// (removed by the last leaver between its mkdir and its ticket) before it
/// gives up: each time means someone else left, so this is never reached.
const MAX_REJOINS: usize = 1000;

/// The highest ticket number taken for one (see `parse_ticket_name`).
const MAX_SEQ: u64 = 1 << 53;

/// The line of waiters of a lock at a path.
pub struct FileLine {
    lock: String,
    location: Location,
}

impl FileLine {
    /// The line of the lock `lock` at `location`; None for a path that ends
    /// in no name (`/`), which has no place beside it.
    pub fn new(lock: &str, location: Location) -> Option<FileLine> {
        (!location.name().is_empty()).then(|| FileLine {
            lock: lock.to_owned(),
            location,
        })
    }

    /// The line directory of `uid`.
    fn name_of(&self, uid: u32) -> OsString {
        path_artifact::beside(&self.location, &format!("line-{uid}"))
    }

    /// This user's line directory.
    fn own_name(&self) -> OsString {
        self.name_of(nix::unistd::geteuid().as_raw())
    }

    fn open_parent(&self) -> Result<OwnedFd, Error> {
        self.location.open_dir(&self.lock)
    }

    /// The error of a `--fair` waiter that cannot join the line.
    fn cannot_join(&self, errno: Errno) -> Error {
        let name = self.own_name();
        let name = name.to_string_lossy();
        match errno {
            Errno::ENOSPC | Errno::EDQUOT | Errno::EROFS => Error::os(
                &self.lock,
                &format!(
                    "--fair: cannot join the line of waiters {name} (free some space, or drop --fair)"
                ),
                errno,
            ),
            Errno::ENOMEM | Errno::EMFILE | Errno::ENFILE => {
                Error::os(&self.lock, "--fair: cannot join the line of waiters", errno)
            }
            _ => Error::Artifact {
                lock: self.lock.clone(),
                reason: format!(
                    "--fair: cannot join the line of waiters {name} beside it: {} (the lock's directory must be writable by this user; or drop --fair)",
                    errno.desc().to_lowercase()
                ),
            },
        }
    }

    /// Opens this user's line directory, creating it if asked. Ok(None)
    /// when it does not exist (or vanished).
    fn open_own(&self, parent: BorrowedFd<'_>, create: bool) -> Result<Option<OwnedFd>, Error> {
        let name = self.own_name();
        if create {
            match mkdirat(parent, name.as_os_str(), Perm::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(self.cannot_join(e)),
            }
        }
        let uid = nix::unistd::geteuid().as_raw();
        match open_line_dir(parent, &name, uid) {
            Ok(dir) => Ok(Some(dir)),
            Err(Errno::ENOENT) => Ok(None),
            Err(Errno::EPERM) => Err(Error::Artifact {
                lock: self.lock.clone(),
                reason: format!(
                    "the line of waiters {} is not this user's, or others may write to it; lockwrap does not use it (remove it)",
                    name.to_string_lossy()
                ),
            }),
            Err(e) => Err(self.cannot_join(e)),
        }
    }

    /// Whether this user's line directory is there: one lstat.
    fn exists(&self) -> bool {
        // nix's lstat is one call; std's may probe for statx with another.
        let path = self.location.dir_path().join(self.own_name());
        nix::sys::stat::lstat(&path).is_ok()
    }
}

impl Line for FileLine {
    fn is_empty(&self, _waiter: &Waiter<'_>) -> Result<bool, Error> {
        Ok(!self.exists())
    }

    fn join(&self, entry: &LineEntry, waiter: &Waiter<'_>) -> Result<Box<dyn Ticket>, Error> {
        let patience = match (entry.fair, waiter.remaining()) {
            (false, _) => Some(DIR_LOCK_VISIBLE_ONLY),
            // Until the deadline: `waiter` ends the try.
            (true, Some(_)) => None,
            (true, None) => Some(DIR_LOCK_AT_MOST),
        };
        let give_up = patience.map(|patience| Instant::now() + patience);
        for _ in 0..MAX_REJOINS {
            let parent = self.open_parent()?;
            let Some(dir) = self.open_own(parent.as_fd(), true)? else {
                continue;
            };
            let guard = DirLock::take(dir.as_fd(), give_up, waiter)?;
            // Whoever joins removes what dead waiters left, so that it never
            // piles up however many waiters are killed in a row.
            remove_dead(dir.as_fd(), &guard);
            let seq = list(dir.as_fd()).last().map_or(1, |t| t.seq + 1);
            let name = ticket_name(seq, entry.fair);
            let flags = OFlag::O_RDWR
                | OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC;
            let file = match openat(
                dir.as_fd(),
                name.as_os_str(),
                flags,
                Perm::from_bits_truncate(0o644),
            ) {
                Ok(file) => file,
                // The last leaver removed the directory meanwhile.
                Err(Errno::ENOENT) => continue,
                Err(e) => {
                    drop(guard);
                    tidy(parent.as_fd(), &self.own_name(), dir.as_fd());
                    return Err(self.cannot_join(e));
                }
            };
            let made = flock_retrying(
                file.as_fd(),
                give_up,
                waiter,
                "its ticket in the line of waiters",
            )
            .and_then(|()| {
                write_all(file.as_fd(), entry.record.encode().as_bytes())
                    .map_err(|e| self.cannot_join(e))
            });
            if let Err(e) = made {
                let _ = unlinkat(dir.as_fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir);
                drop(guard);
                tidy(parent.as_fd(), &self.own_name(), dir.as_fd());
                return Err(e);
            }
            drop(guard);
            return Ok(Box::new(FileTicket {
                lock: self.lock.clone(),
                parent,
                line: self.own_name(),
                dir,
                name,
                seq,
                file: Some(file),
            }));
        }
        Err(self.cannot_join(Errno::EAGAIN))
    }

    fn waiters(&self) -> Result<Vec<WaiterInfo>, Error> {
        let parent = self.open_parent()?;
        let prefix = path_artifact::beside(&self.location, "line-");
        let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", parent.as_raw_fd())) else {
            return Ok(Vec::new());
        };
        let mut lines = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(uid) = name
                .as_bytes()
                .strip_prefix(prefix.as_bytes())
                .and_then(|rest| std::str::from_utf8(rest).ok())
                .and_then(|rest| rest.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(dir) = open_line_dir(parent.as_fd(), &name, uid) else {
                continue;
            };
            let mut line = Vec::new();
            for ticket in list(dir.as_fd()) {
                let Some(file) = open_ticket(dir.as_fd(), &ticket.name) else {
                    continue;
                };
                if probe(file.as_fd()) != Some(true) || recorded_gone(file.as_fd()) {
                    continue;
                }
                match path_artifact::read_record_fd(file.as_fd()) {
                    // A record that names another uid was not written by its waiter.
                    Some(record) if record.uid == uid => {
                        line.push(WaiterInfo::of_entry(&LineEntry {
                            record,
                            fair: ticket.fair,
                        }))
                    }
                    _ => line.push(WaiterInfo {
                        uid: Some(uid),
                        fair: ticket.fair,
                        ..WaiterInfo::default()
                    }),
                }
            }
            WaiterInfo::number_fair(&mut line);
            line.reverse();
            lines.push(line);
        }
        // Each user's line in its own order (a waiter's clock is read
        // before it takes its place), several users' lines merged by when
        // each waiter came.
        let mut waiters = Vec::new();
        while let Some(next) = lines
            .iter_mut()
            .filter(|line| !line.is_empty())
            .min_by_key(|line| line.last().and_then(|w| w.since_ms).unwrap_or(u64::MAX))
        {
            waiters.extend(next.pop());
        }
        Ok(waiters)
    }

    fn tidy(&self) {
        // The usual case, nobody ever waited: one stat.
        if !self.exists() {
            return;
        }
        let Ok(parent) = self.open_parent() else {
            return;
        };
        let name = self.own_name();
        let Ok(dir) = open_line_dir(parent.as_fd(), &name, nix::unistd::geteuid().as_raw()) else {
            return;
        };
        // A waiter still in line tidies when it leaves (it may be leaving
        // just now, with the lock this holder released): the holder only
        // clears a line whose waiters are all gone, without reading their
        // records on the hand-off's critical path.
        if any_flock_held(dir.as_fd()) {
            return;
        }
        tidy(parent.as_fd(), &name, dir.as_fd());
    }
}

/// Whether any ticket of the line directory `dir` has its flock held: a
/// waiter is (or seems to be) in line.
fn any_flock_held(dir: BorrowedFd<'_>) -> bool {
    list(dir).iter().any(|ticket| {
        open_ticket(dir, &ticket.name).is_some_and(|file| probe(file.as_fd()) == Some(true))
    })
}

/// Takes `file`'s exclusive flock, retried every [`DIR_LOCK_AGAIN`] while
/// someone briefly holds it (a holder or `--status` probing a new ticket,
/// a joiner holding the directory) until `give_up`; a signal or the wait's
/// deadline ends it. `what` names the file for the error.
fn flock_retrying(
    file: BorrowedFd<'_>,
    give_up: Option<Instant>,
    waiter: &Waiter<'_>,
    what: &str,
) -> Result<(), Error> {
    loop {
        match super::flock_fd(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) {
            Err(Errno::EWOULDBLOCK | Errno::EINTR)
                if give_up.is_none_or(|at| Instant::now() < at) =>
            {
                waiter.watch(&[], Some(DIR_LOCK_AGAIN))?;
            }
            other => {
                return other.map_err(|e| {
                    Error::os(waiter.lock(), &format!("--fair: cannot lock {what}"), e)
                });
            }
        }
    }
}

/// A ticket in a file line.
struct FileTicket {
    lock: String,
    parent: OwnedFd,
    line: OsString,
    dir: OwnedFd,
    name: OsString,
    seq: u64,
    /// The ticket, flock'd: this waiter is in line while it is open.
    file: Option<OwnedFd>,
}

impl Ticket for FileTicket {
    fn wait_turn(&mut self, waiter: &Waiter<'_>) -> Result<(), Error> {
        loop {
            let ahead: Vec<TicketName> = list(self.dir.as_fd())
                .into_iter()
                .filter(|t| t.seq < self.seq && t.fair)
                .collect();
            let mut waited = false;
            let mut dead = false;
            // The nearest first: the one whose leaving makes this one next.
            for ticket in ahead.iter().rev() {
                let Some(file) = open_ticket(self.dir.as_fd(), &ticket.name) else {
                    continue;
                };
                match probe(file.as_fd()) {
                    Some(true) if recorded_gone(file.as_fd()) => dead = true,
                    Some(true) => {
                        let dir = self.dir.as_fd();
                        let name = ticket.name.as_os_str();
                        let id = FileId::of_fd(file.as_fd()).ok();
                        let check = file.try_clone().ok();
                        // Its waiter's leaving (unlink) or death (its record)
                        // tells what the flock cannot when someone else
                        // took it meanwhile.
                        let left = || {
                            FileId::at(dir, name) != id
                                || check.as_ref().is_some_and(|f| recorded_gone(f.as_fd()))
                        };
                        wait_for_flock(&self.lock, file, libc::LOCK_SH, waiter, left)?;
                        waited = true;
                        break;
                    }
                    Some(false) => dead = true,
                    None => {}
                }
            }
            // Not waited for: whoever holds it (joining, tidying) removes
            // them too, and a stuck one must not hold up this wait.
            if dead && let Ok(guard) = DirLock::try_take(self.dir.as_fd()) {
                remove_dead(self.dir.as_fd(), &guard);
            }
            if !waited {
                return Ok(());
            }
        }
    }
}

impl Drop for FileTicket {
    fn drop(&mut self) {
        // Out of the list first, then the flock goes (with the fd): a
        // waiter woken by it finds the name gone.
        let _ = unlinkat(
            self.dir.as_fd(),
            self.name.as_os_str(),
            UnlinkatFlags::NoRemoveDir,
        );
        drop(self.file.take());
        tidy(self.parent.as_fd(), &self.line, self.dir.as_fd());
    }
}

/// Removes the dead tickets of the line directory `dir` (named `name` in
/// `parent`), then the directory if that left it empty. Best effort.
fn tidy(parent: BorrowedFd<'_>, name: &OsStr, dir: BorrowedFd<'_>) {
    let Ok(guard) = DirLock::try_take(dir) else {
        return;
    };
    remove_dead(dir, &guard);
    drop(guard);
    // Fails (ENOTEMPTY) while anyone is in line: harmless. A waiter that
    // opened the directory meanwhile fails to create its ticket in it
    // (ENOENT) and makes a new one.
    if FileId::of_fd(dir).ok() == FileId::at(parent, name) {
        let _ = unlinkat(parent, name, UnlinkatFlags::RemoveDir);
    }
}

/// A ticket's number, kind and name.
#[derive(Debug, Clone)]
struct TicketName {
    seq: u64,
    fair: bool,
    name: OsString,
}

fn ticket_name(seq: u64, fair: bool) -> OsString {
    OsString::from(format!("{seq}.{}", if fair { "fair" } else { "wait" }))
}

fn parse_ticket_name(name: &OsStr) -> Option<TicketName> {
    let text = std::str::from_utf8(name.as_bytes()).ok()?;
    let (seq, kind) = text.split_once('.')?;
    let fair = match kind {
        "fair" => true,
        "wait" => false,
        _ => return None,
    };
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Higher numbers are never reached by counting: such a name was
    // planted, and its number plus one would overflow.
    let seq = seq.parse().ok().filter(|n| *n <= MAX_SEQ)?;
    Some(TicketName {
        seq,
        fair,
        name: name.to_owned(),
    })
}

/// The tickets in the line directory `dir`, by number. Listed through the
/// fd (not the path, which could be swapped).
fn list(dir: BorrowedFd<'_>) -> Vec<TicketName> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
        return Vec::new();
    };
    let mut tickets: Vec<TicketName> = entries
        .flatten()
        .filter_map(|e| parse_ticket_name(&e.file_name()))
        .collect();
    tickets.sort_by_key(|t| t.seq);
    tickets
}

/// Opens the line directory `name` in `parent` if it is a directory owned
/// by `uid` that nobody else may write to (EPERM otherwise).
fn open_line_dir(parent: BorrowedFd<'_>, name: &OsStr, uid: u32) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let dir = match openat(parent, name, flags, Perm::empty()) {
        // A symlink or anything but a directory at the name.
        Err(Errno::ELOOP | Errno::ENOTDIR) => return Err(Errno::EPERM),
        other => other?,
    };
    let st = fstat(dir.as_fd())?;
    let is_dir = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR;
    if !is_dir || st.st_uid != uid || st.st_mode & 0o022 != 0 {
        return Err(Errno::EPERM);
    }
    Ok(dir)
}

/// Opens a ticket for a look at its flock (None: gone meanwhile, or not a
/// regular file, which no lockwrap made).
fn open_ticket(dir: BorrowedFd<'_>, name: &OsStr) -> Option<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let file = openat(dir, name, flags, Perm::empty()).ok()?;
    let st = fstat(file.as_fd()).ok()?;
    (SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG).then_some(file)
}

/// Whether the ticket open as `file` has a live waiter: Some(true) when its
/// flock is held, Some(false) when it could be taken (the probe's shared
/// flock goes with the fd), None when flock cannot tell.
fn probe(file: BorrowedFd<'_>) -> Option<bool> {
    match super::flock_fd(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) {
        Ok(()) => Some(false),
        Err(Errno::EWOULDBLOCK) => Some(true),
        Err(_) => None,
    }
}

/// Whether the ticket open as `file` names a waiter that is provably gone
/// (pid and start time): its flock may be held by someone else, since
/// anyone who may read a file may flock it.
fn recorded_gone(file: BorrowedFd<'_>) -> bool {
    path_artifact::read_record_fd(file).is_some_and(|r| r.liveness() == Liveness::Dead)
}

/// Removes the tickets of `dir` whose flock can be taken: their waiters
/// left or died. Only under the directory's flock (`_guard`), so a ticket
/// in the moment between its creation and its waiter's flock is never
/// taken for dead.
fn remove_dead(dir: BorrowedFd<'_>, _guard: &DirLock<'_>) {
    for ticket in list(dir) {
        let Some(file) = open_ticket(dir, &ticket.name) else {
            continue;
        };
        // Exclusive: of several removers (none can be here: the directory
        // flock) and of a waiter's shared wait, only one holds it.
        // A ticket whose record shows its waiter gone is dead even when
        // someone else (who may read it) holds a flock on it.
        if super::flock_fd(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB).is_err()
            && !recorded_gone(file.as_fd())
        {
            continue;
        }
        if FileId::of_fd(file.as_fd()).ok() == FileId::at(dir, &ticket.name) {
            let _ = unlinkat(dir, ticket.name.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// The flock on a line directory, held while a ticket is created or dead
/// ones removed; released on drop.
struct DirLock<'a>(BorrowedFd<'a>);

impl<'a> DirLock<'a> {
    /// Takes it, trying again (its holders hold it for a few calls only)
    /// until `give_up` at the latest (then an OS error, 71), and as `waiter`
    /// allows: its deadline, a signal or a cancelled slot wait end the try
    /// with their error.
    fn take(
        dir: BorrowedFd<'a>,
        give_up: Option<Instant>,
        waiter: &Waiter<'_>,
    ) -> Result<DirLock<'a>, Error> {
        flock_retrying(dir, give_up, waiter, "the line of waiters").map(|()| DirLock(dir))
    }

    fn try_take(dir: BorrowedFd<'a>) -> Result<DirLock<'a>, Errno> {
        loop {
            match super::flock_fd(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => return Ok(DirLock(dir)),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for DirLock<'_> {
    fn drop(&mut self) {
        let _ = super::flock_fd(self.0.as_raw_fd(), libc::LOCK_UN);
    }
}

/// Takes flock `operation` on `file`, waiting on a helper thread as
/// `waiter` allows, or until `left` says (asked every [`RECHECK`]) that
/// there is nothing to wait for; `file` is closed when it returns, so a
/// lock taken only to learn that its holder left goes at once.
fn wait_for_flock(
    lock: &str,
    file: OwnedFd,
    operation: libc::c_int,
    waiter: &Waiter<'_>,
    left: impl Fn() -> bool,
) -> Result<(), Error> {
    let failed = |e| Error::os(lock, "--fair: cannot wait for the waiter ahead", e);
    match super::flock_fd(file.as_raw_fd(), operation | libc::LOCK_NB) {
        Ok(()) => return Ok(()),
        Err(Errno::EWOULDBLOCK | Errno::EINTR) => {}
        Err(e) => return Err(failed(e)),
    }
    // The thread's own copy keeps the open file description alive until
    // the thread ends.
    let copy = file.try_clone().map_err(|e| failed(io_errno(&e)))?;
    let mut blocked = Interruptible::start(move |cancelled| {
        loop {
            match super::flock_fd(copy.as_raw_fd(), operation) {
                Err(Errno::EINTR) if !cancelled.load(Ordering::SeqCst) => continue,
                other => return other,
            }
        }
    })
    .map_err(failed)?;
    loop {
        if let Err(gave_up) = waiter.pause(&[blocked.as_fd()], Some(RECHECK)) {
            blocked.cancel();
            return Err(gave_up);
        }
        if let Some(result) = blocked.try_result() {
            return result.map_err(failed);
        }
        if left() {
            blocked.cancel();
            return Ok(());
        }
    }
}

/// Writes all of `bytes` at the start of `file`.
fn write_all(file: BorrowedFd<'_>, bytes: &[u8]) -> nix::Result<()> {
    let mut offset = 0;
    while offset < bytes.len() {
        match nix::sys::uio::pwrite(file, &bytes[offset..], offset as i64) {
            Ok(0) => return Err(Errno::ENOSPC),
            Ok(n) => offset += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_names_round_trip_and_nothing_else_is_a_ticket() {
        let t = parse_ticket_name(&ticket_name(42, true)).unwrap();
        assert_eq!((t.seq, t.fair), (42, true));
        let t = parse_ticket_name(&ticket_name(7, false)).unwrap();
        assert_eq!((t.seq, t.fair), (7, false));
        let too_high = format!("{}.fair", MAX_SEQ + 1);
        for other in [
            "x.fair", ".fair", "1.tmp", "1", "-1.fair", "1.fair.x", &too_high,
        ] {
            assert!(parse_ticket_name(OsStr::new(other)).is_none(), "{other}");
        }
    }
}
