//! Redis locks (`redis://[user:pass@]host[:port][/db]#NAME`, or over TLS
//! `rediss://...`): one key per lock, `lockwrap:NAME`, taken with `SET NX PX` and a random owner token,
//! renewed while the command runs and released with owner-checked scripts.
//!
//! Next to the key live `lockwrap:NAME:holder` (a hash: host, pid, command,
//! acquired_ms, fence, child_pid; same TTL as the key) and
//! `lockwrap:NAME:fence` (the last fencing token handed out, without TTL; the
//! next is one more, and never less than the server's clock in microseconds,
//! so that it survives the loss of this key: see [`ACQUIRE`]). The command
//! gets it as `LOCKWRAP_TOKEN`. A release pushes one wake-up on
//! the list `lockwrap:NAME:wake` (kept for 2 s), which waiters block on with
//! `BLPOP` on the connection they try the lock with: the server hands each
//! wake-up to one waiter, so a release wakes one waiter and not all of them,
//! a release between a waiter's attempt and its `BLPOP` is not missed, and a
//! waiter holds one connection for the whole wait. Waiters also retry when
//! the holder's lease runs out and at least once a second (a waiter that
//! took a wake-up and then died passes it to nobody). A release also
//! publishes on `lockwrap:NAME:released` for waiters of older versions.
//!
//! Lock loss: the lease is renewed every third of it, and every call has a
//! timeout of a third of it, so a renewal that fails or hangs is noticed
//! about two thirds into the lease at the latest, before the server can have
//! given the lock to anyone else. The caller then stops the command.
//!
//! Waiters queue in a line of their own beside the lock, `lockwrap:NAME:line`
//! (`--fair`, and `--status` lists them): see the `line` submodule
//! (redis_line.rs).
//!
//! `--replace` revokes the holder's lease on the server ([`REVOKE`]) and never
//! signals a pid the holder hash names: anyone who can write to the server can
//! write that hash.
//!
//! The password (from the URL, or REDISCLI_AUTH as for redis-cli) is never
//! printed: messages name the lock by its redacted spec, and no message is
//! built from the connection settings.
//!
//! Redis Sentinel (`redis+sentinel://[user:pass@]host1:port1,host2:port2/MASTER[/db]#NAME`,
//! or `rediss+sentinel://` for TLS to sentinels and master alike): every
//! connection asks the sentinels in turn for the current master and checks
//! with `ROLE` that it is one ([`RedisLock::connect_to_master`]); a waiter
//! does so whenever it connects. A holder never changes servers: after a
//! failover its old master is a replica that refuses writes (READONLY) or
//! drops its clients (Sentinel does), so its next renewal fails and the
//! command is stopped (75). Following the master mid-hold would be
//! unsafe: replication is asynchronous, so the new master may not have the
//! key, and another client may already hold the lock there. What protects
//! the resource is the fencing token, which the new master hands out
//! larger still (its clock in microseconds).
//!
//! TLS (`rediss://`) is rustls with the ring provider (no shared library).
//! The server's certificate is verified against the system trust store,
//! or SSL_CERT_FILE / SSL_CERT_DIR when set (as OpenSSL takes them), or
//! only the CA file of `?tls_ca=PATH` (then no other store is read: loading
//! the system's costs milliseconds); `?tls_cert=PATH&tls_key=PATH` give a
//! client certificate ([`TlsFiles`]). A refused certificate is a setting to
//! fix (78), never a reason to fall back to plain text.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::redis::{
    Client, ClientTlsConfig, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    RedisError, Script, ServerErrorKind, TlsCertificates,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{Backend, Held, HolderInfo, Line, LockStatus, Request};
use crate::cli::Mode;
use crate::error::Error;
use crate::holder;
use crate::spec::RemoteLock;
use crate::wait::Waiter;

#[path = "redis_conn.rs"]
mod conn;
#[path = "redis_line.rs"]
mod line;

use conn::{Con, Plain};

/// The lease when `--lease` is not given.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Below this a renewal cannot reliably get there and back in time.
const MIN_LEASE: Duration = Duration::from_millis(100);
/// How long to wait for the server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long taking back an acquire of unknown outcome may take.
const TAKE_BACK_TIMEOUT: Duration = Duration::from_millis(500);
/// How late a server may end a blocked command's timeout (Redis checks them
/// on its clock tick, 10 times a second by default).
const SERVER_TICK: Duration = Duration::from_millis(110);

/// The longest a waiter sleeps between attempts when no release is announced
/// (a holder that vanished lets its lease run out silently).
const MAX_NAP: Duration = Duration::from_secs(1);

/// The read and write timeouts of `con` (best effort: a connection whose
/// timeouts cannot be set keeps its old ones).
fn set_call_timeout(con: &Con, limit: Duration) {
    let limit = Some(limit.max(Duration::from_millis(1)));
    let _ = con.set_read_timeout(limit);
    let _ = con.set_write_timeout(limit);
}

/// The next answer on `con`. A read that a signal interrupted is read
/// again when the signal ends nothing (a stop and continue, which Linux
/// ends a socket call with a timeout for even without a handler, or
/// SIGCHLD) and `con` can (see [`Con::recv_again`]); a forwarded signal or
/// the deadline is `Err`.
fn recv_through_stops(
    con: &mut Con,
    waiter: Option<&Waiter<'_>>,
) -> Result<Result<::redis::Value, RedisError>, Error> {
    let mut answer = con.recv_response();
    while let (Err(e), Some(waiter)) = (&answer, waiter)
        && interrupted(e)
    {
        waiter.watch(&[], Some(Duration::ZERO))?;
        match con.recv_again() {
            Some(again) => answer = again,
            None => break,
        }
    }
    Ok(answer)
}

/// Whether `e` is a socket call that a signal, or a stop and continue,
/// ended with EINTR.
fn interrupted(e: &RedisError) -> bool {
    wrapped::<std::io::Error>(e).is_some_and(|io| io.kind() == std::io::ErrorKind::Interrupted)
}

/// `call`, a request that may run twice (an owner-checked release, the
/// command's pid), made again while a stop and continue (Ctrl-Z, `kill
/// -STOP`/`-CONT`) ends its read with EINTR, for at most `limit`: Linux
/// does that to a socket call with a timeout even while every caught
/// signal is held back (signal(7)), and giving up would leave the lock
/// taken for the rest of its lease. The first call's answer is skipped
/// when it comes (both connections count it, see [`Con::recv_again`]), so
/// the answer read is the last call's.
fn again_after_stops<T>(
    limit: Duration,
    mut call: impl FnMut() -> ::redis::RedisResult<T>,
) -> ::redis::RedisResult<T> {
    let give_up = Instant::now() + limit;
    loop {
        match call() {
            Err(e) if interrupted(&e) && Instant::now() < give_up => {}
            done => return done,
        }
    }
}

/// `limit`, or less if the wait's deadline comes sooner.
fn within_deadline(limit: Duration, waiter: &Waiter<'_>) -> Duration {
    waiter.remaining().map_or(limit, |left| left.min(limit))
}

/// Takes the lock if free: `{1, fence}`, else `{0, pttl of the holder}`.
/// KEYS: lock, fence, holder. ARGV: token, lease ms, host, pid, command, now ms.
///
/// The fencing token is one more than the last one, and never less than
/// the server's clock in microseconds (`TIME`): so it keeps growing across
/// a restart that lost the counter, as long as the server's clock does not
/// go back by more than the time since the last token was handed out.
/// (Integers up to 2^53 are exact in Lua; microseconds since 1970 stay below
/// that until the year 2255.)
const ACQUIRE: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0, redis.call('PTTL', KEYS[1])}
end
local time = redis.call('TIME')
local now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
local fence = math.max((tonumber(redis.call('GET', KEYS[2])) or 0) + 1, now_us)
redis.call('SET', KEYS[2], string.format('%.0f', fence))
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'host', ARGV[3], 'pid', ARGV[4], 'command', ARGV[5],
  'acquired_ms', ARGV[6], 'fence', string.format('%.0f', fence))
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return {1, fence}
";

/// Extends the lease if the lock is still ours: 1, else 0.
/// KEYS: lock, holder. ARGV: token, lease ms.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
";

/// Records the command's pid if the lock is still ours.
/// KEYS: lock, holder. ARGV: token, child pid.
const CHILD: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'child_pid', ARGV[2])
return 1
";

