//! PostgreSQL locks (`postgres://[user[:pass]@]host[:port]/db#NAME`): session
//! advisory locks on the 64-bit key `hashtextextended(NAME, 0)`, computed by
//! the server, so that psql can take the same lock:
//! `SELECT pg_advisory_lock(hashtextextended('NAME', 0));` in the same database.
//! `-s` takes the shared advisory lock.
//!
//! The lock lives as long as the session: lockwrap keeps the connection open
//! while the command runs, checks every third of `--lease` (with a timeout of
//! a third of it) that the session still holds the lock, and reports a lost
//! lock when it does not answer in time or the session is gone. The server
//! side gets TCP keepalives that give up after about the lease, so that the
//! lock of a holder whose machine vanished is freed.
//!
//! Waiting is a blocking `pg_advisory_lock` on a helper thread, so the server
//! queues the waiters and wakes one on release (nothing polls); the deadline
//! and signals are watched meanwhile, and a wait given up is cancelled.
//!
//! Holders are identified by `application_name` (`lockwrap pid=N host=H`) and
//! by a comment in the query that checks the lock, which pg_stat_activity
//! shows: `/* lockwrap acquired=T child=C command=... */`. Any session can
//! claim that name, so it is for `--status` only: `--replace` ends the
//! holding sessions with `pg_terminate_backend` and signals no process.
//!
//! TLS is libpq's (`sslmode`, `sslrootcert`, `sslcert`, `sslkey` in the
//! URL or the `PGSSL*` variables), on rustls (the `tls` submodule).
//!
//! The password never appears in a message: none is built from the
//! connection settings, and the server's messages do not contain it.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::postgres::config::{Host, SslNegotiation};
use ::postgres::error::SqlState;
use ::postgres::{Client, Config};

use super::{Backend, Held, HolderInfo, LockStatus, Request, WaiterInfo};
use crate::cli::Mode;
use crate::error::Error;
use crate::holder;
use crate::spec::RemoteLock;
use crate::wait::{Background, Waiter, poll_readable};

mod tls;
use tls::Tls;

/// The lease when `--lease` is not given.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Below this a check cannot reliably get there and back in time.
const MIN_LEASE: Duration = Duration::from_millis(100);
/// How long to wait for the server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting, logging in and the first attempt may take in all.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `--replace` waits for a terminated holder's session to end.
const TERMINATE_WAIT: Duration = Duration::from_secs(3);

/// The advisory-lock key of a lock name, as SQL over parameter `$1`.
const KEY: &str = "hashtextextended($1, 0)";

/// A lock on a PostgreSQL server.
#[derive(Debug, Clone)]
pub struct PgLock {
    lock: String,
    remote: RemoteLock,
}

/// A failed call on a connection shared with a helper thread.
enum CallError {
    /// No answer within the time allowed.
    TimedOut,
    /// The server or the connection said no.
    Pg(::postgres::Error),
    /// The helper thread could not be started.
    Os(nix::errno::Errno),
}

impl PgLock {
    /// The lock `remote.name` in the database at `remote.url`; `lock` is the
    /// redacted spec for messages.
    pub fn new(lock: String, remote: RemoteLock) -> PgLock {
        PgLock { lock, remote }
    }

    fn usage(&self, why: &str) -> Error {
        Error::Usage(format!("{}: {why}", self.lock))
    }

    fn temp_fail(&self, what: &str, e: &dyn std::fmt::Display) -> Error {
        Error::TempFail {
            lock: self.lock.clone(),
            reason: format!("{what}: {e}"),
        }
    }

    fn config_error(&self, why: &str) -> Error {
        Error::Config {
            lock: self.lock.clone(),
            reason: why.to_owned(),
        }
    }

