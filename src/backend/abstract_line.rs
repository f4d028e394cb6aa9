//! The line of waiters of an abstract-socket lock, without any file: each
//! ticket is a listening abstract socket named
//! `BASE\0l\0SEQ\0KIND\0SINCE\0PID` (KIND `f` for `--fair`, `w` for a
//! waiter that is only visible; SINCE in milliseconds since the epoch; BASE
//! the lock's name, or a hash of it when the name is too long to leave room
//! for the rest). See FAIR-DESIGN.md.
//!
//! Why sockets and not files (in $XDG_RUNTIME_DIR, say): a ticket lives
//! exactly as long as its waiter (the kernel frees the name when the last
//! fd closes, SIGKILL included), so nothing is ever left to clean up, and
//! the line has the lock's own scope (the network namespace) and is shared
//! by every user of the name, as the lock is; cron has no $XDG_RUNTIME_DIR.
//!
//! The tickets are listed from /proc/net/unix, which shows the abstract
//! names of the network namespace (a NUL byte as `@`): no connection is
//! made, so looking at the line (`--status`) leaves nothing in any
//! ticket's backlog. Tickets are numbered under a turnstile, a socket bound
//! to `BASE\0t` for the few calls that list the line and bind the next
//! number, so the numbers of the tickets present are in the order they
//! were bound. A fair waiter connects to the live fair ticket just ahead of
//! it and waits for the hangup that comes when that waiter leaves (its
//! ticket closes: it won, gave up, or died), then looks again.
//!
//! Names have no permissions: anyone in the network namespace may bind a
//! ticket name (as they may bind the lock's own name), and the pid in a
//! ticket's name is the binder's word, shown by `--status` as such.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, listen, socket,
};

use super::{Line, LineEntry, Ticket, WaiterInfo};
use crate::error::Error;
use crate::holder;
use crate::wait::{Waiter, poll_readable};

/// The longest abstract name: sun_path is 108 bytes, one is the leading NUL.
const MAX_NAME: usize = 107;
/// Room a ticket name needs after BASE: `\0l\0` + 20 digits + `\0f\0` + 13
/// digits + `\0` + 10 digits.
const SUFFIX_ROOM: usize = 50;
/// How long a `--fair` waiter without a deadline (`-w`) tries for the
/// turnstile, which others hold for a few calls only: a process stopped
/// (SIGSTOP) in that moment, or anyone binding the name, is the only way to
/// exceed it. One with a deadline tries until it; a signal ends either at
/// once.
const TURNSTILE_AT_MOST: Duration = Duration::from_secs(5);
/// How long a waiter without `--fair` tries for it: its place only makes it
/// visible, which must not delay its wait for the lock (nor its `-w`).
const TURNSTILE_VISIBLE_ONLY: Duration = Duration::from_millis(100);
/// How often the turnstile is tried again meanwhile.
const TURNSTILE_AGAIN: Duration = Duration::from_millis(1);
/// The highest ticket number taken for one (see `parse_listed`).
const MAX_SEQ: u64 = 1 << 53;
/// How often a fair waiter looks again when it cannot connect to the
/// ticket ahead (its backlog is full) and so cannot wait for its hangup.
const LOOK_AGAIN: Duration = Duration::from_millis(50);

/// The line of an abstract-socket lock.
pub struct AbstractLine {
    lock: String,
    base: Vec<u8>,
}

/// A ticket as /proc/net/unix shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    seq: u64,
    fair: bool,
    since_ms: u64,
    pid: i32,
}

impl Listed {
    /// The ticket's exact name (after the leading NUL).
    fn name(&self, base: &[u8]) -> Vec<u8> {
        let mut name = base.to_vec();
        let kind = if self.fair { "f" } else { "w" };
        name.extend_from_slice(
            format!("\0l\0{}\0{kind}\0{}\0{}", self.seq, self.since_ms, self.pid).as_bytes(),
        );
        name
    }
}

impl AbstractLine {
    /// The line of the abstract lock `name`.
    pub fn new(lock: &str, name: &[u8]) -> AbstractLine {
        let base = if name.len() + SUFFIX_ROOM <= MAX_NAME {
            name.to_vec()
        } else {
            // FNV-1a: stable across runs and builds, unlike std's hasher.
            let hash = name.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
            format!("lockwrap-line-{hash:016x}").into_bytes()
        };
        AbstractLine {
            lock: lock.to_owned(),
            base,
        }
    }

