//! What the two path-artifact backends (mkdir and excl) share: publishing a
//! holder record without a reader ever seeing half of it, waiting for the
//! artifact to go away with inotify, reclaiming a stale artifact so that
//! exactly one of several racing reclaimers wins, and the temporary names
//! that make every step safe to be killed at.
//!
//! The owner keeps a flock(2) on its artifact (the guard) for as long as it
//! holds the lock, through an fd the command inherits (unless -o) and that
//! survives exec (-F). So a lock whose wrapper was SIGKILLed right after
//! spawning, before its record could name the command, is still seen as
//! held: the record may say "dead", the kernel's flock says "alive". The
//! guard is on the inode at the lock path for the whole hold: the record is
//! never replaced by another inode, the command's lines are appended to it
//! in place (see [`HolderRecord::encode`] for why a reader never sees half).
//!
//! Kill safety: the artifact appears at the lock path only complete, with
//! its record and its guard (excl links a written, flock'd temp file; mkdir
//! renames a prepared, flock'd directory with renameat2(RENAME_NOREPLACE)),
//! and it leaves the path in one step (excl unlinks it; mkdir renames the
//! directory away to a temp name before emptying it). So whatever instant
//! lockwrap dies at, the path holds either nothing or a complete artifact
//! whose holder is alive or provably dead. What a killed process can leave
//! are its temp names beside the lock, which name their creator
//! ([`TempName`]); every release removes those whose creator is provably
//! dead.
//!
//! Reclaim protocol: a reclaimer opens the artifact (never following a
//! symlink), reads the record through that fd and judges it; if the holder is
//! provably dead it takes flock(LOCK_EX|LOCK_NB) on that same fd, checks that
//! the path still names the same inode, and only then removes it. Creating
//! stays lock-free (rename and link are atomic) and only a dead owner's
//! artifact is ever removed by someone else, so a reclaimer that arrives late
//! finds a different inode (its open fd keeps the old inode number from being
//! reused) and leaves the new lock alone. `--stale-after` applies only to a
//! holder that cannot be judged (another host, no readable record), and a
//! held guard defeats it too.

use std::ffi::{OsStr, OsString};
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::NixPath;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat, renameat};
use nix::sys::stat::{FileStat, Mode as Perm, SFlag, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, ftruncate, unlinkat};

use super::{HolderInfo, LockStatus, Request};
use crate::error::Error;
use crate::holder::{self, HolderRecord, Liveness};
use crate::wait::{Interruptible, NameWatch, Waiter, poll_readable};

/// How often a waiter re-examines a held artifact when no event woke it:
/// to notice a holder that died without removing it, or a release on NFS.
const RECHECK_WITH_WATCH: Duration = Duration::from_millis(500);
/// The same, when inotify is unavailable (too many instances, odd filesystem).
const RECHECK_WITHOUT_WATCH: Duration = Duration::from_millis(50);

/// How long a waiter lets a new holder hold before judging it (reading its
/// record and watching its processes). Only a dead holder's artifact waits
/// this much longer to be reclaimed.
const JUDGE_AFTER: Duration = Duration::from_millis(50);

/// The holder record's name inside a lock directory.
pub const DIR_RECORD: &str = "lockwrap-holder";

/// One kind of path artifact: how it is created, read and removed.
pub trait Artifact {
    /// The lock as the user wrote it.
    fn lock(&self) -> &str;
    /// Where the artifact lives.
    fn location(&self) -> &Location;
    /// The artifact's path, without a trailing slash.
    fn path(&self) -> &Path {
        self.location().path()
    }
    /// Makes the artifact under the temp name `temp` in `dir`: complete with
    /// `record` and flock'd by the returned guard, but not yet at the lock
    /// path. On failure nothing is left under `temp`.
    fn prepare(
        &self,
        dir: BorrowedFd<'_>,
        temp: &OsStr,
        record: &HolderRecord,
    ) -> Result<Created, Error>;
    /// Puts the prepared `temp` at the lock path in one step that fails if
    /// the path is taken. `record` is what `temp` carries, for a backend
    /// that must make the artifact afresh where it cannot publish atomically.
    fn publish(
        &self,
        dir: BorrowedFd<'_>,
        temp: &OsStr,
        record: &HolderRecord,
    ) -> Result<Published, Error>;
    /// Opens an existing artifact for inspection without following symlinks.
    /// Ok(None) when it vanished meanwhile; an error when the path holds
    /// something this backend must not touch.
    fn open_existing(&self) -> Result<Option<OwnedFd>, Error>;
    /// The record of an opened artifact (None: no complete record).
    fn read_record(&self, artifact: BorrowedFd<'_>) -> Option<HolderRecord>;
    /// Takes the artifact known by `id` away from the lock path in one step
    /// and cleans it up; the caller has checked it is the one at the path.
    fn remove(&self, id: FileId) -> Result<(), Error>;
}

/// A freshly created artifact.
pub struct Created {
    /// Which inode it is.
    pub id: FileId,
    /// An fd on it holding flock(LOCK_EX): the owner is alive while any copy
    /// of this fd is open.
    pub guard: OwnedFd,
    /// A writable fd on the record when it is not the guard's file.
    pub record: Option<OwnedFd>,
}

/// What an attempt to publish a prepared artifact came to.
pub enum Published {
    /// The prepared artifact is the lock now.
    Done,
    /// The lock path is taken; the prepared artifact stays for the next try.
    Taken,
    /// The temp name is not in this directory (the directory was replaced
    /// since it was prepared): prepare again.
    Gone,
    /// No atomic publish on this filesystem: this artifact was made at the
    /// lock path directly instead.
    Made(Created),
}

/// An artifact prepared under a temp name, kept across attempts for as
/// long as its owner waits: an attempt is then one rename (or link), and
/// the waiters' temp names do not come and go, waking every waiter's
/// directory watch, at each release. Dropped unpublished, it is removed.
struct Candidate {
    dir: OwnedFd,
    temp: OsString,
    created: Option<Created>,
    /// How long the record it carries is.
    len: usize,
}

impl Candidate {
    fn prepare<A: Artifact>(
        artifact: &A,
        dir: BorrowedFd<'_>,
        record: &HolderRecord,
    ) -> Result<Candidate, Error> {
        let dir = dir.try_clone_to_owned().map_err(|e| {
            Error::os(
                artifact.lock(),
                "cannot open the lock's directory",
                io_errno(&e),
            )
        })?;
        let temp = artifact.location().temp_name();
        let created = artifact.prepare(dir.as_fd(), &temp, record)?;
        Ok(Candidate {
            dir,
            temp,
            created: Some(created),
            len: record.encode().len(),
        })
    }