    /// The URL's settings, completed from the environment as libpq does
    /// (PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, PGPASSFILE/~/.pgpass,
    /// and for TLS PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY).
    fn config(&self, application_name: &str) -> Result<(Config, Tls), Error> {
        if self.remote.name.is_empty() {
            return Err(self.usage("missing lock name: end the URL with #NAME"));
        }
        // The driver knows only some of libpq's TLS parameters.
        let (url, tls_params) = tls::take_params(&self.remote.url);
        let mut config = Config::from_str(&url).map_err(|_| {
            self.config_error(
                "not a valid postgres:// URL (postgres://[USER[:PASS]@]HOST[:PORT]/DATABASE#NAME)",
            )
        })?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if config.get_hosts().is_empty() {
            match env("PGHOST") {
                Some(hosts) => {
                    for host in hosts.split(',') {
                        config.host(host);
                    }
                }
                None if std::path::Path::new("/var/run/postgresql").is_dir() => {
                    config.host("/var/run/postgresql");
                }
                None => {
                    config.host("localhost");
                }
            }
        }
        let unix_socket = config
            .get_hosts()
            .iter()
            .all(|host| matches!(host, Host::Unix(_)));
        let tls = Tls::resolve(&tls_params, unix_socket).map_err(|why| self.config_error(&why))?;
        if config.get_ssl_negotiation() == SslNegotiation::Direct
            && !matches!(
                tls.mode(),
                tls::Mode::Require | tls::Mode::VerifyCa | tls::Mode::VerifyFull
            )
        {
            return Err(self.config_error(
                "sslnegotiation=direct needs sslmode=require, verify-ca or verify-full",
            ));
        }
        if config.get_ports().is_empty()
            && let Some(port) = env("PGPORT").and_then(|p| p.parse().ok())
        {
            config.port(port);
        }
        if config.get_user().is_none() {
            let user = env("PGUSER").or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::getuid())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            });
            if let Some(user) = user {
                config.user(&user);
            }
        }
        if config.get_dbname().is_none()
            && let Some(db) = env("PGDATABASE").or_else(|| config.get_user().map(str::to_owned))
        {
            config.dbname(&db);
        }
        if config.get_password().is_none() {
            if let Some(password) = env("PGPASSWORD") {
                config.password(password);
            } else if let Some(password) = pgpass_lookup(&config) {
                config.password(password);
            }
        }
        config
            .application_name(application_name)
            .connect_timeout(CONNECT_TIMEOUT)
            // Our side notices a server that vanished.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
        Ok((config, tls))
    }

    /// Runs `call` with a fresh connection on a helper thread, all of it
    /// bounded by [`SETUP_TIMEOUT`]: the driver's connect timeout covers only
    /// the TCP connect, and a stalled server would hang the handshake.
    ///
    /// With a `waiter`, it also ends at the waiter's deadline (a timeout) and
    /// on a forwarded signal (128+N); the helper thread is then left to the
    /// process's exit.
    fn with_new_session<T: Send + 'static>(
        &self,
        (config, tls): &(Config, Tls),
        waiter: Option<&Waiter<'_>>,
        call: impl FnOnce(&mut Client) -> Result<T, (&'static str, ::postgres::Error)> + Send + 'static,
    ) -> Result<(Client, T), Error> {
        let (config2, tls2) = (config.clone(), tls.clone());
        let setup = move || {
            let mut client = connect(&config2, &tls2)
                .map_err(|e| ("cannot connect to the PostgreSQL server", e))?;
            let value = call(&mut client)?;
            Ok((client, value))
        };
        let outcome = match waiter {
            Some(waiter) => watched_background(SETUP_TIMEOUT, waiter, setup)?,
            None => in_background(SETUP_TIMEOUT, setup),
        };
        match outcome {
            Ok(Ok(done)) => Ok(done),
            Ok(Err((what, e))) => Err(failure(&self.lock, what, &e)),
            Err(CallError::TimedOut) => Err(self.temp_fail(
                "cannot connect to the PostgreSQL server",
                &format!("no answer within {}s", SETUP_TIMEOUT.as_secs()),
            )),
            Err(CallError::Pg(e)) => Err(failure(&self.lock, "cannot connect", &e)),
            Err(CallError::Os(e)) => Err(Error::os(&self.lock, "cannot start a thread", e)),
        }
    }

    fn lease(&self, request: &Request<'_>) -> Result<Duration, Error> {
        let lease = request.lease.unwrap_or(DEFAULT_LEASE);
        if lease < MIN_LEASE {
            return Err(self.usage("--lease must be at least 100ms for a PostgreSQL lock"));
        }
        Ok(lease)
    }
}

/// Connects as `tls` says, with libpq's second attempt: for sslmode=allow
/// over TLS after the server refused the plain-text session, for prefer in
/// plain text after it refused the TLS session.
fn connect(config: &Config, tls: &Tls) -> Result<Client, ::postgres::Error> {
    let unix_socket = config
        .get_hosts()
        .iter()
        .all(|host| matches!(host, Host::Unix(_)));
    let (first, second) = tls.attempts(unix_socket);
    let used_tls = Arc::new(AtomicBool::new(false));
    let mut config = config.clone();
    config.ssl_mode(first);
    match config.connect(tls.connector(Arc::clone(&used_tls))) {
        // The server said no with an error: pg_hba.conf, typically.
        Err(e) if e.as_db_error().is_some() => {
            let retry = match tls.mode() {
                tls::Mode::Allow => second,
                tls::Mode::Prefer if used_tls.load(Ordering::Relaxed) => second,
                _ => None,
            };
            match retry {
                Some(mode) => {
                    config.ssl_mode(mode);
                    config.connect(tls.connector(used_tls))
                }
                None => Err(e),
            }
        }
        other => other,
    }
}

