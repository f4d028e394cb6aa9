//! lockwrap: run a command while holding a lock. A drop-in for util-linux
//! flock(1) with more lock mechanisms, chosen by a lock spec.
//!
//! The binary parses the command line with [`cli::parse`] and hands the
//! result to [`run`] or [`status()`], which return the exit code or an
//! [`Error`] that knows its own.

/// Writes one message line to stderr, prefixed with the program's name
/// (`lockwrap: `, or `flock: ` under that name, see [`program`]). Unlike
/// `eprintln!` it never panics: a closed or broken stderr loses the message,
/// not the exit code.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "{}: {}",
            $crate::program::prefix(),
            format_args!($($arg)*)
        );
    }};
}

pub mod backend;
pub mod child;
pub mod cli;
pub mod duration;
pub mod error;
pub mod holder;
pub mod program;
pub mod size;
pub mod spec;
pub mod status;
pub mod takeover;
pub mod terminal;
pub mod tree;
pub mod wait;

use std::ffi::OsString;
use std::io::Write as _;
use std::time::Duration;

pub use error::Error;

use crate::backend::{Backend, Held, Request};
use crate::child::{ChildPlan, Ending};
use crate::cli::{Invocation, Mode, StatusQuery, Task};
use crate::spec::LockSpec;
use crate::wait::{Signals, Waiter};

/// How long a child stopped by lockwrap gets between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);
/// With more than [`MAX_SLOT_THREADS`] slots, how long a waiter blocks on
/// one slot before it looks at the others again.
const SLOT_RESCAN: Duration = Duration::from_millis(250);
/// Up to how many slots a waiter waits for all at once, a thread each.
const MAX_SLOT_THREADS: usize = 64;

