//! Throwaway Redis and PostgreSQL servers for the server-lock tests, the
//! [`Engine`] trait that lets one scenario run against either, and the
//! scenarios themselves ([`scenarios`]). Processes, holders and bounded
//! waits come from tests/common.
//!
//! Each server listens on a free loopback port with its files in a temp dir
//! and is stopped when its guard drops, also when a test fails. A missing
//! server binary skips the test with a message, unless
//! LOCKWRAP_REQUIRE_SERVERS=1 (set by .ci/run), which makes it fail.

#![allow(dead_code)]

pub mod scenarios;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once, Weak, mpsc};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::common::{WAIT, wait_until};

/// Whether a server that cannot start must fail the test instead of skipping it.
pub fn servers_required() -> bool {
    std::env::var("LOCKWRAP_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

/// Skips (returns None) or, with LOCKWRAP_REQUIRE_SERVERS=1, fails.
pub fn unavailable<T>(why: &str) -> Option<T> {
    assert!(!servers_required(), "LOCKWRAP_REQUIRE_SERVERS=1 but {why}");
    eprintln!("skipping: {why} (set LOCKWRAP_REQUIRE_SERVERS=1 to fail instead)");
    None
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local addr").port()
}

/// This machine's name, as lockwrap records it for a holder.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .expect("gethostname")
        .to_string_lossy()
        .into_owned()
}

/// A lock server the shared scenarios in [`scenarios`] run against.
pub trait Engine: Sized {
    /// Starts a server (or shares a running one); None skips the test.
    fn start() -> Option<Self>;

    /// Its port on 127.0.0.1.
    fn port(&self) -> u16;

    /// The URL of a server on 127.0.0.1:`port`, without `#NAME`.
    fn url(port: u16, password: Option<&str>) -> String;

    /// The spec of lock `name` on this server.
    fn lock(&self, name: &str) -> String {
        format!("{}#{name}", Self::url(self.port(), None))
    }

    /// Waits (bounded) until exactly `count` wrappers wait for lock `name`
    /// on the server (Redis: blocked on its wake-up list; PostgreSQL:
    /// queued for the advisory lock).
    fn wait_for_waiters(&self, name: &str, count: usize);

    /// The options of a holder that is SIGKILLed and must still free the
    /// lock within the test's patience ([`WAIT`]).
    fn abandoned_holder_args() -> &'static [&'static str];

    /// The spec of lock `name` whose connections [`Engine::connections_opened`]
    /// counts apart from other tests' (PostgreSQL: in a database of its own).
    fn counted_lock(&self, name: &str) -> String {
        self.lock(name)
    }

    /// How many connections (sessions) were opened for [`Engine::counted_lock`]
    /// `name` so far, counting the one that asks (PostgreSQL counts a session
    /// once it ends, so an asking session is counted by the next question).
    fn connections_opened(&self, name: &str) -> u64;
}

/// Runs `scenario` against a server of engine `E`, or skips it.
pub fn with<E: Engine>(scenario: impl FnOnce(&E)) {
    if let Some(server) = E::start() {
        scenario(&server);
    }
}

/// One `#[test]` per named scenario of [`scenarios`] that needs nothing
/// engine-specific, run against engine `$engine`:
/// `shared_scenarios!(RedisServer: status_names_the_holder, ...);`.
macro_rules! shared_scenarios {
    ($engine:ty: $($scenario:ident),+ $(,)?) => {
        $(
            #[test]
            fn $scenario() {
                servers::with(servers::scenarios::$scenario::<$engine>);
            }
        )+
    };
}
pub(crate) use shared_scenarios;

/// A process stopped with SIGSTOP, continued when this guard drops (also
/// when the test fails, so that a server can still be shut down).
pub struct Stopped(Pid);

