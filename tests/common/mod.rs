//! Helpers shared by the integration tests: the binary, a sandbox per test,
//! processes that are always killed and reaped, holders that say when they
//! hold the lock, bounded waits, and the enter/exit log check.
//!
//! Every process a test starts runs in its own process group, so the guard
//! can kill the wrapper together with the command it started (and anything
//! that command left behind). Outputs go to files, never to pipes, so a
//! leftover grandchild can never make a test hang on a pipe.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

pub mod json;
pub mod records;
pub mod tree;
pub mod waiters;

/// The bound of every wait: long enough for a loaded machine, short enough
/// that a bug fails the test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(20);

/// How often bounded polls look again.
const POLL: Duration = Duration::from_millis(5);

/// Whether a missing tool must fail the test instead of skipping it (set
/// by .ci/run, which installs strace).
pub fn tools_required() -> bool {
    std::env::var("LOCKWRAP_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

/// Whether a test that needs strace can run: when strace cannot trace here
/// it is skipped (with a note), unless .ci/run requires the tools.
pub fn strace_usable() -> bool {
    if strace_works() {
        return true;
    }
    assert!(
        !tools_required(),
        "LOCKWRAP_REQUIRE_SERVERS=1 but strace is missing or cannot trace"
    );
    eprintln!("skipped: strace is not installed or cannot trace here");
    false
}

/// Whether strace runs here (installed, and ptrace permitted).
pub fn strace_works() -> bool {
    Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The lockwrap binary under test: cargo's build, or LOCKWRAP_TEST_BIN
/// (the static musl build, which .ci/run tests too).
pub fn bin() -> PathBuf {
    match std::env::var_os("LOCKWRAP_TEST_BIN") {
        Some(path) => PathBuf::from(path),
        None => assert_cmd::cargo::cargo_bin("lockwrap"),
    }
}

/// util-linux flock(1), when installed, for side-by-side checks.
pub fn system_flock() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/flock");
    path.exists().then_some(path)
}

/// Makes this test process the reaper of orphans it created (a wrapper
/// killed with SIGKILL leaves its command behind). Without it they would be
/// reparented to pid 1, which in some containers never reaps them; a zombie
/// still has a /proc entry, which lockwrap would take for a live holder.
pub fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only sets a process flag.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER) failed");
    });
}

/// Polls `condition` until it holds; panics (naming `what`) after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "gave up after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Waits until `path` exists (bounded).
pub fn wait_for_file(path: &Path, timeout: Duration) {
    wait_until(&format!("{} to appear", path.display()), timeout, || {
        path.exists()
    });
}

/// Whether process `pid` has a handler for signal `signo` (SigCgt in
/// /proc/PID/status). lockwrap installs its handlers first thing, before it
/// tries the lock, so this tells that a started wrapper is about to wait.
pub fn catches(pid: i32, signo: libc::c_int) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (signo - 1)) != 0)
    })
}

/// A temporary directory per test: `locks/` for lock paths only (so a test
/// can check that nothing is left there), `work/` for logs, ready files and
/// outputs.
pub struct Sandbox {
    _root: tempfile::TempDir,
    /// Where lock files, directories and anything a backend may create live.
    pub locks: PathBuf,
    /// Everything else.
    pub work: PathBuf,
    test: String,
    counter: AtomicUsize,
}

