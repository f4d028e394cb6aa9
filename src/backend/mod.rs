//! The lock mechanisms behind one small trait. Each backend lives in its own
//! file and knows nothing of the others; [`open`] is the one place that maps
//! a [`LockSpec`] to a backend.

mod abstract_line;
mod abstract_socket;
mod excl;
mod file_line;
mod flock;
mod kernel;
mod mkdir;
mod ofd;
mod path_artifact;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod tls_files;

use std::ffi::OsString;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::cli::Mode;
use crate::error::Error;
use crate::holder::{self, HolderRecord};
use crate::spec::{ByteRange, LockSpec};
use crate::wait::Waiter;

/// What an acquisition asks for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Shared, exclusive or unlock.
    pub mode: Mode,
    /// The command about to run, for holder records.
    pub command: &'a str,
    /// `--stale-after`: reclaim a lock of unknown owner older than this.
    pub stale_after: Option<Duration>,
    /// `--lease`: how long a server keeps a lock nobody renews (None: default).
    pub lease: Option<Duration>,
}

/// A lock mechanism. `Sync` so that the slots of a semaphore can be waited
/// for at once, one thread each.
pub trait Backend: Sync {
    /// Takes the lock, waiting as `waiter` allows between attempts.
    fn acquire(&self, request: &Request<'_>, waiter: &Waiter<'_>) -> Result<Box<dyn Held>, Error>;

    /// Whether `-s` can be honoured (and `-u` means anything).
    fn supports_shared(&self) -> bool {
        false
    }

    /// Whether the lock stays valid across exec (`-F`) with no wrapper left
    /// to look after it. A lease that must be renewed cannot.
    fn survives_exec(&self) -> bool {
        true
    }

    /// Whether `--stale-after` means anything: the lock can be left behind
    /// by a holder of unknown identity (a plain `mkdir` in a script) that
    /// nothing else would ever release.
    fn reclaims_unknown_owners(&self) -> bool {
        false
    }

    /// Whether `--lease` means anything: the lock is a lease that a server
    /// drops when its holder stops renewing it.
    fn has_lease(&self) -> bool {
        !self.survives_exec()
    }

    /// Who holds the lock now, for `--status` and `--verbose`. Takes no lock.
    fn status(&self) -> Result<LockStatus, Error>;

    /// `--replace` for a lock whose holder is known only by a server's word:
    /// takes the lock away from its holders on the server itself (ends their
    /// lease or session) without signalling any process, and returns how
    /// many holders lost it. Each holder's lockwrap notices at its next
    /// renewal and stops its command. `None`: this lock has no such
    /// authority; the caller stops a holder it can prove is local.
    fn revoke(&self, _request: &Request<'_>) -> Result<Option<usize>, Error> {
        Ok(None)
    }

    /// The lock's line of waiters (see [`Line`]): where `--fair` waiters
    /// take their turn and where `--status` finds who waits. None: this
    /// lock has no line; its waiters are invisible unless [`Backend::status`]
    /// finds them itself, and `--fair` is refused unless
    /// [`Backend::fair_by_itself`].
    fn line(&self) -> Option<Box<dyn Line>> {
        None
    }

    /// Whether the mechanism itself grants the lock first come, first served
    /// (a PostgreSQL advisory lock's wait queue): `--fair` then needs no line.
    fn fair_by_itself(&self) -> bool {
        false
    }
}

