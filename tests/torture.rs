//! Torture test: K concurrent wrappers take the same lock M times each, on
//! every local backend, while some holders are SIGKILLed inside the critical
//! section (the wrapper alone, or the wrapper and its command together).
//!
//! Every critical section appends `enter <id> <pid>` and `exit <id>` to one
//! O_APPEND log. Afterwards the log must show no overlap, every job that was
//! not killed must have run and exited 0, no process of the run may be left,
//! and mkdir/excl must leave no artifact behind once the last holder is gone
//! (so stale recovery after the kills worked).
//!
//! A holder killed together with its command never writes its exit line. Its
//! section is counted as ending where the log stood when the test confirmed
//! both processes gone; an `enter` before the kill is an overlap, one between
//! the kill and that confirmation cannot be judged from the log and is only
//! counted (reported as "tolerated").
//!
//! The default tests are bounded (a few seconds per backend); the long run is
//! `cargo test --release --test torture -- --ignored torture`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Read as _;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for any single wait in this file; reaching it fails the test.
const BOUND: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    /// Not killed.
    None,
    /// SIGKILL to the wrapper only; the command finishes its section.
    Wrapper,
    /// SIGKILL to the wrapper's and the command's process groups together.
    Group,
}

struct Shape {
    /// Concurrent workers.
    k: usize,
    /// Acquisitions per worker.
    m: usize,
    /// Every `kill_every`-th job of workers 0 and 1 is killed (alternating kinds).
    kill_every: usize,
}

const DEFAULT: Shape = Shape {
    k: 6,
    m: 100,
    kill_every: 20,
};

const LONG: Shape = Shape {
    k: 12,
    m: 200,
    kill_every: 25,
};

/// A killed holder's window: log length just before the kill, and once its
/// processes were confirmed gone.
#[derive(Clone, Copy, Debug)]
struct KillWindow {
    before: u64,
    gone: u64,
}

#[derive(Default)]
struct Outcome {
    failures: Vec<String>,
    killed: BTreeMap<usize, (Kill, Option<KillWindow>)>,
    completed: BTreeSet<usize>,
}

/// The kind of job `id` of worker `w`.
fn kill_kind(shape: &Shape, w: usize, j: usize) -> Kill {
    if w >= 2 || j % shape.kill_every != shape.kill_every / 2 {
        return Kill::None;
    }
    // Never the very last jobs, so killed holders are followed by waiters.
    if j + 1 >= shape.m {
        return Kill::None;
    }
    if (j / shape.kill_every + w).is_multiple_of(2) {
        Kill::Group
    } else {
        Kill::Wrapper
    }
}

fn script(log: &Path, dir: &Path, id: usize, kill: Kill) -> String {
    let log = log.display();
    match kill {
        Kill::None => format!("echo \"enter {id} $$\" >> {log}; echo \"exit {id}\" >> {log}"),
        // Announce being inside with a marker (renamed into place, so it is
        // never seen half-written), then wait for the go file, at most ~40 s.
        Kill::Wrapper | Kill::Group => {
            let d = dir.display();
            format!(
                "echo \"enter {id} $$\" >> {log}; echo $$ > {d}/m{id}.tmp; mv {d}/m{id}.tmp {d}/m{id}; \
                 n=0; while [ ! -e {d}/go{id} ] && [ $n -lt 2000 ]; do sleep 0.02; n=$((n+1)); done; \
                 echo \"exit {id}\" >> {log}"
            )
        }
    }
}

fn spawn_wrapper(spec: &str, script: &str, stderr: &File) -> Child {
    let stderr = stderr.try_clone().expect("dup stderr log");
    Command::new(
        std::env::var_os("LOCKWRAP_TEST_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_lockwrap").into()),
    )
    .arg(spec)
    .args(["sh", "-c", script])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(stderr)
    // Its own process group, so the test can kill wrapper and command together.
    .process_group(0)
    .spawn()
    .expect("spawn lockwrap")
}