/// Deletes the lock if it is still ours and wakes one waiter: 1, else 0.
/// The wake-ups are best effort (`pcall`): the lock is free once deleted,
/// whatever becomes of them (a key of another type at the list's name, an
/// ACL without PUBLISH).
/// The wake-up list holds at most one entry and goes after [`WAKE_KEPT_MS`]
/// if nobody takes it. KEYS: lock, holder, wake list. ARGV: token, release
/// channel (for waiters of older versions), wake-up lifetime ms.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.pcall('LPUSH', KEYS[3], 'released')
redis.pcall('LTRIM', KEYS[3], 0, 0)
redis.pcall('PEXPIRE', KEYS[3], ARGV[3])
redis.pcall('PUBLISH', ARGV[2], 'released')
return 1
";

/// How long an untaken wake-up stays: every waiter tries again within
/// [`MAX_NAP`] anyway, so after that it could only cause a needless attempt.
const WAKE_KEPT_MS: u64 = 2000;

/// Revokes whoever holds the lock (`--replace`): deletes the key and the
/// holder hash, and advances the fence so that every token handed out
/// before is smaller than the next one. The holder finds its token gone at
/// its next renewal and stops its command. Nothing is published: the
/// replacer, which takes the lock next, should not race the waiters for it.
/// Returns 1 if the lock was held. KEYS: lock, holder, fence.
const REVOKE: &str = r"
if not redis.call('GET', KEYS[1]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('INCR', KEYS[3])
return 1
";

/// The key names of one lock.
#[derive(Debug, Clone)]
struct Keys {
    lock: String,
    fence: String,
    holder: String,
    channel: String,
    wake: String,
}

impl Keys {
    fn new(name: &str) -> Keys {
        Keys {
            lock: format!("lockwrap:{name}"),
            fence: format!("lockwrap:{name}:fence"),
            holder: format!("lockwrap:{name}:holder"),
            channel: format!("lockwrap:{name}:released"),
            wake: format!("lockwrap:{name}:wake"),
        }
    }

    /// The owner-checked release of `token`.
    fn release(&self, token: &str) -> ::redis::ScriptInvocation<'static> {
        let mut release = RELEASE_SCRIPT.prepare_invoke();
        release
            .key(&self.lock)
            .key(&self.holder)
            .key(&self.wake)
            .arg(token)
            .arg(&self.channel)
            .arg(WAKE_KEPT_MS);
        release
    }
}

static RELEASE_SCRIPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(RELEASE));

/// A lock on a Redis server.
#[derive(Debug, Clone)]
pub struct RedisLock {
    lock: String,
    remote: RemoteLock,
}

impl RedisLock {
    /// The lock `remote.name` on the server at `remote.url`; `lock` is the
    /// redacted spec for messages.
    pub fn new(lock: String, remote: RemoteLock) -> RedisLock {
        RedisLock { lock, remote }
    }

    fn usage(&self, why: &str) -> Error {
        Error::Usage(format!("{}: {why}", self.lock))
    }

    fn config_error(&self, why: &str) -> Error {
        Error::Config {
            lock: self.lock.clone(),
            reason: why.to_owned(),
        }
    }

    /// A failed call, with the exit code that tells retry from fix.
    fn failure(&self, what: &str, e: &RedisError) -> Error {
        failure(&self.lock, what, e)
    }

    /// A failed TLS handshake with the server `host`: a certificate this
    /// side refuses is a setting to fix (78), a client certificate the
    /// server refuses a credential (77).
    fn tls_failure(&self, host: &str, e: &rustls::Error) -> Error {
        let (reason, refused_by_server) = tls_reason(e);
        let reason = format!("TLS: {reason} (host {host})");
        if refused_by_server {
            Error::Permission {
                lock: self.lock.clone(),
                reason,
            }
        } else {
            self.config_error(&reason)
        }
    }

    /// Where and how to connect: the URL without lockwrap's own TLS
    /// parameters, the files they name (read now, so that a missing one is
    /// told before any connection), and the password from REDISCLI_AUTH.
    fn connection_info(&self) -> Result<Target, Error> {
        if self.remote.name.is_empty() {
            return Err(self.usage("missing lock name: end the URL with #NAME"));
        }
        let (url, files) =
            TlsFiles::split_url(&self.remote.url).map_err(|why| self.config_error(&why))?;
        let (url, sentinels) = match Sentinels::split_url(&url) {
            Ok(Some((url, sentinels))) => (url, Some(sentinels)),
            Ok(None) => (url, None),
            Err(why) => {
                return Err(self.config_error(&format!(
                    "not a valid redis+sentinel:// URL ({why}; redis[s]+sentinel://[[USER]:PASS@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]#NAME)"
                )));
            }
        };
        let tls = url.starts_with("rediss://");
        if !tls && !files.is_empty() {
            return Err(self.config_error(
                "tls_ca, tls_cert and tls_key are for TLS: use a rediss:// (or rediss+sentinel://) URL",
            ));
        }
        let info = url.as_str().into_connection_info().map_err(|_| {
            self.config_error(
                "not a valid redis:// URL (redis[s]://[[USER]:PASS@]HOST[:PORT][/DB]#NAME)",
            )
        })?;
        let certificates = if tls {
            Some(files.read().map_err(|why| self.config_error(&why))?)
        } else {
            None
        };
        let settings = info.redis_settings().clone();
        let info = match std::env::var("REDISCLI_AUTH") {
            Ok(password) if settings.password().is_none() && !password.is_empty() => {
                info.set_redis_settings(settings.set_password(password))
            }
            _ => info,
        };
        Ok(Target {
            info,
            certificates,
            sentinels,
        })
    }

    /// A connection to the server `target` names: with Sentinel, to the
    /// master the sentinels name now ([`RedisLock::connect_to_master`]).
    fn connect(
        &self,
        target: &Target,
        timeout: Duration,
        waiter: Option<&Waiter<'_>>,
    ) -> Result<Con, Error> {
        self.connect_with(target, timeout, waiter, None)
            .map(|(con, _)| con)
            .map_err(|failed| failed.error)
    }

    /// [`RedisLock::connect`], sending the packed command `then` in the
    /// same write as the greeting when it can (one round trip less):
    /// `Ok((con, true))` when it went, and its reply is the next to read on
    /// `con`; `Ok((con, false))` when the caller must send it itself (with
    /// Sentinel, whose master is asked its role first, and with a database
    /// other than 0, which must be selected before `then` can run). A
    /// failure says whether `then` went (its outcome is then unknown).
    fn connect_with(
        &self,
        target: &Target,
        timeout: Duration,
        waiter: Option<&Waiter<'_>>,
        then: Option<&[u8]>,
    ) -> Result<(Con, bool), Failed> {
        match &target.sentinels {
            Some(sentinels) => self
                .connect_to_master(target, sentinels, timeout, waiter)
                .map(|con| (con, false))
                .map_err(Failed::before),
            None => self.connect_to(&target.info, &target.certificates, timeout, waiter, then),
        }
    }