/// Session settings: nothing on the server may cut our waits or our idle
/// session short, and the server gives up on a silent client after about the
/// lease (keepalives; settings the server lacks are skipped).
fn prepare_session(client: &mut Client, lease: Duration) -> Result<(), ::postgres::Error> {
    client.batch_execute(
        "SET lock_timeout = 0; SET statement_timeout = 0; \
         SET idle_in_transaction_session_timeout = 0",
    )?;
    let secs = |d: Duration| d.as_secs().max(1).to_string();
    let best_effort = [
        ("tcp_keepalives_idle", secs(lease / 2)),
        ("tcp_keepalives_interval", secs(lease / 6)),
        ("tcp_keepalives_count", "3".to_owned()),
        ("tcp_user_timeout", lease.as_millis().to_string()),
        ("idle_session_timeout", "0".to_owned()),
        ("client_connection_check_interval", "1000".to_owned()),
    ];
    for (name, value) in best_effort {
        let _ = client.execute("SELECT set_config($1, $2, false)", &[&name, &value]);
    }
    Ok(())
}

impl Backend for PgLock {
    fn acquire(&self, request: &Request<'_>, waiter: &Waiter<'_>) -> Result<Box<dyn Held>, Error> {
        let shared = match request.mode {
            Mode::Exclusive => false,
            Mode::Shared => true,
            Mode::Unlock => {
                return Err(self.usage("-u/--unlock means nothing for a PostgreSQL lock"));
            }
        };
        let lease = self.lease(request)?;
        let identity = Identity::of_this_process(request.command);
        let config = self.config(&identity.application_name())?;
        let tls = config.1.clone();
        let suffix = if shared { "_shared" } else { "" };
        let name = self.remote.name.clone();
        let try_sql = format!("SELECT pg_try_advisory_lock{suffix}({KEY})");
        let try_name = name.clone();
        let (client, taken) = self.with_new_session(&config, Some(waiter), move |client| {
            prepare_session(client, lease).map_err(|e| ("cannot set up the session", e))?;
            client
                .query_one(&try_sql, &[&try_name])
                .map(|row| row.get::<_, bool>(0))
                .map_err(|e| ("cannot take the lock", e))
        })?;
        let client = Arc::new(Mutex::new(client));
        if !taken {
            if waiter.is_nonblocking() {
                // -n: pause reports the conflict.
                waiter.pause(&[], None)?;
            }
            if waiter.wants_holder() {
                // On the waiter's own session, before it blocks: the waiting
                // line costs no session of its own.
                let name2 = name.clone();
                if let Ok(rows) = bounded(&client, SETUP_TIMEOUT, move |c| {
                    c.query(&status_sql(), &[&name2])
                }) {
                    waiter.saw_holder(&status_of(rows));
                }
            }
            self.wait_blocking(&client, &tls, &name, suffix, &identity, waiter)?;
        }
        let mut held = PgHeld {
            lock: self.lock.clone(),
            client,
            name,
            shared,
            lease,
            identity,
            done: false,
            token: 0,
        };
        held.check()?;
        held.token = held.fencing_token()?;
        Ok(Box::new(held))
    }

    fn supports_shared(&self) -> bool {
        true
    }

    fn survives_exec(&self) -> bool {
        false
    }

    fn fair_by_itself(&self) -> bool {
        // Waiters block in pg_advisory_lock, and the server's lock manager
        // grants a released lock to the one that asked first.
        true
    }

    /// The holders, and the sessions queued for the lock (`granted` false
    /// in pg_locks), first come first: all of them wait their turn in the
    /// server's queue, so each has a place.
    fn status(&self) -> Result<LockStatus, Error> {
        let config = self.config("lockwrap status")?;
        let name = self.remote.name.clone();
        let (_, (holders, waiters)) = self.with_new_session(&config, None, move |client| {
            let holders = client
                .query(&status_sql(), &[&name])
                .map_err(|e| ("cannot read the lock", e))?;
            let waiters = client
                .query(&waiters_sql(), &[&name])
                .map_err(|e| ("cannot read who waits for the lock", e))?;
            Ok((holders, waiters))
        })?;
        let mut status = status_of(holders);
        status.waiters = waiters_of(waiters);
        Ok(status)
    }

