//! Helpers for the holder, stale-lock, status and takeover tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The lockwrap binary under test.
pub fn lockwrap() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin!("lockwrap"))
}

/// How long any wait in a test may last before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Polls until `ready` returns true; panics after [`PATIENCE`].
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for a file to appear.
pub fn wait_for_file(path: &Path) {
    wait_until(&format!("{}", path.display()), || path.exists());
}

/// A process that is killed and reaped when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// The pid.
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Waits for the exit code (128+N for signal N), failing after PATIENCE.
    pub fn wait_code(&mut self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            }
            assert!(
                Instant::now() < deadline,
                "process {} did not exit",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill only sends a signal to our own child process.
        unsafe { libc::kill(self.pid(), signal) };
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Wrappers run in their own process group: take the child along, so
        // a failed test leaves nothing behind.
        // SAFETY: kill only sends signals to our own process group.
        unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `lockwrap [args] LOCK sh -c SCRIPT` in `dir`.
pub fn spawn_wrapper(dir: &Path, args: &[&str], lock: &str, script: &str) -> Proc {
    use std::os::unix::process::CommandExt;
    Proc(
        lockwrap()
            .current_dir(dir)
            .args(args)
            .args([lock, "sh", "-c", script])
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn lockwrap"),
    )
}

/// Starts a wrapper whose child touches `ready_name` and then runs until
/// the file `release_name` appears; waits until it holds the lock.
pub fn hold(dir: &Path, args: &[&str], lock: &str, ready_name: &str, release_name: &str) -> Proc {
    let script = format!("touch {ready_name}; while [ ! -e {release_name} ]; do sleep 0.02; done");
    let holder = spawn_wrapper(dir, args, lock, &script);
    wait_for_file(&dir.join(ready_name));
    holder
}

/// Runs lockwrap to completion: (exit code, stdout, stderr).
pub fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = lockwrap()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run lockwrap");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An abstract socket name unique to this test process and `tag`.
pub fn abstract_name(tag: &str) -> String {
    format!("@lockwrap-test-{}-{tag}", std::process::id())
}

/// The five local lock specs for `name` inside `dir`.
pub fn all_specs(dir: &Path, name: &str) -> Vec<String> {
    let path: PathBuf = dir.join(name);
    let p = path.display();
    vec![
        format!("{p}"),
        format!("fcntl:{p}"),
        format!("mkdir:{p}.d"),
        format!("excl:{p}.x"),
        abstract_name(name),
    ]
}

/// Field 22 of /proc/PID/stat.
pub fn start_time(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

/// A holder record as lockwrap writes it.
pub fn record(pid: i32, start_time: u64, host: &str, acquired_ms: u64) -> String {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let pid_ns = std::fs::metadata("/proc/self/ns/pid").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    format!(
        "lockwrap-holder 1\npid={pid}\nstart_time={start_time}\nboot_id={}\nhost={host}\npid_ns={}\nuid=0\nacquired_ms={acquired_ms}\ncommand=test holder\n",
        boot_id.trim(),
        pid_ns.unwrap()
    )
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
