//! The machinery shared by the two kernel-held file locks, flock(2) and OFD
//! fcntl locks: opening the file as flock(1) does, fd mode, and waiting on a
//! blocking lock call without losing the deadline or signals. The two
//! mechanisms differ only in their [`KernelOps`].

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use nix::errno::Errno;

use super::file_line::FileLine;
use super::path_artifact::Location;
use super::{Backend, Held, HolderInfo, Line, LockStatus, Request, WaiterInfo};
use crate::cli::Mode;
use crate::error::Error;
use crate::holder;
use crate::spec::ByteRange;
use crate::wait::{Interruptible, Waiter};

/// What distinguishes one kernel lock mechanism from another. `Copy`: the
/// thread that blocks in the lock call takes its own copy.
pub trait KernelOps: Copy + Send + Sync + 'static {
    /// The lock call, for messages.
    fn what(&self) -> &'static str;
    /// Whether the file must be opened for writing to take a lock in `mode`.
    fn needs_write(&self, mode: Mode) -> bool;
    /// The lock syscall: take (or drop, for Mode::Unlock) the lock on `fd`,
    /// waiting for it when `blocking`.
    fn call(&self, fd: RawFd, mode: Mode, blocking: bool) -> nix::Result<()>;
    /// How /proc/locks names these locks.
    fn proc_kind(&self) -> &'static str;
    /// The bytes a byte-range lock covers; None: the lock has no range
    /// (flock(2) locks the whole file, whatever its size).
    fn range(&self) -> Option<ByteRange> {
        None
    }
}

/// Where a kernel lock is taken.
#[derive(Debug, Clone)]
enum FileTarget {
    /// A path lockwrap opens itself.
    Path(PathBuf),
    /// An fd of the caller, used as is and never closed.
    Fd(RawFd),
}

/// A flock(2) or OFD lock on a path or on an fd of the caller.
pub struct KernelLock<O> {
    lock: String,
    target: FileTarget,
    ops: O,
}

impl<O: KernelOps> KernelLock<O> {
    /// A lock on a file or directory, created if missing.
    pub fn path(lock: String, path: PathBuf, ops: O) -> KernelLock<O> {
        KernelLock {
            lock,
            target: FileTarget::Path(path),
            ops,
        }
    }

    /// flock(1)'s fd mode: a lock on an open fd of the caller.
    pub fn fd(fd: RawFd, ops: O) -> KernelLock<O> {
        KernelLock {
            lock: crate::program::fd_lock_name(fd),
            target: FileTarget::Fd(fd),
            ops,
        }
    }

    fn lock_failed(&self, errno: Errno) -> Error {
        Error::Lock {
            lock: self.lock.clone(),
            what: self.ops.what(),
            errno,
        }
    }
}

impl<O: KernelOps> Backend for KernelLock<O> {
    fn acquire(&self, request: &Request<'_>, waiter: &Waiter<'_>) -> Result<Box<dyn Held>, Error> {
        let mut fd = match &self.target {
            FileTarget::Fd(fd) => {
                if !fd_is_open(*fd) {
                    return Err(Error::Lock {
                        lock: self.lock.clone(),
                        what: "not an open file descriptor (open it in the shell first, e.g. 9>FILE)",
                        errno: Errno::EBADF,
                    });
                }
                LockFd::Borrowed(*fd)
            }
            FileTarget::Path(path) => LockFd::Owned(Arc::new(open_lock_file(
                &self.lock,
                path,
                self.ops.needs_write(request.mode),
            )?)),
        };
        match self.take(&fd, request.mode, waiter) {
            // NFS emulates flock() with byte-range locks, which need a writable
            // fd for a write lock: reopen read-write when allowed, as flock(1) does.
            Err(Error::Lock {
                errno: errno @ (Errno::EIO | Errno::EBADF),
                ..
            }) if request.mode == Mode::Exclusive => {
                let path = self
                    .writable_path()
                    .ok_or_else(|| self.lock_failed(errno))?;
                // A directory cannot be opened for writing: flock(1) --fcntl
                // fails there too (65); say why.
                let reopened = open_read_write(&path).map_err(|e| Error::Lock {
                    lock: self.lock.clone(),
                    what: "an exclusive fcntl lock needs a file opened for writing (use -s, or a flock lock)",
                    errno: e,
                })?;
                fd = LockFd::Owned(Arc::new(reopened));
                self.take(&fd, request.mode, waiter)?;
            }
            other => other?,
        }
        Ok(Box::new(KernelHeld { fd }))
    }