    /// Asks the sentinels in turn for the address of the master, and
    /// connects to the first one named that says (`ROLE`) it is a master.
    /// A sentinel that does not answer, or names a server that is not (or
    /// no longer) a master, is passed over for the next one.
    ///
    /// When none gives a master: a master name that every sentinel that
    /// answered does not know is a setting to fix (78); a refused login to
    /// a sentinel is 77; else (no sentinel answers, or the master named
    /// cannot be reached) 75, which may pass (a failover under way).
    fn connect_to_master(
        &self,
        target: &Target,
        sentinels: &Sentinels,
        timeout: Duration,
        waiter: Option<&Waiter<'_>>,
    ) -> Result<Con, Error> {
        let ended = || waiter.and_then(Waiter::ended);
        let mut unknown = Vec::new();
        let mut master_error = None;
        let mut sentinel_error = None;
        for (host, port) in &sentinels.nodes {
            let at = display_addr(host, *port);
            let asked = self
                .connect_to(
                    &sentinels.info(&target.info, host, *port),
                    &target.certificates,
                    timeout,
                    waiter,
                    None,
                )
                .map(|(con, _)| con)
                .map_err(|failed| failed.error)
                .and_then(|mut con| {
                    ::redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg(&sentinels.master)
                        .query::<Option<(String, u16)>>(&mut con)
                        .map_err(|e| self.failure("cannot ask the sentinel for the master", &e))
                });
            let (master_host, master_port) = match asked {
                Ok(Some(addr)) => addr,
                Ok(None) => {
                    unknown.push(at);
                    continue;
                }
                Err(e) => {
                    if let Some(ended) = ended() {
                        return Err(ended);
                    }
                    let e = with_prefix(e, &format!("sentinel {at}: "));
                    sentinel_error = Some(match sentinel_error {
                        // A refused login (77) tells more than "unreachable".
                        Some(Error::Permission { .. }) => sentinel_error.unwrap(),
                        _ => e,
                    });
                    continue;
                }
            };
            let master_at = display_addr(&master_host, master_port);
            let info = target.info.clone().set_addr(match target.info.addr() {
                ConnectionAddr::TcpTls { insecure, .. } => ConnectionAddr::TcpTls {
                    host: master_host,
                    port: master_port,
                    insecure: *insecure,
                    tls_params: None,
                },
                _ => ConnectionAddr::Tcp(master_host, master_port),
            });
            let connected = self
                .connect_to(&info, &target.certificates, timeout, waiter, None)
                .map(|(con, _)| con)
                .map_err(|failed| failed.error)
                .and_then(|mut con| {
                    let role = ::redis::cmd("ROLE")
                        .query::<::redis::Value>(&mut con)
                        .map_err(|e| self.failure("cannot ask the server for its role", &e))?;
                    match role {
                        ::redis::Value::Array(items)
                            if matches!(items.first(), Some(::redis::Value::BulkString(role)) if role == b"master") =>
                        {
                            Ok(con)
                        }
                        _ => Err(Error::TempFail {
                            lock: self.lock.clone(),
                            reason: "it is not a master (a failover under way?)".into(),
                        }),
                    }
                });
            match connected {
                Ok(con) => return Ok(con),
                Err(e) => {
                    if let Some(ended) = ended() {
                        return Err(ended);
                    }
                    master_error.get_or_insert(with_prefix(
                        e,
                        &format!("the master {master_at} that sentinel {at} names: "),
                    ));
                }
            }
        }
        if let Some(e) = master_error {
            return Err(e);
        }
        if !unknown.is_empty() {
            return Err(self.config_error(&format!(
                "the sentinels know no master named {:?} (asked {}); fix the /MASTER part of the URL",
                sentinels.master,
                unknown.join(", ")
            )));
        }
        Err(sentinel_error.unwrap_or_else(|| Error::TempFail {
            lock: self.lock.clone(),
            reason: "no sentinel to ask".into(),
        }))
    }