impl Sandbox {
    /// A sandbox for the test named `test` (used in abstract socket names).
    pub fn new(test: &str) -> Sandbox {
        let root = tempfile::Builder::new()
            .prefix("lockwrap-test-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let locks = root.path().join("locks");
        let work = root.path().join("work");
        fs::create_dir(&locks).unwrap();
        fs::create_dir(&work).unwrap();
        Sandbox {
            _root: root,
            locks,
            work,
            test: test.to_owned(),
            counter: AtomicUsize::new(0),
        }
    }

    /// A path under `work/`.
    pub fn work_path(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    /// A fresh label, unique within this sandbox.
    pub fn label(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// An abstract socket name no other test (or test run) uses: pid, test
    /// name and `name`.
    pub fn abstract_name(&self, name: &str) -> String {
        format!("lockwrap-test-{}-{}-{name}", std::process::id(), self.test)
    }

    /// The names currently in `locks/`.
    pub fn lock_dir_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.locks)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A command for lockwrap with `args`, run in `work/`.
    pub fn lockwrap<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(bin());
        command.args(args).current_dir(&self.work);
        command
    }

    /// Runs `command` to completion (bounded) and returns its status and output.
    pub fn run(&self, command: Command) -> Output {
        let label = self.label("run");
        let mut proc = self.spawn(command, &label);
        let status = proc.wait_timeout(WAIT);
        proc.output(status)
    }

    /// Starts `command` in its own session and process group, stdin from /dev/null and
    /// stdout/stderr into files named after `label`.
    pub fn spawn(&self, mut command: Command, label: &str) -> Proc {
        let out_path = self.work.join(format!("{label}.stdout"));
        let err_path = self.work.join(format!("{label}.stderr"));
        command
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap());
        // A session of its own, so also no controlling terminal: lockwrap
        // behaves as under cron or CI even when the tests run in a terminal.
        // SAFETY: setsid(2) is async-signal-safe and allocates nothing.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        Proc {
            pid: child.id() as i32,
            child: Some(child),
            out_path,
            err_path,
        }
    }

    /// A FIFO under `work/` that a holder's command blocks on until released.
    pub fn fifo(&self, name: &str) -> PathBuf {
        let path = self.work.join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        path
    }

    /// Starts `lockwrap ARGS... SPEC sh -c SCRIPT` where SCRIPT announces
    /// itself (its pid in a ready file) and then blocks
    /// until [`Holder::release`]. Returns once the command runs, that is,
    /// once lockwrap holds the lock.
    pub fn hold(&self, args: &[&str], spec: &str) -> Holder {
        self.hold_after(args, spec, "true")
    }

    /// Like [`Sandbox::hold`], but the command's shell first runs `setup`
    /// (for instance `trap '' TERM`, or recording `$LOCKWRAP_SLOT`), and
    /// announces itself only if `setup` succeeds.
    pub fn hold_after(&self, args: &[&str], spec: &str, setup: &str) -> Holder {
        let label = self.label("holder");
        let ready = self.work.join(format!("{label}.ready"));
        let gate = self.fifo(&format!("{label}.gate"));
        let script = format!(
            "{setup} && echo $$ > '{r}' && read line < '{g}'",
            r = ready.display(),
            g = gate.display()
        );
        let mut command = self.lockwrap(args);
        command.args([spec, "sh", "-c", &script]);
        let proc = self.spawn(command, &label);
        let child_pid = wait_for_pid_file(&ready);
        Holder {
            proc,
            child_pid,
            gate,
        }
    }
}

impl Sandbox {
    /// Like [`Sandbox::hold`], for `--slots`: also returns `$LOCKWRAP_SLOT`
    /// as the command saw it (recorded before it announces itself).
    pub fn hold_slot(&self, args: &[&str], spec: &str) -> (Holder, String) {
        let file = self.work.join(self.label("slot"));
        let setup = format!("echo \"$LOCKWRAP_SLOT\" > '{}'", file.display());
        let holder = self.hold_after(args, spec, &setup);
        let slot = fs::read_to_string(&file).expect("the slot file");
        (holder, slot.trim_end().to_owned())
    }
}

/// Waits (bounded) until `path` holds a pid and a newline, and returns the
/// pid. The writer is a shell's builtin `echo $$ > path`: no helper process
/// (which would inherit the lock fd and might outlive the shell), so the
/// file may be seen empty for a moment before its one write.
pub fn wait_for_pid_file(path: &Path) -> i32 {
    let mut pid = None;
    wait_until(&format!("a pid in {}", path.display()), WAIT, || {
        pid = read_pid_file(path);
        pid.is_some()
    });
    pid.unwrap()
}

/// The pid in `path` once its writer has finished it (a pid and a newline),
/// else None.
pub fn read_pid_file(path: &Path) -> Option<i32> {
    fs::read_to_string(path)
        .ok()
        .and_then(|text| text.strip_suffix('\n')?.parse().ok())
}

/// Status, stdout and stderr of a finished process.
#[derive(Debug)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// What it wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
}