/// Takes the lock, runs the command (if any) and releases. Returns how to
/// end: the command's status (or 0 in fd mode), or the signal to die of.
pub fn run(invocation: Invocation) -> Result<Ending, Error> {
    let signals = Signals::install().map_err(|e| {
        let lock = match &invocation.task {
            Task::Run { lock, .. } => lock.to_string(),
            Task::Fd { fd, .. } => program::fd_lock_name(*fd),
        };
        Error::os(&lock, "cannot set up signal handling", e)
    })?;
    let kind = match &invocation.task {
        Task::Run { lock, .. } => lock.kind(),
        Task::Fd { fcntl: Some(_), .. } => "fcntl",
        Task::Fd { fcntl: None, .. } => "flock",
    };
    let (lock, lock_text, command, backends) = match &invocation.task {
        Task::Run {
            lock,
            lock_text,
            command,
        } => {
            let backends = if invocation.slots > 1 {
                (0..invocation.slots)
                    .map(|i| backend::open(&lock.slot(i)))
                    .collect()
            } else {
                vec![backend::open(lock)]
            };
            (
                lock.to_string(),
                lock_text.clone(),
                Some(command.as_slice()),
                backends,
            )
        }
        Task::Fd { fd, fcntl, command } => (
            program::fd_lock_name(*fd),
            OsString::from(fd.to_string()),
            command.as_deref(),
            vec![backend::for_fd(*fd, *fcntl)],
        ),
    };
    check_supported(&invocation, backends[0].as_ref(), &lock, kind)?;
    let command_text = command.map(describe_command).unwrap_or_default();
    let request = Request {
        lease: invocation.lease,
        mode: invocation.mode,
        command: &command_text,
        stale_after: invocation.stale_after,
    };
    if invocation.replace {
        // A lock server takes the lock away itself; no pid it names is signalled.
        match backends[0].revoke(&request)? {
            Some(revoked) => {
                if invocation.verbose && revoked > 0 {
                    say!("{lock}: --replace: revoked the holder's lock on the server");
                }
            }
            None => {
                let holders = backends[0].status()?;
                if holders.held {
                    let signalled = takeover::evict(&lock, &holders, invocation.kill_grace)?;
                    if invocation.verbose {
                        say!(
                            "{lock}: --replace: stopped the holder ({signalled} {} signalled)",
                            if signalled == 1 {
                                "process"
                            } else {
                                "processes"
                            }
                        );
                    }
                }
            }
        }
    }
    let waiter =
        Waiter::new(&lock, invocation.wait, &signals).with_progress(|| observe_all(&backends));
    let acquired = acquire_any_slot(&backends, &request, &waiter);
    let took = waiter.elapsed();
    drop(waiter);
    let (slot, mut held) = acquired.map_err(|e| {
        if invocation.verbose {
            with_holder(e, &backends)
        } else {
            e
        }
    })?;
    if invocation.verbose {
        // flock(1)'s format: whole microseconds, not rounded.
        program::report(
            &lock,
            format_args!(
                "getting lock took {}.{:06} seconds",
                took.as_secs(),
                took.subsec_micros()
            ),
        );
    }
    let Some(argv) = command else {
        return held.release().map(|()| Ending::Code(0));
    };
    let mut env = vec![(OsString::from("LOCKWRAP_LOCK"), lock_text)];
    if invocation.slots > 1 {
        env.push((
            OsString::from("LOCKWRAP_SLOT"),
            OsString::from(slot.to_string()),
        ));
    }
    let plan = ChildPlan {
        lock: &lock,
        argv,
        env,
        close_in_child: invocation.close_in_child,
        max_runtime: invocation.max_runtime,
        kill_grace: invocation.kill_grace,
        dies_with_wrapper: !backends[slot].survives_exec(),
        verbose: invocation.verbose,
    };
    if invocation.verbose {
        program::report(
            &lock,
            format_args!("executing {}", argv[0].to_string_lossy()),
        );
    }
    if invocation.no_fork {
        // As flock(1)'s stdio buffer, lines not written yet die with the exec.
        program::discard_unwritten_report();
        // The exec'd program cannot receive what arrived before it exists.
        if let Some(signal) = signals.take_forwarded() {
            return Err(Error::Interrupted { lock, signal });
        }
        return Err(plan.exec(held.as_ref()));
    }
    let code = plan.run(held.as_mut(), &signals)?;
    let _deferred = signals.defer();
    if let Err(e) = held.release() {
        say!("warning: {e}");
    }
    Ok(code)
}

/// `--status`: prints one line (or JSON object) per lock, and returns 0 when
/// every lock could be taken now, else the `-E` code, as `-n` would.
pub fn status(query: &StatusQuery) -> Result<u8, Error> {
    let mut all_free = true;
    let mut out = std::io::stdout().lock();
    for spec in &query.locks {
        let slots: Vec<LockSpec> = if query.slots > 1 {
            (0..query.slots).map(|i| spec.slot(i)).collect()
        } else {
            vec![spec.clone()]
        };
        let mut any_slot_free = false;
        for slot in &slots {
            let state = backend::open(slot).status()?;
            any_slot_free |= !state.held || state.stale || (query.shared && state.shared);
            let lock = slot.to_string();
            let line = if query.json {
                status::json_line(&lock, &state)
            } else {
                status::text_line(&lock, &state)
            };
            if writeln!(out, "{line}").is_err() {
                return Ok(error::EXIT_OS_ERROR);
            }
        }
        all_free &= any_slot_free;
    }
    Ok(if all_free {
        0
    } else {
        query.conflict_exit_code
    })
}