impl Stopped {
    /// Sends SIGSTOP to `pid` and waits until it is stopped (a SIGCONT sent
    /// before the stop has taken hold would make the stop a no-op).
    pub fn stop(pid: i32) -> Stopped {
        let stopped = Stopped(Pid::from_raw(pid));
        kill(stopped.0, Signal::SIGSTOP).expect("SIGSTOP");
        wait_until(&format!("pid {pid} to stop"), WAIT, || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
                stat.rsplit(')')
                    .next()
                    .and_then(|rest| rest.split_whitespace().next())
                    .is_some_and(|state| state == "T" || state == "t")
            })
        });
        stopped
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

fn binary_works(program: &Path, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A redis-server of our own.
pub struct RedisServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: TempDir,
}

impl RedisServer {
    /// Starts one, or None (skip) when redis-server is not installed.
    pub fn start() -> Option<RedisServer> {
        RedisServer::start_with(None)
    }

    /// Starts one that requires `password` (requirepass), or None (skip).
    pub fn with_password(password: &str) -> Option<RedisServer> {
        RedisServer::start_with(Some(password))
    }

    fn start_with(password: Option<&str>) -> Option<RedisServer> {
        if !binary_works(Path::new("redis-server"), "--version") {
            return unavailable("redis-server is not installed");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let args: Vec<&str> = password
            .map(|p| ["--requirepass", p])
            .into_iter()
            .flatten()
            .collect();
        if let Some((child, port)) = spawn_redis(dir.path(), &args, password) {
            return Some(RedisServer {
                child,
                port,
                _dir: dir,
            });
        }
        if servers_required() {
            panic!("redis-server did not start");
        }
        unavailable("redis-server did not start")
    }

    /// Stops the server (SIGSTOP) until the guard drops: a server that
    /// stalls without closing connections.
    pub fn stop(&self) -> Stopped {
        Stopped::stop(self.child.id() as i32)
    }

    /// Restarts the server on its port. Without persistence (as these
    /// servers run) it comes back empty: every key is lost.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self._dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        wait_until("redis-server to come back", WAIT, || {
            redis_ping(self.port, None)
        });
    }

    /// Runs one command and returns the raw reply.
    pub fn command(&self, words: &[&str]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        stream.write_all(&resp(words)).expect("write");
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Engine for RedisServer {
    fn start() -> Option<Self> {
        RedisServer::start()
    }

    fn port(&self) -> u16 {
        self.port
    }

    /// `redis://[:PASSWORD@]127.0.0.1:PORT`.
    fn url(port: u16, password: Option<&str>) -> String {
        let auth = password.map_or(String::new(), |p| format!(":{p}@"));
        format!("redis://{auth}127.0.0.1:{port}")
    }

    /// Waiters block in `BLPOP` on the lock's wake-up list; the server is
    /// this test's own, so every blocked client is one of them.
    fn wait_for_waiters(&self, name: &str, count: usize) {
        wait_until(&format!("{count} clients blocked for {name}"), WAIT, || {
            self.command(&["CLIENT", "LIST"])
                .lines()
                .filter(|l| l.contains(" flags=b ") && l.contains(" cmd=blpop "))
                .count()
                == count
        });
    }

    /// A lease that runs out well within [`WAIT`].
    fn abandoned_holder_args() -> &'static [&'static str] {
        &scenarios::SHORT_LEASE
    }

    /// The server is this test's own: every connection counts.
    fn connections_opened(&self, _name: &str) -> u64 {
        let info = self.command(&["INFO", "stats"]);
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no total_connections_received in {info:?}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One command in the Redis protocol.
fn resp(words: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len());
    for w in words {
        out.push_str(&format!("${}\r\n{w}\r\n", w.len()));
    }
    out.into_bytes()
}

fn redis_ping(port: u16, password: Option<&str>) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 64];
    if let Some(password) = password {
        let authed = stream.write_all(&resp(&["AUTH", password])).is_ok()
            && stream
                .read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"+OK"));
        if !authed {
            return false;
        }
    }
    stream.write_all(b"PING\r\n").is_ok()
        && stream
            .read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

