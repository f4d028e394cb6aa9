//! Abstract unix socket locks: the lock is a name in the kernel's abstract
//! socket namespace (per network namespace), bound by the holder. No file,
//! nothing to clean up: the name is free again when the last fd to the
//! socket closes, including copies the child inherited.
//!
//! Waiting: the holder listens but never accepts. A waiter connects (its
//! connection sits in the backlog) and polls its socket; when the holder's
//! last fd closes, the kernel resets the queued connection, the poll returns
//! and the waiter tries to bind again.
//!
//! Only one waiter watches the lock that way: the one that holds the queue
//! socket, bound to the queue name (the lock's name, a NUL byte and `q`,
//! which no user-given name can be). The others connect to the queue name
//! and sit in its backlog, in order. The watcher, once its command has
//! started (or when it gives up), accepts the first connection in the
//! backlog and passes the queue socket itself over it (SCM_RIGHTS): that
//! waiter watches next, and nobody else wakes. So a release wakes one waiter,
//! not all of them (a thundering herd that made a hand-off with 200 waiters
//! almost three times as slow). A killed watcher's queue socket closes and
//! its queued waiters race to bind the queue name again. A queued waiter also
//! tries the lock once a second, so a stopped watcher (Ctrl-Z) holds nobody
//! up.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr, accept4, bind, connect, getsockopt, listen, recvmsg, sendmsg, socket, sockopt,
};

use super::abstract_line::AbstractLine;
use super::{Backend, Held, HolderInfo, Line, LockStatus, Request};
use crate::error::Error;
use crate::wait::Waiter;

