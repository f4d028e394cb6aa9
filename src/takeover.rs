//! `--replace`: take a lock from a holder on this machine by stopping it
//! (SIGTERM, then SIGKILL to it and every process below it after the grace
//! period). Refuses whatever it
//! cannot identify for certain.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::backend::LockStatus;
use crate::error::Error;
use crate::holder::{hostname, is_running, process_start_time};
use crate::tree::Tree;

/// How often the end of an evicted holder is checked: it is another
/// process's child, so there is no event to wait for.
const CHECK_EVERY: Duration = Duration::from_millis(10);
/// How long to wait for SIGKILLed processes to disappear.
const AFTER_KILL: Duration = Duration::from_secs(5);

/// Stops every process that holds the lock; returns once they are gone,
/// with how many processes were signalled.
pub fn evict(lock: &str, status: &LockStatus, grace: Duration) -> Result<usize, Error> {
    let refuse = |reason: String| Error::Replace {
        lock: lock.to_owned(),
        reason,
    };
    if status.holders.is_empty() {
        return Err(refuse(
            "the holder is unknown (use --status to look, or remove it by hand)".into(),
        ));
    }
    let here = hostname();
    let mut targets = Vec::new();
    for holder in &status.holders {
        if let Some(host) = holder.host.as_deref().filter(|h| *h != here) {
            return Err(refuse(format!("it is held on another host ({host})")));
        }
        // A lockwrap wrapper forwards SIGTERM to its child; signalling both
        // would deliver it twice. Its child is a target for SIGKILL only.
        let wrapper = holder.pid.and_then(Running::find);
        let child = holder.child_pid.and_then(Running::find);
        match (wrapper, child) {
            (Some(w), Some(c)) => targets.extend([w.terminate_first(), c]),
            (Some(p), None) | (None, Some(p)) => targets.push(p.terminate_first()),
            (None, None) => {}
        }
    }
    let mut signalled = 0;
    for target in targets.iter().filter(|t| t.terminate) {
        signalled += target.signal(lock, Signal::SIGTERM)?;
    }
    if wait_gone(&targets, grace) {
        return Ok(signalled);
    }
    for target in &targets {
        // Its descendants first: once a wrapper is gone, its orphans are no
        // longer below it and could not be found. The wrapper is stopped
        // meanwhile, so that the death of its command cannot start a release
        // that the SIGKILL would cut in half.
        if target.signal(lock, Signal::SIGSTOP)? > 0 {
            signalled += Tree::below(target.pid).signal_all(Signal::SIGKILL);
        }
        signalled += target.signal(lock, Signal::SIGKILL)?;
    }
    if wait_gone(&targets, AFTER_KILL) {
        Ok(signalled)
    } else {
        Err(refuse("the holder did not exit after SIGKILL".into()))
    }
}

/// A live process, identified by pid and start time so pid reuse cannot
/// make us signal a stranger.
#[derive(Debug, Clone, Copy)]
struct Running {
    pid: i32,
    start_time: u64,
    terminate: bool,
}

impl Running {
    fn find(pid: i32) -> Option<Running> {
        let start_time = process_start_time(pid)?;
        Some(Running {
            pid,
            start_time,
            terminate: false,
        })
    }

    fn terminate_first(self) -> Running {
        Running {
            terminate: true,
            ..self
        }
    }

    fn is_running(&self) -> bool {
        is_running(self.pid, self.start_time)
    }

    /// Sends `signal` if the process still runs; returns 1 if it was sent.
    fn signal(&self, lock: &str, signal: Signal) -> Result<usize, Error> {
        if !self.is_running() {
            return Ok(0);
        }
        match kill(Pid::from_raw(self.pid), signal) {
            Ok(()) => Ok(1),
            Err(Errno::ESRCH) => Ok(0),
            Err(e) => Err(Error::Replace {
                lock: lock.to_owned(),
                reason: format!(
                    "cannot signal pid {}: {}",
                    self.pid,
                    e.desc().to_lowercase()
                ),
            }),
        }
    }
}

fn wait_gone(targets: &[Running], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !targets.iter().any(Running::is_running) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(CHECK_EVERY);
    }
}