    /// Ends every other session that holds the lock in a mode that conflicts
    /// with `request` (`pg_terminate_backend`, waiting up to
    /// [`TERMINATE_WAIT`] for each to end on servers that can wait). Needs the
    /// privileges of the holder's role or of `pg_signal_backend`.
    fn revoke(&self, request: &Request<'_>) -> Result<Option<usize>, Error> {
        let mode = match request.mode {
            Mode::Exclusive => "",
            // Shared holders do not stand in a shared taker's way.
            Mode::Shared => "AND l.mode = 'ExclusiveLock'",
            Mode::Unlock => {
                return Err(self.usage("-u/--unlock means nothing for a PostgreSQL lock"));
            }
        };
        let config = self.config("lockwrap replace")?;
        let find = format!(
            "SELECT l.pid FROM pg_locks l \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
               AND l.pid <> pg_backend_pid() {mode} \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND l.classid = (({KEY} >> 32) & 4294967295)::oid \
               AND l.objid = ({KEY} & 4294967295)::oid"
        );
        let name = self.remote.name.clone();
        let terminated = self.with_new_session(&config, None, move |client| {
            let version: i32 = client
                .query_one("SELECT current_setting('server_version_num')::int", &[])
                .map(|row| row.get(0))
                .map_err(|e| ("cannot ask the server for its version", e))?;
            // PostgreSQL 14 can wait for the session to end, so that the
            // lock is free when we ask for it.
            let terminate = if version >= 140000 {
                format!(
                    "SELECT pg_terminate_backend($1, {})",
                    TERMINATE_WAIT.as_millis()
                )
            } else {
                "SELECT pg_terminate_backend($1)".to_owned()
            };
            let holders: Vec<i32> = client
                .query(&find, &[&name])
                .map_err(|e| ("cannot find the holder's session", e))?
                .iter()
                .map(|row| row.get(0))
                .collect();
            for pid in &holders {
                client
                    .execute(&terminate, &[pid])
                    .map_err(|e| ("cannot end the holder's session", e))?;
            }
            Ok(holders.len())
        });
        match terminated {
            Ok((_, ended)) => Ok(Some(ended)),
            Err(Error::Permission { lock, reason }) => Err(Error::Permission {
                lock,
                reason: format!(
                    "{reason} (--replace needs the holder's role or pg_signal_backend, and a superuser for a superuser's session)"
                ),
            }),
            Err(e) => Err(e),
        }
    }
}

impl PgLock {
    /// Waits in `pg_advisory_lock` on a helper thread until it returns, or
    /// the waiter gives up (then the wait is cancelled on the server). The
    /// query carries the waiter's command in a comment, for `--status`.
    fn wait_blocking(
        &self,
        client: &Arc<Mutex<Client>>,
        tls: &Tls,
        name: &str,
        suffix: &str,
        identity: &Identity,
        waiter: &Waiter<'_>,
    ) -> Result<(), Error> {
        let cancel = lock_client(client).cancel_token();
        let sql = format!(
            "SELECT pg_advisory_lock{suffix}({KEY}) {}",
            identity.waiting_comment()
        );
        loop {
            let (client2, name2, sql2) = (Arc::clone(client), name.to_owned(), sql.clone());
            let mut call = Background::start(move || {
                lock_client(&client2).execute(&sql2, &[&name2]).map(drop)
            })
            .map_err(|e| Error::os(&self.lock, "cannot wait for the lock", e))?;
            let result = loop {
                if let Err(e) = waiter.pause(&[call.as_fd()], None) {
                    // Nobody must find us queued for a lock we gave up on;
                    // the waiting thread ends with the cancel and is joined.
                    // A lock granted just before the cancel goes with the
                    // session, which the caller closes on this error (as our
                    // exit does if the cancel fails).
                    // Over TLS as the session is.
                    let _ = cancel.cancel_query(tls.connector(Arc::new(AtomicBool::new(false))));
                    let _ = call.finish(CANCEL_WAIT);
                    return Err(e);
                }
                if let Some(result) = call.try_result() {
                    break result;
                }
            };
            match result {
                Ok(()) => return Ok(()),
                // A lock_timeout or a cancel from elsewhere: wait on.
                Err(e)
                    if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
                        || e.code() == Some(&SqlState::QUERY_CANCELED) => {}
                Err(e) => {
                    return Err(failure(&self.lock, "lost the connection while waiting", &e));
                }
            }
        }
    }
}

/// How long a cancelled wait may take to come back from the server before
/// its thread is left to end by itself: a wait given up must end within
/// 100 ms. The server ends the query at the cancel (a stopped server, when it
/// resumes), and a lock granted just before goes with the session, which
/// closes when that thread drops the last handle on it.
const CANCEL_WAIT: Duration = Duration::from_millis(80);

/// Who we are, as other sessions see it.
#[derive(Debug, Clone)]
struct Identity {
    pid: u32,
    host: String,
    command: String,
    acquired: u64,
    child: Option<i32>,
}

impl Identity {
    fn of_this_process(command: &str) -> Identity {
        Identity {
            pid: std::process::id(),
            host: holder::hostname(),
            command: command.to_owned(),
            acquired: 0,
            child: None,
        }
    }