    /// Writes `record` over the one it carries (a later acquisition time).
    fn rewrite(&mut self, lock: &str, record: &HolderRecord) -> Result<(), Error> {
        let Some(created) = &self.created else {
            return Ok(());
        };
        let fd = created.record.as_ref().unwrap_or(&created.guard).as_fd();
        let encoded = record.encode();
        let failed = |e| Error::os(lock, "cannot write the holder record", e);
        let mut offset = 0;
        while offset < encoded.len() {
            match nix::sys::uio::pwrite(fd, &encoded.as_bytes()[offset..], offset as i64) {
                Ok(0) => return Err(failed(Errno::ENOSPC)),
                Ok(n) => offset += n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(failed(e)),
            }
        }
        // Usually as long as before (only the time changed): no truncation,
        // which would cost an inode update before every attempt.
        if encoded.len() < self.len {
            ftruncate(fd, encoded.len() as i64).map_err(failed)?;
        }
        self.len = encoded.len();
        Ok(())
    }

    /// The artifact, now published: no longer removed on drop.
    fn published(mut self) -> Created {
        self.created.take().expect("a candidate is published once")
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        if let Some(created) = self.created.take() {
            drop(created);
            let _ = remove_temp(self.dir.as_fd(), &self.temp);
        }
    }
}

/// Where an artifact lives: the directory and the name in it. Every call
/// goes through the directory's fd and the bare name, so a trailing slash
/// on the path changes nothing.
#[derive(Debug, Clone)]
pub struct Location {
    path: PathBuf,
    dir: PathBuf,
    name: OsString,
}

impl Location {
    /// The location of `path`; the name is empty for `/` or `..`.
    pub fn new(path: &Path) -> Location {
        let name = path.file_name().map(OsString::from).unwrap_or_default();
        let dir = match path.parent() {
            Some(dir) if !name.is_empty() => dir.to_path_buf(),
            _ => PathBuf::new(),
        };
        // `x/` is `x`: lstat("x/") would follow a symlink and fail on a file.
        let path = if name.is_empty() {
            path.to_path_buf()
        } else {
            dir.join(&name)
        };
        Location { path, dir, name }
    }

    /// The path, without a trailing slash.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The artifact's name in its directory.
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// The directory the artifact is in.
    pub fn dir_path(&self) -> &Path {
        if self.dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &self.dir
        }
    }

    /// Opens the directory for *at() calls.
    pub fn open_dir(&self, lock: &str) -> Result<OwnedFd, Error> {
        open_dir(lock, self.dir_path())
    }

    /// A fresh temp name beside the artifact, owned by this process.
    pub fn temp_name(&self) -> OsString {
        TempName::for_this_process().name_for(&self.name)
    }
}

/// Takes the owner's flock on a new artifact. Only a reclaimer examining it
/// can hold it meanwhile, briefly, so this blocks at most a moment.
pub fn guard(lock: &str, fd: BorrowedFd<'_>) -> Result<(), Error> {
    loop {
        match super::flock_fd(fd.as_raw_fd(), libc::LOCK_EX) {
            Ok(()) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::os(lock, "cannot lock the lock artifact", e)),
        }
    }
}

