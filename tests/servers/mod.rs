//! Throwaway Redis and PostgreSQL servers for the server-lock tests, and
//! helpers to run lockwrap holders against them.
//!
//! Each server listens on a free loopback port with its files in a temp dir
//! and is stopped when its guard drops, also when a test fails. A missing
//! server binary skips the test with a message, unless
//! LOCKWRAP_REQUIRE_SERVERS=1 (set by .ci/run), which makes it fail.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

/// The longest any condition is waited for before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The lockwrap binary under test.
pub fn lockwrap() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lockwrap"))
}

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

/// Polls `condition` until it holds; fails the test after [`PATIENCE`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for `child` to exit, at most [`PATIENCE`].
pub fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    let mut status = None;
    wait_until(what, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status.expect("exited")
}

/// Runs lockwrap to the end (bounded) and returns its output.
pub fn run(args: &[&str]) -> Output {
    let mut child = Command::new(lockwrap())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lockwrap");
    wait_exit(&mut child, &format!("lockwrap {args:?} to exit"));
    child.wait_with_output().expect("output")
}

/// A lockwrap process holding a lock, its command waiting for a go file.
pub struct Holder {
    /// The wrapper.
    pub child: Child,
    dir: PathBuf,
    tag: String,
}

impl Holder {
    /// Starts `lockwrap ARGS LOCK sh -c ...` and waits until the command
    /// runs (it has the lock then). The command records its pid and
    /// LOCKWRAP_TOKEN in DIR/TAG.pid and DIR/TAG.token.
    pub fn start(args: &[&str], lock: &str, dir: &Path, tag: &str) -> Holder {
        let script = format!(
            "echo $$ > {d}/{t}.pid; echo \"$LOCKWRAP_TOKEN\" > {d}/{t}.token; touch {d}/{t}.held; \
             while [ ! -e {d}/{t}.go ]; do sleep 0.02; done",
            d = dir.display(),
            t = tag
        );
        let child = Command::new(lockwrap())
            .args(args)
            .arg(lock)
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn holder");
        let mut holder = Holder {
            child,
            dir: dir.to_owned(),
            tag: tag.to_owned(),
        };
        let held = dir.join(format!("{tag}.held"));
        wait_until(&format!("{tag} to hold {lock}"), || {
            if let Ok(Some(status)) = holder.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut e) = holder.child.stderr.take() {
                    let _ = e.read_to_string(&mut stderr);
                }
                panic!("holder {tag} exited with {status} before holding: {stderr}");
            }
            held.exists()
        });
        holder
    }

    /// The command's pid.
    pub fn command_pid(&self) -> i32 {
        read_trimmed(&self.dir.join(format!("{}.pid", self.tag)))
            .parse()
            .expect("command pid")
    }

    /// The LOCKWRAP_TOKEN the command got.
    pub fn token(&self) -> String {
        read_trimmed(&self.dir.join(format!("{}.token", self.tag)))
    }

    /// Lets the command end.
    pub fn finish(&self) {
        std::fs::write(self.dir.join(format!("{}.go", self.tag)), "").expect("write go file");
    }

    /// Waits for the wrapper to exit; returns its exit code and stderr.
    pub fn exit(mut self) -> (Option<i32>, String) {
        let status = wait_exit(&mut self.child, &format!("holder {} to exit", self.tag));
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        (status.code(), stderr)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = read_trimmed(&self.dir.join(format!("{}.pid", self.tag)));
            if let Ok(pid) = pid.parse() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A file's content without surrounding whitespace ("" if unreadable).
pub fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Whether a process is still there (a zombie counts as gone).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
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
        if !binary_works(Path::new("redis-server"), "--version") {
            return unavailable("redis-server is not installed");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        // Another process may grab the free port before the server binds it.
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let start = Instant::now();
            while start.elapsed() < PATIENCE {
                if child.try_wait().expect("try_wait").is_some() {
                    break;
                }
                if redis_ping(port) {
                    return Some(RedisServer {
                        child,
                        port,
                        _dir: dir,
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if servers_required() {
            panic!("redis-server did not start");
        }
        unavailable("redis-server did not start")
    }

    /// `redis://127.0.0.1:PORT#NAME`.
    pub fn lock(&self, name: &str) -> String {
        format!("redis://127.0.0.1:{}#{name}", self.port)
    }

    /// SIGSTOP / SIGCONT: a server that stalls without closing connections.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal redis-server");
    }

    /// Runs one command and returns the raw reply.
    pub fn command(&self, words: &[&str]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("read timeout");
        let mut out = format!("*{}\r\n", words.len());
        for w in words {
            out.push_str(&format!("${}\r\n{w}\r\n", w.len()));
        }
        stream.write_all(out.as_bytes()).expect("write");
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
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

fn redis_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 16];
    stream.write_all(b"PING\r\n").is_ok()
        && stream
            .read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
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

    fn start() -> Option<PgServer> {
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
        for _ in 0..5 {
            let port = free_port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
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
                    _dir: dir,
                });
            }
        }
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        unavailable(&format!("the PostgreSQL server did not start: {log}"))
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres#NAME`.
    pub fn lock(&self, name: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres#{name}",
            self.port
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

    /// Runs SQL with psql and returns its unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U", "postgres", "-d", "postgres", "-X", "-A", "-t", "-c", sql,
            ])
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
