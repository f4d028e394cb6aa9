//! Waiting without burning CPU: the forwarded signals caught into a
//! self-pipe, deadlines on the monotonic clock, inotify watches for the path
//! backends, and a helper thread for kernel calls that block.
//!
//! This module decides nothing about locks; backends call [`Waiter::pause`]
//! between attempts and it tells them to retry, or why to give up.

use std::cell::Cell;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::backend::LockStatus;
use crate::cli::WaitPolicy;
use crate::error::Error;

/// Signals that a wrapper passes on to its child instead of dying of them.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// A signal taken off the self-pipe.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Which signal.
    pub signal: Signal,
    /// The pid of the process that sent it with kill(2) and friends; None
    /// when the kernel generated it (a terminal's Ctrl-C, which reached the
    /// whole foreground process group).
    pub sender: Option<i32>,
    /// When the handler ran, on the monotonic clock.
    pub at: Duration,
}

/// One self-pipe message: the signal number, the sender's pid (0: the
/// kernel) and the monotonic time in nanoseconds.
const MESSAGE: usize = 13;

/// The write end of the self-pipe, for the signal handler (-1: none).
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// The signal handler: records the signal in the self-pipe and nothing else.
extern "C" fn on_signal(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler;
    // clock_gettime(2), write(2) and errno access are async-signal-safe. errno is restored so
    // the interrupted code does not see ours.
    unsafe {
        let saved = *libc::__errno_location();
        let sender = if !info.is_null() && (*info).si_code <= 0 {
            (*info).si_pid()
        } else {
            0
        };
        let mut now: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
        let nanos = (now.tv_sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(now.tv_nsec as u64);
        let mut message = [0u8; MESSAGE];
        message[0] = signal as u8;
        message[1..5].copy_from_slice(&sender.to_ne_bytes());
        message[5..].copy_from_slice(&nanos.to_ne_bytes());
        // One write of a few bytes to a pipe is atomic: messages never mix.
        libc::write(
            SIGNAL_PIPE.load(Ordering::Relaxed),
            message.as_ptr().cast(),
            MESSAGE,
        );
        *libc::__errno_location() = saved;
    }
}

/// The forwarded signals and SIGCHLD, caught into a self-pipe.
///
/// Handlers rather than a blocked mask: a blocked mask would be inherited by
/// the child through posix_spawn, while handlers revert to the default on
/// exec. A signal the caller ignores (nohup's SIGHUP) stays ignored, for us
/// and for the child.
pub struct Signals {
    read: OwnedFd,
    _write: OwnedFd,
}

impl Signals {
    /// Clears the inherited signal mask (so the child starts with an empty
    /// one, and a blocked SIGALRM cannot break anything) and catches
    /// [`FORWARDED`] and SIGCHLD from now on.
    pub fn install() -> nix::Result<Signals> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        SIGNAL_PIPE.store(write.as_raw_fd(), Ordering::Relaxed);
        SigSet::empty().thread_set_mask()?;
        let action = SigAction::new(
            SigHandler::SigAction(on_signal),
            SaFlags::SA_RESTART | SaFlags::SA_SIGINFO,
            SigSet::empty(),
        );
        for signal in FORWARDED.into_iter().chain([Signal::SIGCHLD]) {
            // SAFETY: on_signal only writes to a pipe and restores errno.
            let previous = unsafe { sigaction(signal, &action) }?;
            if matches!(previous.handler(), SigHandler::SigIgn) && signal != Signal::SIGCHLD {
                // SAFETY: restoring SIG_IGN installs no code.
                unsafe { sigaction(signal, &previous) }?;
            }
        }
        Ok(Signals {
            read,
            _write: write,
        })
    }

    /// The fd to poll for readability.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Holds the caught signals back until the returned guard is dropped;
    /// they are delivered (into the self-pipe) then. For calls on a socket
    /// with a timeout, which a signal interrupts with EINTR even under
    /// SA_RESTART (signal(7)) and leaves a protocol stream out of step: a
    /// lease renewal, or a release, must not fail because the command exited.
    pub fn defer(&self) -> Deferred {
        hold_back(&[Signal::SIGCHLD])
    }

    /// The first pending forwarded signal (not SIGCHLD), if any.
    pub fn take_forwarded(&self) -> Option<Signal> {
        std::iter::from_fn(|| self.take())
            .map(|received| received.signal)
            .find(|signal| *signal != Signal::SIGCHLD)
    }

    /// The next pending signal, if any.
    pub fn take(&self) -> Option<Received> {
        let mut message = [0u8; MESSAGE];
        match nix::unistd::read(&self.read, &mut message) {
            Ok(MESSAGE) => {
                let sender = i32::from_ne_bytes(message[1..5].try_into().ok()?);
                let nanos = u64::from_ne_bytes(message[5..].try_into().ok()?);
                Some(Received {
                    signal: Signal::try_from(i32::from(message[0])).ok()?,
                    sender: (sender > 0).then_some(sender),
                    at: Duration::from_nanos(nanos),
                })
            }
            _ => None,
        }
    }
}