    fn supports_shared(&self) -> bool {
        true
    }

    fn status(&self) -> Result<LockStatus, Error> {
        let free = LockStatus {
            range: self.ops.range(),
            ..LockStatus::default()
        };
        let stat = match &self.target {
            FileTarget::Path(path) => nix::sys::stat::stat(path.as_path()),
            // SAFETY: fstat only reads; a closed fd gives EBADF.
            FileTarget::Fd(fd) => nix::sys::stat::fstat(unsafe { BorrowedFd::borrow_raw(*fd) }),
        };
        let stat = match stat {
            Ok(stat) => stat,
            // Free, if it could be created: -n in a missing directory exits 66.
            Err(Errno::ENOENT) => {
                return match &self.target {
                    FileTarget::Path(path)
                        if path
                            .parent()
                            .is_some_and(|p| !p.as_os_str().is_empty() && !p.is_dir()) =>
                    {
                        Err(Error::open(&self.lock, Errno::ENOENT))
                    }
                    _ => Ok(free),
                };
            }
            Err(e) => return Err(Error::open(&self.lock, e)),
        };
        // Only holders of bytes that overlap ours are in the way.
        let Some((shared, pids)) = holder::kernel_lock_holders(
            self.ops.proc_kind(),
            stat.st_dev,
            stat.st_ino,
            self.ops.range().unwrap_or(ByteRange::WHOLE),
        ) else {
            return Ok(free);
        };
        let waiters = holder::kernel_lock_waiters(self.ops.proc_kind(), stat.st_dev, stat.st_ino)
            .into_iter()
            .map(|pid| pid.map(WaiterInfo::of_process).unwrap_or_default())
            .collect();
        Ok(LockStatus {
            held: true,
            shared,
            holders: wrappers_and_commands(&pids),
            waiters,
            ..free
        })
    }

    fn line(&self) -> Option<Box<dyn Line>> {
        match &self.target {
            FileTarget::Path(path) => {
                FileLine::new(&self.lock, Location::new(path)).map(|l| Box::new(l) as Box<dyn Line>)
            }
            FileTarget::Fd(_) => None,
        }
    }
}

impl<O: KernelOps> KernelLock<O> {
    /// One non-blocking try, then, if waiting is allowed, a blocking call on
    /// a helper thread so the deadline and signals still count.
    fn take(&self, fd: &LockFd, mode: Mode, waiter: &Waiter<'_>) -> Result<(), Error> {
        let ops = self.ops;
        match ops.call(fd.raw(), mode, false) {
            Ok(()) => return Ok(()),
            Err(Errno::EWOULDBLOCK | Errno::EACCES) => {}
            Err(e) => return Err(self.lock_failed(e)),
        }
        if waiter.is_nonblocking() {
            return waiter.pause(&[], None);
        }
        // The helper thread keeps its own reference so the fd cannot be closed
        // and reused under it while it blocks.
        let keep_open = match fd {
            LockFd::Owned(owned) => Some(Arc::clone(owned)),
            LockFd::Borrowed(_) => None,
        };
        let raw = fd.raw();
        let mut blocked = Interruptible::start(move |cancelled| {
            let _keep_open = keep_open;
            loop {
                match ops.call(raw, mode, true) {
                    Err(Errno::EINTR) if !cancelled.load(Ordering::SeqCst) => continue,
                    other => return other,
                }
            }
        })
        .map_err(|e| Error::os(&self.lock, "cannot start the waiting thread", e))?;
        loop {
            if let Err(gave_up) = waiter.pause(&[blocked.as_fd()], None) {
                // A lock granted just as the wait was given up is handed
                // back: neither lockwrap's fd nor the caller's (fd mode) may
                // keep a lock nobody asked for any more.
                if let Some(Ok(())) = blocked.cancel() {
                    let _ = ops.call(raw, Mode::Unlock, false);
                }
                return Err(gave_up);
            }
            if let Some(result) = blocked.try_result() {
                return result.map_err(|e| self.lock_failed(e));
            }
        }
    }

    /// The path, if it is one and this user may open it read-write.
    fn writable_path(&self) -> Option<PathBuf> {
        match &self.target {
            FileTarget::Path(path) => nix::unistd::access(
                path.as_path(),
                nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
            )
            .ok()
            .map(|()| path.clone()),
            FileTarget::Fd(_) => None,
        }
    }
}

/// The fd a kernel lock sits on.
enum LockFd {
    /// Opened by lockwrap; closing the last copy releases the lock.
    Owned(Arc<OwnedFd>),
    /// The caller's; the lock stays on it after lockwrap exits, as with flock(1).
    Borrowed(RawFd),
}