    /// At most 63 bytes survive on the server; the pid comes first.
    fn application_name(&self) -> String {
        let mut name = format!("lockwrap pid={} host={}", self.pid, self.host);
        let mut end = name.len().min(63);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
        name
    }

    /// The comment that pg_stat_activity shows with our checks. The command
    /// is made harmless inside a comment: no `*/` or `/*` survives.
    fn comment(&self) -> String {
        let child = self.child.map(|c| c.to_string()).unwrap_or_default();
        format!(
            "/* lockwrap acquired={} child={child} command={} */",
            self.acquired,
            comment_safe(&self.command)
        )
    }

    /// The comment that pg_stat_activity shows with our wait for the lock.
    fn waiting_comment(&self) -> String {
        format!(
            "/* lockwrap waiting command={} */",
            comment_safe(&self.command)
        )
    }
}

/// Text with a space between any `*` and `/` next to each other, so that it
/// can neither end nor nest a comment; cut to what pg_stat_activity keeps
/// of a query by default (1 kB).
fn comment_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(600));
    let mut previous = '\0';
    for c in text.chars().filter(|c| !c.is_control()).take(500) {
        if (previous == '*' && c == '/') || (previous == '/' && c == '*') {
            out.push(' ');
        }
        out.push(c);
        previous = c;
    }
    out
}

/// Parses what our application_name and comment say (or, for a session that
/// is not lockwrap, what pg_stat_activity says).
fn holder_info(
    application_name: &str,
    query: &str,
    client_addr: &str,
    session_age: f64,
) -> HolderInfo {
    let field = |text: &str, key: &str| -> Option<String> {
        let start = text.find(&format!("{key}="))? + key.len() + 1;
        let value = &text[start..];
        let end = value.find(' ').unwrap_or(value.len());
        Some(value[..end].to_owned())
    };
    let session_age = Duration::try_from_secs_f64(session_age).ok();
    if !application_name.starts_with("lockwrap pid=") {
        return HolderInfo {
            host: (!client_addr.is_empty()).then(|| client_addr.to_owned()),
            command: Some(if application_name.is_empty() {
                query.to_owned()
            } else {
                format!("{application_name}: {query}")
            }),
            age: session_age,
            ..HolderInfo::default()
        };
    }
    let comment = query
        .find("/* lockwrap ")
        .map(|start| &query[start..])
        .unwrap_or("");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let acquired = field(comment, "acquired").and_then(|t| t.parse::<u64>().ok());
    HolderInfo {
        pid: field(application_name, "pid").and_then(|p| p.parse().ok()),
        child_pid: field(comment, "child").and_then(|p| p.parse().ok()),
        uid: None,
        host: field(application_name, "host"),
        command: comment.find("command=").map(|i| {
            comment[i + "command=".len()..]
                .trim_end_matches("*/")
                .trim()
                .to_owned()
        }),
        age: acquired
            .filter(|t| *t > 0)
            .map(|t| Duration::from_secs(now.saturating_sub(t)))
            .or(session_age),
        ..HolderInfo::default()
    }
}

/// The query that lists the sessions holding the lock (its name is $1).
fn status_sql() -> String {
    format!(
        "SELECT l.mode, coalesce(a.application_name, ''), coalesce(a.query, ''), \
                coalesce(host(a.client_addr), ''), \
                coalesce(extract(epoch from now() - a.backend_start), 0)::float8 \
         {} \
         ORDER BY a.backend_start",
        lock_rows(true)
    )
}

/// The rows of pg_locks and pg_stat_activity about the lock (its name is
/// $1), for sessions that hold it (`granted`) or wait for it.
fn lock_rows(granted: bool) -> String {
    let not = if granted { "" } else { "NOT " };
    format!(
        "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND {not}l.granted AND l.objsubid = 1 \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND l.classid = (({KEY} >> 32) & 4294967295)::oid \
           AND l.objid = ({KEY} & 4294967295)::oid"
    )
}

/// The query that lists the sessions queued for the lock (its name is $1),
/// first come first: by when they started waiting, which pg_locks has as
/// `waitstart` since PostgreSQL 14 (read through `to_jsonb` so that the
/// query also runs on older servers, where it is NULL; it is NULL for a
/// moment after a wait starts, too), else when their query or session began.
fn waiters_sql() -> String {
    let since =
        "coalesce((to_jsonb(l) ->> 'waitstart')::timestamptz, a.query_start, a.backend_start)";
    format!(
        "SELECT coalesce(a.application_name, ''), coalesce(a.query, ''), \
                coalesce(host(a.client_addr), ''), \
                coalesce(extract(epoch from now() - a.backend_start), 0)::float8, \
                (extract(epoch from {since}) * 1000)::float8 \
         {} \
         ORDER BY {since}, l.pid",
        lock_rows(false)
    )
}