impl Output {
    /// The exit code; panics if the process was killed by a signal.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal instead of exiting: {self:?}"))
    }

    /// Asserts a normal exit with `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(code),
            "unexpected outcome: {self:?}"
        );
        self
    }

    /// Asserts the shape of every lockwrap error: exit `code` (never a Rust
    /// panic's 101), and exactly one line on stderr that starts with `lockwrap: `.
    #[track_caller]
    pub fn assert_error(&self, code: i32) -> &Self {
        assert_ne!(self.status.code(), Some(101), "lockwrap panicked: {self:?}");
        self.assert_code(code);
        assert!(
            self.stderr.starts_with("lockwrap: "),
            "stderr must start with 'lockwrap: ': {self:?}"
        );
        assert!(
            self.stderr.ends_with('\n') && self.stderr.lines().count() == 1,
            "stderr must be exactly one line: {self:?}"
        );
        self
    }
}

/// A started process. Dropping it kills its whole process group and reaps it,
/// so nothing outlives a failing test.
pub struct Proc {
    pid: i32,
    child: Option<Child>,
    out_path: PathBuf,
    err_path: PathBuf,
}

impl Proc {
    /// The pid (also its process group id).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal` to this process only (kill(2), so si_code is SI_USER).
    pub fn signal(&self, signal: Signal) {
        if self.child.is_some() {
            kill(Pid::from_raw(self.pid), signal).expect("kill");
        }
    }

    /// Sends `signal` to its whole process group (as a terminal's Ctrl-C
    /// or a CI runner's cancel does).
    pub fn signal_group(&self, signal: Signal) {
        if self.child.is_some() {
            kill(Pid::from_raw(-self.pid), signal).expect("kill");
        }
    }

    /// Waits (bounded) for the process to end and reaps it.
    #[track_caller]
    pub fn wait_timeout(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("already reaped");
        let mut status = None;
        wait_until(&format!("pid {} to exit", self.pid), timeout, || {
            status = child.try_wait().expect("try_wait");
            status.is_some()
        });
        self.child = None;
        status.unwrap()
    }

    /// Whether it has not exited yet.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// SIGKILLs this process (not its group) and reaps it.
    pub fn kill_and_reap(&mut self) -> ExitStatus {
        self.signal(Signal::SIGKILL);
        let status = self.wait_timeout(WAIT);
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        status
    }

    /// What it wrote so far.
    pub fn output(&self, status: ExitStatus) -> Output {
        Output {
            status,
            stdout: fs::read_to_string(&self.out_path).unwrap_or_default(),
            stderr: fs::read_to_string(&self.err_path).unwrap_or_default(),
        }
    }

    /// Waits (bounded) and returns status and output.
    #[track_caller]
    pub fn finish(&mut self) -> Output {
        let status = self.wait_timeout(WAIT);
        self.output(status)
    }
}

/// SIGKILLs every process of session `sid`: a wrapper started by
/// [`Sandbox::spawn`] and all it started, including its command, which
/// runs in a process group of its own.
fn kill_session(sid: i32) {
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Field 6 (session) is the 4th after the state (field 3).
        let session = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(3)?.parse::<i32>().ok());
        if session == Some(sid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(-self.pid), Signal::SIGKILL);
        kill_session(self.pid);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A lockwrap whose command blocks on a FIFO: it holds the lock until released.
pub struct Holder {
    /// The wrapper.
    pub proc: Proc,
    /// The command's pid (`$$` of its shell).
    pub child_pid: i32,
    gate: PathBuf,
}

impl Holder {
    /// Lets the command finish: writes a line into its FIFO.
    pub fn release(&self) {
        open_gate(&self.gate);
    }

    /// Releases the command and waits for the wrapper's outcome.
    pub fn release_and_finish(&mut self) -> Output {
        self.release();
        self.proc.finish()
    }
}

/// Writes a line into a FIFO a command blocks on (`read line < FIFO`).
/// Bounded: opening for writing succeeds once the reader has it open.
pub fn open_gate(gate: &Path) {
    let mut file = None;
    wait_until(
        "a reader to open the gate FIFO",
        WAIT,
        || match fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(gate)
        {
            Ok(f) => {
                file = Some(f);
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => false,
            Err(e) => panic!("cannot open {}: {e}", gate.display()),
        },
    );
    file.unwrap().write_all(b"go\n").expect("write to gate");
}

/// Reaps `pid`, a process this test process adopted as subreaper (see
/// [`become_subreaper`]); bounded.
pub fn reap_adopted(pid: i32) -> WaitStatus {
    let mut result = None;
    wait_until(
        &format!("adopted pid {pid} to exit"),
        WAIT,
        || match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => false,
            Ok(status) => {
                result = Some(status);
                true
            }
            Err(e) => panic!("waitpid({pid}): {e} (was it adopted? see become_subreaper)"),
        },
    );
    result.unwrap()
}

