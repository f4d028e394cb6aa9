//! Abstract unix socket locks: the lock is a name in the kernel's abstract
//! socket namespace (per network namespace), bound by the holder. No file,
//! nothing to clean up: the name is free again when the last fd to the
//! socket closes, including copies the child inherited.
//!
//! Waiting: the holder listens but never accepts. A waiter connects (its
//! connection sits in the backlog) and polls its socket; when the holder's
//! last fd closes, the kernel resets the queued connection, the poll returns
//! and the waiter tries to bind again.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, getsockopt, listen,
    socket, sockopt,
};

use super::{Backend, Held, HolderInfo, LockStatus, Request};
use crate::error::Error;
use crate::wait::Waiter;

/// The longest abstract name: sun_path is 108 bytes, one is the leading NUL.
const MAX_NAME: usize = 107;
/// Retry interval when the name is bound but nobody listens (a holder
/// between bind and listen, or a foreign socket), or the backlog is full.
const RETRY: Duration = Duration::from_millis(20);

/// A lock on an abstract socket name.
#[derive(Debug, Clone)]
pub struct AbstractLock {
    lock: String,
    name: Vec<u8>,
}

impl AbstractLock {
    /// A lock on `name` (without the leading NUL).
    pub fn new(lock: String, name: Vec<u8>) -> AbstractLock {
        AbstractLock { lock, name }
    }

    fn address(&self) -> Result<UnixAddr, Error> {
        if self.name.is_empty() {
            return Err(Error::Usage(format!(
                "{}: the abstract socket name is empty",
                self.lock
            )));
        }
        if self.name.contains(&0) {
            return Err(Error::Usage(format!(
                "{}: the abstract socket name contains a NUL byte",
                self.lock
            )));
        }
        if self.name.len() > MAX_NAME {
            return Err(Error::Usage(format!(
                "{}: the abstract socket name is {} bytes; the kernel allows at most {MAX_NAME}",
                self.lock,
                self.name.len()
            )));
        }
        UnixAddr::new_abstract(&self.name)
            .map_err(|e| Error::os(&self.lock, "invalid abstract name", e))
    }

    fn new_socket(&self, flags: SockFlag) -> Result<OwnedFd, Error> {
        socket(
            AddressFamily::Unix,
            SockType::Stream,
            flags | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| Error::os(&self.lock, "cannot create a socket", e))
    }

    /// Binds and listens; None when the name is taken.
    fn try_bind(&self, address: &UnixAddr) -> Result<Option<OwnedFd>, Error> {
        let socket = self.new_socket(SockFlag::empty())?;
        match bind(socket.as_raw_fd(), address) {
            Ok(()) => {}
            Err(Errno::EADDRINUSE) => return Ok(None),
            Err(e) => {
                return Err(Error::Lock {
                    lock: self.lock.clone(),
                    what: "bind",
                    errno: e,
                });
            }
        }
        // The backlog holds the connections of waiters; it only bounds how
        // many are woken by an event rather than by the retry interval.
        listen(&socket, Backlog::new(1024).unwrap_or(Backlog::MAXCONN)).map_err(|e| {
            Error::Lock {
                lock: self.lock.clone(),
                what: "listen",
                errno: e,
            }
        })?;
        Ok(Some(socket))
    }
}

impl Backend for AbstractLock {
    fn acquire(&self, _request: &Request<'_>, waiter: &Waiter<'_>) -> Result<Box<dyn Held>, Error> {
        let address = self.address()?;
        loop {
            if let Some(socket) = self.try_bind(&address)? {
                return Ok(Box::new(AbstractHeld { socket }));
            }
            let probe = self.new_socket(SockFlag::SOCK_NONBLOCK)?;
            match connect(probe.as_raw_fd(), &address) {
                Ok(()) | Err(Errno::EINPROGRESS) => waiter.pause(&[probe.as_fd()], None)?,
                Err(_) => waiter.pause(&[], Some(RETRY))?,
            }
        }
    }

    fn status(&self) -> Result<LockStatus, Error> {
        let address = self.address()?;
        let probe = self.new_socket(SockFlag::SOCK_NONBLOCK)?;
        match connect(probe.as_raw_fd(), &address) {
            Ok(()) | Err(Errno::EINPROGRESS) => {}
            // Nobody bound, or bound without listening: free as far as we can tell.
            Err(Errno::ECONNREFUSED | Errno::ENOENT) => return Ok(LockStatus::default()),
            Err(Errno::EAGAIN) => {
                return Ok(LockStatus {
                    held: true,
                    ..LockStatus::default()
                });
            }
            Err(e) => {
                return Err(Error::os(
                    &self.lock,
                    "cannot connect to the lock socket",
                    e,
                ));
            }
        }
        // SO_PEERCRED names the process that called listen(): the holder's
        // wrapper (or the program itself with -F). Names have no permissions,
        // so the uid matters: anyone local may have taken it.
        let holders = getsockopt(&probe, sockopt::PeerCredentials)
            .map(|cred| {
                let mut info = HolderInfo::of_process(cred.pid());
                info.uid = Some(cred.uid());
                vec![info]
            })
            .unwrap_or_default();
        Ok(LockStatus {
            held: true,
            shared: false,
            holders,
            ..LockStatus::default()
        })
    }
}

/// A bound, listening socket; the name is ours while any copy of it is open.
struct AbstractHeld {
    socket: OwnedFd,
}

impl Held for AbstractHeld {
    fn kernel_keeps_lock(&self) -> bool {
        true
    }

    fn lock_fds(&self) -> Vec<BorrowedFd<'_>> {
        vec![self.socket.as_fd()]
    }

    fn release(self: Box<Self>) -> Result<(), Error> {
        Ok(())
    }
}