/// The waiters from the rows of [`waiters_sql`], numbered from 1.
fn waiters_of(rows: Vec<::postgres::Row>) -> Vec<WaiterInfo> {
    let mut waiters: Vec<WaiterInfo> = rows
        .into_iter()
        .map(|row| {
            let application_name: String = row.get(0);
            let query: String = row.get(1);
            let client_addr: String = row.get(2);
            let session_age: f64 = row.get(3);
            let since_ms: Option<f64> = row.get(4);
            let who = holder_info(&application_name, &query, &client_addr, session_age);
            WaiterInfo {
                pid: who.pid,
                uid: None,
                host: who.host,
                command: who.command,
                since_ms: since_ms.filter(|ms| *ms > 0.0).map(|ms| ms as u64),
                fair: true,
                position: None,
            }
        })
        .collect();
    WaiterInfo::number_fair(&mut waiters);
    waiters
}

/// The lock's state from the rows of [`status_sql`].
fn status_of(rows: Vec<::postgres::Row>) -> LockStatus {
    let mut status = LockStatus::default();
    for row in rows {
        let mode: String = row.get(0);
        let application_name: String = row.get(1);
        let query: String = row.get(2);
        let client_addr: String = row.get(3);
        let session_age: f64 = row.get(4);
        status.held = true;
        status.shared |= mode == "ShareLock";
        status.holders.push(holder_info(
            &application_name,
            &query,
            &client_addr,
            session_age,
        ));
    }
    status
}

/// The client, even if a helper thread panicked while holding it.
fn lock_client(client: &Mutex<Client>) -> std::sync::MutexGuard<'_, Client> {
    client.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `call` on a helper thread, giving up after `timeout` (the thread is
/// then left blocked; the process exits soon after and takes it along).
fn in_background<T: Send + 'static>(
    timeout: Duration,
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CallError> {
    let mut background = Background::start(call).map_err(CallError::Os)?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(result) = background.try_result() {
            return Ok(result);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CallError::TimedOut);
        }
        // EINTR (a SIGCHLD, a forwarded signal) just goes round again; the
        // signal stays in the self-pipe for whoever waits next.
        let _ = poll_readable(&[background.as_fd()], Some(left));
    }
}

/// [`in_background`], also ended by `waiter`'s deadline and signals.
fn watched_background<T: Send + 'static>(
    timeout: Duration,
    waiter: &Waiter<'_>,
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<Result<T, CallError>, Error> {
    let mut background = match Background::start(call) {
        Ok(background) => background,
        Err(e) => return Ok(Err(CallError::Os(e))),
    };
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(result) = background.try_result() {
            return Ok(Ok(result));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Err(CallError::TimedOut));
        }
        waiter.watch(&[background.as_fd()], Some(left))?;
    }
}

/// Runs `call` on the shared client on a helper thread, giving up after
/// `timeout` (the connection is not used again then).
fn bounded<T: Send + 'static>(
    client: &Arc<Mutex<Client>>,
    timeout: Duration,
    call: impl FnOnce(&mut Client) -> Result<T, ::postgres::Error> + Send + 'static,
) -> Result<T, CallError> {
    let client = Arc::clone(client);
    in_background(timeout, move || call(&mut lock_client(&client)))?.map_err(CallError::Pg)
}

/// A PostgreSQL advisory lock our session holds.
struct PgHeld {
    lock: String,
    client: Arc<Mutex<Client>>,
    name: String,
    shared: bool,
    lease: Duration,
    identity: Identity,
    /// Released, or lost (then the session is of no more use).
    done: bool,
    /// The fencing token, `LOCKWRAP_TOKEN`: see [`PgHeld::fencing_token`].
    token: i64,
}