/// The process id of the Redis server (or sentinel) answering on `port`,
/// from `INFO server`.
fn redis_pid(port: u16, password: Option<&str>) -> Option<u32> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut buf = [0u8; 4096];
    if let Some(password) = password {
        stream.write_all(&resp(&["AUTH", password])).ok()?;
        let n = stream.read(&mut buf).ok()?;
        if !buf[..n].starts_with(b"+OK") {
            return None;
        }
    }
    stream.write_all(&resp(&["INFO", "server"])).ok()?;
    let mut reply = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&reply);
        if let Some(rest) = text.split("process_id:").nth(1)
            && let Some((pid, _)) = rest.split_once('\r')
        {
            return pid.trim().parse().ok();
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        reply.extend_from_slice(&buf[..n]);
    }
}

/// A TCP server on a loopback port that is neither Redis nor PostgreSQL:
/// it answers every connection with an HTTP error and closes it. Runs until
/// the test process exits.
pub fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/html\r\n\r\n<html>\n<body>bad request</body>\n</html>\n");
        }
    });
    port
}

/// A TCP server on a loopback port that accepts every connection and never
/// answers or closes it: a hung server. Returns the port and a channel that
/// gets a message per accepted connection. Runs until the test process exits.
pub fn silent_server() -> (u16, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("local addr").port();
    let (accepted, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        for stream in listener.incoming() {
            kept.extend(stream.ok());
            let _ = accepted.send(());
        }
    });
    (port, receiver)
}

/// A PostgreSQL cluster of our own, shared by the tests of one test binary
/// that run at the same time and stopped when the last of them drops it.
pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The directory of its unix socket.
    pub socket_dir: PathBuf,
    as_postgres: bool,
    password_role: Once,
    _dir: TempDir,
}

static PG: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());

impl PgServer {
    /// The running shared cluster, or a new one; None (skip) when the
    /// PostgreSQL server binaries are not installed.
    pub fn shared() -> Option<Arc<PgServer>> {
        let mut slot = PG.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(server) = slot.upgrade() {
            return Some(server);
        }
        let server = Arc::new(PgServer::start()?);
        *slot = Arc::downgrade(&server);
        Some(server)
    }

    /// A cluster of the calling test's own (one it may restart), or None
    /// (skip).
    pub fn own() -> Option<PgServer> {
        PgServer::start()
    }