/// Takes one free slot (or the only lock). A waiter waits for all slots
/// together, one thread per slot, each trying its slot at once (and each
/// with its own blocked attempt, watch or server connection for the whole
/// wait), and takes whichever is freed first. The other waits are cancelled
/// and joined; a slot won at the same moment is released again. Above
/// [`MAX_SLOT_THREADS`] slots a waiter blocks on one slot at a time instead,
/// looking at the others again every [`SLOT_RESCAN`].
fn acquire_any_slot(
    backends: &[Box<dyn Backend>],
    request: &Request<'_>,
    waiter: &Waiter<'_>,
) -> Result<(usize, Box<dyn Held>), Error> {
    if backends.len() == 1 {
        return backends[0].acquire(request, waiter).map(|held| (0, held));
    }
    if waiter.is_nonblocking() || backends.len() > MAX_SLOT_THREADS {
        for (slot, backend) in backends.iter().enumerate() {
            match backend.acquire(request, &waiter.nonblocking()) {
                Ok(held) => return Ok((slot, held)),
                Err(Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    if waiter.is_nonblocking() {
        return Err(waiter.conflict());
    }
    if backends.len() > MAX_SLOT_THREADS {
        return rescan_slots(backends, request, waiter);
    }
    let (cancel, cancel_all) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::os(waiter.lock(), "cannot wait for the slots", e))?;
    std::thread::scope(|scope| {
        let (results, arrivals) = std::sync::mpsc::channel();
        for (slot, backend) in backends.iter().enumerate() {
            let results = results.clone();
            let terms = waiter.terms();
            let cancel = std::os::fd::AsRawFd::as_raw_fd(&cancel);
            let started = std::thread::Builder::new()
                .name(format!("slot-{slot}"))
                .spawn_scoped(scope, move || {
                    let _ = results.send(SlotNews::Started(slot, wait::Interruptee::this_thread()));
                    let outcome = backend.acquire(request, &terms.waiter(cancel));
                    let _ = results.send(SlotNews::Ended(slot, outcome));
                });
            if let Err(e) = started {
                let _ = nix::unistd::write(&cancel_all, b"x");
                let errno = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN));
                return Err(Error::os(waiter.lock(), "cannot wait for the slots", errno));
            }
        }
        drop(results);
        // Signals go to the slot threads, which wait on them; this thread
        // only collects what they come to.
        let _deferred = waiter.defer_signals();
        let mut running: Vec<Option<wait::Interruptee>> = vec![None; backends.len()];
        let mut stopping = false;
        let mut won: Option<(usize, Box<dyn Held>)> = None;
        let mut failed: Option<Error> = None;
        loop {
            let news = if stopping {
                // The cancel pipe ends waits in poll; a blocking call on a
                // socket (a Redis BLPOP) needs the interrupt, sent again
                // until its thread ends.
                for thread in running.iter().flatten() {
                    thread.interrupt();
                }
                match arrivals.recv_timeout(SLOT_INTERRUPT_AGAIN) {
                    Ok(news) => news,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match arrivals.recv() {
                    Ok(news) => news,
                    Err(_) => break,
                }
            };
            let (slot, result) = match news {
                SlotNews::Started(slot, Ok(thread)) => {
                    running[slot] = Some(thread);
                    continue;
                }
                SlotNews::Started(_, Err(_)) => continue,
                SlotNews::Ended(slot, result) => {
                    running[slot] = None;
                    (slot, result)
                }
            };
            match result {
                Ok(held) if won.is_none() && failed.is_none() => won = Some((slot, held)),
                // Freed at the same moment as the slot already taken.
                Ok(held) => drop(held),
                Err(e) if won.is_none() && failed.is_none() => failed = Some(e),
                Err(_) => {}
            }
            if !stopping && (won.is_some() || failed.is_some()) {
                stopping = true;
                let _ = nix::unistd::write(&cancel_all, b"x");
            }
        }
        match (won, failed) {
            (Some(won), _) => Ok(won),
            (None, Some(Error::Timeout { .. })) => Err(waiter.timeout()),
            (None, Some(e)) => Err(e),
            (None, None) => Err(waiter.timeout()),
        }
    })
}

/// What a slot thread tells the thread that waits for the slots.
enum SlotNews {
    /// It runs, and can be interrupted so.
    Started(usize, nix::Result<wait::Interruptee>),
    /// Its wait ended so.
    Ended(usize, Result<Box<dyn Held>, Error>),
}

/// How often slot threads still waiting are interrupted again once one
/// slot is taken (or the wait is over).
const SLOT_INTERRUPT_AGAIN: std::time::Duration = std::time::Duration::from_millis(2);

/// More slots than a waiter starts threads for: blocks on one slot at a
/// time, looking at all of them again every [`SLOT_RESCAN`].
fn rescan_slots(
    backends: &[Box<dyn Backend>],
    request: &Request<'_>,
    waiter: &Waiter<'_>,
) -> Result<(usize, Box<dyn Held>), Error> {
    // Waiters start on different slots so they do not all queue on slot 0.
    let mut next = std::process::id() as usize;
    loop {
        let slot = next % backends.len();
        next = next.wrapping_add(1);
        match backends[slot].acquire(request, &waiter.within(SLOT_RESCAN)) {
            Ok(held) => return Ok((slot, held)),
            Err(Error::Timeout { .. }) if !waiter.expired() => {}
            Err(Error::Timeout { .. }) => return Err(waiter.timeout()),
            Err(e) => return Err(e),
        }
        for (slot, backend) in backends.iter().enumerate() {
            match backend.acquire(request, &waiter.nonblocking()) {
                Ok(held) => return Ok((slot, held)),
                Err(Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Adds "held by ..." to a conflict or timeout, for `--verbose`.
fn with_holder(error: Error, backends: &[Box<dyn Backend>]) -> Error {
    match error {
        Error::Conflict { lock, .. } => Error::Conflict {
            lock,
            holder: Some(describe_all(backends)),
        },
        Error::Timeout { lock, .. } => Error::Timeout {
            lock,
            holder: Some(describe_all(backends)),
        },
        other => other,
    }
}

fn observe_all(backends: &[Box<dyn Backend>]) -> wait::Observed {
    backends
        .iter()
        .map(|b| b.status().map_err(|e| e.to_string()))
        .collect()
}

fn describe_all(backends: &[Box<dyn Backend>]) -> String {
    let described: Vec<String> = backends
        .iter()
        .map(|b| match b.status() {
            Ok(state) => status::describe_holders(&state),
            Err(e) => e.to_string(),
        })
        .collect();
    described.join("; ")
}

/// Refuses combinations a backend cannot honour, before touching the lock.
fn check_supported(
    invocation: &Invocation,
    backend: &dyn Backend,
    lock: &str,
    kind: &str,
) -> Result<(), Error> {
    if invocation.stale_after.is_some() && !backend.reclaims_unknown_owners() {
        return Err(Error::Usage(format!(
            "{lock}: --stale-after applies to mkdir: and excl: locks only; a {kind} lock is freed by the kernel or server when its holder dies (drop the option)"
        )));
    }
    if invocation.lease.is_some() && !backend.has_lease() {
        return Err(Error::Usage(format!(
            "{lock}: --lease applies to Redis and PostgreSQL locks only; a {kind} lock has no lease (drop the option)"
        )));
    }
    if invocation.mode != Mode::Exclusive && !backend.supports_shared() {
        let option = if invocation.mode == Mode::Shared {
            "-s/--shared"
        } else {
            "-u/--unlock"
        };
        return Err(Error::Usage(format!(
            "{lock}: {option} is not possible with this kind of lock; only flock and fcntl locks have shared holders"
        )));
    }
    if invocation.no_fork && !backend.survives_exec() {
        return Err(Error::Usage(format!(
            "{lock}: -F/--no-fork is not possible with this kind of lock: lockwrap must stay to keep the lease alive"
        )));
    }
    if invocation.replace && invocation.slots > 1 {
        return Err(Error::Usage(format!(
            "{lock}: --replace cannot be combined with --slots"
        )));
    }
    Ok(())
}

fn describe_command(argv: &[OsString]) -> String {
    argv.iter()
        .map(|w| w.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