/// Holds back, on the calling thread and until the guard drops, every
/// signal that could cut a call on a socket short: the caught ones and
/// [`Interruptee::interrupt`]'s. For a brief clean-up that must finish
/// (taking back a lock whose acquisition a signal interrupted), bounded by
/// its own timeouts; the signals are delivered when the guard drops.
pub fn uninterrupted() -> Deferred {
    hold_back(&[Signal::SIGCHLD, INTERRUPT])
}

/// Blocks [`FORWARDED`] and `more` on the calling thread until the guard
/// drops.
fn hold_back(more: &[Signal]) -> Deferred {
    let mut set = SigSet::empty();
    for signal in FORWARDED.iter().chain(more) {
        set.add(*signal);
    }
    let previous = set
        .thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
        .ok();
    Deferred { previous }
}

/// Caught signals held back; see [`Signals::defer`].
pub struct Deferred {
    previous: Option<SigSet>,
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if let Some(previous) = self.previous {
            let _ = previous.thread_set_mask();
        }
    }
}

/// Polls `fds` for readability for at most `timeout` (None: forever).
/// Returns which of them are readable.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> nix::Result<Vec<bool>> {
    let mut pollfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    let timeout = match timeout {
        None => PollTimeout::NONE,
        // Round up so a wait for 0.3 ms does not spin on a 0 ms poll.
        Some(d) => PollTimeout::try_from(d.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX),
    };
    match poll(&mut pollfds, timeout) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => return Err(e),
    }
    Ok(pollfds
        .iter()
        .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
        .collect())
}

/// The waiting rules of one acquisition: the deadline, the signals that
/// interrupt it, and the lock name for the errors it returns.
pub struct Waiter<'a> {
    lock: String,
    policy: WaitPolicy,
    deadline: Option<Instant>,
    signals: &'a Signals,
    started: Instant,
    progress: Option<Progress<'a>>,
    /// Readable when another slot was taken: this wait is over.
    cancel: Option<RawFd>,
    /// What the backend learnt of the holder while waiting.
    seen: Arc<SeenHolder>,
    /// Called at the first pause, once for all the waits on these terms.
    first_wait: Option<Arc<FirstWait<'a>>>,
}

/// What a wait does the first time a backend finds the lock held and
/// pauses (joining the lock's line of waiters), once per acquisition even
/// when the slots of a semaphore are waited for on several threads.
struct FirstWait<'a> {
    done: AtomicBool,
    call: Box<FirstWaitCall<'a>>,
    /// The deadline of the wait it was set on: a shorter wait made from it
    /// ([`Waiter::within`], a look at other slots) must not cut it short.
    deadline: Option<Instant>,
    /// Not before this: a pause earlier than this ends by then instead.
    not_before: Instant,
}

/// What [`FirstWait`] runs, given the waiter that paused.
type FirstWaitCall<'a> = dyn Fn(&Waiter<'_>) -> Result<(), Error> + Send + Sync + 'a;

/// The holder as a backend saw it while waiting (from its own connection,
/// record or watch), for the waiting line: drawing it must not cost a new
/// server connection or a scan of /proc every second.
#[derive(Default)]
struct SeenHolder {
    /// Whether anyone shows it (a waiting line is drawn).
    wanted: AtomicBool,
    /// The lock's state and when it was seen (holders' ages grow since).
    seen: Mutex<Option<(LockStatus, Instant)>>,
}

/// What the waiting line shows of each lock: its state, or why it could not
/// be read.
pub type Observed = Vec<Result<LockStatus, String>>;