    /// Restarts the cluster (a shutdown in `mode`: `fast`, or `immediate`
    /// as a crash, then a start with the same options), and waits until it
    /// accepts connections.
    pub fn restart(&self, mode: &str) {
        let restarted = pg_command(self.as_postgres, &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "60", "-m", mode, "-l"])
            .arg(self.socket_dir.join("log"))
            .arg("restart")
            .stdout(Stdio::null())
            .output()
            .expect("run pg_ctl");
        assert!(
            restarted.status.success(),
            "pg_ctl restart: {}",
            String::from_utf8_lossy(&restarted.stderr)
        );
    }

    fn start() -> Option<PgServer> {
        PgServer::start_configured("127.0.0.1", |_, _| {})
    }

    /// Starts a cluster that listens on `listen_addresses`, after
    /// `configure(dir, data)` has had its say on the initialised data
    /// directory `data` (in the temp dir `dir`, which the server can read).
    fn start_configured(
        listen_addresses: &str,
        configure: impl FnOnce(&Path, &Path),
    ) -> Option<PgServer> {
        let Some(bin) = pg_bin_dir() else {
            return unavailable(
                "PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are not installed",
            );
        };
        let as_postgres = nix::unistd::geteuid().is_root();
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod temp dir");
        let data = dir.path().join("data");
        let init = pg_command(as_postgres, &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .output()
            .expect("run initdb");
        if !init.status.success() {
            let why = format!("initdb failed: {}", String::from_utf8_lossy(&init.stderr));
            return unavailable(&why);
        }
        configure(dir.path(), &data);
        for _ in 0..5 {
            let port = free_port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses={listen_addresses} -c fsync=off",
                dir.path().display()
            );
            let started = pg_command(as_postgres, &bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-w", "-t", "60", "-l"])
                .arg(dir.path().join("log"))
                .args(["-o", &options, "start"])
                .stdout(Stdio::null())
                .output()
                .expect("run pg_ctl");
            if started.status.success() {
                return Some(PgServer {
                    bin,
                    data,
                    port,
                    socket_dir: dir.path().to_owned(),
                    as_postgres,
                    password_role: Once::new(),
                    _dir: dir,
                });
            }
        }
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        unavailable(&format!("the PostgreSQL server did not start: {log}"))
    }

    /// SQL for the advisory-lock rows of lock NAME that meet `condition`
    /// (with the key the README documents).
    pub fn lock_rows(name: &str, condition: &str) -> String {
        format!(
            "FROM pg_locks WHERE locktype = 'advisory' AND {condition} \
             AND classid = ((hashtextextended('{name}', 0) >> 32) & 4294967295)::oid \
             AND objid = (hashtextextended('{name}', 0) & 4294967295)::oid"
        )
    }

    /// The same server over its unix socket, given as a `host=` query.
    pub fn socket_lock(&self, name: &str) -> String {
        format!(
            "postgresql://postgres@/postgres?host={}&port={}#{name}",
            self.socket_dir.display(),
            self.port
        )
    }

    /// psql connected to the server as postgres, without arguments yet.
    pub fn psql(&self) -> Command {
        let mut command = Command::new(self.bin.join("psql"));
        command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-X"]);
        command
    }

    /// A login role that must give its password over TCP (scram-sha-256 in
    /// pg_hba.conf, ahead of the cluster's `trust` lines): (role, password).
    /// Created once per cluster.
    pub fn password_role(&self) -> (&'static str, &'static str) {
        const ROLE: &str = "lockwrap_pw";
        const PASSWORD: &str = "right-pa55";
        self.password_role.call_once(|| {
            self.sql(&format!(
                "SET password_encryption = 'scram-sha-256'; \
                 CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'"
            ));
            let hba = self.data.join("pg_hba.conf");
            let rules = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
            let line = format!("host all {ROLE} 127.0.0.1/32 scram-sha-256\n");
            std::fs::write(&hba, line + &rules).expect("write pg_hba.conf");
            assert_eq!(self.sql("SELECT pg_reload_conf()"), "t");
            // The postmaster rereads pg_hba.conf when it handles the SIGHUP.
            wait_until("pg_hba.conf to be reloaded", WAIT, || {
                self.sql(&format!(
                    "SELECT count(*) FROM pg_hba_file_rules WHERE '{ROLE}' = ANY(user_name)"
                )) == "1"
                    && Command::new(self.bin.join("psql"))
                        .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                        .args(["-U", ROLE, "-d", "postgres", "-X", "-w", "-c", "SELECT 1"])
                        .env_remove("PGPASSWORD")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| !s.success())
            });
        });
        (ROLE, PASSWORD)
    }

    /// A psql command line (program and arguments) that prints the
    /// unaligned result of `sql` on database postgres as postgres.
    pub fn psql_args(&self, sql: &str) -> Vec<String> {
        let mut args = vec![self.bin.join("psql").display().to_string()];
        for arg in ["-h", "127.0.0.1", "-p", &self.port.to_string()] {
            args.push(arg.to_owned());
        }
        for arg in [
            "-U", "postgres", "-d", "postgres", "-X", "-A", "-t", "-c", sql,
        ] {
            args.push(arg.to_owned());
        }
        args
    }

    /// Runs SQL with psql and returns its unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        let out = self
            .psql()
            .args(["-A", "-t", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// A PostgreSQL cluster with TLS (`ssl=on`) of its own, shared like
/// [`PgServer`] by the tests of one test binary, with a throwaway CA made
/// by the `openssl` command. It listens on 127.0.0.1 and 127.0.0.2; its
/// certificate names 127.0.0.1 and localhost only, so 127.0.0.2 is a host
/// name the certificate does not match.
///
/// Databases and their pg_hba.conf entries (all `trust`):
/// `sslonly` over TLS only (`hostssl`), `plainonly` without TLS only
/// (`hostnossl`), `certdb` over TLS with a client certificate that the CA
/// signed (`clientcert=verify-ca`), `postgres` either way.
pub struct PgTlsServer {
    /// The cluster.
    pub pg: PgServer,
    /// The CA that signed the server's and the client's certificates.
    pub ca: PathBuf,
    /// Another CA, that signed nothing of this server's.
    pub other_ca: PathBuf,
    /// A client certificate for role postgres, signed by [`Self::ca`].
    pub client_cert: PathBuf,
    /// Its key (mode 0600).
    pub client_key: PathBuf,
    _certs: TempDir,
}

static PG_TLS: Mutex<Weak<PgTlsServer>> = Mutex::new(Weak::new());

impl PgTlsServer {
    /// The running shared TLS cluster, or a new one; None (skip) when the
    /// PostgreSQL server binaries or the openssl command are missing.
    pub fn shared() -> Option<Arc<PgTlsServer>> {
        let mut slot = PG_TLS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(server) = slot.upgrade() {
            return Some(server);
        }
        let server = Arc::new(PgTlsServer::start()?);
        *slot = Arc::downgrade(&server);
        Some(server)
    }

    fn start() -> Option<PgTlsServer> {
        if !binary_works(Path::new("openssl"), "version") {
            return unavailable("the openssl command is not installed");
        }
        let certs = tempfile::tempdir().expect("temp dir");
        let at = |name: &str| certs.path().join(name);
        make_ca(&at("ca"), "lockwrap test CA");
        make_ca(&at("other-ca"), "another lockwrap test CA");
        make_cert(&at("ca"), &at("client"), "postgres", None);
        let as_root = nix::unistd::geteuid().is_root();
        let pg = PgServer::start_configured("127.0.0.1,127.0.0.2", |dir, data| {
            // The server's files, readable by the server only.
            let server = dir.join("server");
            make_cert(
                &at("ca"),
                &server,
                "localhost",
                Some("subjectAltName=IP:127.0.0.1,DNS:localhost"),
            );
            std::fs::copy(at("ca.pem"), dir.join("ca.pem")).expect("copy the CA");
            if as_root {
                let postgres = nix::unistd::User::from_name("postgres")
                    .expect("look up postgres")
                    .expect("a postgres user");
                for file in ["server.pem", "server.key", "ca.pem"] {
                    nix::unistd::chown(&dir.join(file), Some(postgres.uid), Some(postgres.gid))
                        .expect("chown the server's files");
                }
            }
            let conf = data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
            text.push_str(&format!(
                "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nssl_ca_file = '{}'\n",
                server.with_extension("pem").display(),
                server.with_extension("key").display(),
                dir.join("ca.pem").display(),
            ));
            std::fs::write(&conf, text).expect("write postgresql.conf");
            let hba = "\
                local all all trust\n\
                hostssl sslonly all 127.0.0.0/8 trust\n\
                hostnossl plainonly all 127.0.0.0/8 trust\n\
                hostssl certdb all 127.0.0.0/8 trust clientcert=verify-ca\n\
                host postgres all 127.0.0.0/8 trust\n";
            std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        })?;
        for db in ["sslonly", "plainonly", "certdb"] {
            pg.sql(&format!("CREATE DATABASE {db}"));
        }
        Some(PgTlsServer {
            pg,
            ca: at("ca.pem"),
            other_ca: at("other-ca.pem"),
            client_cert: at("client.pem"),
            client_key: at("client.key"),
            _certs: certs,
        })
    }

    /// `postgres://postgres@HOST:PORT/DB?QUERY#NAME` (`?QUERY` only when
    /// `query` is not empty).
    pub fn lock(&self, host: &str, db: &str, query: &str, name: &str) -> String {
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!(
            "postgres://postgres@{host}:{}/{db}{query}#{name}",
            self.pg.port
        )
    }
}

/// Runs the openssl command with `args`, which must succeed.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA: `BASE.pem` and `BASE.key`.
fn make_ca(base: &Path, cn: &str) {
    let (pem, key) = (base.with_extension("pem"), base.with_extension("key"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={cn}"),
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        pem.to_str().unwrap(),
    ]);
}

/// A certificate for `cn` signed by the CA at `ca` (`ca.pem`, `ca.key`):
/// `BASE.pem` and `BASE.key` (mode 0600), with the X.509 extension
/// `extension` if given.
fn make_cert(ca: &Path, base: &Path, cn: &str, extension: Option<&str>) {
    let (pem, key, csr, ext) = (
        base.with_extension("pem"),
        base.with_extension("key"),
        base.with_extension("csr"),
        base.with_extension("ext"),
    );
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        &format!("/CN={cn}"),
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        csr.to_str().unwrap(),
    ]);
    std::fs::write(&ext, extension.unwrap_or("basicConstraints=CA:FALSE")).expect("write ext");
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        ca.with_extension("pem").to_str().unwrap(),
        "-CAkey",
        ca.with_extension("key").to_str().unwrap(),
        "-set_serial",
        "2",
        "-extfile",
        ext.to_str().unwrap(),
        "-out",
        pem.to_str().unwrap(),
    ]);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
}

