//! mkdir locks: the lock is a directory created with mkdir(2), which is
//! atomic everywhere (NFS included), so shell scripts that lock with a plain
//! `mkdir PATH` exclude lockwrap and vice versa. The holder record lives in
//! the directory; a directory without one is "held, owner unknown".

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat, renameat};
use nix::sys::stat::Mode as Perm;
use nix::unistd::mkdir;
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::path_artifact::{self, Artifact, ArtifactHeld, Created, FileId};
use super::{Backend, Held, LockStatus, Request};
use crate::error::Error;
use crate::holder::HolderRecord;
use crate::wait::Waiter;

/// The holder record's name inside the lock directory.
const RECORD: &str = "lockwrap-holder";

/// A lock directory.
#[derive(Debug, Clone)]
pub struct MkdirLock {
    lock: String,
    path: PathBuf,
}

impl MkdirLock {
    /// A lock directory at `path`.
    pub fn new(lock: String, path: PathBuf) -> MkdirLock {
        MkdirLock { lock, path }
    }

    fn open_self(&self) -> Result<OwnedFd, Errno> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        open(&self.path, flags, Perm::empty())
    }

    fn publish_record(&self, dir: BorrowedFd<'_>, record: &HolderRecord) -> Result<(), Error> {
        let temp = path_artifact::temp_name(".holder");
        path_artifact::write_temp_record(&self.lock, dir, &temp, record)?;
        renameat(dir, &temp, dir, RECORD).map_err(|e| {
            let _ = unlinkat(dir, &temp, UnlinkatFlags::NoRemoveDir);
            Error::os(&self.lock, "cannot write the holder record", e)
        })
    }
}

impl Backend for MkdirLock {
    fn acquire(&self, request: &Request<'_>, waiter: &Waiter<'_>) -> Result<Box<dyn Held>, Error> {
        let taken = path_artifact::acquire(self, request, waiter)?;
        Ok(Box::new(ArtifactHeld::new(self.clone(), taken)))
    }

    fn status(&self) -> Result<LockStatus, Error> {
        path_artifact::status(self)
    }

    fn reclaims_unknown_owners(&self) -> bool {
        true
    }
}

impl Artifact for MkdirLock {
    fn lock(&self) -> &str {
        &self.lock
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn try_create(&self, record: &HolderRecord) -> Result<Option<Created>, Error> {
        match mkdir(&self.path, Perm::from_bits_truncate(0o755)) {
            Ok(()) => {}
            Err(Errno::EEXIST) => return Ok(None),
            Err(e) => return Err(Error::open(&self.lock, e)),
        }
        let published = self
            .open_self()
            .map_err(|e| Error::open(&self.lock, e))
            .and_then(|dir| {
                path_artifact::guard(&self.lock, dir.as_fd())?;
                self.publish_record(dir.as_fd(), record)?;
                let id = FileId::of_fd(dir.as_fd()).map_err(|e| Error::open(&self.lock, e))?;
                Ok(Created { id, guard: dir })
            });
        if published.is_err() {
            let _ = std::fs::remove_dir(&self.path);
        }
        published.map(Some)
    }

    fn open_existing(&self) -> Result<Option<OwnedFd>, Error> {
        match self.open_self() {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT) => Ok(None),
            Err(Errno::ELOOP) => Err(symlink_refused(&self.lock)),
            Err(Errno::ENOTDIR) if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.is_symlink()) => {
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
        let fd = openat(dir, RECORD, flags, Perm::empty()).ok()?;
        HolderRecord::parse(&path_artifact::read_fd_to_string(fd.as_fd())?)
    }

    fn rewrite_record(&self, current: FileId, record: &HolderRecord) -> Result<FileId, Error> {
        let dir = self.open_self().map_err(|e| Error::open(&self.lock, e))?;
        self.publish_record(dir.as_fd(), record)?;
        Ok(current)
    }

    fn remove(&self, _id: FileId) -> Result<(), Error> {
        let rmdir = || std::fs::remove_dir(&self.path).map_err(|e| path_artifact::io_errno(&e));
        let _ = std::fs::remove_file(self.path.join(RECORD));
        let mut removed = rmdir();
        if matches!(removed, Err(Errno::ENOTEMPTY | Errno::EEXIST)) {
            // Temp records a dead writer left behind are ours to remove too;
            // looked for only when needed, to keep the release path short.
            if let (Ok(dir), Ok(entries)) = (self.open_self(), std::fs::read_dir(&self.path)) {
                for name in entries.flatten().map(|e| e.file_name()) {
                    if is_our_temp(&name) {
                        let _ = unlinkat(dir.as_fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir);
                    }
                }
            }
            removed = rmdir();
        }
        match removed {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(Errno::ENOTEMPTY | Errno::EEXIST) => Err(Error::Artifact {
                lock: self.lock.clone(),
                reason: "lock directory not removed: it holds files lockwrap did not create (remove them by hand)".into(),
            }),
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

fn is_our_temp(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    bytes.starts_with(b".holder.lockwrap-") && bytes.ends_with(b".tmp")
}