    fn cannot_join(&self, errno: Errno) -> Error {
        Error::os(&self.lock, "--fair: cannot join the line of waiters", errno)
    }

    fn new_socket(&self, flags: SockFlag) -> Result<OwnedFd, Error> {
        socket(
            AddressFamily::Unix,
            SockType::Stream,
            flags | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| self.cannot_join(e))
    }

    fn address(&self, name: &[u8]) -> Result<UnixAddr, Error> {
        UnixAddr::new_abstract(name).map_err(|e| self.cannot_join(e))
    }

    /// The live tickets, by number, as /proc/net/unix lists them.
    fn list(&self) -> Vec<Listed> {
        let Ok(table) = std::fs::read("/proc/net/unix") else {
            return Vec::new();
        };
        // How /proc/net/unix shows our names: `@` for each NUL byte.
        let mut prefix = b"@".to_vec();
        prefix.extend_from_slice(&self.base);
        prefix.extend_from_slice(b"@l@");
        let mut tickets: Vec<Listed> = table
            .split(|b| *b == b'\n')
            .filter_map(|line| path_field(line)?.strip_prefix(&prefix[..]))
            .filter_map(parse_listed)
            .collect();
        tickets.sort_by_key(|t| t.seq);
        tickets.dedup_by_key(|t| t.seq);
        tickets
    }

    /// Binds the turnstile (`BASE\0t`), trying again (whoever holds it
    /// holds it for a few calls) until `give_up` at the latest, and as
    /// `waiter` allows: its deadline, a signal or a cancelled slot wait end
    /// the try with their error.
    fn turnstile(&self, give_up: Option<Instant>, waiter: &Waiter<'_>) -> Result<OwnedFd, Error> {
        let mut name = self.base.clone();
        name.extend_from_slice(b"\0t");
        let address = self.address(&name)?;
        loop {
            let socket = self.new_socket(SockFlag::empty())?;
            match bind(socket.as_raw_fd(), &address) {
                Ok(()) => return Ok(socket),
                Err(Errno::EADDRINUSE) if give_up.is_none_or(|at| Instant::now() < at) => {
                    waiter.watch(&[], Some(TURNSTILE_AGAIN))?;
                }
                Err(e) => return Err(self.cannot_join(e)),
            }
        }
    }
}

impl Line for AbstractLine {
    fn is_empty(&self, _waiter: &Waiter<'_>) -> Result<bool, Error> {
        Ok(self.list().is_empty())
    }

    fn join(&self, entry: &LineEntry, waiter: &Waiter<'_>) -> Result<Box<dyn Ticket>, Error> {
        let patience = match (entry.fair, waiter.remaining()) {
            (false, _) => Some(TURNSTILE_VISIBLE_ONLY),
            // Until the deadline: `waiter` ends the try.
            (true, Some(_)) => None,
            (true, None) => Some(TURNSTILE_AT_MOST),
        };
        let give_up = patience.map(|patience| Instant::now() + patience);
        let turnstile = self.turnstile(give_up, waiter)?;
        let seq = self.list().last().map_or(1, |t| t.seq + 1);
        let listed = Listed {
            seq,
            fair: entry.fair,
            since_ms: entry.record.acquired_ms,
            pid: entry.record.pid,
        };
        let socket = self.new_socket(SockFlag::empty())?;
        bind(socket.as_raw_fd(), &self.address(&listed.name(&self.base))?)
            .map_err(|e| self.cannot_join(e))?;
        // Listening, so that the one behind can connect and wait for the
        // hangup; nobody is ever accepted.
        listen(&socket, Backlog::new(128).unwrap_or(Backlog::MAXCONN))
            .map_err(|e| self.cannot_join(e))?;
        drop(turnstile);
        Ok(Box::new(AbstractTicket {
            line: AbstractLine {
                lock: self.lock.clone(),
                base: self.base.clone(),
            },
            seq,
            _socket: socket,
        }))
    }

    fn waiters(&self) -> Result<Vec<WaiterInfo>, Error> {
        let host = holder::hostname();
        let mut waiters: Vec<WaiterInfo> = self
            .list()
            .into_iter()
            .map(|t| WaiterInfo {
                pid: Some(t.pid),
                uid: holder::process_uid(t.pid),
                host: Some(host.clone()),
                command: holder::process_command(t.pid),
                since_ms: Some(t.since_ms),
                fair: t.fair,
                position: None,
            })
            .collect();
        WaiterInfo::number_fair(&mut waiters);
        Ok(waiters)
    }
}