/// `observed`, `since` ago, described as the waiting line shows it: each
/// holder's age as it is now.
fn describe_observed(observed: &[Result<LockStatus, String>], since: Duration) -> String {
    let described: Vec<String> = observed
        .iter()
        .map(|state| match state {
            Ok(status) => {
                let mut now = status.clone();
                for holder in &mut now.holders {
                    holder.age = holder.age.map(|age| age + since);
                }
                crate::status::describe_holders(&now)
            }
            Err(why) => why.clone(),
        })
        .collect();
    described.join("; ")
}

/// The terms of a wait, to be taken to another thread (a [`Waiter`] itself
/// stays on its thread): see [`Waiter::terms`].
#[derive(Clone)]
pub struct WaitTerms<'a> {
    lock: String,
    policy: WaitPolicy,
    deadline: Option<Instant>,
    signals: &'a Signals,
    started: Instant,
    seen: Arc<SeenHolder>,
    first_wait: Option<Arc<FirstWait<'a>>>,
}

impl<'a> WaitTerms<'a> {
    /// A waiter on these terms that also ends (with a timeout error) when
    /// `cancel` becomes readable. `cancel` must outlive the waiter.
    pub fn waiter(self, cancel: RawFd) -> Waiter<'a> {
        Waiter {
            lock: self.lock,
            policy: self.policy,
            deadline: self.deadline,
            signals: self.signals,
            started: self.started,
            progress: None,
            cancel: Some(cancel),
            seen: self.seen,
            first_wait: self.first_wait,
        }
    }
}

/// How often the waiting line on a terminal is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How often the waiting line asks the backend's status for the holder when
/// the backend reports nothing while it waits (a blocked flock).
const DESCRIBE_EVERY: Duration = Duration::from_secs(15);

/// A single live line on a terminal: "waiting 12s; held by pid 4121 (...)".
struct Progress<'a> {
    observe: Box<dyn Fn() -> Observed + 'a>,
    next_draw: Cell<Instant>,
    shown: Cell<bool>,
    /// What `observe` last told, and when.
    observed: std::cell::RefCell<Option<(Observed, Instant)>>,
}

impl<'a> Waiter<'a> {
    /// Starts the clock for a wait on `lock`.
    pub fn new(lock: &str, policy: WaitPolicy, signals: &'a Signals) -> Waiter<'a> {
        let started = Instant::now();
        let deadline = match policy {
            WaitPolicy::Timeout(d) => started.checked_add(d),
            _ => None,
        };
        Waiter {
            lock: lock.to_owned(),
            policy,
            deadline,
            signals,
            started,
            progress: None,
            cancel: None,
            seen: Arc::default(),
            first_wait: None,
        }
    }

    /// Runs `call` the first time a backend pauses (it found the lock held
    /// and is about to wait), once for this wait and every wait made from
    /// its [`Waiter::terms`] or [`Waiter::within`]; not under `-n`. `call`
    /// is given the waiter that paused, so that whatever it waits for ends
    /// with that wait (signals, a cancelled slot wait), but with this wait's
    /// deadline (not a [`Waiter::within`]'s). An error from `call` ends the
    /// wait with that error.
    pub fn on_first_wait(
        self,
        call: impl Fn(&Waiter<'_>) -> Result<(), Error> + Send + Sync + 'a,
    ) -> Waiter<'a> {
        self.on_first_wait_after(Duration::ZERO, call)
    }

    /// [`Waiter::on_first_wait`], but only once the wait has lasted
    /// `delay`: a pause before that ends by then, and the next one runs
    /// `call`. A wait that ends sooner never runs it (and costs nothing).
    pub fn on_first_wait_after(
        mut self,
        delay: Duration,
        call: impl Fn(&Waiter<'_>) -> Result<(), Error> + Send + Sync + 'a,
    ) -> Waiter<'a> {
        self.first_wait = Some(Arc::new(FirstWait {
            done: AtomicBool::new(false),
            call: Box::new(call),
            deadline: self.deadline,
            not_before: self.started + delay,
        }));
        self
    }

    /// The terms of this wait, for a waiter on another thread.
    pub fn terms(&self) -> WaitTerms<'a> {
        WaitTerms {
            lock: self.lock.clone(),
            policy: self.policy,
            deadline: self.deadline,
            signals: self.signals,
            started: self.started,
            seen: Arc::clone(&self.seen),
            first_wait: self.first_wait.clone(),
        }
    }