/// Whether `pid` exists and is not a zombie.
pub fn process_is_running(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// `lockwrap --replace --kill-grace 200ms -w 5 LOCK touch MARKER`, run to
/// the end: a takeover whose command leaves `marker` if it ran.
pub fn replace_and_touch(sb: &Sandbox, lock: &str, marker: &Path) -> Output {
    sb.run(sb.lockwrap([
        "--replace",
        "--kill-grace",
        "200ms",
        "-w",
        "5",
        lock,
        "touch",
        marker.to_str().unwrap(),
    ]))
}

/// The outcome of `--replace` against a holder it cannot prove to hold the
/// lock (a forged or mismatching record, a server's word): `victim`, the
/// process the holder's record names, still runs; and lockwrap either
/// refused (65, one line naming the lock and why) or took the lock without
/// signalling anyone (its command, which creates `marker`, ran).
#[track_caller]
pub fn assert_replace_did_not_signal(out: &Output, lock: &str, victim: i32, marker: &Path) {
    assert!(
        process_is_running(victim),
        "{lock}: --replace signalled pid {victim}, which it could not prove holds the lock: {out:?}"
    );
    if out.status.code() == Some(0) {
        assert!(
            marker.exists(),
            "{lock}: exit 0 but the command did not run"
        );
        return;
    }
    out.assert_error(65);
    assert!(
        out.stderr
            .starts_with(&format!("lockwrap: {lock}: cannot replace the holder: ")),
        "the refusal names the lock and says why: {out:?}"
    );
    assert!(!marker.exists(), "{lock}: refused, yet the command ran");
}

/// A shell script for a critical section: appends "enter $$" to `log`, does
/// a little work, appends "exit $$".
pub fn critical_section_script(log: &Path) -> String {
    // The sleep is the work inside the critical section (it widens the
    // window in which an overlap would show), not a synchronisation.
    format!(
        "echo \"enter $$\" >> '{l}'; sleep 0.05; echo \"exit $$\" >> '{l}'",
        l = log.display()
    )
}

/// Reads an enter/exit log and asserts that the sections never overlapped
/// and that `expected` complete sections, by distinct processes, are in it.
#[track_caller]
pub fn assert_no_overlap(log: &Path, expected: usize) {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        2 * expected,
        "expected {expected} enter/exit pairs in the log:\n{text}"
    );
    let mut pids = Vec::new();
    for pair in lines.chunks(2) {
        let enter = pair[0].strip_prefix("enter ");
        let exit = pair[1].strip_prefix("exit ");
        assert!(
            enter.is_some() && enter == exit,
            "critical sections overlap (or are garbled) at {pair:?}; whole log:\n{text}"
        );
        pids.push(enter.unwrap().to_owned());
    }
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), expected, "a section ran twice:\n{text}");
}

/// The five lock mechanisms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `PATH`: flock(2).
    Flock,
    /// `fcntl:PATH`: OFD record locks.
    Fcntl,
    /// `mkdir:PATH`: a lock directory.
    Mkdir,
    /// `excl:PATH`: a lock file that exists while held.
    Excl,
    /// `@NAME`: an abstract unix socket.
    Abstract,
}

/// Every backend.
pub const ALL_BACKENDS: [Backend; 5] = [
    Backend::Flock,
    Backend::Fcntl,
    Backend::Mkdir,
    Backend::Excl,
    Backend::Abstract,
];

impl Backend {
    /// The lock spec for a lock called `name` in `sandbox`.
    pub fn spec(self, sandbox: &Sandbox, name: &str) -> String {
        let path = sandbox.locks.join(name);
        let path = path.display();
        match self {
            Backend::Flock => format!("{path}"),
            Backend::Fcntl => format!("fcntl:{path}"),
            Backend::Mkdir => format!("mkdir:{path}"),
            Backend::Excl => format!("excl:{path}"),
            Backend::Abstract => format!("@{}", sandbox.abstract_name(name)),
        }
    }

    /// Whether the lock exists as a file only while held (removed on release).
    pub fn is_artifact(self) -> bool {
        matches!(self, Backend::Mkdir | Backend::Excl)
    }

    /// Whether the lock has shared holders (`-s`).
    pub fn supports_shared(self) -> bool {
        matches!(self, Backend::Flock | Backend::Fcntl)
    }