/// A ticket: the bound, listening socket. Dropped, its name is free and
/// the one connected behind it gets the hangup.
struct AbstractTicket {
    line: AbstractLine,
    seq: u64,
    _socket: OwnedFd,
}

impl Ticket for AbstractTicket {
    fn wait_turn(&mut self, waiter: &Waiter<'_>) -> Result<(), Error> {
        loop {
            let ahead: Vec<Listed> = self
                .line
                .list()
                .into_iter()
                .filter(|t| t.fair && t.seq < self.seq)
                .collect();
            let mut waited = false;
            // The nearest first: the one whose leaving makes this one next.
            for ticket in ahead.iter().rev() {
                let probe = self.line.new_socket(SockFlag::SOCK_NONBLOCK)?;
                let address = self.line.address(&ticket.name(&self.line.base))?;
                match connect(probe.as_raw_fd(), &address) {
                    Ok(()) | Err(Errno::EINPROGRESS) => {
                        // Readable (reset) when its socket closes.
                        loop {
                            waiter.pause(&[probe.as_fd()], None)?;
                            if poll_readable(&[probe.as_fd()], Some(Duration::ZERO))
                                .is_ok_and(|ready| ready[0])
                            {
                                break;
                            }
                        }
                    }
                    // Its backlog is full: look again in a moment.
                    Err(Errno::EAGAIN) => waiter.pause(&[], Some(LOOK_AGAIN))?,
                    // Gone since it was listed (or a look-alike that is
                    // not a ticket): the next one ahead.
                    Err(_) => continue,
                }
                waited = true;
                break;
            }
            if !waited {
                return Ok(());
            }
        }
    }
}

/// The Path field of a /proc/net/unix line (the 8th; it may hold spaces).
fn path_field(line: &[u8]) -> Option<&[u8]> {
    let mut rest = line;
    for _ in 0..7 {
        let start = rest.iter().position(|b| *b != b' ')?;
        rest = &rest[start..];
        let end = rest.iter().position(|b| *b == b' ')?;
        rest = &rest[end..];
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    Some(&rest[start..])
}

/// `SEQ@KIND@SINCE@PID`, what follows `@BASE@l@`.
fn parse_listed(rest: &[u8]) -> Option<Listed> {
    let text = std::str::from_utf8(rest).ok()?;
    let mut fields = text.split('@');
    let number = |f: Option<&str>| -> Option<u64> {
        let f = f?;
        (!f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
            .then(|| f.parse().ok())
            .flatten()
    };
    // Higher numbers are never reached by counting: such a name was
    // planted (anyone may bind one), and its number plus one would overflow.
    let seq = number(fields.next()).filter(|n| *n <= MAX_SEQ)?;
    let fair = match fields.next()? {
        "f" => true,
        "w" => false,
        _ => return None,
    };
    let since_ms = number(fields.next())?;
    let pid = i32::try_from(number(fields.next())?).ok()?;
    fields.next().is_none().then_some(Listed {
        seq,
        fair,
        since_ms,
        pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_names_fit_and_read_back_from_proc_net_unix() {
        for name in [b"x".to_vec(), vec![b'n'; 107]] {
            let line = AbstractLine::new("@x", &name);
            let listed = Listed {
                seq: MAX_SEQ,
                fair: true,
                since_ms: 9_999_999_999_999,
                pid: i32::MAX,
            };
            let full = listed.name(&line.base);
            assert!(full.len() <= MAX_NAME, "{}", full.len());
            let shown: Vec<u8> = full
                .iter()
                .map(|b| if *b == 0 { b'@' } else { *b })
                .collect();
            let mut row = b"0000: 00000002 00000000 00010000 0001 01 9015013 @".to_vec();
            row.extend_from_slice(&shown);
            let path = path_field(&row).unwrap();
            let mut prefix = b"@".to_vec();
            prefix.extend_from_slice(&line.base);
            prefix.extend_from_slice(b"@l@");
            assert_eq!(
                parse_listed(path.strip_prefix(&prefix[..]).unwrap()),
                Some(listed)
            );
        }
        assert!(parse_listed(b"1@f@2").is_none());
        assert!(parse_listed(format!("{}@f@2@3", MAX_SEQ + 1).as_bytes()).is_none());
        assert!(parse_listed(b"1@x@2@3").is_none());
        assert!(parse_listed(b"1@f@2@3@4").is_none());
    }
}