impl PgHeld {
    /// A transaction ID assigned to our session once the lock is ours
    /// (`txid_current()`, 64 bits with the epoch): the server hands them
    /// out in increasing order, never twice, across restarts, so every new
    /// holder gets a larger one than every holder before it, shared holders
    /// included, and nothing is created in the database. A transaction
    /// that writes no WAL commits asynchronously, whatever
    /// `synchronous_commit` says, and after a crash its ID could be handed
    /// out again: so the same transaction writes a (transactional) logical
    /// decoding message, which makes the commit wait for its flush as
    /// `synchronous_commit` says. It needs a primary (a standby assigns no
    /// IDs).
    fn fencing_token(&mut self) -> Result<i64, Error> {
        let token = bounded(&self.client, self.lease / 3, |client| {
            client
                .query_one(
                    "SELECT txid_current(), pg_logical_emit_message(true, 'lockwrap', 'fencing token')",
                    &[],
                )
                .map(|row| row.get::<_, i64>(0))
        });
        match token {
            Ok(token) => Ok(token),
            Err(CallError::Pg(e)) if e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) => {
                Err(Error::Config {
                    lock: self.lock.clone(),
                    reason: "the server is a read-only standby, which hands out no fencing tokens (and shares no locks with the primary); point the URL at the primary".into(),
                })
            }
            Err(CallError::Pg(e)) => Err(failure(&self.lock, "cannot get a fencing token", &e)),
            Err(_) => Err(self.lost("the server did not hand out a fencing token in time")),
        }
    }

    fn lost(&mut self, why: &str) -> Error {
        self.done = true;
        Error::TempFail {
            lock: self.lock.clone(),
            reason: format!("lock lost, stopping the command: {why}"),
        }
    }

    /// Whether our session still holds the lock; also refreshes the comment
    /// that other sessions see.
    fn check(&mut self) -> Result<(), Error> {
        if self.identity.acquired == 0 {
            self.identity.acquired = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1);
        }
        let sql = format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
               AND pid = pg_backend_pid() AND granted AND objsubid = 1 \
               AND classid = (({KEY} >> 32) & 4294967295)::oid \
               AND objid = ({KEY} & 4294967295)::oid {}",
            self.identity.comment()
        );
        let name = self.name.clone();
        let held = bounded(&self.client, self.lease / 3, move |client| {
            client
                .query_one(&sql, &[&name])
                .map(|row| row.get::<_, i64>(0))
        });
        match held {
            Ok(n) if n > 0 => Ok(()),
            Ok(_) => Err(self.lost("our session no longer holds the advisory lock")),
            Err(CallError::TimedOut) => Err(self.lost(&format!(
                "the server did not answer within {:?}",
                self.lease / 3
            ))),
            Err(CallError::Pg(e)) => {
                Err(self.lost(&format!("the session ended: {}", describe(&e))))
            }
            Err(CallError::Os(e)) => Err(self.lost(&format!("cannot check the lock: {e}"))),
        }
    }

    fn release_now(&mut self) -> Result<(), Error> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(());
        }
        let suffix = if self.shared { "_shared" } else { "" };
        let sql = format!("SELECT pg_advisory_unlock{suffix}({KEY})");
        let name = self.name.clone();
        // Closing the session would free the lock too; unlocking first wakes
        // the next waiter without waiting for the server to end the session.
        match bounded(&self.client, self.lease / 3, move |client| {
            client.execute(&sql, &[&name]).map(drop)
        }) {
            Ok(()) => Ok(()),
            Err(_) => Err(Error::TempFail {
                lock: self.lock.clone(),
                reason: "cannot release the lock; the server frees it when the session ends".into(),
            }),
        }
    }
}

impl Held for PgHeld {
    fn child_env(&self) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        vec![("LOCKWRAP_TOKEN".into(), self.token.to_string().into())]
    }

    fn child_started(&mut self, child: nix::unistd::Pid) -> Result<(), Error> {
        self.identity.child = Some(child.as_raw());
        self.check()
    }

    fn renew_every(&self) -> Option<Duration> {
        Some(self.lease / 3)
    }

    fn renew(&mut self) -> Result<(), Error> {
        if self.done {
            return Err(self.lost("the session was already lost"));
        }
        self.check()
    }

    fn release(mut self: Box<Self>) -> Result<(), Error> {
        self.release_now()
    }
}

impl Drop for PgHeld {
    fn drop(&mut self) {
        // A helper thread stuck on a dead connection keeps the client: then
        // leave it; the session ends with this process.
        match self.client.try_lock() {
            Ok(guard) => drop(guard),
            Err(TryLockError::WouldBlock) => return,
            Err(TryLockError::Poisoned(_)) => {}
        }
        let _ = self.release_now();
    }
}