    /// Shows a live waiting line on stderr, refreshed every second, naming
    /// the holder as the backend reports it while waiting
    /// ([`Waiter::saw_holder`]), or else as `observe` tells (asked every
    /// 15 s). Only for a terminal that can redraw a line (not
    /// `TERM=dumb`): cron and CI logs get nothing extra. The line is one
    /// row cut to the terminal's width.
    pub fn with_progress(mut self, observe: impl Fn() -> Observed + 'a) -> Waiter<'a> {
        if self.policy != WaitPolicy::NonBlocking && crate::terminal::draws_live_lines() {
            self.progress = Some(Progress {
                observe: Box::new(observe),
                next_draw: Cell::new(self.started + PROGRESS_EVERY),
                shown: Cell::new(false),
                observed: std::cell::RefCell::new(None),
            });
            self.seen.wanted.store(true, Ordering::Relaxed);
        }
        self
    }

    /// A wait on the same terms that gives up after `limit` at the latest
    /// (with a timeout error); used to look at other semaphore slots again.
    pub fn within(&self, limit: Duration) -> Waiter<'a> {
        let soon = Instant::now() + limit;
        Waiter {
            lock: self.lock.clone(),
            policy: WaitPolicy::Timeout(limit),
            deadline: Some(self.deadline.map_or(soon, |d| d.min(soon))),
            signals: self.signals,
            started: self.started,
            progress: None,
            cancel: self.cancel,
            seen: Arc::clone(&self.seen),
            first_wait: self.first_wait.clone(),
        }
    }

