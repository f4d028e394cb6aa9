//! Running the command: spawn (or exec in place with -F), hand it the lock
//! fds, forward signals, enforce --max-runtime, renew leases, and map its end
//! to an exit code. The rule "the child inherits the lock unless -o" lives
//! here and nowhere else.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::backend::{Held, set_inheritable};
use crate::error::{EXIT_MAX_RUNTIME, Error};
use crate::wait::{Signals, poll_readable};

/// How to run the command.
#[derive(Debug, Clone)]
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
    /// How long a SIGTERM'd child gets before SIGKILL.
    pub kill_grace: Duration,
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
    pub fn exec(&self, held: &dyn Held) -> Error {
        match self.command(held) {
            // std resets the signal mask and SIGPIPE before exec.
            Ok(mut command) => self.exec_error(&command.exec()),
            Err(e) => e,
        }
    }

    /// Spawns the command and waits for it, forwarding signals and renewing
    /// the lock. Returns the exit code lockwrap should exit with.
    pub fn run(&self, held: &mut dyn Held, signals: &Signals) -> Result<u8, Error> {
        let mut child = self
            .command(held)?
            .spawn()
            .map_err(|e| self.exec_error(&e))?;
        let pid = Pid::from_raw(child.id() as i32);
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
        let started = Instant::now();
        let mut renew_at = held.renew_every().map(|every| started + every);
        let mut stop: Option<Stop> = None;
        loop {
            let now = Instant::now();
            let runtime_left = self
                .max_runtime
                .filter(|_| stop.is_none())
                .map(|limit| (started + limit).saturating_duration_since(now));
            let timeout = [
                runtime_left,
                renew_at.map(|at| at.saturating_duration_since(now)),
                stop.as_ref()
                    .map(|s| s.kill_at.saturating_duration_since(now)),
            ]
            .into_iter()
            .flatten()
            .min();
            poll_readable(&[signals.as_fd()], timeout)
                .map_err(|e| Error::os(self.lock, "waiting for the command", e))?;
            while let Some(received) = signals.take() {
                if received.signal != Signal::SIGCHLD && received.sent_by_process {
                    let _ = kill(pid, received.signal);
                }
            }
            if let Some(status) = try_wait(&mut child, self.lock)? {
                return match stop {
                    Some(Stop {
                        reason: Some(e), ..
                    }) => Err(e),
                    Some(Stop { reason: None, .. }) => Ok(EXIT_MAX_RUNTIME),
                    None => Ok(exit_code(status)),
                };
            }
            let now = Instant::now();
            if let Some(s) = &stop {
                if now >= s.kill_at {
                    let _ = kill(pid, Signal::SIGKILL);
                }
                continue;
            }
            if runtime_left.is_some_and(|left| left.is_zero()) {
                stop = Some(Stop::begin(pid, self.kill_grace, None));
                continue;
            }
            if let (Some(at), Some(every)) = (renew_at, held.renew_every())
                && now >= at
            {
                let deferred = signals.defer();
                let renewed = held.renew();
                drop(deferred);
                match renewed {
                    Ok(()) => renew_at = Some(now + every),
                    Err(lost) => {
                        renew_at = None;
                        // The lease may run out a third of it after a failed
                        // renewal: the command must be gone by then.
                        let grace = self.kill_grace.min(every);
                        stop = Some(Stop::begin(pid, grace, Some(lost)));
                    }
                }
            }
        }
    }
}

/// A child being stopped: SIGTERM sent, SIGKILL due at `kill_at`.
struct Stop {
    kill_at: Instant,
    /// None for --max-runtime; the lock-loss error otherwise.
    reason: Option<Error>,
}

impl Stop {
    fn begin(pid: Pid, grace: Duration, reason: Option<Error>) -> Stop {
        let _ = kill(pid, Signal::SIGTERM);
        Stop {
            kill_at: Instant::now() + grace,
            reason,
        }
    }
}

fn try_wait(child: &mut Child, lock: &str) -> Result<Option<ExitStatus>, Error> {
    child.try_wait().map_err(|e| {
        Error::os(
            lock,
            "waiting for the command",
            Errno::from_raw(e.raw_os_error().unwrap_or(libc::ECHILD)),
        )
    })
}

/// The child's exit status, or 128+N if signal N killed it (as flock(1)).
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => 128u8.wrapping_add(signal as u8),
        (None, None) => 1,
    }
}