/// The engine handle of PostgreSQL: the cluster shared by the tests of one
/// test binary.
pub type Postgres = Arc<PgServer>;

impl Engine for Postgres {
    fn start() -> Option<Self> {
        PgServer::shared()
    }

    fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres[:PASSWORD]@127.0.0.1:PORT/postgres`.
    fn url(port: u16, password: Option<&str>) -> String {
        let auth = password.map_or(String::new(), |p| format!(":{p}"));
        format!("postgres://postgres{auth}@127.0.0.1:{port}/postgres")
    }

    fn wait_for_waiters(&self, name: &str, count: usize) {
        let sql = format!(
            "SELECT count(*) {}",
            PgServer::lock_rows(name, "NOT granted")
        );
        wait_until(&format!("{count} sessions queued for {name}"), WAIT, || {
            self.sql(&sql) == count.to_string()
        });
    }

    /// The default lease (30s) outlasts [`WAIT`]: the lock must go with the
    /// session, which ends when the server sees the connection close.
    fn abandoned_holder_args() -> &'static [&'static str] {
        &[]
    }

    fn counted_lock(&self, name: &str) -> String {
        let db = format!("counted_{name}");
        self.sql(&format!("CREATE DATABASE {db}"));
        format!("postgres://postgres@127.0.0.1:{}/{db}#{name}", self.port)
    }

    fn connections_opened(&self, name: &str) -> u64 {
        let sum = self.sql(&format!(
            "SELECT coalesce(sum(sessions), 0) FROM pg_stat_database WHERE datname = 'counted_{name}'"
        ));
        sum.parse().unwrap_or_else(|_| panic!("sessions: {sum:?}"))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = pg_command(self.as_postgres, &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The newest /usr/lib/postgresql/VERSION/bin with initdb in it.
fn pg_bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// initdb refuses to run as root: as root, run the server tools as postgres.
fn pg_command(as_postgres: bool, program: &Path) -> Command {
    if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Throwaway TLS files made with the openssl CLI in a temp dir: a CA
/// (`ca.pem`), a server certificate signed by it for IP 127.0.0.1 only
/// (`server.pem`, `server.key`; so `localhost` is a name it does not
/// carry), and a client certificate signed by it (`client.pem`,
/// `client.key`).
pub struct TlsFiles {
    dir: TempDir,
}

impl TlsFiles {
    /// Makes them, or None (skip) when the openssl CLI is missing.
    pub fn new() -> Option<TlsFiles> {
        if !binary_works(Path::new("openssl"), "version") {
            return unavailable("the openssl command is not installed");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
                &["-subj", "/CN=lockwrap test CA"],
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ]
            .concat(),
        );
        for (name, extensions) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            let (key, csr, pem, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            std::fs::write(
                dir.path().join(&ext),
                format!("basicConstraints=CA:FALSE\n{extensions}"),
            )
            .expect("write extensions");
            openssl(
                &[
                    &["req"][..],
                    &ec,
                    &["-keyout", &key, "-out", &csr],
                    &["-subj", &format!("/CN=lockwrap test {name}")],
                ]
                .concat(),
            );
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ]);
        }
        Some(TlsFiles { dir })
    }

    /// The path of one of the files (`ca.pem`, `server.pem`, `client.key`, ...).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The path of one of the files, as text for a URL.
    pub fn url_path(&self, name: &str) -> String {
        self.path(name)
            .to_str()
            .expect("a UTF-8 temp path")
            .to_owned()
    }
}

/// A redis-server of our own that speaks only TLS (`--port 0 --tls-port P`),
/// with the certificate of [`TlsFiles`].
pub struct RedisTlsServer {
    child: Child,
    /// Its TLS port on 127.0.0.1.
    pub port: u16,
    /// Its certificates, and the CA and client certificate that go with them.
    pub files: TlsFiles,
    _dir: TempDir,
}

impl RedisTlsServer {
    /// Starts one (`tls-auth-clients yes` if `client_certs`), or None (skip)
    /// when redis-server or openssl is missing or redis-server was built
    /// without TLS.
    pub fn start(client_certs: bool) -> Option<RedisTlsServer> {
        if !binary_works(Path::new("redis-server"), "--version") {
            return unavailable("redis-server is not installed");
        }
        let files = TlsFiles::new()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let auth_clients = if client_certs { "yes" } else { "no" };
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let log = dir.path().join("log");
            let mut child = Command::new("redis-server")
                .args(["--port", "0", "--bind", "127.0.0.1"])
                .args(["--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(files.path("server.pem"))
                .arg("--tls-key-file")
                .arg(files.path("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(files.path("ca.pem"))
                .args(["--tls-auth-clients", auth_clients])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--logfile")
                .arg(&log)
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let start = Instant::now();
            while start.elapsed() < WAIT {
                if child.try_wait().expect("try_wait").is_some() {
                    break;
                }
                // Listening: it has loaded its certificates. (A plain PING
                // cannot tell more without a TLS client.) Its own log says
                // so: a connection could reach another test's server that
                // took the port first.
                if std::fs::read_to_string(&log)
                    .is_ok_and(|text| text.contains("Ready to accept connections"))
                    && TcpStream::connect(("127.0.0.1", port)).is_ok()
                {
                    return Some(RedisTlsServer {
                        child,
                        port,
                        files,
                        _dir: dir,
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
        }
        unavailable(&format!(
            "redis-server did not start with TLS (built without it?): {last_log}"
        ))
    }

    /// `rediss://HOST:PORT` of this server, without `#NAME`.
    pub fn url(&self, host: &str) -> String {
        format!("rediss://{host}:{}", self.port)
    }
}