    /// A connection whose every call gives up after `timeout`.
    ///
    /// The driver only logs in (AUTH, when there is a password); the first
    /// command is a PING, which tells a server that wants a password
    /// (NOAUTH) or is not Redis at all from one that answers. The database
    /// is selected after it, so that each failure has its own message. Both
    /// go in one write, with `then` after them when the database is 0 (see
    /// [`RedisLock::connect_with`]): the server answers in order, so the
    /// PING's answer comes first even from a server that then drops an
    /// unauthenticated client for a long command.
    ///
    /// With a `waiter`, connecting also ends at its deadline (a timeout) and
    /// on a forwarded signal (128+N), not only after `timeout`. Plain TCP
    /// to an address without a login is our own connection, made on this
    /// thread ([`conn::Plain`], whose connect a signal interrupts); any
    /// other is the driver's, which connects (and does the TLS handshake
    /// and AUTH) on a helper thread, since its connect does not give up at
    /// a signal. The answers are read here, where a signal interrupts the
    /// read.
    ///
    /// Over TLS the handshake happens with the PING, on the helper thread:
    /// a certificate either side refuses ends it there
    /// ([`RedisLock::tls_failure`]).
    fn connect_to(
        &self,
        info: &ConnectionInfo,
        certificates: &Option<TlsCertificates>,
        timeout: Duration,
        waiter: Option<&Waiter<'_>>,
        then: Option<&[u8]>,
    ) -> Result<(Con, bool), Failed> {
        const CONNECT: &str = "cannot connect to the Redis server";
        let handshake = waiter
            .and_then(Waiter::remaining)
            .map_or(timeout, |left| left.min(timeout))
            .max(Duration::from_millis(1));
        let ended = |e: Error| waiter.and_then(Waiter::ended).unwrap_or(e);
        let original = info;
        let db = info.redis_settings().db();
        let settings = info
            .redis_settings()
            .clone()
            .set_db(0)
            .set_skip_set_lib_name();
        // Nagle's algorithm would hold a second write back until the first
        // is acknowledged: the TLS handshake's last flight and the request
        // after it.
        let info = info
            .clone()
            .set_redis_settings(settings)
            .set_tcp_settings(::redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let host = match info.addr() {
            ConnectionAddr::TcpTls { host, .. } => Some(host.clone()),
            _ => None,
        };
        // A TLS failure names the host and why; anything else as without TLS.
        let failure = |what: &str, e: &RedisError| match (&host, rustls_error(e)) {
            (Some(host), Some(tls)) => self.tls_failure(host, tls),
            // TLS settings the driver cannot use: not worth a retry.
            (Some(host), None) if e.kind() == ErrorKind::InvalidClientConfig => {
                self.config_error(&format!("TLS: {} (host {host})", describe(e)))
            }
            _ => self.failure(what, e),
        };
        // A failure of the greeting (the handshake, the PING's answer).
        let greeting_failure = |e: &RedisError| match &host {
            // The handshake goes with the first command: a server that does
            // not speak TLS may wait for the end of a line forever (plain
            // Redis does), which tells nothing about the server and is a
            // timeout like any other (75).
            Some(host) if e.is_timeout() => ended(Error::TempFail {
                lock: self.lock.clone(),
                reason: format!(
                    "{CONNECT}: TLS: no answer to the handshake in time (host {host}; is this the server's TLS port? plain Redis is redis://)"
                ),
            }),
            _ => ended(failure(CONNECT, e)),
        };
        // Plain TCP to an address, without a login or RESP3: our own
        // connection, made on this thread. (The driver refuses a wildcard
        // address with a message of its own.)
        let plain = match info.addr() {
            ConnectionAddr::Tcp(host, port)
                if info.redis_settings().password().is_none()
                    && !info.redis_settings().protocol().supports_resp3() =>
            {
                host.parse::<std::net::IpAddr>()
                    .ok()
                    .filter(|ip| !ip.is_unspecified())
                    .map(|ip| std::net::SocketAddr::new(ip, *port))
            }
            _ => None,
        };
        let client = match certificates {
            Some(certificates) => {
                // ring is this build's only provider; installing it (once per
                // process) keeps rustls from guessing.
                let _ = rustls::crypto::ring::default_provider().install_default();
                Client::build_with_tls(info, certificates.clone())
            }
            None => Client::open(info),
        }
        .map_err(|e| Failed::before(failure("cannot use the Redis server", &e)))?;
        let limit = CONNECT_TIMEOUT.min(handshake.max(MIN_LEASE));
        let ping = ::redis::cmd("PING").get_packed_command();
        let tls = host.is_some();
        // Connecting, and over TLS the handshake, which goes with the first
        // write (the PING's): `Ok(con)`, or the failed step (`true`: the
        // greeting) and its error.
        let greet = {
            let ping = ping.clone();
            move || -> Result<Con, (bool, RedisError)> {
                let mut con = client
                    .get_connection_with_timeout(limit)
                    .map(Con::Driver)
                    .map_err(|e| (false, e))?;
                con.set_read_timeout(Some(handshake))
                    .and_then(|()| con.set_write_timeout(Some(handshake)))
                    .map_err(|e| (false, e))?;
                if tls {
                    con.send_packed_command(&ping).map_err(|e| (true, e))?;
                }
                Ok(con)
            }
        };
        let greeted = match (plain, waiter) {
            // Ours, on this thread (see redis_conn.rs).
            (Some(addr), _) => self
                .connect_plain(addr, limit, waiter)
                .map_err(Failed::before)?
                .and_then(|con| {
                    let con = Con::Plain(con);
                    con.set_read_timeout(Some(handshake))
                        .and_then(|()| con.set_write_timeout(Some(handshake)))
                        .map(|()| con)
                })
                .map_err(|e| (false, e)),
            (None, waiter) => match waiter {
                // On a helper thread, so that the deadline and a signal end the
                // wait at once, also during a TLS handshake (whose reads retry
                // on EINTR); a thread given up on ends by itself at its
                // timeouts.
                Some(waiter) => {
                    let mut call = crate::wait::Background::start(greet).map_err(|e| {
                        Failed::before(Error::os(&self.lock, "cannot start a thread", e))
                    })?;
                    warm_cpu_features();
                    loop {
                        if let Some(result) = call.try_result() {
                            break result;
                        }
                        waiter
                            .watch(&[call.as_fd()], None)
                            .map_err(Failed::before)?;
                    }
                }
                None => greet(),
            },
        };
        let mut con = match greeted {
            Ok(con) => con,
            Err((false, e)) => return Err(Failed::before(ended(failure(CONNECT, &e)))),
            Err((true, e)) => return Err(Failed::before(greeting_failure(&e))),
        };
        // The rest of the greeting, and `then` if it can go now.
        let then = then.filter(|_| db == 0);
        let sent = then.is_some();
        let fail = |error: Error| Failed { error, sent };
        let mut request = Vec::new();
        if !tls {
            request.extend_from_slice(&ping);
        }
        if db != 0 {
            request.extend_from_slice(&::redis::cmd("SELECT").arg(db).get_packed_command());
        }
        request.extend_from_slice(then.unwrap_or_default());
        let wrote = if request.is_empty() {
            Ok(())
        } else {
            con.send_packed_command(&request)
        };
        // While the server works on it.
        warm_cpu_features();
        let answer = |con: &mut Con| -> Result<Result<::redis::Value, RedisError>, Failed> {
            recv_through_stops(con, waiter)
                .map(|answer| answer.and_then(::redis::Value::extract_error))
                .map_err(|error| Failed { error, sent })
        };
        let greeting = answer(&mut con)?
            .and_then(|pong| Ok(::redis::from_redis_value::<String>(pong)?))
            .and(wrote);
        if let Err(e) = greeting {
            let mut error = greeting_failure(&e);
            let ended = matches!(error, Error::Interrupted { .. } | Error::Timeout { .. });
            if tls && sent && e.is_connection_dropped() && !ended {
                // A TLS 1.3 server that refuses this client (one without
                // the client certificate it wants, or with one it does not
                // trust) says so in an alert after the handshake, and the
                // request written after it makes the connection fail
                // before the alert is read: a greeting alone tells why.
                if let Err(again) = self.connect_to(original, certificates, timeout, waiter, None) {
                    error = again.error;
                }
            }
            return Err(fail(error));
        }
        if db != 0 {
            answer(&mut con)?.map_err(|e| {
                fail(match e.kind() {
                    ErrorKind::Server(ServerErrorKind::ResponseError) => {
                        self.config_error(&format!(
                            "the server has no database {db} ({}); fix the /DB part of the URL",
                            e.detail().unwrap_or("DB index is out of range")
                        ))
                    }
                    _ => ended(failure(CONNECT, &e)),
                })
            })?;
        }
        if handshake != timeout {
            con.set_read_timeout(Some(timeout))
                .and_then(|()| con.set_write_timeout(Some(timeout)))
                .map_err(|e| fail(self.failure("cannot set up the connection", &e)))?;
        }
        Ok((con, sent))
    }

    /// Connects to `addr` on this thread ([`Plain::connect`]) within
    /// `limit`. A signal that interrupts the connect ends it (128+N), as
    /// does the deadline or a cancelled slot wait; a signal that is not
    /// forwarded (SIGCHLD) makes it start again for the time left.
    /// `Ok(Err(e))`: the connect failed (75, or a timeout at the deadline).
    fn connect_plain(
        &self,
        addr: std::net::SocketAddr,
        limit: Duration,
        waiter: Option<&Waiter<'_>>,
    ) -> Result<Result<Plain, RedisError>, Error> {
        let give_up = Instant::now() + limit;
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            let left = waiter
                .and_then(Waiter::remaining)
                .map_or(left, |remaining| remaining.min(left));
            if left.is_zero() {
                let timed_out = std::io::Error::from(std::io::ErrorKind::TimedOut);
                return Ok(Err(RedisError::from(timed_out)));
            }
            match Plain::connect(addr, left) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    if let Some(waiter) = waiter {
                        waiter.watch(&[], Some(Duration::ZERO))?;
                    }
                }
                connected => return Ok(connected.map_err(RedisError::from)),
            }
        }
    }

    /// After an acquire whose outcome is unknown: deletes the lock if it
    /// holds our token (the owner-checked release), on a fresh connection,
    /// briefly and best effort, so that no phantom lock stays for a lease.
    /// The signal that cut the acquisition short, or another one (a slot
    /// wait being cancelled interrupts its thread again and again), must
    /// not cut this short too: held back until it is done.
    fn take_back(&self, info: &Target, keys: &Keys, token: &str) {
        let _whole = crate::wait::uninterrupted();
        if let Ok(mut con) = self.connect(info, TAKE_BACK_TIMEOUT, None) {
            let _ = keys.release(token).invoke::<i64>(&mut con);
        }
    }

    /// Who holds the lock, read on `con` (a waiter's own connection too).
    fn read_status(&self, con: &mut Con) -> Result<LockStatus, Error> {
        let keys = Keys::new(&self.remote.name);
        let (exists, record): (bool, HashMap<String, String>) = ::redis::pipe()
            .exists(&keys.lock)
            .hgetall(&keys.holder)
            .query(con)
            .map_err(|e| self.failure("cannot read the lock", &e))?;
        if !exists {
            return Ok(LockStatus::default());
        }
        let number = |field: &str| record.get(field).and_then(|v| v.parse::<i64>().ok());
        let holders = if record.is_empty() {
            Vec::new()
        } else {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            vec![HolderInfo {
                pid: number("pid").and_then(|p| i32::try_from(p).ok()),
                child_pid: number("child_pid").and_then(|p| i32::try_from(p).ok()),
                uid: None,
                host: record.get("host").cloned(),
                command: record.get("command").cloned(),
                age: number("acquired_ms")
                    .map(|t| Duration::from_millis(now_ms.saturating_sub(t).max(0) as u64)),
                ..HolderInfo::default()
            }]
        };
        Ok(LockStatus {
            held: true,
            shared: false,
            holders,
            ..LockStatus::default()
        })
    }

    /// Waits on `con` for an entry of the list `list` (`BLPOP`), for up to
    /// `nap` or until the wait's deadline, whichever comes first; then the
    /// caller looks again. Before it blocks, it pauses `waiter` (so a first
    /// wait joins the line of waiters, and `-n` reports the conflict); a
    /// forwarded signal interrupts the blocked call (EINTR), and a slot
    /// wait that is cancelled is interrupted too (see `Interruptee`).
    ///
    /// The server ends a blocked command on its next tick (up to 100 ms
    /// late), so the read waits that much longer, and the last stretch
    /// before the deadline is slept here. `what` says what failed when the
    /// call does.
    ///
    /// A stop and continue (SIGSTOP, Ctrl-Z) also ends the blocked call
    /// with EINTR (signal(7): a socket call with a timeout is not restarted
    /// after it, handler or not). The server still sends the reply, so `con`
    /// is out of step: it is replaced by a new connection to `target`, and
    /// the caller looks again.
    #[allow(clippy::too_many_arguments)]
    fn wait_on_list(
        &self,
        con: &mut Con,
        target: &Target,
        list: &str,
        nap: Duration,
        call_timeout: Duration,
        waiter: &Waiter<'_>,
        what: &str,
    ) -> Result<(), Error> {
        waiter.pause(&[], Some(Duration::ZERO))?;
        let nap = match waiter.remaining() {
            Some(left) => nap.min(left.saturating_sub(SERVER_TICK)),
            None => nap,
        };
        if nap < Duration::from_millis(5) {
            return waiter.pause(&[], waiter.remaining());
        }
        set_call_timeout(con, nap + SERVER_TICK + call_timeout.max(SERVER_TICK));
        let popped = ::redis::cmd("BLPOP")
            .arg(list)
            .arg(format!("{:.3}", nap.as_secs_f64()))
            .query::<Option<(String, String)>>(con);
        match popped {
            Ok(_) => {}
            // Someone put another type at the list's name: sleep instead.
            Err(e) if e.code() == Some("WRONGTYPE") => waiter.pause(&[], Some(nap))?,
            Err(e) => {
                // A signal, the deadline or a cancelled slot wait, before
                // "the server did not answer".
                waiter.watch(&[], Some(Duration::ZERO))?;
                if let Some(ended) = waiter.ended() {
                    return Err(ended);
                }
                let interrupted = wrapped::<std::io::Error>(&e)
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::Interrupted);
                if !interrupted {
                    return Err(self.failure(what, &e));
                }
                *con = self.connect(target, call_timeout, Some(waiter))?;
            }
        }
        // The deadline, and a signal that came in meanwhile.
        waiter.pause(&[], Some(Duration::ZERO))
    }

    fn lease(&self, request: &Request<'_>) -> Result<Duration, Error> {
        let lease = request.lease.unwrap_or(DEFAULT_LEASE);
        if lease < MIN_LEASE {
            return Err(self.usage("--lease must be at least 100ms for a Redis lock"));
        }
        Ok(lease)
    }
}