/// Waits for `child` to end, at most BOUND; kills its group and reports on timeout.
fn wait_bounded(child: &mut Child) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + BOUND;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => return Err(format!("wait: {e}")),
        }
        if Instant::now() >= deadline {
            kill_group(child.id() as i32);
            let _ = child.wait();
            return Err(format!(
                "wrapper {} still running after {BOUND:?}",
                child.id()
            ));
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: kill takes plain integers and touches no memory.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

fn kill_pid(pid: i32) {
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Whether `pid` is a live (not zombie) process whose command line mentions `tag`.
fn alive_with(pid: i32, tag: &str) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if !String::from_utf8_lossy(&cmdline).contains(tag) {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Live processes whose command line mentions `tag` (other than this test).
fn leftovers(tag: &str) -> Vec<String> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid != me && alive_with(pid, tag) {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            found.push(format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    found
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + BOUND;
    while !done() {
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

fn log_len(log: &Path) -> u64 {
    fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

/// Runs one victim job: waits until its command is inside, kills, confirms death.
/// What a victim job needs to know about its run.
#[derive(Clone, Copy)]
struct Job<'a> {
    dir: &'a Path,
    log: &'a Path,
    tag: &'a str,
}

fn run_victim(
    mut child: Child,
    job: &Job<'_>,
    id: usize,
    kill: Kill,
) -> Result<Option<KillWindow>, String> {
    let Job { dir, log, tag } = *job;
    let marker = dir.join(format!("m{id}"));
    let wrapper = child.id() as i32;
    let mut early_exit = None;
    wait_until(&format!("job {id} to enter"), || {
        if marker.exists() {
            return true;
        }
        if let Ok(Some(status)) = child.try_wait() {
            early_exit = Some(status);
            return true;
        }
        false
    })
    .inspect_err(|_| {
        kill_group(wrapper);
        let _ = child.wait();
    })?;
    if let Some(status) = early_exit {
        return Err(format!("job {id}: wrapper ended before entering: {status}"));
    }
    let inner: i32 = fs::read_to_string(&marker)
        .map_err(|e| format!("job {id}: marker: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("job {id}: marker: {e}"))?;
    let before = log_len(log);
    match kill {
        // The command runs in a process group of its own (its pid).
        // Wrapper first: once SIGKILL is pending it runs no more code, so
        // it cannot report the command's death as an exit of its own.
        Kill::Group => {
            kill_group(wrapper);
            kill_group(inner);
        }
        Kill::Wrapper => kill_pid(wrapper),
        Kill::None => unreachable!(),
    }
    let status = wait_bounded(&mut child)?;
    if status.signal() != Some(libc::SIGKILL) {
        return Err(format!("job {id}: wrapper was not killed: {status}"));
    }
    if kill == Kill::Wrapper {
        // Let the orphaned command finish its section on its own.
        File::create(dir.join(format!("go{id}"))).map_err(|e| format!("go file: {e}"))?;
    }
    wait_until(&format!("job {id}'s command ({inner}) to end"), || {
        !alive_with(inner, tag)
    })
    .inspect_err(|_| kill_pid(inner))?;
    Ok((kill == Kill::Group).then(|| KillWindow {
        before,
        gone: log_len(log),
    }))
}

fn worker(shape: &Shape, w: usize, spec: &str, job: Job<'_>, out: &Mutex<Outcome>) {
    let (dir, log) = (job.dir, job.log);
    let stderr = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stderr"))
        .expect("stderr log");
    for j in 0..shape.m {
        let id = w * shape.m + j;
        let kill = kill_kind(shape, w, j);
        let child = spawn_wrapper(spec, &script(log, dir, id, kill), &stderr);
        let result = if kill == Kill::None {
            let mut child = child;
            match wait_bounded(&mut child) {
                Ok(status) if status.success() => Ok(None),
                Ok(status) => Err(format!("job {id}: wrapper exited with {status}")),
                Err(e) => Err(format!("job {id}: {e}")),
            }
        } else {
            run_victim(child, &job, id, kill)
        };
        let mut out = out.lock().expect("outcome lock");
        match result {
            Ok(window) if kill == Kill::None => {
                let _ = window;
                out.completed.insert(id);
            }
            Ok(window) => {
                out.killed.insert(id, (kill, window));
            }
            Err(e) => {
                out.failures.push(e);
                return;
            }
        }
    }
}

/// Checks the log; returns (problems, tolerated entries).
fn check_log(text: &str, out: &Outcome, shape: &Shape) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut tolerated = 0;
    let mut open: Option<usize> = None;
    let mut entered = BTreeSet::new();
    let mut exited = BTreeSet::new();
    let mut offset = 0u64;
    for line in text.split_inclusive('\n') {
        let at = offset;
        offset += line.len() as u64;
        let words: Vec<&str> = line.split_whitespace().collect();
        let id = words.get(1).and_then(|s| s.parse::<usize>().ok());
        match (words.first().copied(), id) {
            (Some("enter"), Some(id)) => {
                if let Some(cur) = open {
                    match out.killed.get(&cur) {
                        Some((Kill::Group, Some(window))) if at >= window.before => {
                            if at < window.gone {
                                tolerated += 1;
                            }
                        }
                        _ => problems.push(format!(
                            "overlap: job {id} entered at byte {at} while job {cur} was inside"
                        )),
                    }
                }
                if !entered.insert(id) {
                    problems.push(format!("job {id} entered twice"));
                }
                open = Some(id);
            }
            (Some("exit"), Some(id)) => {
                if open != Some(id) {
                    problems.push(format!(
                        "job {id} exited at byte {at} but {open:?} was the one inside"
                    ));
                }
                exited.insert(id);
                open = None;
            }
            _ => problems.push(format!("garbled log line at byte {at}: {line:?}")),
        }
    }
    for id in 0..shape.k * shape.m {
        let killed = out.killed.get(&id).map(|(k, _)| *k);
        let want_exit = killed != Some(Kill::Group);
        if !entered.contains(&id) && killed.is_some() {
            problems.push(format!("killed job {id} never entered"));
        }
        if killed.is_none() && !out.completed.contains(&id) {
            problems.push(format!("job {id} did not complete"));
        }
        if want_exit && (!entered.contains(&id) || !exited.contains(&id)) {
            problems.push(format!(
                "job {id}: enter {} exit {}",
                entered.contains(&id),
                exited.contains(&id)
            ));
        }
        if !want_exit && exited.contains(&id) {
            problems.push(format!("job {id} was killed but wrote its exit line"));
        }
    }
    (problems, tolerated)
}

/// The lock specs of every local backend, for a run in `dir`.
/// (name, spec, artifact).
type Spec = (&'static str, String, Option<PathBuf>);

fn specs(dir: &Path) -> Vec<Spec> {
    let d = dir.display();
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    vec![
        ("flock", format!("{d}/flock.lock"), None),
        ("fcntl", format!("fcntl:{d}/fcntl.lock"), None),
        (
            "mkdir",
            format!("mkdir:{d}/mkdir.lock"),
            Some(dir.join("mkdir.lock")),
        ),
        (
            "excl",
            format!("excl:{d}/excl.lock"),
            Some(dir.join("excl.lock")),
        ),
        ("abstract", format!("@lockwrap-torture-{name}"), None),
    ]
}

fn torture(backend: &str, shape: &Shape) {
    let tmp = tempfile::Builder::new()
        .prefix("lockwrap-torture-")
        .tempdir()
        .expect("tempdir");
    let dir = tmp.path();
    let tag = dir.display().to_string();
    let (_, spec, artifact) = specs(dir)
        .into_iter()
        .find(|(name, ..)| *name == backend)
        .expect("known backend");
    let log = dir.join("log");
    let started = Instant::now();
    let out = Mutex::new(Outcome::default());
    thread::scope(|s| {
        for w in 0..shape.k {
            let (spec, out) = (&spec, &out);
            let job = Job {
                dir,
                log: &log,
                tag: &tag,
            };
            s.spawn(move || worker(shape, w, spec, job, out));
        }
    });
    let out = out.into_inner().expect("outcome lock");
    let mut problems = out.failures.clone();

    // One more plain acquisition: it must get the lock (reclaiming a stale
    // artifact if the last holder was killed) and leave nothing behind.
    let stderr = File::create(dir.join("stderr-final")).expect("stderr");
    let mut last = spawn_wrapper(&spec, "true", &stderr);
    match wait_bounded(&mut last) {
        Ok(status) if status.success() => {}
        Ok(status) => problems.push(format!("final acquisition: {status}")),
        Err(e) => problems.push(format!("final acquisition: {e}")),
    }
    if let Some(path) = &artifact
        && fs::symlink_metadata(path).is_ok()
    {
        problems.push(format!("lock artifact {} left behind", path.display()));
    }
    let text = fs::read_to_string(&log).unwrap_or_default();
    let (log_problems, tolerated) = check_log(&text, &out, shape);
    problems.extend(log_problems);
    if wait_until("leftover processes to go", || leftovers(&tag).is_empty()).is_err() {
        let left = leftovers(&tag);
        for p in &left {
            let pid = p.split(':').next().and_then(|s| s.parse().ok());
            if let Some(pid) = pid {
                kill_pid(pid);
            }
        }
        problems.push(format!("processes left behind: {left:?}"));
    }
    let mut stderr_text = String::new();
    for name in ["stderr", "stderr-final"] {
        if let Ok(mut f) = File::open(dir.join(name)) {
            let _ = f.read_to_string(&mut stderr_text);
        }
    }
    if !stderr_text.is_empty() {
        problems.push(format!("lockwrap wrote to stderr:\n{stderr_text}"));
    }
    let kills = out.killed.len();
    let group = out
        .killed
        .values()
        .filter(|(k, _)| *k == Kill::Group)
        .count();
    eprintln!(
        "torture {backend}: K={} M={} jobs={} killed={kills} (group {group}, wrapper-only {}) \
         tolerated={tolerated} in {:.2?}",
        shape.k,
        shape.m,
        shape.k * shape.m,
        kills - group,
        started.elapsed()
    );
    if !problems.is_empty() {
        let keep = std::env::var_os("LOCKWRAP_TORTURE_KEEP").is_some();
        if keep {
            eprintln!("kept {}", tmp.keep().display());
        }
        panic!(
            "torture {backend}: {} problem(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
}

#[test]
fn torture_flock() {
    torture("flock", &DEFAULT);
}

#[test]
fn torture_fcntl() {
    torture("fcntl", &DEFAULT);
}

#[test]
fn torture_mkdir() {
    torture("mkdir", &DEFAULT);
}

#[test]
fn torture_excl() {
    torture("excl", &DEFAULT);
}

#[test]
fn torture_abstract() {
    torture("abstract", &DEFAULT);
}

/// The long run, for BENCHMARKS.md: `cargo test --release --test torture -- --ignored torture`.
#[test]
#[ignore = "long; run on demand"]
fn torture_long_all_backends() {
    for backend in ["flock", "fcntl", "mkdir", "excl", "abstract"] {
        torture(backend, &LONG);
    }
}
