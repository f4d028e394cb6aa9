//! A connection to a Redis server: the driver's, or lockwrap's own for
//! plain TCP to an address ([`Plain`]), made on the calling thread.
//!
//! Why a connection of our own: the driver connects with std's
//! `connect_timeout`, which retries when a signal interrupts it, so a
//! signal (or the deadline of `-w`) could only end a connect the driver
//! makes on a helper thread; starting, scheduling and joining that thread
//! cost about 80 µs of every run on a busy two-core machine, and more the
//! busier it is (BENCHMARKS.md). A blocking connect with a send timeout
//! gives up at that timeout and at any caught signal (EINTR, even under
//! SA_RESTART: signal(7)), so it needs no thread. What the driver does
//! after connecting (TLS, AUTH, RESP3's HELLO) stays the driver's: those
//! connections are [`Con::Driver`].
//!
//! This module knows the wire (RESP2, through the driver's own parser and
//! command packing) and nothing of locks.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd as _;
use std::time::Duration;

use ::redis::{Connection, ConnectionLike, ErrorKind, Parser, RedisError, RedisResult, Value};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, connect, setsockopt, socket,
    sockopt,
};

/// A connection to a Redis server.
pub enum Con {
    /// The driver's (TLS, a password, RESP3, a host name, Sentinel).
    Driver(Connection),
    /// Ours: plain TCP to an address, RESP2, no login.
    Plain(Plain),
}

impl Con {
    /// The read timeout of later calls (None: none).
    pub fn set_read_timeout(&self, limit: Option<Duration>) -> RedisResult<()> {
        match self {
            Con::Driver(con) => con.set_read_timeout(limit),
            Con::Plain(con) => Ok(con.stream.set_read_timeout(limit)?),
        }
    }

    /// The write timeout of later calls (None: none).
    pub fn set_write_timeout(&self, limit: Option<Duration>) -> RedisResult<()> {
        match self {
            Con::Driver(con) => con.set_write_timeout(limit),
            Con::Plain(con) => Ok(con.stream.set_write_timeout(limit)?),
        }
    }

    /// Sends packed commands without reading their answers.
    pub fn send_packed_command(&mut self, packed: &[u8]) -> RedisResult<()> {
        match self {
            Con::Driver(con) => con.send_packed_command(packed),
            Con::Plain(con) => con.send(packed),
        }
    }

    /// The next answer.
    pub fn recv_response(&mut self) -> RedisResult<Value> {
        match self {
            Con::Driver(con) => con.recv_response(),
            Con::Plain(con) => con.recv(),
        }
    }

    /// After [`Con::recv_response`] failed with EINTR: reads the same
    /// answer again, if this connection can (ours can; the driver's counts
    /// that answer as one to skip, and so cannot).
    pub fn recv_again(&mut self) -> Option<RedisResult<Value>> {
        match self {
            Con::Driver(_) => None,
            Con::Plain(con) => {
                con.skip = con.skip.saturating_sub(1);
                Some(con.recv())
            }
        }
    }
}

impl ConnectionLike for Con {
    fn req_packed_command(&mut self, packed: &[u8]) -> RedisResult<Value> {
        match self {
            Con::Driver(con) => con.req_packed_command(packed),
            Con::Plain(con) => {
                con.send(packed)?;
                con.recv()
            }
        }
    }

    fn req_packed_commands(
        &mut self,
        packed: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Con::Driver(con) => con.req_packed_commands(packed, offset, count),
            Con::Plain(con) => {
                con.send(packed)?;
                // Every answer is read, so that the connection stays in step
                // when one of them is an error.
                let mut answers = Vec::with_capacity(count);
                let mut first_error = None;
                for index in 0..offset + count {
                    match con.recv() {
                        Ok(answer) if index >= offset => answers.push(answer),
                        Ok(_) => {}
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                first_error.map_or(Ok(answers), Err)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Con::Driver(con) => con.get_db(),
            Con::Plain(_) => 0,
        }
    }

    fn check_connection(&mut self) -> bool {
        ::redis::cmd("PING").query::<String>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        match self {
            Con::Driver(con) => con.is_open(),
            Con::Plain(con) => con.open,
        }
    }
}

/// A plain TCP connection of our own, speaking RESP2.
pub struct Plain {
    stream: TcpStream,
    parser: Parser,
    /// False once the server closed it (or a write failed for good).
    open: bool,
    /// Answers still due to calls that gave up on them (a timeout, a
    /// signal): the next ones to come are theirs, and are skipped, as the
    /// driver does.
    skip: usize,
}

impl Plain {
    /// Connects to `addr` on this thread, giving up after `limit`, with
    /// Nagle's algorithm off (a request follows the greeting at once).
    ///
    /// A signal caught meanwhile ends the connect with `Interrupted`, and
    /// the caller decides (`again` then retries for the time left).
    pub fn connect(addr: SocketAddr, limit: Duration) -> std::io::Result<Plain> {
        let family = match addr {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
        // connect(2) waits at most the send timeout, and a signal ends the
        // wait with EINTR because a timeout is set.
        setsockopt(&fd, sockopt::SendTimeout, &limit_timeval(limit))?;
        match addr {
            SocketAddr::V4(addr) => connect(fd.as_raw_fd(), &SockaddrIn::from(addr)),
            SocketAddr::V6(addr) => connect(fd.as_raw_fd(), &SockaddrIn6::from(addr)),
        }
        .map_err(|e| match e {
            // The send timeout passed while the handshake was under way.
            Errno::EINPROGRESS | Errno::EAGAIN => std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the connection was not accepted in time",
            ),
            e => std::io::Error::from(e),
        })?;
        setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
        Ok(Plain {
            stream: TcpStream::from(fd),
            parser: Parser::new(),
            open: true,
            skip: 0,
        })
    }

    fn send(&mut self, packed: &[u8]) -> RedisResult<()> {
        if !self.open {
            return Err(closed());
        }
        self.stream.write_all(packed).map_err(|e| {
            let e = RedisError::from(e);
            if e.is_unrecoverable_error() {
                self.open = false;
            }
            e
        })
    }

    fn recv(&mut self) -> RedisResult<Value> {
        loop {
            if !self.open {
                return Err(closed());
            }
            let answer = self.parser.parse_value(&mut self.stream);
            match &answer {
                Err(e) => match super::wrapped::<std::io::Error>(e).map(std::io::Error::kind) {
                    Some(std::io::ErrorKind::UnexpectedEof) => self.open = false,
                    // A timeout or a signal: this answer comes later.
                    Some(_) => self.skip += 1,
                    None if self.skip > 0 => {
                        self.skip -= 1;
                        continue;
                    }
                    None => {}
                },
                Ok(_) if self.skip > 0 => {
                    self.skip -= 1;
                    continue;
                }
                Ok(_) => {}
            }
            return answer;
        }
    }
}

/// The error of a call on a connection the server has closed.
fn closed() -> RedisError {
    RedisError::from((ErrorKind::Io, "the server closed the connection"))
}

/// `limit` as a send timeout: at least 1 ms (0 would mean none).
fn limit_timeval(limit: Duration) -> nix::sys::time::TimeVal {
    let limit = limit.max(Duration::from_millis(1));
    nix::sys::time::TimeVal::new(
        limit.as_secs().try_into().unwrap_or(i64::MAX),
        limit.subsec_micros().into(),
    )
}