/// Where a lock's server is and how to reach it.
#[derive(Clone)]
struct Target {
    /// The URL's settings, with REDISCLI_AUTH's password.
    info: ConnectionInfo,
    /// For `rediss://`: the CA and client certificate from the URL (both
    /// None to use the trust store and no client certificate).
    certificates: Option<TlsCertificates>,
    /// For `redis+sentinel://`: the sentinels that name the master (whose
    /// address then replaces the one in `info`).
    sentinels: Option<Sentinels>,
}

/// A connection that could not be made or greeted.
struct Failed {
    /// Why, with the exit code that tells retry from fix.
    error: Error,
    /// Whether the command to send with the greeting went: its outcome is
    /// then unknown ([`RedisLock::take_back`]).
    sent: bool,
}

impl Failed {
    /// A failure before anything was sent.
    fn before(error: Error) -> Failed {
        Failed { error, sent: false }
    }
}

/// The sentinel part of a `redis[s]+sentinel://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sentinels {
    /// The sentinels, in the order they are asked.
    nodes: Vec<(String, u16)>,
    /// The name the sentinels monitor the master by.
    master: String,
    /// `sentinel_username=`: the user to log in to the sentinels as.
    username: Option<String>,
    /// `sentinel_password=`: the sentinels' password (the URL's user-info
    /// is the master's, as sentinels usually have none or another one).
    password: Option<String>,
}

/// The port a sentinel listens on when the URL gives none.
const SENTINEL_PORT: u16 = 26379;

impl Sentinels {
    /// For a `redis+sentinel://` (or `rediss+sentinel://`) URL: the URL of
    /// the master as a `redis://` (or `rediss://`) URL whose address is the
    /// first sentinel's (a stand-in, replaced by the master's once a
    /// sentinel names it), and the sentinels. None for any other URL.
    fn split_url(url: &str) -> Result<Option<(String, Sentinels)>, String> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            ("redis", rest)
        } else if let Some(rest) = url.strip_prefix("rediss+sentinel://") {
            ("rediss", rest)
        } else {
            return Ok(None);
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let nodes = hosts
            .split(',')
            .map(parse_host_port)
            .collect::<Result<Vec<_>, _>>()?;
        let mut segments = path.split('/');
        let master = percent_decode(segments.next().unwrap_or_default());
        if master.is_empty() {
            return Err("no master name".into());
        }
        let db = match segments.next() {
            None | Some("") => None,
            Some(db) => Some(
                db.parse::<u32>()
                    .map_err(|_| format!("{db:?} is not a database number"))?,
            ),
        };
        if segments.next().is_some() {
            return Err("more than /MASTER/DB after the sentinels".into());
        }
        let mut sentinels = Sentinels {
            nodes,
            master,
            username: None,
            password: None,
        };
        let mut kept = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            match param.split_once('=') {
                Some(("sentinel_username", value)) => {
                    sentinels.username = Some(percent_decode(value));
                }
                Some(("sentinel_password", value)) => {
                    sentinels.password = Some(percent_decode(value));
                }
                _ => kept.push(param),
            }
        }
        let (host, port) = &sentinels.nodes[0];
        let mut master_url = format!("{scheme}://");
        if let Some(userinfo) = userinfo {
            master_url.push_str(userinfo);
            master_url.push('@');
        }
        master_url.push_str(&display_addr(host, *port));
        if let Some(db) = db {
            master_url.push_str(&format!("/{db}"));
        }
        if !kept.is_empty() {
            master_url.push('?');
            master_url.push_str(&kept.join("&"));
        }
        Ok(Some((master_url, sentinels)))
    }

    /// How to reach the sentinel at `host:port`: TLS as for the master
    /// (`master`), database 0 and the sentinel credentials.
    fn info(&self, master: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
        let addr = match master.addr() {
            ConnectionAddr::TcpTls { insecure, .. } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: None,
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        let mut settings = ::redis::RedisConnectionInfo::default();
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        master.clone().set_addr(addr).set_redis_settings(settings)
    }
}

/// `HOST[:PORT]` or `[V6]:PORT` of a sentinel (26379 if no port is given).
fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{text:?} lacks its closing ]"))?;
        (host, after.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err("a sentinel without a host".into());
    }
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .map_err(|_| format!("{port:?} is not a port"))?,
        None => SENTINEL_PORT,
    };
    Ok((host.to_owned(), port))
}

/// `host:port`, with an IPv6 address in brackets.
fn display_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `e` with `prefix` before its reason (which server it is about).
fn with_prefix(e: Error, prefix: &str) -> Error {
    match e {
        Error::TempFail { lock, reason } => Error::TempFail {
            lock,
            reason: format!("{prefix}{reason}"),
        },
        Error::Permission { lock, reason } => Error::Permission {
            lock,
            reason: format!("{prefix}{reason}"),
        },
        Error::Config { lock, reason } => Error::Config {
            lock,
            reason: format!("{prefix}{reason}"),
        },
        other => other,
    }
}

/// lockwrap's TLS parameters of a `rediss://` URL, which the driver does
/// not know: `tls_ca=PATH` (a PEM file of CA certificates to trust instead
/// of the system trust store), `tls_cert=PATH` and `tls_key=PATH` (a client
/// certificate chain and its private key, PEM, for a server with
/// `tls-auth-clients yes`). Paths may be percent-encoded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `tls_ca`: the CA certificates to trust.
    pub ca: Option<PathBuf>,
    /// `tls_cert`: the client certificate chain.
    pub cert: Option<PathBuf>,
    /// `tls_key`: the client certificate's private key.
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Splits `url` into the URL without the TLS parameters (the driver's
    /// part) and the files they name. A parameter that starts with `tls_`
    /// but is none of them, or one given twice, is an error (a typo must not
    /// go unnoticed).
    pub fn split_url(url: &str) -> Result<(String, TlsFiles), String> {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), TlsFiles::default()));
        };
        let mut files = TlsFiles::default();
        let mut kept = Vec::new();
        for param in query.split('&') {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let slot = match key {
                "tls_ca" => &mut files.ca,
                "tls_cert" => &mut files.cert,
                "tls_key" => &mut files.key,
                _ if key.starts_with("tls_") => {
                    return Err(format!(
                        "unknown URL parameter {key} (the TLS parameters are tls_ca, tls_cert and tls_key)"
                    ));
                }
                _ => {
                    kept.push(param);
                    continue;
                }
            };
            if slot.is_some() {
                return Err(format!("the URL parameter {key} is given twice"));
            }
            if value.is_empty() {
                return Err(format!("the URL parameter {key} needs a file: {key}=PATH"));
            }
            *slot = Some(PathBuf::from(percent_decode(value)));
        }
        let url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((url, files))
    }

    /// Whether no TLS parameter was given.
    pub fn is_empty(&self) -> bool {
        *self == TlsFiles::default()
    }

    /// The files' contents, checked to hold what they should: a missing,
    /// unreadable or wrong file is named with its parameter and path. The
    /// roots to trust are always given: without `tls_ca`, the system's.
    fn read(&self) -> Result<TlsCertificates, String> {
        let read = |key: &str, path: &PathBuf| {
            super::tls_files::read(path)
                .map_err(|why| format!("TLS: cannot read the {key} file {}: {why}", path.display()))
        };
        let certificates = |key: &str, path: &PathBuf| {
            let pem = read(key, path)?;
            let count = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("TLS: the {key} file {} is not PEM: {e}", path.display()))?
                .len();
            if count == 0 {
                return Err(format!(
                    "TLS: the {key} file {} holds no PEM certificate",
                    path.display()
                ));
            }
            Ok(pem)
        };
        // Always given to the driver, which then reads no trust store of its
        // own (see Cargo.toml): the tls_ca file alone, or the system's.
        let root_cert = match &self.ca {
            Some(path) => certificates("tls_ca", path)?,
            None => system_roots()?,
        };
        let client_tls = match (&self.cert, &self.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let client_cert = certificates("tls_cert", cert)?;
                let client_key = read("tls_key", key)?;
                let private = PrivateKeyDer::from_pem_slice(&client_key).map_err(|e| {
                    format!(
                        "TLS: the tls_key file {} holds no PEM private key: {e}",
                        key.display()
                    )
                })?;
                // The key must be usable and belong to the certificate.
                let chain = CertificateDer::pem_slice_iter(&client_cert)
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap_or_default();
                rustls::sign::CertifiedKey::from_der(
                    chain,
                    private,
                    &rustls::crypto::ring::default_provider(),
                )
                .map_err(|e| {
                    format!(
                        "TLS: the tls_key file {} does not go with the tls_cert file {}: {e}",
                        key.display(),
                        cert.display()
                    )
                })?;
                Some(ClientTlsConfig {
                    client_cert,
                    client_key,
                })
            }
            (Some(_), None) => {
                return Err(
                    "TLS: tls_cert needs tls_key (the client certificate's private key)".into(),
                );
            }
            (None, Some(_)) => {
                return Err("TLS: tls_key needs tls_cert (the client certificate)".into());
            }
        };
        Ok(TlsCertificates {
            client_tls,
            root_cert: Some(root_cert),
        })
    }
}