/// The waiters of one lock, first come first (issue 13): every waiter
/// joins once its first attempt found the lock held (a `--fair` waiter
/// before its first attempt when the line is not empty), and leaves when
/// it holds the lock or gives up. A `--fair` waiter takes the lock only once
/// no fair ticket that joined before it is left ([`Ticket::wait_turn`]);
/// other waiters only make themselves visible.
///
/// A ticket must stay in line without its waiter's help while the backend
/// waits for the lock (a blocked flock, a server call), and must leave the
/// line by itself when its process dies however it dies (SIGKILL): a kernel
/// lock or socket the ticket holds, or a lease that expires.
pub trait Line: Send + Sync {
    /// Whether nobody is in line (this user's line, for a per-user line).
    /// Cheap (one syscall, or one round trip to a server) and possibly
    /// stale: only a `--fair` waiter uses it, to skip joining when there is
    /// nobody to be fair to. Unsure is "not empty"; an error is `waiter`'s
    /// end (its deadline, a signal) met while looking.
    fn is_empty(&self, waiter: &Waiter<'_>) -> Result<bool, Error>;

    /// Puts a ticket for `entry` at the end of the line. The ticket is in
    /// line until it is dropped or its process is gone. Joining waits (for
    /// others who are joining, for a server) only as `waiter` allows, as
    /// [`Waiter::watch`] does (so also under `-n`): its deadline, signals
    /// and a cancelled slot wait end it with their error. A waiter without
    /// `--fair` (`entry.fair` false) gives up soon whatever its wait allows:
    /// its place only makes it visible.
    fn join(&self, entry: &LineEntry, waiter: &Waiter<'_>) -> Result<Box<dyn Ticket>, Error>;

    /// The waiters in line, first come first, with [`WaiterInfo::position`]
    /// numbering the fair ones from 1. Takes no lock and removes nothing.
    fn waiters(&self) -> Result<Vec<WaiterInfo>, Error>;

    /// Removes what dead waiters left (their tickets, an empty line), at a
    /// release: so a waiter SIGKILLed while nobody else waited leaves
    /// nothing for long. Best effort, and cheap when there is no line.
    fn tidy(&self) {}
}

/// A place in a [`Line`]. Dropping it leaves the line.
pub trait Ticket: Send {
    /// Waits until no fair ticket that joined before this one is left in
    /// line (gone with the lock, given up, or dead), as `waiter` allows.
    fn wait_turn(&mut self, waiter: &Waiter<'_>) -> Result<(), Error>;
}

/// What a ticket says about its waiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineEntry {
    /// Who waits: pid, start time, host, uid, command; `acquired_ms` is
    /// when it started waiting.
    pub record: HolderRecord,
    /// Whether it waits for its turn (`--fair`) or only makes itself visible.
    pub fair: bool,
}

/// One waiter of a lock, as far as it can be known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaiterInfo {
    /// The waiting process (the wrapper).
    pub pid: Option<i32>,
    /// Its uid.
    pub uid: Option<u32>,
    /// Its host, when it may differ from this one.
    pub host: Option<String>,
    /// Its command line.
    pub command: Option<String>,
    /// When it started waiting, milliseconds since the epoch.
    pub since_ms: Option<u64>,
    /// Whether it waits for its turn (`--fair`).
    pub fair: bool,
    /// Its place among the fair waiters, from 1 (None: not fair).
    pub position: Option<u32>,
}

impl WaiterInfo {
    /// A waiter the kernel shows blocked in a lock call, from /proc.
    pub fn of_process(pid: i32) -> WaiterInfo {
        WaiterInfo {
            pid: Some(pid),
            uid: holder::process_uid(pid),
            command: holder::process_command(pid),
            ..WaiterInfo::default()
        }
    }

    /// What a ticket says.
    pub fn of_entry(entry: &LineEntry) -> WaiterInfo {
        WaiterInfo {
            pid: Some(entry.record.pid),
            uid: Some(entry.record.uid),
            host: Some(entry.record.host.clone()),
            command: Some(entry.record.command.clone()),
            since_ms: Some(entry.record.acquired_ms),
            fair: entry.fair,
            position: None,
        }
    }

    /// Numbers the fair waiters of `line` (first come first) from 1.
    pub fn number_fair(line: &mut [WaiterInfo]) {
        let mut next = 1;
        for waiter in line.iter_mut() {
            waiter.position = waiter.fair.then(|| {
                next += 1;
                next - 1
            });
        }
    }
}

/// What `--status` reports about one lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockStatus {
    /// Whether anyone holds it.
    pub held: bool,
    /// Whether the holders hold it shared (`-s`).
    pub shared: bool,
    /// The holders that could be identified; empty with `held` means
    /// "held, owner unknown".
    pub holders: Vec<HolderInfo>,
    /// Held by a holder that is provably gone (its processes dead, its
    /// guard free): the next wrapper reclaims it at once, as `-n` would.
    pub stale: bool,
    /// For a lock artifact: the uid that owns it. A holder record that names
    /// another uid was not written by its holder and is not believed.
    pub owner_uid: Option<u32>,
    /// Who waits for it, first come first (as far as it can be known).
    pub waiters: Vec<WaiterInfo>,
    /// For a byte-range (fcntl) lock: the bytes asked about; the holders
    /// are those of overlapping bytes.
    pub range: Option<ByteRange>,
}