    /// The same wait (policy, deadline, signals, start) for another lock of
    /// a set (`--also`): one deadline for all of them, and errors that name
    /// the lock waited for. No waiting line: add one with
    /// [`Waiter::with_progress`].
    pub fn for_lock(&self, lock: &str) -> Waiter<'a> {
        Waiter {
            lock: lock.to_owned(),
            policy: self.policy,
            deadline: self.deadline,
            signals: self.signals,
            started: self.started,
            progress: None,
            cancel: self.cancel,
            seen: Arc::default(),
            first_wait: None,
        }
    }

    /// Whether a waiting line shows the holder: then a backend that learns
    /// who holds the lock while waiting tells [`Waiter::saw_holder`].
    pub fn wants_holder(&self) -> bool {
        self.seen.wanted.load(Ordering::Relaxed)
    }

    /// Tells the waiting line who holds the lock, as the backend found it.
    pub fn saw_holder(&self, status: &LockStatus) {
        if self.wants_holder() {
            *self.seen.seen.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((status.clone(), Instant::now()));
        }
    }

    /// Holds the forwarded signals back from the calling thread until the
    /// guard drops, so that they go to the other threads, which wait on
    /// them (the slot threads of a semaphore wait).
    pub fn defer_signals(&self) -> Deferred {
        self.signals.defer()
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// A waiter for a single attempt under the same signals (`-n`).
    pub fn nonblocking(&self) -> Waiter<'a> {
        Waiter::new(&self.lock, WaitPolicy::NonBlocking, self.signals)
    }

    /// The lock this wait is for, as the user wrote it.
    pub fn lock(&self) -> &str {
        &self.lock
    }

    /// How long this wait has lasted.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether a conflict must be reported at once (`-n`).
    pub fn is_nonblocking(&self) -> bool {
        self.policy == WaitPolicy::NonBlocking
    }

    /// Call after an attempt found the lock held. Sleeps until one of `wake`
    /// is readable or `nap` has passed (then the caller retries), and returns the
    /// error that ends the wait: a conflict under `-n`, a timeout at the
    /// deadline, or a forwarded signal.
    pub fn pause(&self, wake: &[BorrowedFd<'_>], nap: Option<Duration>) -> Result<(), Error> {
        if self.is_nonblocking() {
            return Err(self.conflict());
        }
        let mut nap = nap;
        if let Some(first) = &self.first_wait
            && !first.done.load(Ordering::SeqCst)
        {
            let early = first.not_before.saturating_duration_since(Instant::now());
            if !early.is_zero() {
                nap = Some(nap.map_or(early, |nap| nap.min(early)));
            } else if !first.done.swap(true, Ordering::SeqCst) {
                if first.deadline == self.deadline {
                    (first.call)(self)?;
                } else {
                    (first.call)(&self.until(first.deadline))?;
                }
            }
        }
        self.watch(wake, nap)
    }

    /// This wait with deadline `deadline` instead, without a waiting line
    /// or a first-wait hook.
    fn until(&self, deadline: Option<Instant>) -> Waiter<'a> {
        Waiter {
            lock: self.lock.clone(),
            policy: self.policy,
            deadline,
            signals: self.signals,
            started: self.started,
            progress: None,
            cancel: self.cancel,
            seen: Arc::clone(&self.seen),
            first_wait: None,
        }
    }

    /// Like [`Waiter::pause`] but also under `-n`: for a step that must
    /// finish before the lock can even be tried (connecting to a server),
    /// which the deadline and signals still bound.
    pub fn watch(&self, wake: &[BorrowedFd<'_>], nap: Option<Duration>) -> Result<(), Error> {
        let remaining = match self.deadline {
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return Err(self.timeout()),
            },
            None => None,
        };
        let next_draw = self
            .progress
            .as_ref()
            .map(|p| p.next_draw.get().saturating_duration_since(Instant::now()));
        let timeout = [remaining, nap, next_draw].into_iter().flatten().min();
        // SAFETY: the cancel fd outlives this waiter (see WaitTerms::waiter).
        let cancel = self.cancel.map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
        let mut fds = vec![self.signals.as_fd()];
        fds.extend(cancel);
        fds.extend_from_slice(wake);
        let ready = poll_readable(&fds, timeout)
            .map_err(|e| Error::os(&self.lock, "waiting for the lock", e))?;
        if cancel.is_some() && ready[1] {
            return Err(self.timeout());
        }
        if let Some(progress) = &self.progress {
            progress.draw_if_due(&self.lock, self.started, &self.seen);
        }
        if ready[0]
            && let Some(signal) = self.signals.take_forwarded()
        {
            return Err(Error::Interrupted {
                lock: self.lock.clone(),
                signal,
            });
        }
        Ok(())
    }

    /// How long until the deadline (None: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// The error that ends the wait after a blocking call failed: a
    /// forwarded signal that interrupted it, or the deadline; None when
    /// neither explains the failure.
    pub fn ended(&self) -> Option<Error> {
        if let Some(signal) = self.signals.take_forwarded() {
            return Some(Error::Interrupted {
                lock: self.lock.clone(),
                signal,
            });
        }
        self.expired().then(|| self.timeout())
    }

    /// The error for a held lock under `-n`.
    pub fn conflict(&self) -> Error {
        Error::Conflict {
            lock: self.lock.clone(),
            holder: None,
        }
    }

    /// The error for an expired deadline.
    pub fn timeout(&self) -> Error {
        Error::Timeout {
            lock: self.lock.clone(),
            holder: None,
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Some(progress) = &self.progress
            && progress.shown.get()
            && crate::terminal::stderr_in_foreground()
            && stderr_writable()
        {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

impl Progress<'_> {
    fn draw_if_due(&self, lock: &str, started: Instant, seen: &SeenHolder) {
        let now = Instant::now();
        if now < self.next_draw.get() {
            return;
        }
        self.next_draw.set(now + PROGRESS_EVERY);
        // The terminal may not take more (Ctrl-S, a stalled pty): skip the
        // line rather than block the wait on it. Nor from the background,
        // where it would write over the prompt (or stop lockwrap).
        if !crate::terminal::stderr_in_foreground() || !stderr_writable() {
            return;
        }
        let reported = seen.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let described = match reported {
            Some((status, at)) => describe_observed(&[Ok(status)], now.duration_since(at)),
            None => {
                let mut cached = self.observed.borrow_mut();
                let fresh = cached
                    .as_ref()
                    .is_some_and(|(_, at)| now.duration_since(*at) < DESCRIBE_EVERY);
                if !fresh {
                    *cached = Some(((self.observe)(), now));
                }
                let (observed, at) = cached.as_ref().expect("just filled");
                describe_observed(observed, now.duration_since(*at))
            }
        };
        let waited = crate::duration::human(now.duration_since(started));
        // One row, however long the holder's command: a line that wraps
        // cannot be redrawn in place (`\r` goes back only to its last row),
        // and each draw would leave rows behind.
        let line = crate::terminal::one_row(
            &format!("lockwrap: {lock}: waiting {waited}; {described}"),
            crate::terminal::stderr_columns(),
        );
        let _ = write!(std::io::stderr(), "\r\x1b[K{line}");
        self.shown.set(true);
    }
}

/// Whether a write to stderr would not block now.
fn stderr_writable() -> bool {
    let stderr = std::io::stderr();
    let mut fds = [PollFd::new(stderr.as_fd(), PollFlags::POLLOUT)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLOUT))
}

/// Wakes a waiter when an entry of a directory is removed or renamed away:
/// the release of a mkdir or excl lock.
pub struct NameWatch {
    inotify: Inotify,
    name: std::ffi::OsString,
}

impl NameWatch {
    /// Watches the directory that holds `path` for the removal of its last
    /// component.
    pub fn new(path: &Path) -> nix::Result<NameWatch> {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(
            parent,
            AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM | AddWatchFlags::IN_ONLYDIR,
        )?;
        let name = path.file_name().map(Into::into).unwrap_or_default();
        Ok(NameWatch { inotify, name })
    }

    /// The fd that becomes readable on an event.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }

    /// Reads the pending events; true if one was about our name (or events
    /// were lost). Other names in the directory (other locks, the temp
    /// files of other waiters) must not wake every waiter into an attempt.
    pub fn drain(&self) -> bool {
        let mut relevant = false;
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            relevant |= events.iter().any(|e| {
                e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW)
                    || e.name.as_deref() == Some(self.name.as_os_str())
            });
        }
        relevant
    }
}