/// The system trust store as PEM: SSL_CERT_FILE and SSL_CERT_DIR when set
/// (as OpenSSL takes them), else the distribution's bundle and directory.
/// A file in them that cannot be read or parsed is an error, as it was when
/// the driver read them.
fn system_roots() -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    const STORE: &str = "TLS: cannot load the trust store";
    // The loader would block on a FIFO or read a device forever.
    super::tls_files::check_trust_store_env().map_err(|why| format!("{STORE}: {why}"))?;
    let mut found = rustls_native_certs::load_native_certs();
    if let Some(e) = found.errors.pop() {
        return Err(format!("{STORE} (SSL_CERT_FILE, SSL_CERT_DIR): {e}"));
    }
    let mut pem = Vec::new();
    for cert in &found.certs {
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        let text = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        for line in text.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    Ok(pem)
}

/// Runs std's CPU feature detection now, while the main thread would only
/// wait (for the helper thread to connect, for the server to answer). The
/// driver's reply parser (memchr) asks for it at the first answer, and it
/// runs `cpuid` a dozen times, each a trap to the hypervisor in a VM: about
/// 40 µs of the critical path on the machine BENCHMARKS.md describes. The
/// result is cached for the process, so asking again costs a load.
fn warm_cpu_features() {
    #[cfg(target_arch = "x86_64")]
    let _ = std::arch::is_x86_feature_detected!("avx2");
}

/// `text` with `%XX` escapes decoded (invalid ones are kept as they are).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The driver's error as the error it wraps (an `Arc` around it, or around
/// an I/O error around it), if it is an `E`.
fn wrapped<E: std::error::Error + 'static>(e: &RedisError) -> Option<&E> {
    let source = std::error::Error::source(e)?;
    let inner: &(dyn std::error::Error + 'static) =
        match source.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>() {
            Some(arc) => &**arc,
            None => source,
        };
    inner.downcast_ref::<E>().or_else(|| {
        inner
            .downcast_ref::<std::io::Error>()?
            .get_ref()?
            .downcast_ref::<E>()
    })
}

/// The TLS error behind a failed connection or call, if any.
fn rustls_error(e: &RedisError) -> Option<&rustls::Error> {
    wrapped::<rustls::Error>(e)
}

/// Why a TLS handshake failed, in words, and whether it is the server that
/// refused (our client certificate, or none).
fn tls_reason(e: &rustls::Error) -> (String, bool) {
    use rustls::{AlertDescription as Alert, CertificateError as Cert};
    let ours = |text: &str| (text.to_owned(), false);
    match e {
        rustls::Error::InvalidCertificate(cert) => match cert {
            Cert::UnknownIssuer => ours(
                "the server's certificate is not trusted (its issuer is not in the trust store; give the CA with ?tls_ca=FILE or SSL_CERT_FILE)",
            ),
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => ours(
                "the server's certificate is not valid for this host name (connect by a name or address the certificate lists)",
            ),
            Cert::Expired | Cert::ExpiredContext { .. } => {
                ours("the server's certificate has expired")
            }
            Cert::NotValidYet | Cert::NotValidYetContext { .. } => {
                ours("the server's certificate is not valid yet (check the clocks)")
            }
            Cert::Revoked => ours("the server's certificate is revoked"),
            Cert::InvalidPurpose | Cert::InvalidPurposeContext { .. } => {
                ours("the server's certificate is not for a TLS server")
            }
            other => (
                format!(
                    "the server's certificate is not trusted: {}",
                    rustls::Error::InvalidCertificate(other.clone())
                ),
                false,
            ),
        },
        rustls::Error::AlertReceived(Alert::CertificateRequired) => (
            "the server wants a client certificate (give it with ?tls_cert=FILE&tls_key=FILE)"
                .into(),
            true,
        ),
        rustls::Error::AlertReceived(
            alert @ (Alert::BadCertificate
            | Alert::UnsupportedCertificate
            | Alert::CertificateRevoked
            | Alert::CertificateExpired
            | Alert::CertificateUnknown
            | Alert::UnknownCA
            | Alert::AccessDenied),
        ) => (
            format!("the server refused the client certificate ({alert:?})"),
            true,
        ),
        rustls::Error::AlertReceived(alert) => {
            ours(&format!("the server ended the handshake ({alert:?})"))
        }
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => ours(
            "the server does not answer with TLS (is this its TLS port? plain Redis is redis://)",
        ),
        other => ours(&format!("the handshake failed: {other}")),
    }
}

