//! The command's process tree: lockwrap is a child subreaper, so every
//! process the command starts stays its descendant, even one that left the
//! command's process group or session (`setsid worker &`) or whose parent
//! died. This module finds those processes, signals them, and reaps them.
//!
//! A process is named by pid and start time, and signalled through a pidfd
//! opened before its start time is checked again, so a pid reused by a
//! stranger between the scan and the signal is never hit. It decides nothing
//! about when to stop; the supervisor in `child.rs` does.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::holder;

/// How many times a scan is repeated to find processes forked while the
/// previous ones were being signalled. SIGKILLed processes cannot fork, so
/// for SIGKILL the repetition ends on its own; this only bounds pathological
/// trees under a catchable signal.
const MAX_SCANS: usize = 64;

/// Makes this process the reaper of the orphans of its descendants
/// (PR_SET_CHILD_SUBREAPER), so the whole tree of the command stays below it.
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// One process, identified beyond its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ProcessId {
    pid: i32,
    start_time: u64,
}

/// The live (not zombie) descendants of `root`, found by one scan of /proc.
fn descendants(root: i32) -> Vec<ProcessId> {
    descendants_with_groups(root)
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// [`descendants`], each with its process group.
fn descendants_with_groups(root: i32) -> Vec<(ProcessId, i32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<i32, Vec<(ProcessId, bool, i32)>> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some(stat) = holder::process_stat(pid) {
            let id = ProcessId {
                pid,
                start_time: stat.start_time,
            };
            children
                .entry(stat.ppid)
                .or_default()
                .push((id, stat.is_alive(), stat.pgrp));
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(parent) = queue.pop() {
        for (id, alive, pgrp) in children.remove(&parent).unwrap_or_default() {
            queue.push(id.pid);
            if alive {
                found.push((id, pgrp));
            }
        }
    }
    found
}

/// The processes below one root, and which of them were sent which signal,
/// so that each gets a signal (SIGKILL above all) once.
pub struct Tree {
    root: i32,
    signalled: HashSet<(ProcessId, i32)>,
}

impl Tree {
    /// The descendants of this process (lockwrap's own tree).
    pub fn of_this_process() -> Tree {
        Tree::below(std::process::id() as i32)
    }

    /// The descendants of process `root`.
    pub fn below(root: i32) -> Tree {
        Tree {
            root,
            signalled: HashSet::new(),
        }
    }

    /// Sends `signal` to every live descendant that was not yet sent it,
    /// scanning again until a scan finds nobody new (new processes forked
    /// meanwhile). A stopped process is also sent SIGCONT so that it can act
    /// on a catchable signal. Returns how many processes were signalled.
    pub fn signal_all(&mut self, signal: Signal) -> usize {
        let mut count = 0;
        for _ in 0..MAX_SCANS {
            let fresh: Vec<ProcessId> = descendants(self.root)
                .into_iter()
                .filter(|id| !self.signalled.contains(&(*id, signal as i32)))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for id in fresh {
                self.signalled.insert((id, signal as i32));
                if send(id, signal) {
                    count += 1;
                }
            }
        }
        count
    }

    /// Counts `signal` as sent to the descendants now in process group
    /// `group` (a signal was just sent to the whole group), so that a stop
    /// does not send it to them a second time.
    pub fn sent_to_group(&mut self, group: i32, signal: Signal) {
        for (id, pgrp) in descendants_with_groups(self.root) {
            if pgrp == group {
                self.signalled.insert((id, signal as i32));
            }
        }
    }
}

/// Signals process `pid` only if it is still the one that started at
/// `start_time` (and is not a zombie). True if the signal was sent.
pub fn signal_process(pid: i32, start_time: u64, signal: Signal) -> bool {
    send(ProcessId { pid, start_time }, signal)
}

/// Signals `id` if it is still the process that was found (same start time,
/// not a zombie). True if the signal was sent.
fn send(id: ProcessId, signal: Signal) -> bool {
    // Open first, then check: a pid reused after the open fails the check,
    // and one reused before it is a different process whose start time
    // differs. The signal then goes to the process the pidfd pins.
    let Some(pidfd) = holder::pidfd_open(id.pid) else {
        return false;
    };
    let Some(stat) = holder::process_stat(id.pid) else {
        return false;
    };
    if stat.start_time != id.start_time || !stat.is_alive() {
        return false;
    }
    let sent = pidfd_send_signal(&pidfd, signal).is_ok();
    if sent
        && stat.is_stopped()
        && !matches!(signal, Signal::SIGKILL | Signal::SIGCONT | Signal::SIGSTOP)
    {
        let _ = pidfd_send_signal(&pidfd, Signal::SIGCONT);
    }
    sent
}

/// pidfd_send_signal(2), which nix does not wrap.
fn pidfd_send_signal(pidfd: &OwnedFd, signal: Signal) -> nix::Result<()> {
    // SAFETY: the syscall takes an fd we own, a signal number, a null
    // siginfo (meaning "as kill(2)") and flags 0; it touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

/// What one round of reaping found.
#[derive(Debug, Default)]
pub struct Reaped {
    /// Children that exited or were stopped, with their status.
    pub statuses: Vec<WaitStatus>,
    /// Whether no child is left at all (waitpid gave ECHILD): as a subreaper,
    /// that means no descendant is left.
    pub none_left: bool,
}

/// Reaps every child that has exited (and reports stopped ones), without
/// blocking.
pub fn reap() -> Reaped {
    let mut reaped = Reaped::default();
    loop {
        match waitpid(
            Pid::from_raw(-1),
            Some(WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED),
        ) {
            Ok(WaitStatus::StillAlive) => break,
            Ok(status) => reaped.statuses.push(status),
            Err(Errno::EINTR) => continue,
            Err(_) => {
                // ECHILD: nobody is left (any other error cannot happen
                // with these arguments, and is taken the same way).
                reaped.none_left = true;
                break;
            }
        }
    }
    reaped
}