/// Device and inode: which file a path named at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity of an open fd.
    pub fn of_fd(fd: BorrowedFd<'_>) -> nix::Result<FileId> {
        let st = fstat(fd)?;
        Ok(FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    /// The identity of whatever `name` in the open directory `dir` names now
    /// (not following a symlink). Unlike a path, the directory cannot be
    /// swapped for another under us.
    pub fn at(dir: BorrowedFd<'_>, name: &OsStr) -> Option<FileId> {
        let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
        Some(FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    /// The identity of whatever `path` names now (not following a symlink).
    pub fn of_path(path: &Path) -> Option<FileId> {
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// Takes a path-artifact lock: create, or find it held; reclaim it if its
/// holder is provably dead (or, with `--stale-after`, unknown and too old);
/// otherwise wait for an inotify event, the holder's exit, or (when neither
/// can be watched) the recheck interval.
pub fn acquire<A: Artifact>(
    artifact: &A,
    request: &Request<'_>,
    waiter: &Waiter<'_>,
) -> Result<Taken, Error> {
    let mut record = HolderRecord::for_this_process(request.command).map_err(|e| {
        Error::os(
            artifact.lock(),
            "cannot read this process's identity in /proc",
            e,
        )
    })?;
    // The watch is set up only once a wait is needed: closing an inotify
    // instance that had a watch costs milliseconds (the kernel waits for an
    // SRCU grace period), which an uncontended run should not pay. An
    // attempt follows it at once, so a release in between is not missed.
    let mut watch: Option<NameWatch> = None;
    let mut watch_tried = waiter.is_nonblocking();
    let mut candidate: Option<Candidate> = None;
    // This waiter's turn to watch the lock; given back when it wins.
    let mut room: Option<Turn> = None;
    // The holder as last judged: judged again only when the artifact
    // changes, one of its processes exits, or its recheck time comes.
    let mut judged: Option<Judged> = None;
    let mut first_seen: Option<(FileId, Instant)> = None;
    loop {
        // With a candidate prepared, an attempt is a rename that fails if
        // the lock is taken: no need to look first.
        let found = match candidate {
            Some(_) => None,
            None => FileId::of_path(artifact.path()),
        };
        if found.is_none() {
            match attempt(artifact, &mut candidate, &mut record)? {
                Attempt::Won(created) => {
                    // Given back once the command runs (see `AfterSpawn`).
                    return Ok(Taken {
                        record,
                        created,
                        watch,
                        after_spawn: AfterSpawn {
                            _room: room,
                            _judged: judged,
                        },
                    });
                }
                Attempt::Again => continue,
                Attempt::Lost => {}
            }
        }
        if !watch_tried {
            watch_tried = true;
            room = match Room::open(artifact.location()) {
                Some(file) => match queue(
                    artifact,
                    file,
                    waiter,
                    request.stale_after,
                    &mut candidate,
                    &mut record,
                )? {
                    Queued::Turn(room) => Some(room),
                    Queued::Won(created) => {
                        return Ok(Taken {
                            record,
                            created,
                            watch: None,
                            after_spawn: AfterSpawn::default(),
                        });
                    }
                },
                None => None,
            };
            watch = NameWatch::new(artifact.location().path()).ok();
            // Prepared now, while the lock is held, so that taking it at its
            // release is one rename. A failure here is met again, and
            // reported, at the attempt.
            if candidate.is_none()
                && let Ok(dir) = artifact.location().open_dir(artifact.lock())
            {
                candidate = Candidate::prepare(artifact, dir.as_fd(), &record).ok();
            }
            continue;
        }
        let found = match found {
            None => FileId::of_path(artifact.path()),
            seen => seen,
        };
        let current = judged.take().filter(|j| found == Some(j.id));
        if let (None, Some(id), false) = (&current, found, waiter.is_nonblocking()) {
            // A new holder is judged only once it has held for a moment:
            // at a hand-off, every waiter judging the winner at once would
            // slow the winner down, and most holders are gone by then.
            let since = match first_seen {
                Some((seen, since)) if seen == id => since,
                _ => first_seen.insert((id, Instant::now())).1,
            };
            let judge_at = since + JUDGE_AFTER;
            if Instant::now() < judge_at {
                let wake: Vec<BorrowedFd<'_>> = watch.iter().map(NameWatch::as_fd).collect();
                waiter.pause(
                    &wake,
                    Some(judge_at.saturating_duration_since(Instant::now())),
                )?;
                if let Some(watch) = &watch {
                    watch.drain();
                }
                continue;
            }
        }
        let holder = match current {
            Some(holder) => holder,
            None => match reclaim_if_stale(artifact, request.stale_after)? {
                Some(holder) => {
                    waiter.saw_holder(&holder.status);
                    holder
                }
                None => continue,
            },
        };
        // Wake on a release (inotify) or on the death of the holder's
        // processes (pidfds), which leaves a stale lock to reclaim (and, for
        // a lockwrap holder, follows its release at once). Without a watch
        // (inotify instances are limited per user) the path is looked at
        // again every so often; a holder whose processes cannot be watched
        // (another host, no record) is judged again at each look.
        let exits: Vec<BorrowedFd<'_>> = holder.exits.iter().map(AsFd::as_fd).collect();
        let recheck_at = match (&watch, exits.is_empty()) {
            (None, _) => Some(Instant::now() + RECHECK_WITHOUT_WATCH),
            (Some(_), true) => Some(Instant::now() + RECHECK_WITH_WATCH),
            (Some(_), false) => None,
        };
        // A holder is alive while any of its processes is, so it is judged
        // again only once all have exited: a lockwrap holder's command
        // exiting is followed by its release, which the watch reports,
        // and judging the holder meanwhile only slows that release down.
        let mut running = exits.clone();
        let keep = loop {
            let left = recheck_at.map(|at| at.saturating_duration_since(Instant::now()));
            let mut wake = running.clone();
            wake.extend(watch.iter().map(NameWatch::as_fd));
            waiter.pause(&wake, left)?;
            if let Ok(exited) = poll_readable(&running, Some(Duration::ZERO))
                && exited.contains(&true)
            {
                running = running
                    .iter()
                    .zip(exited)
                    .filter_map(|(fd, exited)| (!exited).then_some(*fd))
                    .collect();
                if running.is_empty() {
                    break false;
                }
            }
            if watch.as_ref().is_some_and(NameWatch::drain) {
                break true;
            }
            if recheck_at.is_some_and(|at| Instant::now() >= at) {
                break !exits.is_empty();
            }
        };
        drop(exits);
        if keep {
            judged = Some(holder);
        }
    }
}

/// The name of lockwrap's side file `what` of the artifact at `location`:
/// `.NAME.lockwrap-WHAT` in the same directory. A name cut short (see
/// [`TempName`]) also carries a hash of the whole name, so that locks whose
/// names only differ past the cut do not share side files.
pub fn beside(location: &Location, what: &str) -> OsString {
    let full = location.name().as_bytes();
    let mut name = TempName::prefix(location.name());
    if full.len() > TEMP_NAME_PART {
        // FNV-1a: stable across runs and builds, unlike std's hasher.
        let hash = full.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        name.extend_from_slice(format!("{hash:016x}-").as_bytes());
    }
    name.extend_from_slice(what.as_bytes());
    OsString::from_vec(name)
}

/// How often a waiter queued in the room looks at the lock itself: only
/// if the waiter whose turn it is cannot take a free lock (it was stopped
/// with SIGSTOP or Ctrl-Z) does a queued waiter need to, and then one stat
/// a second each is enough.
const ROOM_LOOK: Duration = Duration::from_secs(1);

/// The waiting room of a lock: of lockwrap's waiters (of one user), only the
/// one holding the room's flock watches the lock and tries to take it; the
/// others queue on that flock in the kernel, which wakes one of them when it
/// is given back. So a release wakes one process instead of every waiter
/// (a thundering herd that made a hand-off with 200 waiters take several
/// times as long), and only one inotify instance per lock is used (each
/// user has 128). The kernel gives back the flock of a killed waiter, so
/// the room never sticks.
///
/// The room is an empty file beside the lock, `.NAME.lockwrap-queue`.
/// Whoever wins (or gives up) while it is their turn removes it, so nothing
/// stays once the queue is gone: waiters still queued keep their places on
/// the removed file, newcomers start a new room (two rooms mean two
/// watchers, no harm; correctness never depends on the room). A room left
/// by a killed waiter is removed by the next release. Only a regular file
/// owned by this user, with no access for others and one link, is used: a
/// waiter that cannot use the room watches the lock itself. Queued waiters
/// also judge the holder at each look and reclaim a stale lock, as the
/// watcher would: the watcher may be stopped, unable to judge (another pid
/// namespace), or without their `--stale-after`.
struct Room;

impl Room {
    /// `.NAME.lockwrap-queue`; a name cut short (see [`TempName`]) also
    /// carries a hash of the whole name, so that locks whose names only
    /// differ past the cut do not share a room.
    fn name(location: &Location) -> OsString {
        beside(location, "queue")
    }

    fn open(location: &Location) -> Option<(OwnedFd, OwnedFd)> {
        let dir = open_dir("", location.dir_path()).ok()?;
        let flags = OFlag::O_RDONLY
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC;
        let file = openat(
            dir.as_fd(),
            Room::name(location).as_os_str(),
            flags,
            Perm::from_bits_truncate(0o600),
        )
        .ok()?;
        // Nobody else may open it (and hold its flock): ours, private, and
        // not a hard link to some other file of ours.
        let st = fstat(file.as_fd()).ok()?;
        let regular =
            SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG;
        let private = st.st_mode & 0o077 == 0 && st.st_nlink == 1;
        (regular && private && st.st_uid == nix::unistd::geteuid().as_raw()).then_some((dir, file))
    }

    /// Removes a room nobody is in (at a release).
    fn remove_if_empty(dir: BorrowedFd<'_>, location: &Location) {
        let name = Room::name(location);
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let Ok(file) = openat(dir, name.as_os_str(), flags, Perm::empty()) else {
            return;
        };
        if super::flock_fd(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB).is_ok() {
            remove_room(dir, &name, file.as_fd());
        }
    }
}

/// Unlinks the room `name` if it is still the file `file`.
fn remove_room(dir: BorrowedFd<'_>, name: &OsStr, file: BorrowedFd<'_>) {
    if FileId::of_fd(file)
        .ok()
        .is_some_and(|id| FileId::at(dir, name) == Some(id))
    {
        let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
    }
}

/// A waiter's turn in the room: its flock on the room file. Ending the turn
/// removes the room if it is still at its name, then gives the flock back
/// (the next queued waiter's turn).
struct Turn {
    dir: OwnedFd,
    name: OsString,
    file: OwnedFd,
}

impl Drop for Turn {
    fn drop(&mut self) {
        remove_room(self.dir.as_fd(), &self.name, self.file.as_fd());
    }
}

/// What waiting in the room came to.
enum Queued {
    /// This waiter's turn to watch the lock.
    Turn(Turn),
    /// The lock was found free and taken while queued.
    Won(Created),
}

/// Queues in the room `file` until it is this waiter's turn, looking at the
/// lock every [`ROOM_LOOK`] in case the waiter whose turn it is is stopped.
fn queue<A: Artifact>(
    artifact: &A,
    (dir, file): (OwnedFd, OwnedFd),
    waiter: &Waiter<'_>,
    stale_after: Option<Duration>,
    candidate: &mut Option<Candidate>,
    record: &mut HolderRecord,
) -> Result<Queued, Error> {
    let turn = |file| {
        Queued::Turn(Turn {
            dir,
            name: Room::name(artifact.location()),
            file,
        })
    };
    if super::flock_fd(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB).is_ok() {
        return Ok(turn(file));
    }
    // The thread's own copy keeps the open file description alive until the
    // thread ends, whatever the caller does with `file`.
    let Ok(copy) = file.try_clone() else {
        return Ok(turn(file));
    };
    let blocked = Interruptible::start(move |cancelled| {
        loop {
            match super::flock_fd(copy.as_raw_fd(), libc::LOCK_EX) {
                Err(Errno::EINTR) if !cancelled.load(Ordering::SeqCst) => continue,
                other => return other,
            }
        }
    });
    // No thread to spare: watch the lock like the first in the room.
    let Ok(mut blocked) = blocked else {
        return Ok(turn(file));
    };
    if let Ok(Some(holder)) = reclaim_if_stale(artifact, stale_after) {
        waiter.saw_holder(&holder.status);
    }
    loop {
        if let Err(gave_up) = waiter.pause(&[blocked.as_fd()], Some(ROOM_LOOK)) {
            blocked.cancel();
            return Err(gave_up);
        }
        if let Some(result) = blocked.try_result() {
            // Err: the room is unusable (no locks on this filesystem), so
            // watch the lock directly, as with no room at all.
            let _ = result;
            return Ok(turn(file));
        }
        // Judged as the watcher would, and reclaimed if stale: the watcher
        // may be stopped, or unable to judge (another pid namespace), or
        // without this waiter's --stale-after.
        match reclaim_if_stale(artifact, stale_after) {
            Ok(Some(holder)) => {
                waiter.saw_holder(&holder.status);
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                blocked.cancel();
                return Err(e);
            }
        }
        match attempt(artifact, candidate, record) {
            Ok(Attempt::Won(created)) => {
                blocked.cancel();
                return Ok(Queued::Won(created));
            }
            Ok(Attempt::Lost | Attempt::Again) => {}
            Err(e) => {
                blocked.cancel();
                return Err(e);
            }
        }
    }
}

/// What one attempt to take the lock came to.
enum Attempt {
    Won(Created),
    Lost,
    /// Try again at once (the candidate had to be made anew).
    Again,
}

/// Publishes the candidate, preparing it first if there is none yet.
fn attempt<A: Artifact>(
    artifact: &A,
    candidate: &mut Option<Candidate>,
    record: &mut HolderRecord,
) -> Result<Attempt, Error> {
    let dir = artifact.location().open_dir(artifact.lock())?;
    // The record says when the lock is taken, however long the wait was.
    record.stamp_now();
    let prepared = match candidate {
        Some(prepared) => {
            prepared.rewrite(artifact.lock(), record)?;
            prepared
        }
        None => candidate.insert(Candidate::prepare(artifact, dir.as_fd(), record)?),
    };
    match artifact.publish(dir.as_fd(), &prepared.temp, record)? {
        Published::Done => Ok(Attempt::Won(
            candidate.take().expect("just used").published(),
        )),
        Published::Taken => Ok(Attempt::Lost),
        Published::Gone => {
            *candidate = None;
            Ok(Attempt::Again)
        }
        Published::Made(created) => {
            *candidate = None;
            Ok(Attempt::Won(created))
        }
    }
}

/// A holder as a waiter judged it alive (or could not judge it).
struct Judged {
    id: FileId,
    /// Keeps the artifact's inode number from being reused, so that `id`
    /// names this artifact only.
    _artifact: OwnedFd,
    /// Readable when one of the holder's processes exits.
    exits: Vec<OwnedFd>,
    /// The holder as its record tells, for the waiting line.
    status: LockStatus,
}

/// A freshly created artifact, as [`acquire`] returns it.
pub struct Taken {
    record: HolderRecord,
    created: Created,
    /// The waiter's inotify watch, if it had to wait. Kept until the lock is
    /// released so that its slow close does not delay starting the command.
    watch: Option<NameWatch>,
    after_spawn: AfterSpawn,
}

/// What a waiter that has won keeps until its command is running, so that
/// giving it back is not between the release it waited for and the
/// command's start.
#[derive(Default)]
struct AfterSpawn {
    /// Its turn in the room: the next waiter's turn could not take the lock
    /// meanwhile anyway.
    _room: Option<Turn>,
    /// The last holder it judged: closing the fd of that holder's removed
    /// artifact can free its inode (ext4: a journal update).
    _judged: Option<Judged>,
}

/// Who holds a path-artifact lock, from its record.
pub fn status<A: Artifact>(artifact: &A) -> Result<LockStatus, Error> {
    let Some(fd) = artifact.open_existing()? else {
        // Free, if it could be created: -n in a missing directory exits 66.
        let parent = artifact
            .path()
            .parent()
            .filter(|p| !p.as_os_str().is_empty());
        if parent.is_some_and(|p| !p.is_dir()) {
            return Err(Error::open(artifact.lock(), Errno::ENOENT));
        }
        return Ok(LockStatus::default());
    };
    let record = artifact.read_record(fd.as_fd());
    // As a reclaimer judges it; the probe's flock goes with the fd.
    let stale = record.as_ref().map(HolderRecord::liveness) == Some(Liveness::Dead)
        && try_flock(fd.as_fd()).is_ok();
    Ok(LockStatus {
        held: true,
        shared: false,
        holders: record.iter().map(HolderInfo::of_record).collect(),
        stale,
        // An artifact others may write to (a lock directory made with
        // umask 000) may hold a record anyone wrote: its owner vouches for
        // nothing.
        owner_uid: fstat(fd.as_fd())
            .ok()
            .filter(|st| st.st_mode & 0o022 == 0)
            .map(|st| st.st_uid),
        range: None,
        ..LockStatus::default()
    })
}

/// A held lock whose record says `record`, for the waiting line.
fn held_by(record: Option<&HolderRecord>) -> LockStatus {
    LockStatus {
        held: true,
        holders: record.into_iter().map(HolderInfo::of_record).collect(),
        ..LockStatus::default()
    }
}

/// Removes the artifact if its holder is provably gone. Returns None when
/// the caller should retry at once (removed, or vanished meanwhile), else
/// the holder as judged.
fn reclaim_if_stale<A: Artifact>(
    artifact: &A,
    stale_after: Option<Duration>,
) -> Result<Option<Judged>, Error> {
    let Some(fd) = artifact.open_existing()? else {
        return Ok(None);
    };
    let lock_failed = |errno| Error::os(artifact.lock(), "cannot examine the lock", errno);
    let id = FileId::of_fd(fd.as_fd()).map_err(lock_failed)?;
    let record = artifact.read_record(fd.as_fd());
    if !is_stale(record.as_ref(), fd.as_fd(), stale_after) {
        return Ok(Some(Judged {
            id,
            exits: record
                .as_ref()
                .map(HolderRecord::exit_watchers)
                .unwrap_or_default(),
            status: held_by(record.as_ref()),
            _artifact: fd,
        }));
    }
    // Serialise reclaimers on the artifact itself; the loser retries and finds
    // either a new lock or nothing. A live owner's guard fails this too.
    match try_flock(fd.as_fd()) {
        Ok(()) => {}
        Err(Errno::EWOULDBLOCK) => {
            return Ok(Some(Judged {
                id,
                exits: Vec::new(),
                status: held_by(record.as_ref()),
                _artifact: fd,
            }));
        }
        Err(e) => return Err(lock_failed(e)),
    }
    let record = artifact.read_record(fd.as_fd());
    if FileId::of_path(artifact.location().path()) == Some(id)
        && is_stale(record.as_ref(), fd.as_fd(), stale_after)
    {
        artifact.remove(id)?;
    }
    Ok(None)
}

/// Whether a recorded holder may be taken over: provably dead, or (with
/// `--stale-after`) of unknown fate and older than the limit. A provably
/// alive holder never is, however old; the caller's flock on the artifact
/// also fails while the holder's guard is held.
fn is_stale(
    record: Option<&HolderRecord>,
    fd: BorrowedFd<'_>,
    stale_after: Option<Duration>,
) -> bool {
    match record.map(HolderRecord::liveness) {
        Some(Liveness::Dead) => return true,
        Some(Liveness::Alive) => return false,
        Some(Liveness::Unknown) | None => {}
    }
    let Some(limit) = stale_after else {
        return false;
    };
    let age = match record {
        Some(r) => r.age(),
        None => fstat(fd)
            .ok()
            .and_then(|st| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .ok()
                    .map(|now| (st, now))
            })
            .map(
                |(st, now)| Duration::from_secs((now.as_secs() as i64 - st.st_mtime).max(0) as u64),
            )
            .unwrap_or_default(),
    };
    age > limit
}

/// flock(LOCK_EX|LOCK_NB) on an artifact's fd, used only to serialise reclaimers.
fn try_flock(fd: BorrowedFd<'_>) -> nix::Result<()> {
    super::flock_fd(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)
}

/// Writes `record` to a new file `dir/name` (created exclusively, never
/// through a symlink, mode 0644 less umask) and returns it open for writing.
/// On failure nothing is left: a file it could not fill is unlinked.
pub fn create_record(
    lock: &str,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    record: &HolderRecord,
) -> Result<OwnedFd, Error> {
    let flags =
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Perm::from_bits_truncate(0o644))
        .map_err(|e| Error::open(lock, e))?;
    let mut file = std::fs::File::from(fd);
    if let Err(e) = file.write_all(record.encode().as_bytes()) {
        let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
        return Err(Error::os(
            lock,
            "cannot write the holder record",
            io_errno(&e),
        ));
    }
    Ok(OwnedFd::from(file))
}

/// Appends to the record in `fd` what `after` has beyond `before` (the
/// command's lines, see [`HolderRecord::encode`]). On failure the record is
/// cut back to `before`, so it stays complete.
fn append_to_record(
    lock: &str,
    fd: BorrowedFd<'_>,
    before: &str,
    after: &str,
) -> Result<(), Error> {
    let mut offset = before.len();
    let mut rest = &after.as_bytes()[offset..];
    while !rest.is_empty() {
        match nix::sys::uio::pwrite(fd, rest, offset as i64) {
            Ok(0) => return Err(cut_back(lock, fd, before, Errno::ENOSPC)),
            Ok(n) => {
                offset += n;
                rest = &rest[n..];
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(cut_back(lock, fd, before, e)),
        }
    }
    Ok(())
}

fn cut_back(lock: &str, fd: BorrowedFd<'_>, before: &str, errno: Errno) -> Error {
    let _ = ftruncate(fd, before.len() as i64);
    Error::os(
        lock,
        "cannot record the command in the holder record",
        errno,
    )
}

/// Reads a holder record through an fd, from the start: up to
/// [`holder::MAX_RECORD`] bytes, more is not a record lockwrap wrote.
pub fn read_record_fd(fd: BorrowedFd<'_>) -> Option<HolderRecord> {
    let mut text = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match nix::sys::uio::pread(fd, &mut chunk, text.len() as i64) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&chunk[..n]),
            Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
        if text.len() > holder::MAX_RECORD {
            return None;
        }
    }
    HolderRecord::parse(std::str::from_utf8(&text).ok()?)
}

/// The owner of a temp name: `.NAME.lockwrap-BOOT-PIDNS-PID-START-SEQ.tmp`
/// (BOOT: the first 8 characters of the boot id). A leftover whose owner is
/// provably gone (this boot and pid namespace, and no process with that pid
/// and start time) may be removed by anyone; one from elsewhere is left.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TempName {
    boot: String,
    pid_ns: u64,
    pid: i32,
    start: u64,
    seq: u64,
}

/// How much of the lock's name a temp name carries: with the other fields
/// (at most 87 bytes) it stays under NAME_MAX (255).
const TEMP_NAME_PART: usize = 160;

impl TempName {
    fn for_this_process() -> TempName {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id() as i32;
        // Unique across runs of a reused pid too (with the start time), and
        // across names made in one run.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
        TempName {
            boot: boot_prefix(),
            pid_ns: holder::pid_namespace(),
            pid,
            start: holder::own_start_time().unwrap_or(0),
            seq: nanos.wrapping_mul(1000) + SEQ.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn prefix(name: &OsStr) -> Vec<u8> {
        let name = name.as_bytes();
        let mut prefix = b".".to_vec();
        prefix.extend_from_slice(&name[..name.len().min(TEMP_NAME_PART)]);
        prefix.extend_from_slice(b".lockwrap-");
        prefix
    }

    fn name_for(&self, name: &OsStr) -> OsString {
        let mut bytes = TempName::prefix(name);
        bytes.extend_from_slice(
            format!(
                "{}-{}-{}-{}-{}.tmp",
                self.boot, self.pid_ns, self.pid, self.start, self.seq
            )
            .as_bytes(),
        );
        OsString::from_vec(bytes)
    }

    /// The owner of `entry` if it is a temp name of the artifact `name`.
    fn parse(name: &OsStr, entry: &OsStr) -> Option<TempName> {
        let rest = entry.as_bytes().strip_prefix(&TempName::prefix(name)[..])?;
        let rest = std::str::from_utf8(rest.strip_suffix(b".tmp")?).ok()?;
        let mut fields = rest.split('-');
        let owner = TempName {
            boot: fields.next()?.to_owned(),
            pid_ns: fields.next()?.parse().ok()?,
            pid: fields.next()?.parse().ok()?,
            start: fields.next()?.parse().ok()?,
            seq: fields.next()?.parse().ok()?,
        };
        fields.next().is_none().then_some(owner)
    }

    /// Some(true) when the owner's pid no longer exists (same boot and pid
    /// namespace), None when that alone cannot tell.
    fn pid_is_gone(&self) -> Option<bool> {
        let here = self.boot == boot_prefix() && self.pid_ns == holder::pid_namespace();
        if !here || self.start == 0 || self.pid <= 0 {
            return None;
        }
        // Signal 0 sends nothing; ESRCH: no such process.
        let probe = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), None);
        matches!(probe, Err(Errno::ESRCH)).then_some(true)
    }

    fn owner_is_gone(&self) -> bool {
        self.boot == boot_prefix()
            && self.pid_ns == holder::pid_namespace()
            && self.start != 0
            && !holder::is_running(self.pid, self.start)
    }
}

fn boot_prefix() -> String {
    holder::boot_id().chars().take(8).collect()
}

/// How many temp names one sweep judges at most.
const MAX_JUDGED_PER_SWEEP: usize = 32;

/// Removes the temp names beside the artifact that killed processes left
/// (see [`TempName`]). Best effort: what cannot be removed is left.
fn sweep_leftovers(location: &Location, lock: &str) {
    let Ok(dir) = location.open_dir(lock) else {
        return;
    };
    Room::remove_if_empty(dir.as_fd(), location);
    // Listed through the fd (not the path, which could be swapped).
    let Ok(entries) = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
        return;
    };
    // A name whose owner's pid is gone goes at once (one kill(2) each).
    // Judging a live pid's name reads /proc; names planted to look like a
    // live process's must not make every release slow, so only so many of
    // those are judged per release (after the ones whose pid is gone, so
    // that they cannot hide a dead waiter's leftovers either).
    let mut judged = 0;
    for entry in entries.flatten().map(|entry| entry.file_name()) {
        let Some(owner) = TempName::parse(&location.name, &entry) else {
            continue;
        };
        let gone = match owner.pid_is_gone() {
            Some(gone) => gone,
            None if judged < MAX_JUDGED_PER_SWEEP => {
                judged += 1;
                owner.owner_is_gone()
            }
            None => false,
        };
        // Every artifact keeps its owner's flock (the guard) for the
        // owner's life: a held one proves the owner alive whatever the pid
        // says (a /proc mounted with hidepid hides other users' processes).
        if gone && !guard_is_held(dir.as_fd(), &entry) {
            let _ = remove_temp(dir.as_fd(), &entry);
        }
    }
}