impl Backend for RedisLock {
    fn acquire(&self, request: &Request<'_>, waiter: &Waiter<'_>) -> Result<Box<dyn Held>, Error> {
        if request.mode != Mode::Exclusive {
            return Err(self.usage("a Redis lock has no shared holders"));
        }
        let lease = self.lease(request)?;
        let info = self.connection_info()?;
        let call_timeout = lease / 3;
        let keys = Keys::new(&self.remote.name);
        let token = random_token();
        let acquire = Script::new(ACQUIRE);
        let (host, pid) = (holder::hostname(), std::process::id());
        // One attempt: the script by its hash (`EVALSHA`), or `EVAL` with
        // its text.
        let attempt = |by_text: bool, now_ms: u64| {
            let mut cmd = if by_text {
                ::redis::cmd("EVAL").arg(ACQUIRE).clone()
            } else {
                ::redis::cmd("EVALSHA").arg(acquire.get_hash()).clone()
            };
            cmd.arg(3)
                .arg(&keys.lock)
                .arg(&keys.fence)
                .arg(&keys.holder)
                .arg(&token)
                .arg(lease.as_millis() as u64)
                .arg(&host)
                .arg(pid)
                .arg(request.command)
                .arg(now_ms);
            cmd
        };
        let now_ms = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        };
        // The first attempt goes with the greeting, in the same write.
        let mut sent = Instant::now();
        let first = attempt(false, now_ms()).get_packed_command();
        let (mut con, mut pending) =
            match self.connect_with(&info, call_timeout, Some(waiter), Some(&first)) {
                Ok(connected) => connected,
                Err(failed) => {
                    if failed.sent {
                        self.take_back(&info, &keys, &token);
                    }
                    return Err(failed.error);
                }
            };
        loop {
            // A round trip gives up at the deadline too (-w is honoured while
            // the server does not answer); the outcome is then unknown, and
            // taken back below.
            set_call_timeout(&con, within_deadline(call_timeout, waiter));
            let reply = if std::mem::take(&mut pending) {
                match recv_through_stops(&mut con, Some(waiter)) {
                    Ok(answer) => answer,
                    Err(ended) => {
                        self.take_back(&info, &keys, &token);
                        return Err(ended);
                    }
                }
            } else {
                sent = Instant::now();
                attempt(false, now_ms()).query(&mut con)
            };
            let reply = match reply.and_then(::redis::Value::extract_error) {
                // The server does not know the script (yet, or since a
                // SCRIPT FLUSH): it did not run. Its text goes instead
                // (and is kept by the server for the next EVALSHA).
                Err(e) if e.code() == Some("NOSCRIPT") => {
                    sent = Instant::now();
                    attempt(true, now_ms()).query(&mut con)
                }
                answer => answer,
            }
            .and_then(|answer| Ok(::redis::from_redis_value::<Vec<i64>>(answer)?));
            let reply: Vec<i64> = reply.map_err(|e| {
                // The script may have run although its reply was lost
                // (a timeout, a signal): take back what it may have set.
                self.take_back(&info, &keys, &token);
                // A forwarded signal interrupts the round trip (EINTR):
                // 128+N, not "server unreachable".
                waiter
                    .ended()
                    .unwrap_or_else(|| self.failure("cannot take the lock", &e))
            })?;
            match reply.as_slice() {
                [1, fence] => {
                    let follow = info.sentinels.is_some().then(|| (self.clone(), info));
                    return Ok(Box::new(RedisHeld {
                        lock: self.lock.clone(),
                        con,
                        keys,
                        token,
                        lease,
                        fence: *fence,
                        last_ok: sent,
                        done: false,
                        broken: false,
                        follow,
                    }));
                }
                [0, pttl] => {
                    if waiter.is_nonblocking() {
                        // -n: pause reports the conflict.
                        waiter.pause(&[], None)?;
                        continue;
                    }
                    if waiter.wants_holder()
                        && let Ok(status) = self.read_status(&mut con)
                    {
                        // Read on this connection at each wake-up only: the
                        // waiting line costs no connection of its own.
                        waiter.saw_holder(&status);
                    }
                    // Block on the wake-up list until a release (or the
                    // holder's lease runs out, or a second passes).
                    let nap = u64::try_from(*pttl)
                        .map(Duration::from_millis)
                        .unwrap_or(MAX_NAP)
                        .clamp(Duration::from_millis(5), MAX_NAP);
                    self.wait_on_list(
                        &mut con,
                        &info,
                        &keys.wake,
                        nap,
                        call_timeout,
                        waiter,
                        "cannot wait for the lock",
                    )?;
                }
                _ => {
                    return Err(Error::TempFail {
                        lock: self.lock.clone(),
                        reason: "unexpected reply from the Redis server".into(),
                    });
                }
            }
        }
    }

    fn survives_exec(&self) -> bool {
        false
    }

    fn line(&self) -> Option<Box<dyn Line>> {
        Some(Box::new(line::RedisLine::new(self.clone())))
    }

    fn status(&self) -> Result<LockStatus, Error> {
        let info = self.connection_info()?;
        let mut con = self.connect(&info, CONNECT_TIMEOUT, None)?;
        self.read_status(&mut con)
    }

    fn revoke(&self, request: &Request<'_>) -> Result<Option<usize>, Error> {
        if request.mode != Mode::Exclusive {
            return Err(self.usage("a Redis lock has no shared holders"));
        }
        let info = self.connection_info()?;
        let mut con = self.connect(&info, CONNECT_TIMEOUT, None)?;
        let keys = Keys::new(&self.remote.name);
        let revoked: i64 = Script::new(REVOKE)
            .key(&keys.lock)
            .key(&keys.holder)
            .key(&keys.fence)
            .invoke(&mut con)
            .map_err(|e| self.failure("cannot revoke the holder's lease", &e))?;
        Ok(Some(usize::from(revoked == 1)))
    }
}

/// A Redis lock we hold.
struct RedisHeld {
    lock: String,
    con: Con,
    keys: Keys,
    token: String,
    lease: Duration,
    fence: i64,
    /// When the last successful take or renewal was sent: the lease runs at
    /// least until then plus `lease`.
    last_ok: Instant,
    /// Released, or lost (then there is nothing left to release).
    done: bool,
    /// A call failed: the connection may be out of step with the server.
    broken: bool,
    /// For `redis+sentinel://`: how to reach the master the sentinels name
    /// now. Each renewal goes there, so after a failover the lock stays
    /// held only if the new master has our key (it replicated in time);
    /// else the renewal finds no key and the command is stopped.
    follow: Option<(RedisLock, Target)>,
}

impl RedisHeld {
    fn lost(&mut self, why: String) -> Error {
        self.done = true;
        Error::TempFail {
            lock: self.lock.clone(),
            reason: format!("lock lost, stopping the command: {why}"),
        }
    }

    fn release_now(&mut self) -> Result<(), Error> {
        if self.done || self.broken {
            // Lost, or unusable: the lease runs out on the server by itself.
            return Ok(());
        }
        self.done = true;
        let _ = self.con.set_read_timeout(Some(self.lease / 3));
        let _ = self.con.set_write_timeout(Some(self.lease / 3));
        let release = self.keys.release(&self.token);
        again_after_stops(self.lease / 3, || release.invoke::<i64>(&mut self.con))
            .map(drop)
            .map_err(|e| Error::TempFail {
                lock: self.lock.clone(),
                reason: format!(
                    "cannot release the lock ({}); it expires by itself within the lease",
                    describe(&e)
                ),
            })
    }
}

impl Held for RedisHeld {
    fn child_started(&mut self, child: nix::unistd::Pid) -> Result<(), Error> {
        let script = Script::new(CHILD);
        let mut record = script.prepare_invoke();
        record
            .key(&self.keys.lock)
            .key(&self.keys.holder)
            .arg(&self.token)
            .arg(child.as_raw());
        let recorded = again_after_stops(self.lease / 3, || record.invoke::<i64>(&mut self.con));
        recorded.map(drop).map_err(|e| {
            // A reply may still be on its way: the connection cannot be
            // trusted to pair the next renewal with its answer.
            self.broken = true;
            Error::TempFail {
                lock: self.lock.clone(),
                reason: format!("cannot record the command's pid: {}", describe(&e)),
            }
        })
    }

    fn child_env(&self) -> Vec<(OsString, OsString)> {
        vec![(
            OsString::from("LOCKWRAP_TOKEN"),
            OsString::from(self.fence.to_string()),
        )]
    }

    /// None once the key is released or left to the server
    /// ([`Held::release_later`]): in a set whose other locks lockwrap
    /// still keeps, the key must not get a full lease again.
    fn renew_every(&self) -> Option<Duration> {
        (!self.done).then_some(self.lease / 3)
    }

    fn renew(&mut self) -> Result<(), Error> {
        if self.done {
            return Ok(());
        }
        if self.broken {
            return Err(self.lost("the connection to the server failed".into()));
        }
        let sent = Instant::now();
        // The answer must come while a third of the lease is left, so that
        // the command is stopped before the server can give the lock away.
        let budget = (self.last_ok + self.lease * 2 / 3).saturating_duration_since(sent);
        if budget.is_zero() {
            // We were paused (SIGSTOP, swap) or the last call was slow:
            // someone else may hold the lock by now, whatever the server says.
            return Err(self.lost("the lease ran out before it could be renewed".into()));
        }
        let budget = budget.min(self.lease / 3);
        if let Some((lock, target)) = &self.follow
            && let Ok(master) = lock.connect(target, budget / 2, None)
        {
            // The master the sentinels name now (ours, unless a failover
            // promoted another); when none can be reached, the renewal
            // goes to ours as before.
            self.con = master;
        }
        let budget = (self.last_ok + self.lease * 2 / 3)
            .saturating_duration_since(Instant::now())
            .min(self.lease / 3);
        if budget.is_zero() {
            return Err(self.lost("the lease ran out before it could be renewed".into()));
        }
        if let Err(e) = self
            .con
            .set_read_timeout(Some(budget))
            .and_then(|()| self.con.set_write_timeout(Some(budget)))
        {
            let why = format!("cannot renew the lease: {}", describe(&e));
            return Err(self.lost(why));
        }
        // Plain EVAL, not EVALSHA: exactly one round trip, even after a
        // SCRIPT FLUSH.
        let renewed = ::redis::cmd("EVAL")
            .arg(RENEW)
            .arg(2)
            .arg(&self.keys.lock)
            .arg(&self.keys.holder)
            .arg(&self.token)
            .arg(self.lease.as_millis() as u64)
            .query::<i64>(&mut self.con);
        match renewed {
            Ok(1) => {
                self.last_ok = sent;
                Ok(())
            }
            Ok(_) => Err(self.lost("the lease expired and the lock is gone or taken".into())),
            Err(e) => {
                let why = format!("cannot renew the lease: {}", describe(&e));
                Err(self.lost(why))
            }
        }
    }

