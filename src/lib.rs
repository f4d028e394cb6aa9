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

pub mod arena;
pub mod backend;
pub mod check;
pub mod child;
pub mod cli;
pub mod duration;
pub mod error;
pub mod fair;
pub mod generate;
pub mod holder;
pub mod lockset;
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
use crate::lockset::{HeldSet, LockSet};
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
    // `--also`: the locks in the order they are taken (the cli refuses it
    // with --slots, --replace and an fd).
    let set = match &invocation.task {
        Task::Run {
            lock, lock_text, ..
        } if !invocation.also.is_empty() => Some(LockSet::new(
            (lock.clone(), lock_text.clone()),
            &invocation.also,
        )?),
        _ => None,
    };
    let (lock, lock_text, command, backends) = match &invocation.task {
        Task::Run {
            lock,
            lock_text,
            command,
        } => {
            let backends = if let Some(set) = &set {
                set.members()
                    .iter()
                    .map(|member| backend::open(&member.spec))
                    .collect()
            } else if invocation.slots > 1 {
                (0..invocation.slots)
                    .map(|i| backend::open(&lock.slot(i)))
                    .collect()
            } else {
                vec![backend::open(lock)]
            };
            (
                set.as_ref()
                    .map_or_else(|| lock.to_string(), LockSet::describe),
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
    let checked: Vec<Checked<'_>> = match &set {
        Some(set) => set
            .members()
            .iter()
            .zip(&backends)
            .map(|(member, backend)| Checked {
                lock: member.spec.to_string(),
                kind: member.spec.kind(),
                backend: backend.as_ref(),
            })
            .collect(),
        None => vec![Checked {
            lock: lock.clone(),
            kind,
            backend: backends[0].as_ref(),
        }],
    };
    check_supported(&invocation, &lock, &checked)?;
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
    let waiter = Waiter::new(&lock, invocation.wait, &signals);
    // On failure, also the locks in the way, for --verbose.
    let (acquired, took, in_line) = match &set {
        None => {
            // One line for all the slots of a semaphore: slot 0's.
            let place =
                fair::Place::new(&lock, backends[0].as_ref(), invocation.fair, &command_text);
            let waiter = waiter
                .with_progress(|| observe_all(&backends))
                .on_first_wait_after(place.join_after(), |paused| place.join(paused));
            let acquired = place
                .before_first_attempt(&waiter)
                .and_then(|()| acquire_any_slot(&backends, &request, &waiter));
            let took = waiter.elapsed();
            drop(waiter);
            // The place is left once the command has started (or at once,
            // if the wait failed): leaving is a few metadata operations on
            // the lock's directory, off the hand-off's critical path there.
            let in_line = acquired.is_ok().then_some(place);
            (acquired.map_err(|e| (e, &backends[..])), took, in_line)
        }
        // A set draws the waiting line of the lock it waits for, and waits
        // in that lock's line.
        Some(set) => {
            let acquired = acquire_set(set, &backends, &request, &waiter, invocation.fair)
                .map(|held| (0, held))
                .map_err(|(at, e)| (e, &backends[at..=at]));
            let took = waiter.elapsed();
            drop(waiter);
            (acquired, took, None)
        }
    };
    // --min-hold counts from here: the lock is ours (or the wait failed).
    let acquired_at = std::time::Instant::now();
    let (slot, mut held) = acquired.map_err(|(e, in_the_way)| {
        if invocation.verbose {
            with_holder(e, in_the_way)
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
    let lock_texts = set
        .as_ref()
        .map_or_else(|| lock_text.clone(), LockSet::texts);
    let mut env = vec![
        (OsString::from("LOCKWRAP_LOCK"), lock_text),
        (OsString::from("LOCKWRAP_LOCKS"), lock_texts),
    ];
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
        dies_with_wrapper: match set {
            Some(_) => backends.iter().any(|b| !b.survives_exec()),
            None => !backends[slot].survives_exec(),
        },
        verbose: invocation.verbose,
        hold_until: invocation
            .min_hold
            .and_then(|hold| acquired_at.checked_add(hold)),
        in_line: std::cell::Cell::new(in_line),
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
        return Err(plan.exec(held.as_mut()));
    }
    let code = plan.run(held.as_mut(), &signals)?;
    let _deferred = signals.defer();
    if let Err(e) = held.release() {
        say!("warning: {e}");
    }
    // What waiters killed meanwhile left in line, if nobody else removed it.
    if let Some(line) = backends[0].line() {
        line.tidy();
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
            let state = fair::status(backend::open(slot).as_ref())?;
            any_slot_free |= !state.held || state.stale || (query.shared && state.shared);
            let lock = slot.spec_text();
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
    // A free slot is taken at once, the lowest first, without a thread
    // per slot: the uncontended case costs one attempt, and two slots
    // cannot both be taken (and one handed back) when several are free.
    for (slot, backend) in backends.iter().enumerate() {
        match backend.acquire(request, &waiter.nonblocking()) {
            Ok(held) => return Ok((slot, held)),
            Err(Error::Conflict { .. }) => {}
            Err(e) => return Err(e),
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
        // The handles are kept until every thread has been interrupted for
        // the last time: a dropped handle detaches its thread, whose
        // pthread_t then dangles once it exits (on musl, pthread_kill on it
        // reads freed memory and crashes).
        let mut threads = Vec::with_capacity(backends.len());
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
            let started = match started {
                Ok(thread) => thread,
                Err(e) => {
                    let _ = nix::unistd::write(&cancel_all, b"x");
                    let errno =
                        nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN));
                    return Err(Error::os(waiter.lock(), "cannot wait for the slots", errno));
                }
            };
            threads.push(started);
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
        for thread in threads {
            let _ = thread.join();
        }
        match (won, failed) {
            (Some(won), _) => Ok(won),
            (None, Some(Error::Timeout { .. })) => Err(waiter.timeout()),
            (None, Some(e)) => Err(e),
            (None, None) => Err(waiter.timeout()),
        }
    })
}

/// `--also`: takes every lock of `set`, in its order (that of `backends`),
/// or none. One wait for all: each lock is waited for under `waiter`'s
/// deadline, keeping the locks already taken, which cannot deadlock since
/// every wrapper takes them in the same order. The leases of the locks
/// taken are renewed while lockwrap waits for the next (a wait may outlast
/// them), and renewed once more when the set is complete if they were
/// waited with, so the command starts with every lease fresh. A conflict,
/// timeout, signal, error or lost lease releases the locks taken, in
/// reverse order, and returns the error (naming the lock in the way or
/// lost) with the index of the lock waited for.
fn acquire_set(
    set: &LockSet,
    backends: &[Box<dyn Backend>],
    request: &Request<'_>,
    waiter: &Waiter<'_>,
    fair: bool,
) -> Result<Box<dyn Held>, (usize, Error)> {
    let mut held = Box::new(HeldSet::default());
    let mut renew_at = None;
    let give_up = |held: Box<HeldSet>, at: usize, e: Error| {
        if let Err(release) = held.release() {
            say!("warning: {release}");
        }
        Err((at, e))
    };
    for (at, (member, backend)) in set.members().iter().zip(backends).enumerate() {
        let member_lock = member.spec.to_string();
        let place = fair::Place::new(&member_lock, backend.as_ref(), fair, request.command);
        let this = waiter
            .for_lock(&member_lock)
            .with_progress(|| observe_all(&backends[at..=at]))
            .on_first_wait_after(place.join_after(), |paused| place.join(paused));
        let (taken, renewed) = while_renewing(&mut held, &mut renew_at, || {
            place
                .before_first_attempt(&this)
                .and_then(|()| backend.acquire(request, &this))
        });
        drop(this);
        drop(place);
        match (taken, renewed) {
            (Ok(lock), Ok(())) => held.push(member.given, member.text.clone(), lock),
            (Ok(lock), Err(lost)) => {
                if let Err(release) = lock.release() {
                    say!("warning: {release}");
                }
                return give_up(held, at, lost);
            }
            (Err(_), Err(lost)) => return give_up(held, at, lost),
            (Err(e), Ok(())) => return give_up(held, at, e),
        }
    }
    if renew_at.is_some()
        && let Err(lost) = held.renew()
    {
        return give_up(held, set.members().len() - 1, lost);
    }
    Ok(held)
}

/// Runs `wait` (the wait for the next lock of a set) while a helper thread
/// renews the leases of the locks in `held` when due: at `renew_at`, then
/// every [`Held::renew_every`]. `renew_at` carries the schedule from one
/// wait to the next (None before the first renewal is scheduled). Returns
/// what `wait` returned and the first renewal failure (then no further
/// renewal is tried; the lock is lost).
fn while_renewing<T>(
    held: &mut HeldSet,
    renew_at: &mut Option<std::time::Instant>,
    wait: impl FnOnce() -> T,
) -> (T, Result<(), Error>) {
    let Some(every) = held.renew_every() else {
        return (wait(), Ok(()));
    };
    let due = renew_at.get_or_insert_with(|| std::time::Instant::now() + every);
    std::thread::scope(|scope| {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let renewer = std::thread::Builder::new()
            .name("renew".into())
            .spawn_scoped(scope, move || {
                loop {
                    let nap = due.saturating_duration_since(std::time::Instant::now());
                    match stopped.recv_timeout(nap) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            held.renew()?;
                            *due = std::time::Instant::now() + every;
                        }
                        _ => return Ok(()),
                    }
                }
            });
        let result = wait();
        drop(stop);
        // Without the thread (none could be started) the renewal after the
        // last lock still tells whether the leases held.
        let renewed = match renewer {
            Ok(renewer) => renewer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => Ok(()),
        };
        (result, renewed)
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

/// One lock as [`check_supported`] sees it.
struct Checked<'b> {
    /// The lock, for messages.
    lock: String,
    /// Its kind's name, for messages.
    kind: &'static str,
    backend: &'b dyn Backend,
}

/// Refuses combinations a backend cannot honour, before touching the lock.
/// `locks` are the lock, or every lock of a set (`lock` names the whole):
/// `--stale-after` and `--lease` apply to the locks that have them and are
/// refused only when none does; -s, -u and -F need every lock to allow them.
fn check_supported(
    invocation: &Invocation,
    lock: &str,
    locks: &[Checked<'_>],
) -> Result<(), Error> {
    // `--stale-after` and `--lease` need one lock of the set to have them.
    let none_has = |option: &str, applies_to: &str, has: fn(&dyn Backend) -> bool, why: &str| {
        match locks {
            [one] if !has(one.backend) => Err(Error::Usage(format!(
                "{}: {option} applies to {applies_to} locks only; a {} lock {why} (drop the option)",
                one.lock, one.kind
            ))),
            _ if !locks.iter().any(|l| has(l.backend)) => Err(Error::Usage(format!(
                "{lock}: {option} applies to {applies_to} locks only, and no lock of the set is one (drop the option)"
            ))),
            _ => Ok(()),
        }
    };
    if invocation.stale_after.is_some() {
        none_has(
            "--stale-after",
            "mkdir: and excl:",
            |b| b.reclaims_unknown_owners(),
            "is freed by the kernel or server when its holder dies",
        )?;
    }
    if invocation.lease.is_some() {
        none_has(
            "--lease",
            "Redis and PostgreSQL",
            |b| b.has_lease(),
            "has no lease",
        )?;
    }
    for one in locks {
        if invocation.mode != Mode::Exclusive && !one.backend.supports_shared() {
            let option = if invocation.mode == Mode::Shared {
                "-s/--shared"
            } else {
                "-u/--unlock"
            };
            return Err(Error::Usage(format!(
                "{}: {option} is not possible with this kind of lock; only flock and fcntl locks have shared holders",
                one.lock
            )));
        }
        if invocation.no_fork && !one.backend.survives_exec() {
            return Err(Error::Usage(format!(
                "{}: -F/--no-fork is not possible with this kind of lock: lockwrap must stay to keep the lease alive",
                one.lock
            )));
        }
    }
    for one in locks {
        if invocation.fair && one.backend.line().is_none() && !one.backend.fair_by_itself() {
            return Err(Error::Usage(format!(
                "{}: --fair is not possible with this kind of lock yet: its waiters have no line to queue in (drop the option)",
                one.lock
            )));
        }
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
