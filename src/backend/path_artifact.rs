//! What the two path-artifact backends (mkdir and excl) share: publishing a
//! holder record without a reader ever seeing half of it, waiting for the
//! artifact to go away with inotify, and reclaiming a stale artifact so that
//! exactly one of several racing reclaimers wins.
//!
//! The owner keeps a flock(2) on its artifact for as long as it holds the
//! lock, through an fd the command inherits (unless -o) and that survives
//! exec (-F). So a lock whose wrapper was SIGKILLed right after spawning,
//! before its record could name the command, is still seen as held: the
//! record may say "dead", the kernel's flock says "alive".
//!
//! Reclaim protocol: a reclaimer opens the artifact (never following a
//! symlink), reads the record through that fd and judges it; if the holder is
//! provably dead it takes flock(LOCK_EX|LOCK_NB) on that same fd, checks that
//! the path still names the same inode, and only then removes it. Creating
//! stays lock-free (mkdir and link are atomic) and only a dead owner's
//! artifact is ever removed by someone else, so a reclaimer that arrives late
//! finds a different inode (its open fd keeps the old inode number from being
//! reused) and leaves the new lock alone.

use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode as Perm, fstat};

use super::{HolderInfo, LockStatus, Request};
use crate::error::Error;
use crate::holder::{HolderRecord, Liveness};
use crate::wait::{NameWatch, Waiter, poll_readable};

/// How often a waiter re-examines a held artifact when no event woke it:
/// to notice a holder that died without removing it, or a release on NFS.
const RECHECK_WITH_WATCH: Duration = Duration::from_millis(500);
/// The same, when inotify is unavailable (too many instances, odd filesystem).
const RECHECK_WITHOUT_WATCH: Duration = Duration::from_millis(50);

/// One kind of path artifact: how it is created, read and removed.
pub trait Artifact {
    /// The lock as the user wrote it.
    fn lock(&self) -> &str;
    /// Where the artifact lives.
    fn path(&self) -> &Path;
    /// Creates the artifact atomically, carrying `record` and flock'd by the
    /// returned fd. Ok(None) when it already exists.
    fn try_create(&self, record: &HolderRecord) -> Result<Option<Created>, Error>;
    /// Opens an existing artifact for inspection without following symlinks.
    /// Ok(None) when it vanished meanwhile; an error when the path holds
    /// something this backend must not touch.
    fn open_existing(&self) -> Result<Option<OwnedFd>, Error>;
    /// The record of an opened artifact (None: no complete record).
    fn read_record(&self, artifact: BorrowedFd<'_>) -> Option<HolderRecord>;
    /// Replaces the record of a held artifact; returns its new identity.
    fn rewrite_record(&self, current: FileId, record: &HolderRecord) -> Result<FileId, Error>;
    /// Removes the artifact known by `id`; the caller has checked it is the one at the path.
    fn remove(&self, id: FileId) -> Result<(), Error>;
}

/// A freshly created artifact.
pub struct Created {
    /// Which inode it is.
    pub id: FileId,
    /// An fd on it holding flock(LOCK_EX): the owner is alive while any copy
    /// of this fd is open.
    pub guard: OwnedFd,
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
/// otherwise wait for an inotify event or the recheck interval.
pub fn acquire<A: Artifact>(
    artifact: &A,
    request: &Request<'_>,
    waiter: &Waiter<'_>,
) -> Result<Taken, Error> {
    let record = HolderRecord::for_this_process(request.command);
    // The watch is set up only once a wait is needed: closing an inotify
    // instance that had a watch costs milliseconds (the kernel waits for an
    // SRCU grace period), which an uncontended run should not pay. An
    // attempt follows it at once, so a release in between is not missed.
    let mut watch: Option<NameWatch> = None;
    let mut watch_tried = waiter.is_nonblocking();
    loop {
        if let Some(created) = artifact.try_create(&record)? {
            return Ok(Taken {
                record,
                created,
                watch,
            });
        }
        let Some(holder_exits) = reclaim_if_stale(artifact, request.stale_after)? else {
            continue;
        };
        if !watch_tried {
            watch_tried = true;
            watch = NameWatch::new(artifact.path()).ok();
            continue;
        }
        // Wake on a release (inotify) or on the death of the holder's
        // processes (pidfds), which leaves a stale lock to reclaim; look
        // again anyway after the recheck interval.
        let exits: Vec<BorrowedFd<'_>> = holder_exits.iter().map(AsFd::as_fd).collect();
        match &watch {
            Some(watch) => {
                let recheck_at = Instant::now() + RECHECK_WITH_WATCH;
                let mut wake = exits.clone();
                wake.push(watch.as_fd());
                loop {
                    let left = recheck_at.saturating_duration_since(Instant::now());
                    waiter.pause(&wake, Some(left))?;
                    let exited = poll_readable(&exits, Some(Duration::ZERO))
                        .is_ok_and(|ready| ready.contains(&true));
                    if watch.drain() || exited || Instant::now() >= recheck_at {
                        break;
                    }
                }
            }
            None => waiter.pause(&exits, Some(RECHECK_WITHOUT_WATCH))?,
        }
    }
}

/// A freshly created artifact, as [`acquire`] returns it.
pub struct Taken {
    record: HolderRecord,
    created: Created,
    /// The waiter's inotify watch, if it had to wait. Kept until the lock is
    /// released so that its slow close does not delay starting the command.
    watch: Option<NameWatch>,
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
        owner_uid: fstat(fd.as_fd()).ok().map(|st| st.st_uid),
    })
}