/// What the server or the driver said, in words: the server's message for
/// a server error (the driver's own text is just "db error"), else the
/// driver's text followed by its causes.
fn describe(e: &::postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_owned();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `what` failed on lock `lock` because of `e`, with the exit code that
/// tells retry (75) from fix: a refused login or right is 77, a setting that
/// cannot work (no such database, TLS) is 78.
///
/// The driver keeps the kind of its own errors private; the texts matched
/// here are those of tokio-postgres 0.7.
fn failure(lock: &str, what: &str, e: &::postgres::Error) -> Error {
    let lock = lock.to_owned();
    let text = describe(e);
    let permission = |why: &str| Error::Permission {
        lock: lock.clone(),
        reason: format!("{what}: {text} ({why})"),
    };
    let config = |why: &str| Error::Config {
        lock: lock.clone(),
        reason: format!("{what}: {text} ({why})"),
    };
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::INVALID_PASSWORD {
            return permission("check the password: in the URL, PGPASSWORD or the password file");
        }
        if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            if text.contains("no encryption") {
                return config(
                    "the server lets this user in over TLS only: use an sslmode other than disable",
                );
            }
            return permission("the server's pg_hba.conf or the role does not let this user in");
        }
        if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            return match db.detail() {
                Some(detail) => permission(detail),
                None => Error::Permission {
                    lock,
                    reason: format!("{what}: {text}"),
                },
            };
        }
        if *code == SqlState::INVALID_CATALOG_NAME {
            return config("fix the database in the URL or PGDATABASE");
        }
    } else if text.starts_with("invalid configuration") && text.contains("password missing") {
        return Error::Permission {
            lock,
            reason: format!(
                "{what}: the server needs a password (postgres://USER:PASS@..., PGPASSWORD or ~/.pgpass)"
            ),
        };
    } else if text.starts_with("error performing TLS handshake") {
        if text.contains("server does not support TLS") {
            return config(
                "the server has no TLS (ssl=off); sslmode=require and verify-* need it, prefer goes without",
            );
        }
        return config("check sslmode, sslrootcert and the server's certificate");
    } else if text.starts_with("unexpected message from server")
        || text.starts_with("error parsing response from server")
    {
        return Error::TempFail {
            lock,
            reason: format!(
                "{what}: the server does not answer like a PostgreSQL server (is this the right host and port?)"
            ),
        };
    }
    Error::TempFail {
        lock,
        reason: format!("{what}: {text}"),
    }
}

/// The password for this connection from PGPASSFILE or ~/.pgpass
/// (`host:port:database:user:password`, `*` matches anything, `\` escapes).
fn pgpass_lookup(config: &Config) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE")
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pgpass")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let host = match config.get_hosts().first()? {
        Host::Tcp(h) => h.clone(),
        Host::Unix(_) => "localhost".to_owned(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let db = config.get_dbname().unwrap_or_default();
    let user = config.get_user().unwrap_or_default();
    pgpass_find(&text, [&host, &port, db, user])
}

fn pgpass_find(text: &str, wanted: [&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() < 5 {
            continue;
        }
        if fields[..4]
            .iter()
            .zip(wanted)
            .all(|(field, want)| field == "*" || field == want)
        {
            return Some(fields[4..].join(":"));
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(f)) = (chars.next(), fields.last_mut()) {
                    f.push(next);
                }
            }
            ':' => fields.push(String::new()),
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_cannot_end_the_comment() {
        assert_eq!(comment_safe("a */ b /* c"), "a * / b / * c");
        assert_eq!(comment_safe("*/*/"), "* / * /");
        assert!(!comment_safe("x\n*/").contains("*/"));
        assert_eq!(comment_safe(&"x".repeat(5000)).len(), 500);
    }

    #[test]
    fn holder_info_reads_our_identity() {
        let info = holder_info(
            "lockwrap pid=42 host=web1",
            "SELECT count(*) FROM pg_locks /* lockwrap acquired=1 child=43 command=sh -c make */",
            "10.0.0.5",
            3.0,
        );
        assert_eq!(info.pid, Some(42));
        assert_eq!(info.child_pid, Some(43));
        assert_eq!(info.host.as_deref(), Some("web1"));
        assert_eq!(info.command.as_deref(), Some("sh -c make"));
        let psql = holder_info("psql", "select pg_advisory_lock(1)", "10.0.0.5", 3.0);
        assert_eq!(psql.pid, None);
        assert_eq!(psql.host.as_deref(), Some("10.0.0.5"));
    }

    #[test]
    fn a_waiters_comment_names_its_command() {
        let mut id = Identity::of_this_process("sh -c 'x */ y'");
        id.pid = 42;
        id.host = "h".into();
        let query = format!(
            "SELECT pg_advisory_lock(hashtextextended($1, 0)) {}",
            id.waiting_comment()
        );
        let info = holder_info(&id.application_name(), &query, "", 1.0);
        assert_eq!(info.pid, Some(42));
        assert_eq!(info.host.as_deref(), Some("h"));
        assert_eq!(info.command.as_deref(), Some("sh -c 'x * / y'"));
    }

    #[test]
    fn application_names_fit_the_server_limit() {
        let mut id = Identity::of_this_process("x");
        id.host = "h".repeat(100);
        assert_eq!(id.application_name().len(), 63);
        assert!(id.application_name().starts_with("lockwrap pid="));
    }

    #[test]
    fn pgpass_lines_match_with_wildcards_and_escapes() {
        let text = "# comment\nother:5432:*:*:no\nh:5432:*:u:p\\:w:d\n";
        assert_eq!(
            pgpass_find(text, ["h", "5432", "db", "u"]).as_deref(),
            Some("p:w:d")
        );
        assert_eq!(pgpass_find(text, ["h", "5433", "db", "u"]), None);
    }
}