/// A blocking call running on a helper thread, so that the caller can keep
/// watching the deadline and signals. A caller that gives up ends the call
/// its own way (a server-side cancel) and then [`Background::finish`]es it;
/// a thread still blocked then is left to the process's exit.
pub struct Background<T> {
    done: OwnedFd,
    thread: Option<std::thread::JoinHandle<T>>,
}

impl<T: Send + 'static> Background<T> {
    /// Starts `call` on a new thread.
    pub fn start(call: impl FnOnce() -> T + Send + 'static) -> nix::Result<Background<T>> {
        Background::start_with_stack(call, None)
    }

    /// Starts `call` on a new thread with a stack of `stack` bytes (None:
    /// std's default, 2 MiB): a thread that only blocks in one system call
    /// needs a few pages, and a smaller stack is cheaper to map and unmap.
    fn start_with_stack(
        call: impl FnOnce() -> T + Send + 'static,
        stack: Option<usize>,
    ) -> nix::Result<Background<T>> {
        let (done, notify) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let mut builder = std::thread::Builder::new().name("lock-wait".into());
        if let Some(bytes) = stack {
            builder = builder.stack_size(bytes);
        }
        // The result comes back through the join, not a channel: a channel
        // allocates on the thread, and glibc then creates a malloc arena
        // for it (a 128 MiB mapping) on every contended wait.
        let thread = builder
            .spawn(move || {
                let result = call();
                let _ = nix::unistd::write(&notify, b"x");
                result
            })
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)))?;
        Ok(Background {
            done,
            thread: Some(thread),
        })
    }

    /// Becomes readable when the result is ready.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.done.as_fd()
    }

    /// The result, if the call has returned (the thread is then joined).
    pub fn try_result(&mut self) -> Option<T> {
        // The thread writes to the pipe just before it returns its result.
        if !poll_readable(&[self.done.as_fd()], Some(Duration::ZERO)).is_ok_and(|ready| ready[0]) {
            return None;
        }
        self.thread.take()?.join().ok()
    }

    /// Waits up to `within` for the call to return and joins its thread;
    /// the result, if it came.
    pub fn finish(mut self, within: Duration) -> Option<T> {
        let give_up = Instant::now() + within;
        loop {
            if let Some(result) = self.try_result() {
                return Some(result);
            }
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let _ = poll_readable(&[self.done.as_fd()], Some(left));
        }
    }
}

/// The signal that interrupts a blocked [`Interruptible`] call. Its handler
/// does nothing and is installed without SA_RESTART, so the call returns
/// EINTR. SIGURG, because nothing else in lockwrap uses it and its default
/// action (ignore) is harmless should one arrive from elsewhere.
const INTERRUPT: Signal = Signal::SIGURG;

