//! excl locks: the lock is a file that exists only while held. It is
//! published with link(2) from a fully written, flock'd temporary file,
//! which is as atomic as O_CREAT|O_EXCL (and safe on NFS) and means a reader
//! never sees half a holder record nor an unguarded lock file.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode as Perm, SFlag, fstat};
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};

use super::file_line::FileLine;
use super::path_artifact::{self, Artifact, ArtifactHeld, Created, FileId, Location, Published};
use super::{Backend, Held, Line, LockStatus, Request};
use crate::error::Error;
use crate::holder::HolderRecord;
use crate::wait::Waiter;

/// A lock file.
#[derive(Debug, Clone)]
pub struct ExclLock {
    lock: String,
    location: Location,
}

impl ExclLock {
    /// A lock file at `path`.
    pub fn new(lock: String, path: std::path::PathBuf) -> ExclLock {
        ExclLock {
            lock,
            location: Location::new(&path),
        }
    }

    fn id_of(&self, file: BorrowedFd<'_>) -> Result<FileId, Error> {
        FileId::of_fd(file).map_err(|e| Error::open(&self.lock, e))
    }
}

impl Backend for ExclLock {
    fn acquire(&self, request: &Request<'_>, waiter: &Waiter<'_>) -> Result<Box<dyn Held>, Error> {
        if self.location.name().is_empty() {
            return Err(Error::Artifact {
                lock: self.lock.clone(),
                reason: "is a directory; excl: needs a file path".into(),
            });
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

impl Artifact for ExclLock {
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
        let file = path_artifact::create_record(&self.lock, dir, temp, record)?;
        // Guarded before it can appear at the lock path.
        let made =
            path_artifact::guard(&self.lock, file.as_fd()).and_then(|()| self.id_of(file.as_fd()));
        match made {
            Ok(id) => Ok(Created {
                id,
                guard: file,
                record: None,
            }),
            Err(e) => {
                let _ = unlinkat(dir, temp, UnlinkatFlags::NoRemoveDir);
                Err(e)
            }
        }
    }

    fn publish(
        &self,
        dir: BorrowedFd<'_>,
        temp: &OsStr,
        _record: &HolderRecord,
    ) -> Result<Published, Error> {
        match linkat(dir, temp, dir, self.location.name(), AtFlags::empty()) {
            Ok(()) => {
                // The lock path keeps the inode; the temp name goes.
                let _ = unlinkat(dir, temp, UnlinkatFlags::NoRemoveDir);
                Ok(Published::Done)
            }
            Err(Errno::EEXIST) => Ok(Published::Taken),
            Err(Errno::ENOENT) => Ok(Published::Gone),
            Err(e) => Err(Error::open(&self.lock, e)),
        }
    }

    fn open_existing(&self) -> Result<Option<OwnedFd>, Error> {
        let dir = self.location.open_dir(&self.lock)?;
        // O_NONBLOCK: a FIFO planted at the path must not hang us in open().
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let fd = match openat(dir.as_fd(), self.location.name(), flags, Perm::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => {
                return Err(Error::Artifact {
                    lock: self.lock.clone(),
                    reason: "is a symlink; lockwrap never follows a symlink at a lock path (remove it or choose another path)".into(),
                });
            }
            Err(e) => return Err(Error::open(&self.lock, e)),
        };
        let kind = fstat(fd.as_fd())
            .map(|st| SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()));
        match kind {
            Ok(SFlag::S_IFREG) => Ok(Some(fd)),
            Ok(SFlag::S_IFDIR) => Err(Error::Artifact {
                lock: self.lock.clone(),
                reason:
                    "is a directory; excl: needs a file path (or use mkdir: for a lock directory)"
                        .into(),
            }),
            Ok(_) => Err(Error::Artifact {
                lock: self.lock.clone(),
                reason: "exists and is not a regular file; choose another path".into(),
            }),
            Err(e) => Err(Error::open(&self.lock, e)),
        }
    }

    fn read_record(&self, file: BorrowedFd<'_>) -> Option<HolderRecord> {
        path_artifact::read_record_fd(file)
    }

    fn remove(&self, id: FileId) -> Result<(), Error> {
        let dir = self.location.open_dir(&self.lock)?;
        // Judged through the same directory fd that unlinks: a directory
        // swapped in since the caller looked cannot lose its lock file.
        match FileId::at(dir.as_fd(), self.location.name()) {
            None => return Ok(()),
            Some(found) if found != id => return Err(path_artifact::replaced(&self.lock)),
            Some(_) => {}
        }
        match unlinkat(
            dir.as_fd(),
            self.location.name(),
            UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e @ (Errno::EACCES | Errno::EPERM)) => Err(Error::open(&self.lock, e)),
            Err(e) => Err(Error::os(&self.lock, "cannot remove the lock file", e)),
        }
    }
}