impl LockFd {
    fn raw(&self) -> RawFd {
        match self {
            LockFd::Owned(fd) => fd.as_raw_fd(),
            LockFd::Borrowed(fd) => *fd,
        }
    }
}

/// The holders of a kernel lock, each wrapper with its command as one
/// holder: the kernel shows every process with a copy of the lock's open
/// file description, so a lockwrap (or flock(1)) and the command that
/// inherited the fd both appear. A holder whose parent holds the same lock,
/// and is its parent's only such child, becomes that parent's `child_pid`,
/// as mkdir and Redis locks record it. Processes further down the command's
/// tree (a background job that inherited the fd) stay holders of their own:
/// they may keep the lock after the wrapper is gone.
fn wrappers_and_commands(pids: &[i32]) -> Vec<HolderInfo> {
    let parent: Vec<Option<i32>> = pids
        .iter()
        .map(|pid| holder::process_stat(*pid).map(|s| s.ppid))
        .collect();
    let holds = |pid: i32| pids.contains(&pid);
    // A parent that is itself merged into its own parent takes no child.
    let is_top = |i: usize| !parent[i].is_some_and(holds);
    let only_child = |i: usize| -> bool {
        let Some(p) = parent[i].filter(|p| holds(*p)) else {
            return false;
        };
        let Some(pi) = pids.iter().position(|q| *q == p) else {
            return false;
        };
        is_top(pi) && parent.iter().filter(|q| **q == Some(p)).count() == 1
    };
    let merged: Vec<bool> = (0..pids.len()).map(only_child).collect();
    let mut holders = Vec::with_capacity(pids.len());
    for (i, pid) in pids.iter().enumerate() {
        if merged[i] {
            continue;
        }
        let mut info = HolderInfo::of_process(*pid);
        if let Some(child) = (0..pids.len()).find(|c| merged[*c] && parent[*c] == Some(*pid)) {
            info.child_pid = Some(pids[child]);
            info.child_start_time = holder::process_start_time(pids[child]);
        }
        holders.push(info);
    }
    holders
}

/// A kernel lock held through an fd.
struct KernelHeld {
    fd: LockFd,
}

impl Held for KernelHeld {
    fn kernel_keeps_lock(&self) -> bool {
        true
    }

    fn lock_fds(&self) -> Vec<BorrowedFd<'_>> {
        // SAFETY: the fd stays open for as long as self lives: either we own
        // it, or it is the caller's fd, which lockwrap never closes.
        vec![unsafe { BorrowedFd::borrow_raw(self.fd.raw()) }]
    }

    fn release(self: Box<Self>) -> Result<(), Error> {
        // Closing, not unlocking: an unlock would also take the lock from
        // descendants that still hold an inherited copy, unlike flock(1).
        Ok(())
    }
}

/// Opens the file the way flock(1) does: created if missing (0666 less
/// umask), never truncated or written; a directory is opened read-only.
fn open_lock_file(lock: &str, path: &std::path::Path, writable: bool) -> Result<OwnedFd, Error> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode as Perm;
    let access = if writable {
        OFlag::O_WRONLY
    } else {
        OFlag::O_RDONLY
    };
    // O_NONBLOCK: a FIFO at the path must not hang the open (flock(1) waits
    // there for a writer, deaf to -w); a FIFO opened for reading is then
    // locked like any file, and one opened for writing without a reader
    // fails at once (ENXIO, 66). It changes nothing for a regular file or a
    // directory, and lockwrap never reads or writes the fd.
    let base = OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    match open(
        path,
        access | OFlag::O_CREAT | base,
        Perm::from_bits_truncate(0o666),
    ) {
        Ok(fd) => Ok(fd),
        Err(Errno::EISDIR) => {
            open(path, OFlag::O_RDONLY | base, Perm::empty()).map_err(|e| Error::open(lock, e))
        }
        Err(e) => Err(Error::open(lock, e)),
    }
}

fn open_read_write(path: &std::path::Path) -> nix::Result<OwnedFd> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode as Perm;
    let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    open(path, flags, Perm::from_bits_truncate(0o666))
}

/// Whether `fd` is an open file descriptor of this process.
fn fd_is_open(fd: RawFd) -> bool {
    nix::fcntl::fcntl(
        // SAFETY: only used for F_GETFD, which reads flags and reports EBADF
        // for a closed fd; nothing is closed or kept.
        unsafe { BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .is_ok()
}