    /// Leaves the key to the server: its lease becomes the time left until
    /// `until`, if the key still holds our token ([`RENEW`] with that time),
    /// so the lock expires on its own when the interval ends, and no
    /// wrapper has to stay (or can die and free it early).
    fn release_later(&mut self, until: Instant) -> Result<bool, Error> {
        let left = until.saturating_duration_since(Instant::now());
        if self.done || self.broken || left.is_zero() {
            // Nothing to hand over: the renewal or release that follows
            // says what became of the lock.
            return Ok(false);
        }
        // Rounded up: the key must not go before `until`.
        let left_ms = left.as_nanos().div_ceil(1_000_000) as u64;
        let _ = self.con.set_read_timeout(Some(self.lease / 3));
        let _ = self.con.set_write_timeout(Some(self.lease / 3));
        let kept = ::redis::cmd("EVAL")
            .arg(RENEW)
            .arg(2)
            .arg(&self.keys.lock)
            .arg(&self.keys.holder)
            .arg(&self.token)
            .arg(left_ms)
            .query::<i64>(&mut self.con);
        match kept {
            Ok(1) => {
                self.done = true;
                Ok(true)
            }
            Ok(_) => {
                self.done = true;
                Err(Error::TempFail {
                    lock: self.lock.clone(),
                    reason: "the lock was gone or taken before --min-hold was over".into(),
                })
            }
            Err(e) => {
                // The script may have run: the key then expires at `until`,
                // else within the lease.
                self.broken = true;
                Err(Error::TempFail {
                    lock: self.lock.clone(),
                    reason: format!(
                        "cannot leave the lock to the server for --min-hold ({}); it expires by itself within the lease",
                        describe(&e)
                    ),
                })
            }
        }
    }

    fn release(mut self: Box<Self>) -> Result<(), Error> {
        self.release_now()
    }
}

impl Drop for RedisHeld {
    fn drop(&mut self) {
        let _ = self.release_now();
    }
}

/// What went wrong, in words. The driver's errors never contain the
/// connection settings, so there is no password to hide.
fn describe(e: &RedisError) -> String {
    if e.is_timeout() {
        "the server did not answer in time".to_owned()
    } else if e.is_connection_dropped() {
        "the server closed the connection (a restart, a failover, CLIENT KILL)".to_owned()
    } else {
        e.to_string()
    }
}

/// What to allow a user the server's ACL refuses.
const ACL_HINT: &str = " (the server's ACL must allow this user EVAL, EVALSHA, PING, EXISTS, HGETALL, BLPOP and PUBLISH, and the commands the scripts run (see the README), on the keys and channels lockwrap:*, and ROLE through Sentinel)";

/// `what` failed on lock `lock` because of `e`: a refused login or command
/// is for the user to fix (77), anything else may pass (75).
fn failure(lock: &str, what: &str, e: &RedisError) -> Error {
    let permission = |reason: String| Error::Permission {
        lock: lock.to_owned(),
        reason: format!("{what}: {reason}"),
    };
    let detail = e.detail().unwrap_or_default();
    match (e.kind(), e.code()) {
        (_, Some("NOAUTH")) => permission(
            "NOAUTH: the server needs a password (REDISCLI_AUTH or redis://:PASS@...)".into(),
        ),
        (ErrorKind::AuthenticationFailed, _) | (_, Some("WRONGPASS")) => permission(
            "the server refused the user name or password (check the redis://[USER]:PASS@ part of the URL or REDISCLI_AUTH)"
                .into(),
        ),
        (ErrorKind::Server(ServerErrorKind::NoPerm), _) | (_, Some("NOPERM")) => {
            permission(format!("NOPERM {detail}{ACL_HINT}"))
        }
        // A refusal inside a script is `ERR The user executing the script
        // can't run this command or subcommand` on Redis 7.0.
        _ if detail.contains("script can't run this command") => {
            permission(format!("NOPERM {detail}{ACL_HINT}"))
        }
        (ErrorKind::Parse | ErrorKind::UnexpectedReturnType, _) => Error::TempFail {
            lock: lock.to_owned(),
            reason: format!(
                "{what}: the server does not answer like a Redis server (is this the right host and port?)"
            ),
        },
        _ => Error::TempFail {
            lock: lock.to_owned(),
            reason: format!("{what}: {}", describe(e)),
        },
    }
}

/// 128 random bits as hex: the owner token.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !filled {
        // Unique enough without /dev/urandom: pid, time and this host.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return format!("{}-{}-{nanos}", holder::hostname(), std::process::id());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }

    /// Without roots of ours the driver would trust its compiled-in ones
    /// (the webpki-roots feature, enabled only so that it reads no store
    /// itself), not the system's or the `tls_ca` file's.
    #[test]
    fn the_driver_is_always_given_the_roots_to_trust() {
        assert!(TlsFiles::default().read().unwrap().root_cert.is_some());
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let pem = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        std::fs::write(&ca, pem).unwrap();
        let files = TlsFiles {
            ca: Some(ca),
            ..TlsFiles::default()
        };
        assert_eq!(files.read().unwrap().root_cert, Some(pem.into()));
    }

    #[test]
    fn tls_parameters_are_split_off_the_url() {
        let (url, files) = TlsFiles::split_url(
            "rediss://:pw@h:6380/2?tls_ca=/a%20b/ca.pem&protocol=resp3&tls_cert=c&tls_key=k",
        )
        .unwrap();
        assert_eq!(url, "rediss://:pw@h:6380/2?protocol=resp3");
        assert_eq!(files.ca, Some(PathBuf::from("/a b/ca.pem")));
        assert_eq!(files.cert, Some(PathBuf::from("c")));
        assert_eq!(files.key, Some(PathBuf::from("k")));
        let (url, files) = TlsFiles::split_url("rediss://h?tls_ca=x").unwrap();
        assert_eq!(url, "rediss://h");
        assert!(!files.is_empty());
        assert!(TlsFiles::split_url("rediss://h").unwrap().1.is_empty());
        assert!(TlsFiles::split_url("rediss://h?tls_cafile=x").is_err());
        assert!(TlsFiles::split_url("rediss://h?tls_ca=x&tls_ca=y").is_err());
        assert!(TlsFiles::split_url("rediss://h?tls_ca=").is_err());
    }

    #[test]
    fn sentinel_urls_name_the_sentinels_and_the_master() {
        let (url, s) = Sentinels::split_url(
            "redis+sentinel://u:pw@a:26380,[::1]:1,b/my%20master/2?protocol=resp3&sentinel_password=sp",
        )
        .unwrap()
        .unwrap();
        assert_eq!(url, "redis://u:pw@a:26380/2?protocol=resp3");
        assert_eq!(
            s.nodes,
            [
                ("a".to_owned(), 26380),
                ("::1".to_owned(), 1),
                ("b".to_owned(), SENTINEL_PORT)
            ]
        );
        assert_eq!(s.master, "my master");
        assert_eq!(s.password.as_deref(), Some("sp"));
        assert_eq!(s.username, None);
        let (url, _) = Sentinels::split_url("rediss+sentinel://h/m")
            .unwrap()
            .unwrap();
        assert_eq!(url, "rediss://h:26379");
        assert!(Sentinels::split_url("redis://h#n").unwrap().is_none());
        for bad in [
            "redis+sentinel://h",
            "redis+sentinel://h/",
            "redis+sentinel://h:x/m",
            "redis+sentinel://h,/m",
            "redis+sentinel://h/m/x",
            "redis+sentinel://h/m/1/2",
            "redis+sentinel://[::1/m",
        ] {
            assert!(Sentinels::split_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_follow_the_name() {
        let keys = Keys::new("nightly.slot1");
        assert_eq!(keys.lock, "lockwrap:nightly.slot1");
        assert_eq!(keys.fence, "lockwrap:nightly.slot1:fence");
        assert_eq!(keys.channel, "lockwrap:nightly.slot1:released");
    }
}