/// How a holder is known, and so how far `--replace` may trust it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HolderSource {
    /// The kernel's lock table says this process holds the lock.
    Kernel,
    /// A holder record in a lock artifact; `same_system` when it was written
    /// on this host, boot and pid namespace, so its pids mean ours.
    Record {
        /// Same host, boot and pid namespace as this process.
        same_system: bool,
    },
    /// A lock server's word, which anyone who can write to the server can
    /// forge: never grounds for signalling a local process.
    #[default]
    Server,
}

/// One holder of a lock, as far as it can be known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HolderInfo {
    /// The holding process (the wrapper, or the program with -F).
    pub pid: Option<i32>,
    /// The command lockwrap runs, once spawned.
    pub child_pid: Option<i32>,
    /// The holder's uid.
    pub uid: Option<u32>,
    /// The holder's host, when it may differ from this one.
    pub host: Option<String>,
    /// The holder's command line.
    pub command: Option<String>,
    /// How long it has held the lock (or has run, when that is all we know).
    pub age: Option<Duration>,
    /// The holding process's start time (clock ticks since boot), so that a
    /// reused pid is never taken for it.
    pub start_time: Option<u64>,
    /// The child's start time.
    pub child_start_time: Option<u64>,
    /// Where this information comes from.
    pub source: HolderSource,
}

/// A held lock. Dropping it releases it; [`Held::release`] does the same and
/// reports failures. `Send`: a slot taken on a waiting thread is handed to
/// the main thread.
pub trait Held: Send {
    /// The fds that carry the lock into the child (and across `-F`): the
    /// child keeps the lock while any copy of them is open. Empty when the
    /// lock is not an fd.
    fn lock_fds(&self) -> Vec<BorrowedFd<'_>> {
        Vec::new()
    }

    /// Whether the kernel keeps the lock for as long as any copy of
    /// [`Held::lock_fds`] is open, so that processes the command leaves
    /// behind keep it without lockwrap's help. When false, lockwrap keeps
    /// the lock until the last process of the command's tree has exited.
    fn kernel_keeps_lock(&self) -> bool {
        false
    }

    /// Tells the holder the child's pid, so that a lock whose wrapper died is
    /// still seen as held while the child runs.
    fn child_started(&mut self, _child: Pid) -> Result<(), Error> {
        Ok(())
    }

    /// The command is running (with `-F`: is about to replace this
    /// process): what was kept off the way between taking the lock and
    /// starting it can be done now.
    fn command_started(&mut self) {}

    /// Extra environment for the child (a fencing token, a slot number).
    fn child_env(&self) -> Vec<(OsString, OsString)> {
        Vec::new()
    }

    /// For leases: how often [`Held::renew`] must be called while the child runs.
    fn renew_every(&self) -> Option<Duration> {
        None
    }

    /// For leases: extends the lease. An error means the lock may no longer
    /// be ours; the child must be stopped.
    fn renew(&mut self) -> Result<(), Error> {
        Ok(())
    }

    /// `--min-hold`: the command is done, but the lock must stay taken
    /// until `until`. Returns true when the lock's server keeps it that long
    /// by itself, so that lockwrap may go at once (this value then has
    /// nothing left to release); false, the default, when lockwrap must
    /// keep holding it (renewing it as usual) and release it at `until`. An
    /// error means the lock may no longer be ours. A set may leave part of
    /// itself to servers and still return false: renewing and releasing
    /// that part are then no-ops.
    fn release_later(&mut self, _until: Instant) -> Result<bool, Error> {
        Ok(false)
    }

    /// Releases the lock.
    fn release(self: Box<Self>) -> Result<(), Error>;
}