/// Whether someone holds the flock of the entry `name` in `dir` (an
/// artifact's guard). An entry that cannot be opened tells nothing: false.
fn guard_is_held(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    let Ok(fd) = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Perm::empty(),
    ) else {
        return false;
    };
    // The probe's flock, if it got one, goes with the fd.
    matches!(try_flock(fd.as_fd()), Err(Errno::EWOULDBLOCK))
}

/// Removes the temp `name` in `dir`: a file, or a lock
/// directory with its record.
fn remove_temp(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    let st: FileStat = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR {
        remove_lock_dir(dir, name)
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
    }
}

/// Removes the lock directory `name` in `dir`: its record,
/// temp records an older lockwrap left in it, and the directory. ENOTEMPTY
/// when it holds anything else.
pub fn remove_lock_dir(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    let inner = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Perm::empty(),
    )?;
    // Remove anything only if every entry is lockwrap's own: the record and
    // temp records an older lockwrap left. Anything else means the directory
    // is not ours to empty, and the record stays, so that the lock keeps its
    // owner instead of becoming "owner unknown".
    // Listed through the fd (not the path, which could be swapped).
    let listing = std::fs::read_dir(format!("/proc/self/fd/{}", inner.as_raw_fd()))
        .map_err(|e| io_errno(&e))?;
    let mut ours = Vec::new();
    for entry in listing.flatten().map(|e| e.file_name()) {
        let bytes = entry.as_bytes();
        let temp_record = bytes.starts_with(b".holder.lockwrap-") && bytes.ends_with(b".tmp");
        if !temp_record && bytes != DIR_RECORD.as_bytes() {
            return Err(Errno::ENOTEMPTY);
        }
        ours.push(entry);
    }
    for entry in ours {
        match unlinkat(inner.as_fd(), entry.as_os_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

/// The error for an artifact that is no longer the one that was judged: the
/// lock's directory or entry was swapped meanwhile. Nothing is removed.
pub fn replaced(lock: &str) -> Error {
    Error::Artifact {
        lock: lock.to_owned(),
        reason: "the lock was replaced by someone else while being removed; left as it is".into(),
    }
}

/// Renames the artifact `id` at `location` to a fresh temp name of this
/// process and returns that name (None: nothing was there). Once renamed,
/// the lock is free, whenever this process dies; the temp name tells who may
/// clean up. If what was renamed is not `id` (swapped in between), it is put
/// back and nothing else happens.
pub fn rename_away(
    lock: &str,
    dir: BorrowedFd<'_>,
    location: &Location,
    id: FileId,
) -> Result<Option<OsString>, Error> {
    match FileId::at(dir, location.name()) {
        None => return Ok(None),
        Some(found) if found != id => return Err(replaced(lock)),
        Some(_) => {}
    }
    let away = location.temp_name();
    let renamed = match rename_noreplace(dir, location.name(), away.as_os_str()) {
        Err(Errno::EINVAL | Errno::ENOSYS) => renameat(dir, location.name(), dir, away.as_os_str()),
        other => other,
    };
    match renamed {
        Ok(()) if FileId::at(dir, away.as_os_str()) != Some(id) => {
            let _ = rename_noreplace(dir, away.as_os_str(), location.name());
            Err(replaced(lock))
        }
        Ok(()) => Ok(Some(away)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e @ (Errno::EACCES | Errno::EPERM)) => Err(Error::open(lock, e)),
        Err(e) => Err(Error::os(lock, "cannot remove the lock", e)),
    }
}

/// renameat2(RENAME_NOREPLACE) of `from` to `to`, both in `dir`: fails
/// with EEXIST instead of replacing `to`, and with EINVAL or ENOSYS where
/// the filesystem or kernel lacks the flag. nix wraps renameat2 for glibc
/// only; the raw system call works with every libc (musl for the static
/// release builds).
pub fn rename_noreplace(dir: BorrowedFd<'_>, from: &OsStr, to: &OsStr) -> nix::Result<()> {
    from.with_nix_path(|from| {
        to.with_nix_path(|to| {
            // SAFETY: two NUL-terminated paths that outlive the call, a
            // borrowed (so open) directory fd, and a flag; nothing is
            // written through any pointer.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    dir.as_raw_fd(),
                    from.as_ptr(),
                    dir.as_raw_fd(),
                    to.as_ptr(),
                    libc::RENAME_NOREPLACE,
                )
            };
            Errno::result(rc).map(drop)
        })
    })??
}

