//! mkdir locks: the lock is a directory, so shell scripts that lock with a
//! plain `mkdir PATH` exclude lockwrap and vice versa. The holder record
//! lives in the directory; a directory without one is "held, owner unknown".
//!
//! The directory is prepared under a temp name beside the lock (record
//! written, guard taken) and published with renameat2(RENAME_NOREPLACE),
//! which is as exclusive as mkdir(2) and never lets anyone see it without
//! its record. Releasing renames it away to a temp name before emptying it.
//! On a filesystem without RENAME_NOREPLACE lockwrap falls back to mkdir(2)
//! at the lock path and writing the record into it; there a SIGKILL between
//! the two leaves a directory without a record.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode as Perm, mkdirat};

use super::file_line::FileLine;
use super::path_artifact::{
    self, Artifact, ArtifactHeld, Created, DIR_RECORD, FileId, Location, Published,
};
use super::{Backend, Held, Line, LockStatus, Request};
use crate::error::Error;
use crate::holder::HolderRecord;
use crate::wait::Waiter;

/// A lock directory.
#[derive(Debug, Clone)]
pub struct MkdirLock {
    lock: String,
    location: Location,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl MkdirLock {
    /// A lock directory at `path`.
    pub fn new(lock: String, path: PathBuf) -> MkdirLock {
        MkdirLock {
            lock,
            location: Location::new(&path),
        }
    }

    fn open_self(&self) -> Result<OwnedFd, Errno> {
        open(self.location.path(), DIR_FLAGS, Perm::empty())
    }

    /// Makes the directory `name` in `dir` with its record and guard.
    fn make(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        record: &HolderRecord,
    ) -> Result<Created, Error> {
        mkdirat(dir, name, Perm::from_bits_truncate(0o755))
            .map_err(|e| Error::open(&self.lock, e))?;
        let made = openat(dir, name, DIR_FLAGS, Perm::empty())
            .map_err(|e| Error::open(&self.lock, e))
            .and_then(|fd| {
                path_artifact::guard(&self.lock, fd.as_fd())?;
                let record = path_artifact::create_record(
                    &self.lock,
                    fd.as_fd(),
                    DIR_RECORD.as_ref(),
                    record,
                )?;
                let id = FileId::of_fd(fd.as_fd()).map_err(|e| Error::open(&self.lock, e))?;
                Ok(Created {
                    id,
                    guard: fd,
                    record: Some(record),
                })
            });
        if made.is_err() {
            let _ = path_artifact::remove_lock_dir(dir, name);
        }
        made
    }
}

impl Backend for MkdirLock {
    fn acquire(&self, request: &Request<'_>, waiter: &Waiter<'_>) -> Result<Box<dyn Held>, Error> {
        if self.location.name().is_empty() {
            return Err(Error::Usage(format!(
                "{}: a mkdir lock needs a path that ends in a name (not / or ..)",
                self.lock
            )));
        }
        let taken = path_artifact::acquire(self, request, waiter)?;
        Ok(Box::new(ArtifactHeld::new(self.clone(), taken)))
    }

    fn status(&self) -> Result<LockStatus, Error> {
        path_artifact::status(self)
    }

    fn reclaims_unknown_owners(&self) -> bool {
        true
    }

    fn line(&self) -> Option<Box<dyn Line>> {
        FileLine::new(&self.lock, self.location.clone()).map(|l| Box::new(l) as Box<dyn Line>)
    }
}

impl Artifact for MkdirLock {
    fn lock(&self) -> &str {
        &self.lock
    }

    fn location(&self) -> &Location {
        &self.location
    }

    fn prepare(
        &self,
        dir: BorrowedFd<'_>,
        temp: &OsStr,
        record: &HolderRecord,
    ) -> Result<Created, Error> {
        self.make(dir, temp, record)
    }

    fn publish(
        &self,
        dir: BorrowedFd<'_>,
        temp: &OsStr,
        record: &HolderRecord,
    ) -> Result<Published, Error> {
        let name = self.location.name();
        match path_artifact::rename_noreplace(dir, temp, name) {
            Ok(()) => Ok(Published::Done),
            Err(Errno::EEXIST | Errno::ENOTEMPTY) => Ok(Published::Taken),
            Err(Errno::ENOENT) => Ok(Published::Gone),
            // No RENAME_NOREPLACE here: mkdir(2) at the lock path itself.
            Err(Errno::EINVAL | Errno::ENOSYS) => match self.make(dir, name, record) {
                Err(Error::Open {
                    errno: Errno::EEXIST,
                    ..
                }) => Ok(Published::Taken),
                other => other.map(Published::Made),
            },
            Err(e) => Err(Error::open(&self.lock, e)),
        }
    }

    fn open_existing(&self) -> Result<Option<OwnedFd>, Error> {
        match self.open_self() {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT) => Ok(None),
            Err(Errno::ELOOP) => Err(symlink_refused(&self.lock)),
            Err(Errno::ENOTDIR) if std::fs::symlink_metadata(self.location.path()).is_ok_and(|m| m.is_symlink()) => {
                Err(symlink_refused(&self.lock))
            }
            Err(Errno::ENOTDIR) => Err(Error::Artifact {
                lock: self.lock.clone(),
                reason: "exists and is not a directory (mkdir: locks are directories; choose another path)".into(),
            }),
            Err(e) => Err(Error::open(&self.lock, e)),
        }
    }

    fn read_record(&self, dir: BorrowedFd<'_>) -> Option<HolderRecord> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let fd = openat(dir, DIR_RECORD, flags, Perm::empty()).ok()?;
        path_artifact::read_record_fd(fd.as_fd())
    }

    fn remove(&self, id: FileId) -> Result<(), Error> {
        let dir = self.location.open_dir(&self.lock)?;
        let Some(away) = path_artifact::rename_away(&self.lock, dir.as_fd(), &self.location, id)?
        else {
            return Ok(());
        };
        match path_artifact::remove_lock_dir(dir.as_fd(), &away) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(Errno::ENOTEMPTY | Errno::EEXIST) => {
                // Someone else's files: put the directory back, as it was found.
                let name = self.location.name();
                let _ = path_artifact::rename_noreplace(dir.as_fd(), away.as_os_str(), name);
                Err(Error::Artifact {
                    lock: self.lock.clone(),
                    reason: "lock directory not removed: it holds files lockwrap did not create (remove them by hand)".into(),
                })
            }
            Err(e) => Err(Error::os(&self.lock, "cannot remove the lock directory", e)),
        }
    }
}

fn symlink_refused(lock: &str) -> Error {
    Error::Artifact {
        lock: lock.to_owned(),
        reason: "is a symlink; lockwrap never follows a symlink at a lock path (remove it or choose another path)".into(),
    }
}
