//! excl locks: the lock is a file that exists only while held. It is
//! published with link(2) from a fully written temporary file, which is as
//! atomic as O_CREAT|O_EXCL (and safe on NFS) and means a reader never sees
//! half a holder record.

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode as Perm, SFlag, fstat};
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};

use super::path_artifact::{self, Artifact, ArtifactHeld, Created, FileId};
use super::{Backend, Held, LockStatus, Request};
use crate::error::Error;
use crate::holder::HolderRecord;
use crate::wait::Waiter;

/// A lock file.
#[derive(Debug, Clone)]
pub struct ExclLock {
    lock: String,
    path: PathBuf,
    dir: PathBuf,
    name: OsString,
}

impl ExclLock {
    /// A lock file at `path`.
    pub fn new(lock: String, path: PathBuf) -> ExclLock {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = path.file_name().map(OsString::from).unwrap_or_default();
        ExclLock {
            lock,
            path,
            dir,
            name,
        }
    }

    /// Writes `record` to a temporary file beside the lock; returns the open
    /// directory, the temp name and the temp file's fd.
    fn temp_record(&self, record: &HolderRecord) -> Result<(OwnedFd, PathBuf, OwnedFd), Error> {
        let dir = path_artifact::open_dir(&self.lock, &self.dir)?;
        let temp = path_artifact::temp_name(&format!(".{}", self.name.to_string_lossy()));
        let file = path_artifact::write_temp_record(&self.lock, dir.as_fd(), &temp, record)?;
        Ok((dir, temp, file))
    }

    fn id_of(&self, file: BorrowedFd<'_>) -> Result<FileId, Error> {
        FileId::of_fd(file).map_err(|e| Error::open(&self.lock, e))
    }
}

impl Backend for ExclLock {
    fn acquire(&self, request: &Request<'_>, waiter: &Waiter<'_>) -> Result<Box<dyn Held>, Error> {
        if self.name.is_empty() {
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
}

impl Artifact for ExclLock {
    fn lock(&self) -> &str {
        &self.lock
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn try_create(&self, record: &HolderRecord) -> Result<Option<Created>, Error> {
        let (dir, temp, file) = self.temp_record(record)?;
        let dir = dir.as_fd();
        // Guarded before it appears at the lock path.
        let linked = path_artifact::guard(&self.lock, file.as_fd()).and_then(|()| {
            linkat(dir, &temp, dir, self.name.as_os_str(), AtFlags::empty())
                .map_err(|e| Error::open(&self.lock, e))
        });
        let outcome = match linked {
            Ok(()) => self
                .id_of(file.as_fd())
                .map(|id| Some(Created { id, guard: file })),
            Err(Error::Open {
                errno: Errno::EEXIST,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        };
        let _ = unlinkat(dir, &temp, UnlinkatFlags::NoRemoveDir);
        outcome
    }

    fn open_existing(&self) -> Result<Option<OwnedFd>, Error> {
        let dir = path_artifact::open_dir(&self.lock, &self.dir)?;
        // O_NONBLOCK: a FIFO planted at the path must not hang us in open().
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let fd = match openat(dir.as_fd(), self.name.as_os_str(), flags, Perm::empty()) {
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
        HolderRecord::parse(&path_artifact::read_fd_to_string(file)?)
    }

    fn rewrite_record(&self, _current: FileId, record: &HolderRecord) -> Result<FileId, Error> {
        let (dir, temp, file) = self.temp_record(record)?;
        let dir = dir.as_fd();
        let id = self.id_of(file.as_fd())?;
        renameat(dir, &temp, dir, self.name.as_os_str()).map_err(|e| {
            let _ = unlinkat(dir, &temp, UnlinkatFlags::NoRemoveDir);
            Error::os(&self.lock, "cannot update the holder record", e)
        })?;
        Ok(id)
    }

    fn remove(&self, _id: FileId) -> Result<(), Error> {
        match std::fs::remove_file(&self.path).map_err(|e| path_artifact::io_errno(&e)) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(Error::os(&self.lock, "cannot remove the lock file", e)),
        }
    }
}
