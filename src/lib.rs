//! lockwrap: run a command while holding a lock. A drop-in for util-linux
//! flock(1) with more lock mechanisms, chosen by a lock spec.
//!
//! The binary parses the command line with [`cli::parse`] and hands the
//! [`cli::Invocation`] to [`run`], which returns the exit code or an
//! [`Error`] that knows its own.

pub mod backend;
pub mod child;
pub mod cli;
pub mod duration;
pub mod error;
pub mod holder;
pub mod spec;
pub mod wait;

use std::ffi::OsString;
use std::time::Duration;

pub use error::Error;

use crate::backend::{Backend, Request};
use crate::child::ChildPlan;
use crate::cli::{Invocation, Mode, Task};
use crate::wait::{Signals, Waiter};

/// How long a child stopped by lockwrap gets between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

/// Takes the lock, runs the command (if any) and releases. Returns the exit
/// code: the command's status, or 0 in fd mode.
pub fn run(invocation: Invocation) -> Result<u8, Error> {
    let signals = Signals::install()
        .map_err(|e| Error::os("lockwrap", "cannot set up signal handling", e))?;
    let (backend, lock, lock_text, command) = match &invocation.task {
        Task::Run {
            lock,
            lock_text,
            command,
        } => (
            backend::open(lock),
            lock.to_string(),
            lock_text.clone(),
            Some(command.as_slice()),
        ),
        Task::Fd { fd, fcntl, command } => (
            backend::for_fd(*fd, *fcntl),
            format!("fd {fd}"),
            OsString::from(fd.to_string()),
            command.as_deref(),
        ),
    };
    check_supported(&invocation, backend.as_ref(), &lock)?;
    let command_text = command.map(describe_command).unwrap_or_default();
    let request = Request {
        lease: invocation.lease,
        mode: invocation.mode,
        command: &command_text,
        stale_after: None,
    };
    let waiter = Waiter::new(&lock, invocation.wait, &signals);
    let mut held = backend.acquire(&request, &waiter)?;
    if invocation.verbose {
        eprintln!(
            "lockwrap: {lock}: getting lock took {:.6} seconds",
            waiter.elapsed().as_secs_f64()
        );
    }
    let Some(argv) = command else {
        return held.release().map(|()| 0);
    };
    let plan = ChildPlan {
        lock: &lock,
        argv,
        env: vec![(OsString::from("LOCKWRAP_LOCK"), lock_text)],
        close_in_child: invocation.close_in_child,
        max_runtime: None,
        kill_grace: DEFAULT_KILL_GRACE,
    };
    if invocation.verbose {
        eprintln!("lockwrap: {lock}: executing {}", argv[0].to_string_lossy());
    }
    if invocation.no_fork {
        return Err(plan.exec(held.as_ref()));
    }
    let code = plan.run(held.as_mut(), &signals)?;
    if let Err(e) = held.release() {
        eprintln!("lockwrap: warning: {e}");
    }
    Ok(code)
}

/// Refuses combinations a backend cannot honour, before touching the lock.
fn check_supported(
    invocation: &Invocation,
    backend: &dyn Backend,
    lock: &str,
) -> Result<(), Error> {
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
    Ok(())
}

fn describe_command(argv: &[OsString]) -> String {
    argv.iter()
        .map(|w| w.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
