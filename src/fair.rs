//! A waiter's place in its lock's line (see [`Line`]): joined when the
//! wait starts, left as soon as the lock is held or the wait ends, however
//! it ends. With `--fair` the place is a turn: the waiter takes the lock
//! only once every fair waiter that came before it is gone. Without it, the
//! place only makes the waiter visible to `--status`.
//!
//! The uncontended path costs nothing: a waiter joins at its first pause
//! (its first attempt found the lock held), and a `--fair` waiter looks at
//! the line before its first attempt only to join a line that is not empty,
//! so that it cannot overtake fair waiters while the lock is free for a
//! moment between a release and the next fair waiter's acquisition.
//!
//! This module knows no backend: where a line lives and how a turn is
//! waited for is each backend's business.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::backend::{Backend, Line, LineEntry, LockStatus, Ticket};
use crate::error::Error;
use crate::holder::HolderRecord;
use crate::wait::Waiter;

/// How long a waiter without `--fair` waits before it takes a place in
/// the line (to be listed by `--status`): its place orders nobody, and
/// waits shorter than this are not worth the ticket's system calls.
pub const PLAIN_JOIN_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// A waiter's place in line, once it has one. Dropping it leaves the line.
pub struct Place<'a> {
    lock: &'a str,
    line: Option<Box<dyn Line>>,
    fair: bool,
    command: &'a str,
    /// Set once joining was tried: a wait joins at most once.
    joined: AtomicBool,
    ticket: Mutex<Option<Box<dyn Ticket>>>,
}

impl<'a> Place<'a> {
    /// A place in `backend`'s line (none yet) for a waiter that will run
    /// `command`, fair or not.
    pub fn new(lock: &'a str, backend: &dyn Backend, fair: bool, command: &'a str) -> Place<'a> {
        Place {
            lock,
            line: backend.line(),
            fair,
            command,
            joined: AtomicBool::new(false),
            ticket: Mutex::new(None),
        }
    }

    /// Before the first attempt: a fair waiter that finds others in line
    /// joins it and waits for its turn (under `-n`, a fair waiter ahead is
    /// a conflict).
    pub fn before_first_attempt(&self, waiter: &Waiter<'_>) -> Result<(), Error> {
        let Some(line) = &self.line else {
            return Ok(());
        };
        if !self.fair || line.is_empty(waiter)? {
            return Ok(());
        }
        self.joined.store(true, Ordering::SeqCst);
        let mut ticket = line.join(&self.entry()?, waiter)?;
        let turn = ticket.wait_turn(waiter);
        *self.ticket.lock().unwrap_or_else(|e| e.into_inner()) = Some(ticket);
        turn
    }

    /// How long a waiter waits before it joins the line at a pause: a fair
    /// waiter at once (its place is its turn); any other only once it has
    /// waited [`PLAIN_JOIN_AFTER`], so that the short waits of a busy lock
    /// (a build's many steps, a batch) cost no ticket.
    pub fn join_after(&self) -> std::time::Duration {
        if self.fair {
            std::time::Duration::ZERO
        } else {
            PLAIN_JOIN_AFTER
        }
    }

    /// Joins the line, once, as `waiter` allows: for
    /// [`Waiter::on_first_wait`]. A fair waiter that cannot join fails (it
    /// could not be fair); any other waits without a place, unless its wait
    /// ended meanwhile (a signal taken, the deadline).
    pub fn join(&self, waiter: &Waiter<'_>) -> Result<(), Error> {
        let Some(line) = &self.line else {
            return Ok(());
        };
        if self.joined.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let joined = self.entry().and_then(|entry| line.join(&entry, waiter));
        match joined {
            Ok(ticket) => {
                *self.ticket.lock().unwrap_or_else(|e| e.into_inner()) = Some(ticket);
                Ok(())
            }
            Err(e) if self.fair => Err(e),
            Err(e @ (Error::Interrupted { .. } | Error::Timeout { .. })) => Err(e),
            Err(_) => Ok(()),
        }
    }

    fn entry(&self) -> Result<LineEntry, Error> {
        let record = HolderRecord::for_this_process(self.command)
            .map_err(|e| Error::os(self.lock, "cannot read this process's identity in /proc", e))?;
        Ok(LineEntry {
            record,
            fair: self.fair,
        })
    }
}

/// What `--status` tells about a lock: its holders as the backend sees
/// them, and its waiters: those in its line, first come first, then those
/// only the backend sees (a plain flock(1) blocked in the kernel).
pub fn status(backend: &dyn Backend) -> Result<LockStatus, Error> {
    let mut state = backend.status()?;
    let Some(line) = backend.line() else {
        return Ok(state);
    };
    // The line is for people to see; a line that cannot be read hides no lock.
    let Ok(mut waiters) = line.waiters() else {
        return Ok(state);
    };
    let mut in_line = waiters.len();
    for seen in std::mem::take(&mut state.waiters) {
        match seen.pid {
            Some(pid) if waiters.iter().any(|w| w.pid == Some(pid)) => {}
            Some(_) => waiters.push(seen),
            // The kernel names no pid (fcntl OFD waiters): as many as the
            // line holds are taken to be its waiters, blocked in the kernel.
            None if in_line > 0 => in_line -= 1,
            None => waiters.push(seen),
        }
    }
    state.waiters = waiters;
    Ok(state)
}