/// Removes the artifact if its holder is provably gone. Returns None when
/// the caller should retry at once (removed, or vanished meanwhile), else
/// fds that become readable when the holder's processes exit.
fn reclaim_if_stale<A: Artifact>(
    artifact: &A,
    stale_after: Option<Duration>,
) -> Result<Option<Vec<OwnedFd>>, Error> {
    let Some(fd) = artifact.open_existing()? else {
        return Ok(None);
    };
    let lock_failed = |errno| Error::os(artifact.lock(), "cannot examine the lock", errno);
    let id = FileId::of_fd(fd.as_fd()).map_err(lock_failed)?;
    let record = artifact.read_record(fd.as_fd());
    if !is_stale(record.as_ref(), fd.as_fd(), stale_after) {
        return Ok(Some(record.map(|r| r.exit_watchers()).unwrap_or_default()));
    }
    // Serialise reclaimers on the artifact itself; the loser retries and finds
    // either a new lock or nothing. A live owner's guard fails this too.
    match try_flock(fd.as_fd()) {
        Ok(()) => {}
        Err(Errno::EWOULDBLOCK) => return Ok(Some(Vec::new())),
        Err(e) => return Err(lock_failed(e)),
    }
    let record = artifact.read_record(fd.as_fd());
    if FileId::of_path(artifact.path()) == Some(id)
        && is_stale(record.as_ref(), fd.as_fd(), stale_after)
    {
        artifact.remove(id)?;
    }
    Ok(None)
}

fn is_stale(
    record: Option<&HolderRecord>,
    fd: BorrowedFd<'_>,
    stale_after: Option<Duration>,
) -> bool {
    if record.map(HolderRecord::liveness) == Some(Liveness::Dead) {
        return true;
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
/// through a symlink, mode 0644 less umask), ready to be linked or renamed
/// into place. The caller removes or renames it; the fd is returned open.
pub fn write_temp_record(
    lock: &str,
    dir: BorrowedFd<'_>,
    name: &Path,
    record: &HolderRecord,
) -> Result<OwnedFd, Error> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(dir, name, flags, Perm::from_bits_truncate(0o644))
        .map_err(|e| Error::open(lock, e))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(record.encode().as_bytes())
        .map_err(|e| Error::os(lock, "cannot write the holder record", io_errno(&e)))?;
    Ok(OwnedFd::from(file))
}

/// A name for a temporary file that no other process picks.
pub fn temp_name(prefix: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    PathBuf::from(format!(
        "{prefix}.lockwrap-{}-{nanos}.tmp",
        std::process::id()
    ))
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

/// Reads a small file through an fd, from the start.
pub fn read_fd_to_string(fd: BorrowedFd<'_>) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    let n = nix::sys::uio::pread(fd, &mut buf, 0).ok()?;
    buf.truncate(n);
    String::from_utf8(buf).ok()
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
    released: bool,
    /// Dropped after the artifact is removed (fields drop after `Drop::drop`).
    _watch: Option<NameWatch>,
}

impl<A: Artifact> ArtifactHeld<A> {
    /// Wraps a freshly created artifact.
    pub fn new(artifact: A, taken: Taken) -> ArtifactHeld<A> {
        ArtifactHeld {
            artifact,
            record: taken.record,
            id: taken.created.id,
            guard: taken.created.guard,
            released: false,
            _watch: taken.watch,
        }
    }

    fn remove_if_ours(&mut self) -> Result<(), Error> {
        if std::mem::replace(&mut self.released, true) {
            return Ok(());
        }
        if FileId::of_path(self.artifact.path()) != Some(self.id) {
            return Err(Error::Artifact {
                lock: self.artifact.lock().to_owned(),
                reason:
                    "the lock was removed or replaced by someone else while held; left as it is"
                        .into(),
            });
        }
        self.artifact.remove(self.id)
    }
}

impl<A: Artifact> super::Held for ArtifactHeld<A> {
    fn lock_fds(&self) -> Vec<BorrowedFd<'_>> {
        vec![self.guard.as_fd()]
    }

    fn child_started(&mut self, child: nix::unistd::Pid) -> Result<(), Error> {
        let pid = child.as_raw();
        let start = crate::holder::process_start_time(pid).unwrap_or(0);
        self.record.child = Some((pid, start));
        self.id = self.artifact.rewrite_record(self.id, &self.record)?;
        Ok(())
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