extern "C" fn on_interrupt(_: libc::c_int) {}

/// Installs the do-nothing handler of [`INTERRUPT`] (once).
fn install_interrupt() -> nix::Result<()> {
    static INSTALLED: std::sync::OnceLock<nix::Result<()>> = std::sync::OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let action = SigAction::new(
            SigHandler::Handler(on_interrupt),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler does nothing at all.
        unsafe { sigaction(INTERRUPT, &action) }.map(drop)
    })
}

/// A thread that can be interrupted in a blocking call: a call on a socket
/// with a timeout, or any call that is not restarted, returns EINTR.
/// The thread's pthread_t is kept as an integer: it is a pointer (not
/// `Send`) on musl.
#[derive(Debug, Clone, Copy)]
pub struct Interruptee(usize);

impl Interruptee {
    /// The calling thread.
    pub fn this_thread() -> nix::Result<Interruptee> {
        install_interrupt()?;
        Ok(Interruptee(nix::sys::pthread::pthread_self() as usize))
    }

    /// Interrupts its blocking call, if it is in one (a signal that arrives
    /// just before the call starts is lost: send it again while it matters).
    pub fn interrupt(self) {
        let _ = nix::sys::pthread::pthread_kill(self.0 as nix::sys::pthread::Pthread, INTERRUPT);
    }
}

/// How often a cancelled call is signalled again: the first signal may land
/// just before the thread enters the blocking call and be lost.
const INTERRUPT_AGAIN: Duration = Duration::from_millis(2);

/// How long a cancel keeps interrupting a call that does not return.
const CANCEL_AT_MOST: Duration = Duration::from_secs(2);

/// The stack of an [`Interruptible`] call's thread: it runs one system call
/// in a loop and a do-nothing signal handler.
const INTERRUPTIBLE_STACK: usize = 128 * 1024;

/// A blocking call (flock, an OFD lock) on a helper thread, so that the
/// caller can keep watching the deadline and signals, and that can be
/// cancelled and joined: a wait given up leaves no thread, no fd and no lock
/// behind, however long the wait lasted.
pub struct Interruptible<T> {
    call: Background<T>,
    cancelled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<T: Send + 'static> Interruptible<T> {
    /// Starts `call` on a new thread. `call` is given a flag that is set when
    /// the caller cancels, and must return (with anything) when it sees it
    /// set after its blocking call returned EINTR.
    pub fn start(
        call: impl FnOnce(&std::sync::atomic::AtomicBool) -> T + Send + 'static,
    ) -> nix::Result<Interruptible<T>> {
        install_interrupt()?;
        let cancelled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&cancelled);
        let call = Background::start_with_stack(move || call(&flag), Some(INTERRUPTIBLE_STACK))?;
        Ok(Interruptible { call, cancelled })
    }

    /// Becomes readable when the call has returned.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.call.as_fd()
    }

    /// The result, once the call has returned; the thread is joined.
    pub fn try_result(&mut self) -> Option<T> {
        self.call.try_result()
    }

    /// Cancels the call and waits for its thread to end. Returns what the
    /// call returned: a call that succeeded just before it could be
    /// interrupted is reported, so that the caller can undo it.
    pub fn cancel(mut self) -> Option<T> {
        self.cancelled
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = &self.call.thread {
            use std::os::unix::thread::JoinHandleExt as _;
            let pthread = thread.as_pthread_t();
            let give_up = Instant::now() + CANCEL_AT_MOST;
            loop {
                if poll_readable(&[self.call.as_fd()], Some(Duration::ZERO))
                    .is_ok_and(|ready| ready[0])
                {
                    break;
                }
                if Instant::now() >= give_up {
                    // A call the signal cannot interrupt (uninterruptible
                    // sleep on a hung NFS server): leave the thread.
                    return None;
                }
                // std's pthread_t is an integer; libc's is a pointer on musl.
                #[allow(clippy::unnecessary_cast)]
                let _ = nix::sys::pthread::pthread_kill(pthread as _, INTERRUPT);
                let _ = poll_readable(&[self.call.as_fd()], Some(INTERRUPT_AGAIN));
            }
        }
        self.call
            .thread
            .take()
            .and_then(|thread| thread.join().ok())
    }
}