impl Drop for RedisTlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis Sentinel setup of our own on loopback ports: a master, one
/// replica of it and one sentinel that monitors it as `mymaster` (quorum 1,
/// so that the one sentinel can fail over on its own).
pub struct RedisSentinel {
    /// The master's port when the setup started.
    pub master: RedisServer,
    /// The replica's port.
    pub replica: RedisServer,
    /// The sentinel's port.
    pub sentinel_port: u16,
    sentinel: Child,
    _dir: TempDir,
}

/// The name the sentinel monitors the master by.
pub const SENTINEL_MASTER: &str = "mymaster";

/// Waits (bounded) until the server `child` started answers PING on `port`;
/// false (and the server killed) when it exits or never answers.
fn answers_ping(child: &mut Child, port: u16, password: Option<&str>) -> bool {
    let start = Instant::now();
    while start.elapsed() < WAIT {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if redis_ping(port, password) {
            // The port was free when chosen, but another test's server may
            // have taken it since (ours then fails to bind): only our own
            // server will do, or two tests would share one.
            if redis_pid(port, password) == Some(child.id()) {
                return true;
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Starts `redis-server` with `args` on a free port (retried: another
/// process may take the port first) and waits until it answers PING.
fn spawn_redis(dir: &Path, args: &[&str], password: Option<&str>) -> Option<(Child, u16)> {
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        if answers_ping(&mut child, port, password) {
            return Some((child, port));
        }
    }
    None
}

/// Runs one command on the server at `port` and returns the raw reply
/// (read until it stops coming for a moment: INFO and arrays may come in
/// more than one piece).
pub fn redis_command(port: u16, words: &[&str]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    stream.write_all(&resp(words)).expect("write");
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).expect("read");
    reply.extend_from_slice(&buf[..n]);
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&reply).into_owned()
}

impl RedisSentinel {
    /// Starts the three, and returns once the replica is in sync and the
    /// sentinel knows the master and its replica; None (skip) when
    /// redis-server is missing or cannot run as a sentinel.
    pub fn start() -> Option<RedisSentinel> {
        let master = RedisServer::start()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let replica_dir = dir.path().join("replica");
        std::fs::create_dir(&replica_dir).expect("mkdir");
        let master_port = master.port.to_string();
        let Some((child, port)) = spawn_redis(
            &replica_dir,
            &["--replicaof", "127.0.0.1", &master_port],
            None,
        ) else {
            return unavailable("redis-server did not start as a replica");
        };
        let replica = RedisServer {
            child,
            port,
            _dir: tempfile::tempdir().expect("temp dir"),
        };
        wait_until("the replica to be in sync", WAIT, || {
            redis_command(replica.port, &["INFO", "replication"]).contains("master_link_status:up")
        });
        // The sentinel rewrites its configuration file: it lives in our dir.
        let sentinel = spawn_sentinel(dir.path(), master.port);
        let Some((sentinel, sentinel_port)) = sentinel else {
            return unavailable("redis-server did not start as a sentinel");
        };
        let setup = RedisSentinel {
            master,
            replica,
            sentinel_port,
            sentinel,
            _dir: dir,
        };
        // The sentinel has found the replica (through the master's INFO)
        // and sees it healthy: only then can it fail over to it.
        let replica_port = setup.replica.port.to_string();
        wait_until("the sentinel to know master and replica", WAIT, || {
            setup.master_port() == Some(setup.master.port)
                && setup
                    .sentinel_command(&["SENTINEL", "REPLICAS", SENTINEL_MASTER])
                    .contains(&format!("\r\n{replica_port}\r\n"))
                && setup
                    .sentinel_command(&["SENTINEL", "REPLICAS", SENTINEL_MASTER])
                    .contains("master-link-status\r\n$2\r\nok")
        });
        Some(setup)
    }

    /// Runs one command on the sentinel.
    pub fn sentinel_command(&self, words: &[&str]) -> String {
        redis_command(self.sentinel_port, words)
    }

    /// The master's port as the sentinel names it now.
    pub fn master_port(&self) -> Option<u16> {
        let reply =
            self.sentinel_command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER]);
        // *2 $9 127.0.0.1 $N PORT
        reply.split("\r\n").nth(4)?.parse().ok()
    }

    /// `redis+sentinel://127.0.0.1:SENTINEL/MASTER#NAME`.
    pub fn lock(&self, master: &str, name: &str) -> String {
        format!(
            "redis+sentinel://127.0.0.1:{}/{master}#{name}",
            self.sentinel_port
        )
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
    }
}

/// Starts a sentinel that monitors the master at `master_port`, with its
/// configuration file in `dir`, and waits until it answers PING.
fn spawn_sentinel(dir: &Path, master_port: u16) -> Option<(Child, u16)> {
    for _ in 0..5 {
        let port = free_port();
        let conf = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                 sentinel failover-timeout {SENTINEL_MASTER} 5000\n",
                dir = dir.display()
            ),
        )
        .expect("write sentinel.conf");
        let mut child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server --sentinel");
        if answers_ping(&mut child, port, None) {
            return Some((child, port));
        }
    }
    None
}