/// Opens a directory for *at() calls.
pub fn open_dir(lock: &str, dir: &Path) -> Result<OwnedFd, Error> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Perm::empty(),
    )
    .map_err(|e| Error::open(lock, e))
}

/// The errno inside an io::Error, for messages.
pub fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// A held mkdir or excl lock: removes its artifact on release, but only if
/// the path still names the artifact it created.
pub struct ArtifactHeld<A: Artifact> {
    artifact: A,
    record: HolderRecord,
    id: FileId,
    guard: OwnedFd,
    record_fd: Option<OwnedFd>,
    released: bool,
    /// Dropped after the artifact is removed (fields drop after `Drop::drop`).
    _watch: Option<NameWatch>,
    /// Dropped once the command runs, or at the release.
    after_spawn: Option<AfterSpawn>,
}

impl<A: Artifact> ArtifactHeld<A> {
    /// Wraps a freshly created artifact.
    pub fn new(artifact: A, taken: Taken) -> ArtifactHeld<A> {
        ArtifactHeld {
            artifact,
            record: taken.record,
            id: taken.created.id,
            guard: taken.created.guard,
            record_fd: taken.created.record,
            released: false,
            _watch: taken.watch,
            after_spawn: Some(taken.after_spawn),
        }
    }

    fn remove_if_ours(&mut self) -> Result<(), Error> {
        if std::mem::replace(&mut self.released, true) {
            return Ok(());
        }
        let location = self.artifact.location();
        if FileId::of_path(location.path()) != Some(self.id) {
            return Err(Error::Artifact {
                lock: self.artifact.lock().to_owned(),
                reason:
                    "the lock was removed or replaced by someone else while held; left as it is"
                        .into(),
            });
        }
        let removed = self.artifact.remove(self.id);
        sweep_leftovers(location, self.artifact.lock());
        removed
    }
}

