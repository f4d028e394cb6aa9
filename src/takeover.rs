//! `--replace`: take a lock from a holder on this machine by stopping it
//! (SIGTERM, then SIGKILL to it and every process below it after the grace
//! period).
//!
//! It signals only what it can prove holds the lock: a process the kernel's
//! lock table names, or one a holder record names when the record was
//! written here (same host, boot and pid namespace) by the uid that owns the
//! lock artifact, the process still has the recorded start time, and its
//! real uid is the recorded one. Anything short of that is refused; a holder
//! provably dead is left to the ordinary reclaim. Every signal goes through a
//! pidfd checked against the start time, so a reused pid is never hit.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::backend::{HolderInfo, HolderSource, LockStatus};
use crate::error::Error;
use crate::holder::{hostname, is_lockwrap, is_running, process_real_uid, process_stat};
use crate::tree::{Tree, signal_process};

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
    let ours = this_process_and_ancestors();
    let mut targets = Vec::new();
    for holder in &status.holders {
        if let Some(host) = holder.host.as_deref().filter(|h| *h != here) {
            return Err(refuse(format!("it is held on another host ({host})")));
        }
        match holder.source {
            HolderSource::Kernel => {}
            HolderSource::Server => {
                return Err(refuse(
                    "the holder is named only by the lock server, which cannot prove it".into(),
                ));
            }
            HolderSource::Record { same_system: false } => {
                return Err(refuse(
                    "the holder record was written on another boot or pid namespace, so its pids cannot be checked here".into(),
                ));
            }
            HolderSource::Record { same_system: true } => {
                if status.owner_uid.is_none() {
                    return Err(refuse(
                        "the lock can be written by other users (group or world writable), so its holder record is not believed (remove the lock by hand if it is stale)".into(),
                    ));
                }
                if status.owner_uid != holder.uid {
                    return Err(refuse(format!(
                        "the holder record names uid {} but the lock belongs to uid {}: not believed (remove the lock by hand if it is stale)",
                        show(holder.uid),
                        show(status.owner_uid)
                    )));
                }
            }
        }
        // A lockwrap wrapper forwards SIGTERM to its child; signalling both
        // would deliver it twice. Its child is a target for SIGKILL only.
        // A kernel lock's wrapper may be anything that passed the fd on
        // (flock(1), a shell in fd mode), which forwards nothing: its
        // command gets a SIGTERM of its own.
        let wrapper = Running::find(holder, holder.pid, holder.start_time, lock)?;
        let child = Running::find(holder, holder.child_pid, holder.child_start_time, lock)?;
        let forwards =
            holder.source != HolderSource::Kernel || wrapper.is_some_and(|w| is_lockwrap(w.pid));
        if let Some(own) = [wrapper, child]
            .iter()
            .flatten()
            .find(|p| ours.contains(&p.pid))
        {
            return Err(refuse(format!(
                "pid {} is this lockwrap or the process that started it (it holds the lock lockwrap would replace): not signalled",
                own.pid
            )));
        }
        match (wrapper, child) {
            (Some(w), Some(c)) if forwards => targets.extend([w.terminate_first(), c]),
            (Some(w), Some(c)) => targets.extend([w.terminate_first(), c.terminate_first()]),
            (Some(p), None) | (None, Some(p)) => targets.push(p.terminate_first()),
            (None, None) => {}
        }
    }
    let mut signalled = 0;
    for target in targets.iter().filter(|t| t.terminate) {
        signalled += target.signal(Signal::SIGTERM);
    }
    if wait_gone(&targets, grace) {
        return Ok(signalled);
    }
    for target in &targets {
        // Its descendants first: once a wrapper is gone, its orphans are no
        // longer below it and could not be found. The wrapper is stopped
        // meanwhile, so that the death of its command cannot start a release
        // that the SIGKILL would cut in half.
        if target.signal(Signal::SIGSTOP) > 0 {
            signalled += Tree::below(target.pid).signal_all(Signal::SIGKILL);
        }
        signalled += target.signal(Signal::SIGKILL);
    }
    if wait_gone(&targets, AFTER_KILL) {
        Ok(signalled)
    } else {
        Err(refuse("the holder did not exit after SIGKILL".into()))
    }
}

/// This process's pid and those of its ancestors, up to pid 1.
fn this_process_and_ancestors() -> Vec<i32> {
    let mut pids = vec![std::process::id() as i32];
    while let Some(stat) = pids.last().and_then(|pid| process_stat(*pid)) {
        if stat.ppid <= 1 || pids.contains(&stat.ppid) {
            break;
        }
        pids.push(stat.ppid);
    }
    pids
}

fn show(uid: Option<u32>) -> String {
    uid.map_or("unknown".to_owned(), |u| u.to_string())
}

/// A live process proven to be a holder: pid and start time, so pid reuse
/// cannot make us signal a stranger.
#[derive(Debug, Clone, Copy)]
struct Running {
    pid: i32,
    start_time: u64,
    terminate: bool,
}

impl Running {
    /// The holder's process `pid`, if it still runs as recorded. A pid that
    /// now belongs to another process (another start time) means the holder
    /// is gone: None. A live process of another real uid than the holder's
    /// is refused.
    fn find(
        holder: &HolderInfo,
        pid: Option<i32>,
        start_time: Option<u64>,
        lock: &str,
    ) -> Result<Option<Running>, Error> {
        let (Some(pid), Some(start_time)) = (pid, start_time) else {
            return Ok(None);
        };
        let Some(stat) = process_stat(pid) else {
            return Ok(None);
        };
        if stat.start_time != start_time || !stat.is_alive() {
            return Ok(None);
        }
        if holder.source != HolderSource::Kernel && process_real_uid(pid) != holder.uid {
            return Err(Error::Replace {
                lock: lock.to_owned(),
                reason: format!(
                    "pid {pid} does not run as the recorded uid {}: not signalled",
                    show(holder.uid)
                ),
            });
        }
        Ok(Some(Running {
            pid,
            start_time,
            terminate: false,
        }))
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

    /// Sends `signal` if the process is still the one found; 1 if sent.
    fn signal(&self, signal: Signal) -> usize {
        usize::from(signal_process(self.pid, self.start_time, signal))
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
