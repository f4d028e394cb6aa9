//! Running the command: spawn (or exec in place with -F), hand it the lock
//! fds, forward signals, enforce --max-runtime, renew leases, and map its end
//! to an exit code. The rule "the child inherits the lock unless -o" lives
//! here and nowhere else.
//!
//! The command is a process tree, not a process. lockwrap is a child
//! subreaper, so every process the command starts stays below it; the
//! supervision is a state machine over that tree:
//!
//! ```text
//! Running --command exits--> Lingering (lock not carried by fds: the rest of
//!    |                          |         the tree still needs it)
//!    +--max-runtime, lock lost, forwarded signal the command died of--+
//!                               v
//!                     Stopping {kill_at} --kill_at--> Killed
//! ```
//!
//! and it ends when the command has exited and, unless the kernel keeps the
//! lock through inherited fds (or `-o`), when no process of the tree is left.
//! With `--min-hold`, that end is followed by `Holding {until}` (lockwrap
//! keeps the lock until then, or until a terminating signal), unless the
//! command was stopped on request or lost the lock, or the lock's server
//! keeps it by itself ([`Held::release_later`]). Lease renewal runs in
//! every state.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, killpg, sigaction};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::backend::{Held, set_inheritable};
use crate::error::{EXIT_MAX_RUNTIME, Error};
use crate::tree::{self, Tree};
use crate::wait::{Received, Signals, poll_readable};

/// A signal sent twice by the same process within this interval is one
/// signal: timeout(1) sends its signal to the monitored pid and then at once
/// to its whole process group, so lockwrap receives it twice for one
/// request. Repeats further apart are the sender's intent and all forwarded.
const SAME_SIGNAL_WITHIN: Duration = Duration::from_millis(10);

/// While stopping the tree, how often it is scanned again for processes
/// that appeared without a SIGCHLD reaching lockwrap (a grandchild forked
/// just as its parent was signalled).
const RESCAN_EVERY: Duration = Duration::from_millis(500);

/// How to run the command.
pub struct ChildPlan<'a> {
    /// The lock as the user wrote it, for messages.
    pub lock: &'a str,
    /// argv; never empty.
    pub argv: &'a [OsString],
    /// Extra environment (LOCKWRAP_LOCK, ...).
    pub env: Vec<(OsString, OsString)>,
    /// `-o`: the child does not inherit the lock fds.
    pub close_in_child: bool,
    /// `--max-runtime`.
    pub max_runtime: Option<Duration>,
    /// How long a SIGTERM'd tree gets before SIGKILL.
    pub kill_grace: Duration,
    /// For leases: only lockwrap renews the lock, so the command must not
    /// outlive it (the command gets SIGKILL when lockwrap dies).
    pub dies_with_wrapper: bool,
    /// `--verbose`: say when lockwrap stops the command.
    pub verbose: bool,
    /// `--min-hold`: when the lock may be released at the earliest (its
    /// acquisition plus the minimum hold).
    pub hold_until: Option<Instant>,
    /// The waiter's place in the lock's line, if it took one: left once the
    /// command has started (before an exec), so that leaving costs the
    /// hand-off nothing. The next fair waiter's turn comes then; the lock is
    /// this wrapper's anyway.
    pub in_line: std::cell::Cell<Option<crate::fair::Place<'a>>>,
}

/// How lockwrap ends once the command has: an exit code, or (after the
/// lock is released) death by the signal the command died of, so that a
/// shell loop around lockwrap stops at the first Ctrl-C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Exit with this code.
    Code(u8),
    /// Die of this signal.
    DieOf(Signal),
}