    /// For mkdir/excl: the file that carries the holder record.
    pub fn record_path(self, sandbox: &Sandbox, name: &str) -> Option<PathBuf> {
        match self {
            Backend::Mkdir => Some(sandbox.locks.join(name).join("lockwrap-holder")),
            Backend::Excl => Some(sandbox.locks.join(name)),
            _ => None,
        }
    }
}

/// What a `--min-hold` run looked like from outside; times are since just
/// before the wrapper was started (so never later than its acquisition).
#[derive(Debug)]
pub struct MinHoldRun {
    /// The wrapper's outcome.
    pub output: Output,
    /// When its command had written its marker (the job was over).
    pub job_done: Duration,
    /// When the wrapper was first seen gone.
    pub wrapper_gone: Duration,
    /// When the `-n` probe, about a second after the job, started, and
    /// its exit code (1: held).
    pub probe: (Duration, i32),
    /// When a `-w 5` waiter, started as soon as the job was over, got the lock.
    pub waiter_got: Duration,
}

/// Runs `lockwrap ARGS --min-hold HOLD LOCK sh -c 'touch DONE; exit 3'` (a
/// fast job that fails), then starts a `-w 5` waiter for the lock and, a
/// second after the job, probes it with `-n`. The wrapper's outcome and when
/// things happened are for the caller to judge.
pub fn min_hold_run(sb: &Sandbox, args: &[&str], lock: &str, hold: &str) -> MinHoldRun {
    let done = sb.work_path(&sb.label("done"));
    let got = sb.work_path(&sb.label("got"));
    let start = Instant::now();
    let mut command = sb.lockwrap(args);
    command.args(["--min-hold", hold, lock, "sh", "-c"]);
    command.arg(format!("touch '{}'; exit 3", done.display()));
    let mut wrapper = sb.spawn(command, &sb.label("wrapper"));
    let mut wrapper_gone = None;
    let mut watch = |wrapper: &mut Proc| {
        if wrapper_gone.is_none() && !wrapper.is_running() {
            wrapper_gone = Some(start.elapsed());
        }
    };
    wait_until("the job to end", WAIT, || {
        watch(&mut wrapper);
        done.exists()
    });
    let job_done = start.elapsed();
    let mut command = sb.lockwrap(["-w", "5", lock, "touch"]);
    command.arg(&got);
    let mut waiter = sb.spawn(command, &sb.label("waiter"));
    // The moment under test, not a synchronisation: a second after the job.
    while start.elapsed() < job_done + Duration::from_secs(1) {
        watch(&mut wrapper);
        std::thread::sleep(POLL);
    }
    let probe_started = start.elapsed();
    let probe = sb.run(sb.lockwrap(["-n", lock, "true"]));
    wait_until("the waiter to get the lock", WAIT, || {
        watch(&mut wrapper);
        got.exists()
    });
    let waiter_got = start.elapsed();
    waiter.finish().assert_code(0);
    let output = wrapper.finish();
    watch(&mut wrapper);
    MinHoldRun {
        output,
        job_done,
        wrapper_gone: wrapper_gone.expect("the wrapper has exited"),
        probe: (probe_started, probe.code()),
        waiter_got,
    }
}

impl MinHoldRun {
    /// Asserts what every backend must do with `--min-hold 2s`: the
    /// wrapper exits with the command's status (3: a failed job holds the
    /// lock too); the lock is held a second after the job ended, and the
    /// waiter gets it when the two seconds from acquisition are over.
    #[track_caller]
    pub fn assert_held_two_seconds(&self) {
        self.output.assert_code(3);
        assert!(self.output.stderr.is_empty(), "{self:?}");
        let (probe_started, probe_code) = self.probe;
        if probe_started < Duration::from_millis(1900) {
            assert_eq!(probe_code, 1, "not held a second after the job: {self:?}");
        } else {
            eprintln!("machine too slow for the probe at one second: {self:?}");
        }
        // Acquired after the start, so held until 2 s after it at least.
        assert!(
            self.waiter_got >= Duration::from_millis(1800),
            "freed before the minimum hold was over: {self:?}"
        );
        // Acquired before the job ended, so free 2 s after it at the
        // latest; a second of slack for a loaded machine.
        assert!(
            self.waiter_got <= self.job_done + Duration::from_secs(3),
            "held long after the minimum hold: {self:?}"
        );
    }
}