/// The longest abstract name: sun_path is 108 bytes, one is the leading NUL.
const MAX_NAME: usize = 107;
/// How often a queued waiter tries the lock itself.
const QUEUE_LOOK: Duration = Duration::from_secs(1);
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

    /// The name of the lock's queue: its own name, a NUL byte and `q`
    /// (None when that is longer than the kernel allows).
    fn queue_address(&self) -> Option<UnixAddr> {
        let mut name = self.name.clone();
        name.extend_from_slice(b"\0q");
        (name.len() <= MAX_NAME)
            .then(|| UnixAddr::new_abstract(&name).ok())
            .flatten()
    }

    /// Queues behind the waiter that watches the lock until it passes the
    /// queue on to this one, or goes away; meanwhile tries the lock itself
    /// every [`QUEUE_LOOK`], keeping its place in the queue.
    fn wait_in_queue(
        &self,
        address: &UnixAddr,
        queue: &UnixAddr,
        waiter: &Waiter<'_>,
    ) -> Result<Queued, Error> {
        let probe = self.new_socket(SockFlag::SOCK_NONBLOCK)?;
        match connect(probe.as_raw_fd(), queue) {
            Ok(()) | Err(Errno::EINPROGRESS) => {}
            // Full (waiters that gave up stay in its backlog until the next
            // hand-off), or nobody listens.
            Err(_) => return Ok(Queued::Unusable),
        }
        // The queue is handed on by this user's lockwraps only; a socket of
        // someone else at its name could send anything.
        let ours = getsockopt(&probe, sockopt::PeerCredentials)
            .is_ok_and(|cred| cred.uid() == nix::unistd::geteuid().as_raw());
        if !ours {
            return Ok(Queued::Unusable);
        }
        loop {
            waiter.pause(&[probe.as_fd()], Some(QUEUE_LOOK))?;
            let passed = crate::wait::poll_readable(&[probe.as_fd()], Some(Duration::ZERO))
                .is_ok_and(|ready| ready[0]);
            if passed {
                return match receive_queue(probe.as_fd()) {
                    Some(queue) => Ok(Queued::Turn(QueueTurn(queue))),
                    // The watcher went away without passing it on: race
                    // for the queue again, after a moment (a peer that
                    // writes junk must not make this spin).
                    None => waiter.pause(&[], Some(RETRY)).map(|()| Queued::Again),
                };
            }
            if let Some(socket) = self.try_bind(address)? {
                return Ok(Queued::Won(socket));
            }
        }
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
        let queue_address = self.queue_address();
        // The queue socket, while this waiter is the one that watches.
        let mut watching: Option<QueueTurn> = None;
        // A queue that is not lockwrap's (another user's socket at its
        // name) or is full: watch the lock directly.
        let mut queue_unusable = false;
        loop {
            if let Some(socket) = self.try_bind(&address)? {
                return Ok(Box::new(AbstractHeld {
                    socket,
                    queue: watching,
                }));
            }
            if waiter.is_nonblocking() {
                // -n: the conflict, without a connection to the holder's
                // socket (which it never accepts: each one would stay in its
                // backlog).
                waiter.pause(&[], None)?;
            }
            if watching.is_none()
                && !queue_unusable
                && let Some(queue_address) = &queue_address
            {
                match self.try_bind(queue_address)? {
                    Some(queue) => watching = Some(QueueTurn(queue)),
                    None => match self.wait_in_queue(&address, queue_address, waiter)? {
                        Queued::Turn(turn) => watching = Some(turn),
                        Queued::Won(socket) => {
                            return Ok(Box::new(AbstractHeld {
                                socket,
                                queue: None,
                            }));
                        }
                        Queued::Again => continue,
                        Queued::Unusable => queue_unusable = true,
                    },
                }
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

    fn line(&self) -> Option<Box<dyn Line>> {
        Some(Box::new(AbstractLine::new(&self.lock, &self.name)))
    }
}

/// A bound, listening socket; the name is ours while any copy of it is open.
struct AbstractHeld {
    socket: OwnedFd,
    /// The queue socket, if this holder watched the lock for the queue:
    /// passed on once the command has started, so that the next waiter
    /// watches the new holder.
    queue: Option<QueueTurn>,
}

/// What queueing came to.
enum Queued {
    /// The queue was passed on to this waiter: it watches the lock now.
    Turn(QueueTurn),
    /// The lock was found free and taken.
    Won(OwnedFd),
    /// The watcher went away: race for the queue again.
    Again,
    /// The queue cannot be used (full, or not this user's): watch the lock.
    Unusable,
}

/// The queue socket while this process watches the lock for the queue.
/// Dropped, it is passed to the first waiter in its backlog.
struct QueueTurn(OwnedFd);

impl Drop for QueueTurn {
    fn drop(&mut self) {
        // Waiters that gave up (or died) are skipped; with nobody left in
        // the backlog the socket closes and the queue name is free.
        while let Some(next) = accept_queued(self.0.as_fd()) {
            let message = [std::io::IoSlice::new(b"q")];
            let fds = [self.0.as_raw_fd()];
            let rights = [ControlMessage::ScmRights(&fds)];
            if sendmsg::<UnixAddr>(
                next.as_raw_fd(),
                &message,
                &rights,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            )
            .is_ok()
            {
                return;
            }
        }
    }
}

/// The first connection in the backlog of `listener`, if any (never waits:
/// the socket may be in blocking mode).
fn accept_queued(listener: BorrowedFd<'_>) -> Option<OwnedFd> {
    let ready = crate::wait::poll_readable(&[listener], Some(std::time::Duration::ZERO)).ok()?;
    if !ready.first().copied().unwrap_or(false) {
        return None;
    }
    let fd = accept4(
        listener.as_raw_fd(),
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
    )
    .ok()?;
    // SAFETY: accept4 just returned this fd, open and owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The queue socket a watcher passed over `probe`, if it did (not when the
/// connection was reset or nothing came yet).
fn receive_queue(probe: BorrowedFd<'_>) -> Option<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut message = [std::io::IoSliceMut::new(&mut byte)];
    // Room for more than the one fd expected, so that a message with a few
    // more is read whole and they can be closed (a truncated one could not).
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 16]);
    let received = recvmsg::<UnixAddr>(
        probe.as_raw_fd(),
        &mut message,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .ok()?;
    let mut fds = received.cmsgs().ok()?.flat_map(|cmsg| match cmsg {
        ControlMessageOwned::ScmRights(fds) => fds,
        _ => Vec::new(),
    });
    // SAFETY: the kernel just installed these fds in this process for us.
    let queue = fds.next().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    for extra in fds {
        // SAFETY: as above; more than one was never sent by lockwrap.
        drop(unsafe { OwnedFd::from_raw_fd(extra) });
    }
    queue
}

impl Held for AbstractHeld {
    fn kernel_keeps_lock(&self) -> bool {
        true
    }

    fn lock_fds(&self) -> Vec<BorrowedFd<'_>> {
        vec![self.socket.as_fd()]
    }

    fn child_started(&mut self, _child: nix::unistd::Pid) -> Result<(), Error> {
        self.queue = None;
        Ok(())
    }

    fn release(self: Box<Self>) -> Result<(), Error> {
        Ok(())
    }
}