impl<A: Artifact + Send> super::Held for ArtifactHeld<A> {
    fn lock_fds(&self) -> Vec<BorrowedFd<'_>> {
        vec![self.guard.as_fd()]
    }

    fn child_started(&mut self, child: nix::unistd::Pid) -> Result<(), Error> {
        let pid = child.as_raw();
        let start = holder::process_start_time(pid).unwrap_or(0);
        let before = self.record.encode();
        let mut record = self.record.clone();
        record.child = Some((pid, start));
        let fd = self.record_fd.as_ref().unwrap_or(&self.guard);
        append_to_record(self.artifact.lock(), fd.as_fd(), &before, &record.encode())?;
        self.record = record;
        Ok(())
    }

    fn command_started(&mut self) {
        self.after_spawn = None;
    }

    fn release(mut self: Box<Self>) -> Result<(), Error> {
        self.remove_if_ours()
    }
}

impl<A: Artifact> Drop for ArtifactHeld<A> {
    fn drop(&mut self) {
        let _ = self.remove_if_ours();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_name_their_owner_and_only_their_artifact() {
        let location = Location::new(Path::new("/var/lock/deploy.lock"));
        let temp = location.temp_name();
        let owner = TempName::parse(location.name(), &temp).unwrap();
        assert_eq!(owner.pid, std::process::id() as i32);
        assert!(!owner.owner_is_gone());
        assert!(TempName::parse(OsStr::new("deploy"), &temp).is_none());
        assert!(TempName::parse(location.name(), OsStr::new("deploy.lock")).is_none());
        let long = OsString::from("x".repeat(250));
        assert!(Location::new(Path::new(&long)).temp_name().len() <= 255);
    }

    #[test]
    fn a_trailing_slash_names_the_same_artifact_and_the_root_none() {
        assert_eq!(Location::new(Path::new("/tmp/x/")).name(), "x");
        assert_eq!(Location::new(Path::new("/")).name(), "");
        assert_eq!(Location::new(Path::new("..")).name(), "");
    }
}