impl HolderInfo {
    /// What /proc tells about a live process.
    pub fn of_process(pid: i32) -> HolderInfo {
        HolderInfo {
            pid: Some(pid),
            uid: holder::process_uid(pid),
            command: holder::process_command(pid),
            age: holder::process_age(pid),
            start_time: holder::process_start_time(pid),
            source: HolderSource::Kernel,
            ..HolderInfo::default()
        }
    }

    /// What a holder record says.
    pub fn of_record(record: &HolderRecord) -> HolderInfo {
        HolderInfo {
            pid: Some(record.pid),
            child_pid: record.child.map(|(pid, _)| pid),
            uid: Some(record.uid),
            host: Some(record.host.clone()),
            command: Some(record.command.clone()),
            age: Some(record.age()),
            start_time: Some(record.start_time),
            child_start_time: record.child.map(|(_, start)| start),
            source: HolderSource::Record {
                same_system: record.is_from_this_system(),
            },
        }
    }
}

/// The registration point: the backend for a lock spec.
pub fn open(spec: &LockSpec) -> Box<dyn Backend> {
    let lock = spec.to_string();
    match spec {
        LockSpec::Flock(path) => {
            Box::new(kernel::KernelLock::path(lock, path.clone(), flock::Flock))
        }
        LockSpec::Ofd(path, range) => Box::new(kernel::KernelLock::path(
            lock,
            path.clone(),
            ofd::Ofd { range: *range },
        )),
        LockSpec::Mkdir(path) => Box::new(mkdir::MkdirLock::new(lock, path.clone())),
        LockSpec::Excl(path) => Box::new(excl::ExclLock::new(lock, path.clone())),
        LockSpec::Abstract(name) => {
            Box::new(abstract_socket::AbstractLock::new(lock, name.clone()))
        }
        #[cfg(feature = "redis")]
        LockSpec::Redis(remote) => Box::new(self::redis::RedisLock::new(lock, remote.clone())),
        #[cfg(feature = "postgres")]
        LockSpec::Postgres(remote) => Box::new(self::postgres::PgLock::new(lock, remote.clone())),
        #[cfg(not(all(feature = "redis", feature = "postgres")))]
        _ => Box::new(NotBuilt(lock)),
    }
}

/// A server lock whose backend this binary was built without.
#[cfg(not(all(feature = "redis", feature = "postgres")))]
struct NotBuilt(String);

#[cfg(not(all(feature = "redis", feature = "postgres")))]
impl NotBuilt {
    fn error(&self) -> Error {
        Error::Usage(format!(
            "{}: this lockwrap was built without support for this kind of lock (rebuild with the default cargo features)",
            self.0
        ))
    }
}

#[cfg(not(all(feature = "redis", feature = "postgres")))]
impl Backend for NotBuilt {
    fn acquire(&self, _: &Request<'_>, _: &Waiter<'_>) -> Result<Box<dyn Held>, Error> {
        Err(self.error())
    }

    fn status(&self) -> Result<LockStatus, Error> {
        Err(self.error())
    }
}

/// The backend for flock(1)'s fd mode: an already-open fd of the caller,
/// locked with flock(2), or with OFD fcntl locks on `fcntl`'s byte range.
pub fn for_fd(fd: RawFd, fcntl: Option<ByteRange>) -> Box<dyn Backend> {
    match fcntl {
        Some(range) => Box::new(kernel::KernelLock::fd(fd, ofd::Ofd { range })),
        None => Box::new(kernel::KernelLock::fd(fd, flock::Flock)),
    }
}

/// flock(2) on a raw fd. nix offers it only as `Flock`, which unlocks on
/// drop; that would take the lock away from a child that inherited the fd.
fn flock_fd(fd: RawFd, operation: libc::c_int) -> nix::Result<()> {
    // SAFETY: flock takes a plain integer fd and flags and touches no
    // memory; an fd that is not open gives EBADF.
    nix::errno::Errno::result(unsafe { libc::flock(fd, operation) }).map(drop)
}

/// Clears or sets FD_CLOEXEC: whether a child inherits `fd`.
pub fn set_inheritable(fd: BorrowedFd<'_>, inheritable: bool) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let flags = if inheritable {
        FdFlag::empty()
    } else {
        FdFlag::FD_CLOEXEC
    };
    fcntl(fd, FcntlArg::F_SETFD(flags)).map(drop)
}