impl ChildPlan<'_> {
    fn command(&self, held: &dyn Held) -> Result<Command, Error> {
        for fd in held.lock_fds() {
            set_inheritable(fd, !self.close_in_child)
                .map_err(|e| Error::os(self.lock, "cannot pass the lock to the command", e))?;
        }
        let mut command = Command::new(&self.argv[0]);
        command.args(&self.argv[1..]);
        command.envs(self.env.iter().cloned());
        command.envs(held.child_env());
        Ok(command)
    }

    fn exec_error(&self, e: &std::io::Error) -> Error {
        Error::Exec {
            lock: self.lock.to_owned(),
            program: self.argv[0].to_string_lossy().into_owned(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::ENOEXEC)),
        }
    }

    /// `-F`: replaces this process with the command, which keeps the lock.
    /// Returns only on failure (the caller's guard then releases the lock).
    pub fn exec(&self, held: &mut dyn Held) -> Error {
        // The exec'd program cannot leave the line.
        drop(self.in_line.take());
        match self.command(held) {
            Ok(mut command) => {
                // Nothing runs after the exec to give back what the lock
                // kept for after the spawn (a mkdir/excl waiter's turn in
                // the waiting room, whose file would stay beside the lock).
                held.command_started();
                // std resets the signal mask and SIGPIPE before exec.
                self.exec_error(&command.exec())
            }
            Err(e) => e,
        }
    }

    /// Spawns the command in a process group of its own and supervises its
    /// process tree, forwarding signals and renewing the lock. Returns how
    /// lockwrap should end.
    pub fn run(&self, held: &mut dyn Held, signals: &Signals) -> Result<Ending, Error> {
        // Without it, the orphans of the command would escape to init.
        tree::become_subreaper()
            .map_err(|e| Error::os(self.lock, "cannot supervise the command's processes", e))?;
        let shares_group = crate::terminal::in_terminal_foreground();
        let mut command = self.command(held)?;
        if !shares_group {
            // Its own group: a signal to lockwrap's group reaches the
            // command once, through lockwrap, instead of twice.
            command.process_group(0);
        }
        if self.dies_with_wrapper {
            let parent = nix::unistd::getpid();
            // SAFETY: between fork and exec the closure makes only
            // async-signal-safe calls (prctl, getppid) and allocates nothing.
            unsafe {
                command.pre_exec(move || {
                    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                    // lockwrap may have died before the prctl.
                    if nix::unistd::getppid() != parent {
                        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().map_err(|e| self.exec_error(&e))?;
        let pid = Pid::from_raw(child.id() as i32);
        // lockwrap reaps its children itself (waitpid(-1)), orphans included.
        drop(child);
        // With -o only lockwrap holds the lock: recording the command as a
        // holder would keep a mkdir/excl lock alive after lockwrap died,
        // unlike the fd-carried locks the command does not inherit.
        let deferred = signals.defer();
        let recorded = if self.close_in_child {
            Ok(())
        } else {
            held.child_started(pid)
        };
        drop(deferred);
        if let Err(e) = recorded {
            crate::say!("warning: {e}");
        }
        held.command_started();
        drop(self.in_line.take());
        let now = Instant::now();
        let mut supervisor = Supervisor {
            plan: self,
            wait_for_tree: !self.close_in_child && !held.kernel_keeps_lock(),
            renew_at: held.renew_every().map(|every| now + every),
            renewed_at: now,
            held,
            signals,
            shares_group,
            command: pid,
            status: None,
            state: State::Running,
            cause: None,
            tree: Tree::of_this_process(),
            deadline: self.max_runtime.and_then(|limit| now.checked_add(limit)),
            received: Vec::new(),
            stop_asked_at: None,
            ended_at: None,
            last_forwarded: None,
            rescan_at: None,
        };
        supervisor.run()
    }
}

/// Where the supervision of the command's tree stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The command runs.
    Running,
    /// The command has exited; other processes of its tree still run and
    /// still need the lock.
    Lingering,
    /// SIGTERM was sent to the tree; SIGKILL is due at `kill_at`.
    Stopping { kill_at: Instant },
    /// SIGKILL was sent to every process of the tree, once; the kernel is
    /// tearing them down.
    Killed,
    /// `--min-hold`: all is done and lockwrap only keeps the lock, until
    /// `until`, then ends so.
    Holding { until: Instant, ending: Ending },
}

/// Why lockwrap stops the tree.
enum StopCause {
    /// `--max-runtime` ran out.
    MaxRuntime,
    /// The lease could not be renewed.
    LockLost(Error),
    /// lockwrap received this signal and the command died of it (or had
    /// already exited).
    Signal(Signal),
}

struct Supervisor<'p, 'a, 'h> {
    plan: &'p ChildPlan<'a>,
    held: &'h mut dyn Held,
    signals: &'p Signals,
    /// Whether the command is in lockwrap's process group (a terminal's
    /// foreground job) rather than in a group of its own.
    shares_group: bool,
    /// The command: its pid (and, unless `shares_group`, its group's id).
    command: Pid,
    /// How the command ended, once it has.
    status: Option<WaitStatus>,
    state: State,
    cause: Option<StopCause>,
    tree: Tree,
    /// Whether the lock must be kept until the whole tree is gone.
    wait_for_tree: bool,
    renew_at: Option<Instant>,
    /// The last successful renewal (or the start): the lease runs out at the
    /// latest three renewal intervals after it.
    renewed_at: Instant,
    /// When `--max-runtime` runs out.
    deadline: Option<Instant>,
    /// The forwarded signals lockwrap received.
    received: Vec<Signal>,
    /// When lockwrap last received SIGTERM or SIGINT (a request to stop).
    stop_asked_at: Option<Instant>,
    /// When the command's end was seen.
    ended_at: Option<Instant>,
    /// The last signal forwarded, who sent it and when.
    last_forwarded: Option<(Signal, Option<i32>, Duration)>,
    /// While stopping: when to look for new processes of the tree again.
    rescan_at: Option<Instant>,
}

impl Supervisor<'_, '_, '_> {
    fn run(&mut self) -> Result<Ending, Error> {
        loop {
            let timeout = self
                .next_timer()
                .map(|at| at.saturating_duration_since(Instant::now()));
            poll_readable(&[self.signals.as_fd()], timeout)
                .map_err(|e| Error::os(self.plan.lock, "waiting for the command", e))?;
            while let Some(received) = self.signals.take() {
                self.on_signal(received);
            }
            let reaped = tree::reap();
            for status in reaped.statuses {
                self.on_status(status);
            }
            self.stop_lingering_if_asked(reaped.none_left);
            self.rescan_if_stopping();
            if let Some(ending) = self.ending(reaped.none_left) {
                return ending;
            }
            self.on_timers(Instant::now());
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        let deadline = self
            .deadline
            .filter(|_| matches!(self.state, State::Running | State::Lingering));
        let kill_at = match self.state {
            State::Stopping { kill_at } | State::Holding { until: kill_at, .. } => Some(kill_at),
            _ => None,
        };
        [self.renew_at, deadline, kill_at, self.rescan_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// A stop asked for (SIGTERM, SIGINT) while the command ran, which the
    /// command handled and then exited of its own accord within
    /// `--kill-grace` (the time a stop grants), still stops what it left
    /// behind: the signal was meant for the whole job, and nobody may be
    /// left to send another (it came just as the command ended, or the
    /// command trapped it to clean up). Without this lockwrap would wait
    /// for those processes as long as they ran. A command that exits later
    /// ignored the request and went on with its work: what it leaves is
    /// what it meant to leave, and lockwrap waits for it as usual.
    fn stop_lingering_if_asked(&mut self, none_left: bool) {
        if self.state != State::Lingering || none_left {
            return;
        }
        let (Some(asked), Some(ended)) = (self.stop_asked_at, self.ended_at) else {
            return;
        };
        if ended.saturating_duration_since(asked) > self.plan.kill_grace {
            return;
        }
        // Not SIGHUP: a command that caught it may have taken it as "reload".
        let asked = |s: &Signal| matches!(s, Signal::SIGTERM | Signal::SIGINT);
        if let Some(signal) = self.received.iter().copied().find(asked) {
            self.begin_stop(StopCause::Signal(signal), self.plan.kill_grace);
        }
    }

    /// While stopping, processes that appeared since the last scan (forked
    /// and orphaned, typically announced by a SIGCHLD) get what the others
    /// got; each process still gets each signal once.
    fn rescan_if_stopping(&mut self) {
        let signal = match self.state {
            State::Stopping { .. } => Signal::SIGTERM,
            State::Killed => Signal::SIGKILL,
            State::Running | State::Lingering | State::Holding { .. } => return,
        };
        self.tree.signal_all(signal);
        self.rescan_at = Some(Instant::now() + RESCAN_EVERY);
    }

    fn on_signal(&mut self, received: Received) {
        let signal = received.signal;
        if signal == Signal::SIGCHLD {
            return;
        }
        if let State::Holding { ending, .. } = self.state {
            // Nothing runs any more: a request to stop ends the hold at
            // once, and lockwrap ends as the command did, except that after
            // SIGINT or SIGQUIT it dies of it, so that a shell loop stops.
            if is_terminating(signal) {
                let ending = match signal {
                    Signal::SIGINT | Signal::SIGQUIT => Ending::DieOf(signal),
                    _ => ending,
                };
                self.state = State::Holding {
                    until: Instant::now(),
                    ending,
                };
            }
            return;
        }
        if !self.received.contains(&signal) {
            self.received.push(signal);
        }
        if matches!(signal, Signal::SIGTERM | Signal::SIGINT) && self.status.is_none() {
            self.stop_asked_at = Some(Instant::now());
        }
        // In a shared group, the terminal already delivered what it
        // generated to the command.
        if self.shares_group && received.sender.is_none() {
            if self.state == State::Lingering && is_terminating(signal) {
                self.begin_stop(StopCause::Signal(signal), self.plan.kill_grace);
            }
            return;
        }
        if let Some((last, sender, at)) = self.last_forwarded
            && last == signal
            && sender == received.sender
            && received.at.saturating_sub(at) < SAME_SIGNAL_WITHIN
        {
            return;
        }
        self.last_forwarded = Some((signal, received.sender, received.at));
        if self.status.is_none() {
            self.forward(signal);
        } else if self.state == State::Lingering && is_terminating(signal) {
            self.begin_stop(StopCause::Signal(signal), self.plan.kill_grace);
        }
    }

    /// Sends `signal` to the command's group (or, in a shared group, to the
    /// command alone), as the kernel would have delivered a signal sent to
    /// lockwrap's group. The command is not reaped yet, so neither its pid
    /// nor its group id can have been reused. A stopped command is continued
    /// so that it can act on a terminating signal, as timeout(1) does.
    fn forward(&self, signal: Signal) {
        let send = |signal| {
            if self.shares_group {
                kill(self.command, signal)
            } else {
                // The command may have left its group (setpgid): it is then
                // signalled itself too.
                let in_group = nix::unistd::getpgid(Some(self.command)) == Ok(self.command);
                let group = killpg(self.command, signal);
                if in_group {
                    group
                } else {
                    kill(self.command, signal)
                }
            }
        };
        let _ = send(signal);
        if is_terminating(signal) {
            let _ = send(Signal::SIGCONT);
        }
    }

    fn on_status(&mut self, status: WaitStatus) {
        match status {
            WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _) if pid == self.command => {
                self.status = Some(status);
                self.ended_at = Some(Instant::now());
                self.on_command_end(status);
            }
            _ => {}
        }
    }

    fn on_command_end(&mut self, status: WaitStatus) {
        if self.state != State::Running {
            return;
        }
        if let WaitStatus::Signaled(_, signal, _) = status
            && is_terminating(signal)
            && self.asked_for(signal)
        {
            if signal == Signal::SIGTERM && !self.shares_group {
                // The SIGTERM the command died of was forwarded to its
                // whole group: the rest of the group must not get it twice.
                self.tree.sent_to_group(self.command.as_raw(), signal);
            }
            self.begin_stop(StopCause::Signal(signal), self.plan.kill_grace);
        } else if self.wait_for_tree {
            self.state = State::Lingering;
        }
    }

    /// Whether the command dying of `signal` is what someone asked for:
    /// lockwrap received it too (forwarded it, or the terminal sent it to
    /// the whole group).
    fn asked_for(&self, signal: Signal) -> bool {
        self.received.contains(&signal)
    }

    fn on_timers(&mut self, now: Instant) {
        if let (Some(at), Some(every)) = (self.renew_at, self.held.renew_every())
            && now >= at
        {
            let deferred = self.signals.defer();
            let renewed = self.held.renew();
            drop(deferred);
            match renewed {
                Ok(()) => {
                    self.renew_at = Some(now + every);
                    self.renewed_at = now;
                }
                Err(lost) => {
                    self.renew_at = None;
                    self.on_lock_lost(lost, every);
                }
            }
        }
        if matches!(self.state, State::Running | State::Lingering)
            && self.deadline.is_some_and(|at| now >= at)
        {
            self.deadline = None;
            self.begin_stop(StopCause::MaxRuntime, self.plan.kill_grace);
        }
        if let State::Stopping { kill_at } = self.state
            && now >= kill_at
        {
            let count = self.tree.signal_all(Signal::SIGKILL);
            self.state = State::Killed;
            self.rescan_at = Some(now + RESCAN_EVERY);
            if self.plan.verbose && count > 0 {
                crate::say!(
                    "{}: {} still running: signalled with SIGKILL",
                    self.plan.lock,
                    processes(count)
                );
            }
        }
    }

    /// The lease runs out three renewal intervals (`every`) after the last
    /// successful renewal: the tree must be gone before then, whatever state
    /// the stop is in. Half an interval is kept as a margin for the kernel
    /// to tear the processes down.
    fn on_lock_lost(&mut self, lost: Error, every: Duration) {
        let expires = self.renewed_at + every * 3;
        let kill_by = expires.checked_sub(every / 2).unwrap_or(expires);
        let grace = kill_by.saturating_duration_since(Instant::now());
        match self.state {
            State::Running | State::Lingering => {
                self.begin_stop(StopCause::LockLost(lost), self.plan.kill_grace.min(grace));
            }
            State::Stopping { kill_at } => {
                self.state = State::Stopping {
                    kill_at: kill_at.min(kill_by),
                };
                self.cause = Some(StopCause::LockLost(lost));
            }
            State::Killed => self.cause = Some(StopCause::LockLost(lost)),
            State::Holding { ending, .. } => {
                // The command's work is done; only the rest of the interval
                // is lost.
                crate::say!(
                    "warning: {}: lost the lock before --min-hold was over (the lease could not be renewed); another holder may take it early",
                    self.plan.lock
                );
                self.state = State::Holding {
                    until: Instant::now(),
                    ending,
                };
            }
        }
    }

    fn begin_stop(&mut self, cause: StopCause, grace: Duration) {
        let count = self.tree.signal_all(Signal::SIGTERM);
        if self.plan.verbose {
            let why = match &cause {
                StopCause::MaxRuntime => format!(
                    "--max-runtime of {} reached",
                    crate::duration::human(self.plan.max_runtime.unwrap_or_default())
                ),
                StopCause::LockLost(_) => "the lock was lost".to_owned(),
                StopCause::Signal(signal) => format!("{signal} received"),
            };
            crate::say!(
                "{}: {why}: stopping the command ({} signalled with SIGTERM, SIGKILL in {})",
                self.plan.lock,
                processes(count),
                crate::duration::human(grace)
            );
        }
        self.state = State::Stopping {
            kill_at: Instant::now() + grace,
        };
        self.rescan_at = Some(Instant::now() + RESCAN_EVERY);
        self.cause = Some(cause);
    }

    /// How lockwrap ends, once it may: the command has exited and, when the
    /// lock must cover it or a stop is under way, so has the rest of the tree.
    fn ending(&mut self, none_left: bool) -> Option<Result<Ending, Error>> {
        let status = self.status?;
        if let State::Holding { until, ending } = self.state {
            return (Instant::now() >= until).then_some(Ok(ending));
        }
        // The kernel keeps an fd-carried lock for whatever the command left
        // behind, so lockwrap may go as flock(1) does, unless it is stopping
        // the tree.
        let command_done = self.state == State::Running && !self.wait_for_tree;
        if !none_left && !command_done {
            return None;
        }
        // A run stopped on request (even one the command ended gracefully)
        // or by a lost lock is not held for.
        let stopped = matches!(
            self.cause,
            Some(StopCause::Signal(_) | StopCause::LockLost(_))
        ) || self.received.iter().any(|signal| is_terminating(*signal));
        let ending = self.final_ending(status);
        if let (Some(until), Ok(Ending::Code(code)), false) =
            (self.plan.hold_until, &ending, stopped)
            && self.hold(until, Ending::Code(*code))
        {
            return None;
        }
        Some(ending)
    }

    /// `--min-hold`: keeps the lock until `until` now that the command is
    /// done (a failed one too: the run happened), or leaves it to the
    /// lock's server. Returns whether lockwrap stays for it.
    fn hold(&mut self, until: Instant, ending: Ending) -> bool {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        // A call on a socket: see Signals::defer.
        let deferred = self.signals.defer();
        let left_to_server = self.held.release_later(until);
        drop(deferred);
        let lock = self.plan.lock;
        match left_to_server {
            Ok(true) => {
                if self.plan.verbose {
                    crate::say!(
                        "{lock}: --min-hold: the server keeps the lock for {} more",
                        crate::duration::human(left)
                    );
                }
                false
            }
            Ok(false) => {
                if self.plan.verbose {
                    crate::say!(
                        "{lock}: --min-hold: keeping the lock for {} more",
                        crate::duration::human(left)
                    );
                }
                self.state = State::Holding { until, ending };
                true
            }
            Err(e) => {
                crate::say!("warning: {e}");
                false
            }
        }
    }

    /// How lockwrap ends once the command and its tree are done.
    fn final_ending(&mut self, status: WaitStatus) -> Result<Ending, Error> {
        match self.cause.take() {
            Some(StopCause::MaxRuntime) => Ok(Ending::Code(EXIT_MAX_RUNTIME)),
            Some(StopCause::LockLost(e)) => Err(e),
            // Interrupted while the rest of the tree still ran: a shell
            // loop must stop here too.
            Some(StopCause::Signal(signal @ (Signal::SIGINT | Signal::SIGQUIT))) => {
                Ok(Ending::DieOf(signal))
            }
            Some(StopCause::Signal(signal)) if !matches!(status, WaitStatus::Signaled(..)) => {
                Ok(Ending::Code(128u8.wrapping_add(signal as u8)))
            }
            Some(StopCause::Signal(_)) | None => Ok(match status {
                WaitStatus::Signaled(_, signal, _)
                    if matches!(signal, Signal::SIGINT | Signal::SIGQUIT)
                        && self.asked_for(signal) =>
                {
                    Ending::DieOf(signal)
                }
                _ => Ending::Code(exit_code(status)),
            }),
        }
    }
}

/// Signals after which a command that dies of them takes its tree along.
fn is_terminating(signal: Signal) -> bool {
    matches!(
        signal,
        Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP | Signal::SIGQUIT
    )
}

fn processes(count: usize) -> String {
    match count {
        1 => "1 process".to_owned(),
        n => format!("{n} processes"),
    }
}

/// The command's exit status, or 128+N if signal N killed it (as flock(1)).
pub fn exit_code(status: WaitStatus) -> u8 {
    match status {
        WaitStatus::Exited(_, code) => code as u8,
        WaitStatus::Signaled(_, signal, _) => 128u8.wrapping_add(signal as u8),
        _ => 1,
    }
}

/// Dies of `signal` (its default action restored), as a shell expects of a
/// program whose child died of SIGINT or SIGQUIT. No core file is written
/// for SIGQUIT: the core would be lockwrap's, not the command's. Returns
/// only if the signal did not kill (then the caller exits 128+N).
pub fn die_of(signal: Signal) {
    if signal == Signal::SIGQUIT {
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    }
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing the default action runs no code of ours.
    let _ = unsafe { sigaction(signal, &default) };
    let mut only = SigSet::empty();
    only.add(signal);
    let _ = only.thread_unblock();
    let _ = kill(Pid::this(), signal);
}
