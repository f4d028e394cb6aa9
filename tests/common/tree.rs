//! The lock covers the command's whole process tree: commands that leave
//! workers behind (in the background, in a session of their own), probes
//! that record whether another wrapper got the lock while one of those
//! workers still ran, and the checks shared by the local backends
//! (tests/tree.rs) and the lock servers (tests/servers/scenarios.rs).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{
    Proc, Sandbox, WAIT, become_subreaper, open_gate, process_is_running, read_pid_file,
    wait_for_pid_file, wait_until,
};

/// SIGKILLs the listed processes when dropped, if they still run: workers
/// that left the wrapper's process group (setsid, or a group of their own)
/// are not killed with it when a test fails.
pub struct KillOnDrop(pub Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if process_is_running(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// Waits (bounded) until every file in `files` holds a pid, and returns
/// them; None if `wrapper` exited first (a --max-runtime that fired before
/// a loaded machine got the whole tree started).
pub fn wait_for_pids_while_running(wrapper: &mut Proc, files: &[&Path]) -> Option<Vec<i32>> {
    let mut pids = None;
    let mut exited = false;
    wait_until("the command's tree to write its pids", WAIT, || {
        pids = files.iter().map(|f| read_pid_file(f)).collect();
        exited = pids.is_none() && !wrapper.is_running();
        pids.is_some() || exited
    });
    pids
}

/// Runs `lockwrap -n ARGS SPEC` with a command that appends "overlap PID"
/// to `log` for each of `pids` that still runs (a zombie has ended): the
/// probe got the lock while a process of the holder's tree was alive.
/// Returns the probe's exit code (0: it got the lock, 1: held).
pub fn probe(sb: &Sandbox, args: &[&str], spec: &str, pids: &[i32], log: &Path) -> i32 {
    let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
    // Builtins only: a helper process would inherit the probe's lock.
    let script = format!(
        "for p in {pids}; do
  {{ read s < /proc/$p/stat; }} 2>/dev/null || continue
  case \"$s\" in *') Z '*|*') X '*) ;; *) echo \"overlap $p\" >> '{log}';; esac
done",
        pids = pids.join(" "),
        log = log.display()
    );
    let mut command = sb.lockwrap(args);
    command.args(["-n", spec, "sh", "-c", &script]);
    let out = sb.run(command);
    let code = out.code();
    assert!(code == 0 || code == 1, "probe failed: {out:?}");
    code
}

/// Asserts that no probe logged an overlap into `log`.
#[track_caller]
pub fn assert_no_overlap(log: &Path, what: &str) {
    let text = fs::read_to_string(log).unwrap_or_default();
    assert!(
        text.is_empty(),
        "{what}: another wrapper got the lock while the holder's tree still ran:\n{text}"
    );
}

/// Probes the lock (see [`probe`]) again and again until `wrapper` exits;
/// returns how many probes found it held. Bounded by [`WAIT`].
pub fn probe_until_exit(
    sb: &Sandbox,
    args: &[&str],
    spec: &str,
    wrapper: &mut Proc,
    pids: &[i32],
    log: &Path,
) -> usize {
    let deadline = Instant::now() + WAIT;
    let mut held = 0;
    while wrapper.is_running() {
        assert!(
            Instant::now() < deadline,
            "the wrapper (pid {}) did not exit within {WAIT:?}",
            wrapper.pid()
        );
        if probe(sb, args, spec, pids, log) == 1 {
            held += 1;
        }
    }
    held
}

/// How a command started a worker it does not wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detach {
    /// `worker &`: same session, same process group.
    Background,
    /// `setsid worker &`: a session (and process group) of its own.
    Setsid,
}

impl Detach {
    fn prefix(self) -> &'static str {
        match self {
            Detach::Background => "",
            Detach::Setsid => "setsid ",
        }
    }
}

/// A wrapper whose command has exited and left a worker behind.
struct Orphan {
    wrapper: Proc,
    worker: i32,
    gate: PathBuf,
    log: PathBuf,
    _guard: KillOnDrop,
}

/// Starts `lockwrap ARGS SPEC sh -c 'DETACH sh -c "WORKER" &'`: the command
/// writes its pid and exits at once; the worker writes its pid, blocks on
/// the FIFO `gate`, then appends "late" to `log`. Returns once the command
/// has exited and the worker runs.
fn start_orphan(sb: &Sandbox, args: &[&str], spec: &str, detach: Detach) -> Orphan {
    let label = sb.label("orphan");
    let direct_file = sb.work_path(&format!("{label}.direct.pid"));
    let worker_file = sb.work_path(&format!("{label}.worker.pid"));
    let log = sb.work_path(&format!("{label}.log"));
    let gate = sb.fifo(&format!("{label}.gate"));
    let script = format!(
        "echo $$ > '{d}'; {detach}sh -c 'echo $$ > \"{w}\"; read x < \"{g}\"; echo late >> \"{l}\"' &",
        d = direct_file.display(),
        w = worker_file.display(),
        g = gate.display(),
        l = log.display(),
        detach = detach.prefix(),
    );
    let mut command = sb.lockwrap(args);
    command.args([spec, "sh", "-c", &script]);
    let wrapper = sb.spawn(command, &label);
    let direct = wait_for_pid_file(&direct_file);
    let worker = wait_for_pid_file(&worker_file);
    let guard = KillOnDrop(vec![worker]);
    wait_until("the command (not its worker) to exit", WAIT, || {
        !process_is_running(direct)
    });
    assert!(process_is_running(worker));
    Orphan {
        wrapper,
        worker,
        gate,
        log,
        _guard: guard,
    }
}

/// A worker the command left behind (in a session of its own) keeps the
/// lock until it ends. `waits_for_tree` (mkdir, excl, lock servers): the
/// wrapper holds the lock and runs until the worker has exited (probed for
/// at least `hold_for`: longer than a lease, for a lock server), then exits
/// 0. Otherwise (flock, fcntl, abstract; as flock(1)) the wrapper exits when
/// the command does, and the worker keeps the lock through the inherited fd.
/// `args` go before the spec.
pub fn an_orphaned_worker_keeps_the_lock(
    sb: &Sandbox,
    args: &[&str],
    spec: &str,
    waits_for_tree: bool,
    hold_for: Duration,
) {
    become_subreaper();
    let mut orphan = start_orphan(sb, args, spec, Detach::Setsid);
    let log = sb.work_path(&sb.label("probes"));
    let pids = [orphan.worker];
    if waits_for_tree {
        let start = Instant::now();
        loop {
            assert_eq!(
                probe(sb, &[], spec, &pids, &log),
                1,
                "the lock was free while the command's worker ran"
            );
            assert!(
                orphan.wrapper.is_running(),
                "the wrapper exited while the command's worker ran: {:?}",
                orphan.wrapper.finish()
            );
            if start.elapsed() >= hold_for {
                break;
            }
        }
        open_gate(&orphan.gate);
        orphan.wrapper.finish().assert_code(0);
        assert!(!process_is_running(orphan.worker));
        assert_eq!(fs::read_to_string(&orphan.log).unwrap(), "late\n");
    } else {
        orphan.wrapper.finish().assert_code(0);
        assert!(process_is_running(orphan.worker));
        assert_eq!(probe(sb, &[], spec, &pids, &log), 1);
        open_gate(&orphan.gate);
        wait_until("the worker to end", WAIT, || {
            !process_is_running(orphan.worker)
        });
    }
    assert_no_overlap(&log, "orphaned worker");
    assert_eq!(probe(sb, &[], spec, &[], &log), 0, "not released");
}

/// `-o`: the command does not hold the lock, so the wrapper releases it
/// when the command exits, without waiting for the workers it left behind:
/// another wrapper gets the lock while the worker still runs.
pub fn with_close_the_lock_ends_with_the_command(sb: &Sandbox, spec: &str, detach: Detach) {
    become_subreaper();
    let mut orphan = start_orphan(sb, &["-o"], spec, detach);
    orphan.wrapper.finish().assert_code(0);
    assert!(process_is_running(orphan.worker));
    let log = sb.work_path(&sb.label("probes"));
    assert_eq!(
        probe(sb, &[], spec, &[], &log),
        0,
        "-o: the lock was kept after the command exited"
    );
    open_gate(&orphan.gate);
    wait_until("the worker to end", WAIT, || {
        !process_is_running(orphan.worker)
    });
}

/// What stops the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `--max-runtime 2s`; nobody ignores SIGTERM. Exit 124.
    MaxRuntime,
    /// SIGTERM sent to the wrapper, forwarded; the grandchildren ignore it
    /// and need the SIGKILL after `--kill-grace 1s`. Exit 143.
    Sigterm,
}

/// A command with grandchildren that work until they are stopped:
/// `sh -c 'DETACH sh -c "GRANDCHILD" & wait'`, where the grandchild writes
/// its pid, starts `sleep 1000 &` (writing that pid too) and waits.
pub struct TreeScript {
    /// The command's script, for `sh -c`.
    pub script: String,
    gc_file: PathBuf,
    ggc_file: PathBuf,
}

impl TreeScript {
    /// The script, with pid files named after `label`. `ignore_term`: the
    /// grandchild and its sleep ignore SIGTERM (only SIGKILL stops them).
    pub fn new(sb: &Sandbox, label: &str, detach: Detach, ignore_term: bool) -> TreeScript {
        let gc_file = sb.work_path(&format!("{label}.gc.pid"));
        let ggc_file = sb.work_path(&format!("{label}.ggc.pid"));
        let ignore = if ignore_term { "trap \"\" TERM; " } else { "" };
        let script = format!(
            "{detach}sh -c '{ignore}echo $$ > \"{gc}\"; sleep 1000 & echo $! > \"{ggc}\"; wait' & wait",
            detach = detach.prefix(),
            gc = gc_file.display(),
            ggc = ggc_file.display(),
        );
        TreeScript {
            script,
            gc_file,
            ggc_file,
        }
    }

    /// The pids of the grandchild and of its sleep, once written; None if
    /// `wrapper` exited first. See [`wait_for_pids_while_running`].
    pub fn wait_for_pids(&self, wrapper: &mut Proc) -> Option<Vec<i32>> {
        wait_for_pids_while_running(wrapper, &[&self.gc_file, &self.ggc_file])
    }
}

/// The pids in `pids` that still run (zombies have ended).
pub fn still_running(pids: &[i32]) -> Vec<i32> {
    pids.iter()
        .copied()
        .filter(|&p| process_is_running(p))
        .collect()
}

/// Runs the command of [`TreeScript`] and stops it (`stop`), which must
/// stop all of it: by the time the wrapper has exited with 124 or 143 none
/// of its processes runs, and no other wrapper got the lock while one of
/// them ran. `args` go before the spec (--lease for a lock server, say).
pub fn stopping_stops_the_tree(
    sb: &Sandbox,
    args: &[&str],
    spec: &str,
    stop: Stop,
    detach: Detach,
) {
    become_subreaper();
    // A --max-runtime that fires before a loaded machine has started the
    // whole tree says nothing: try again.
    for _ in 0..3 {
        let label = sb.label("tree");
        let tree = TreeScript::new(sb, &label, detach, stop == Stop::Sigterm);
        let log = sb.work_path(&format!("{label}.probes"));
        let mut command = sb.lockwrap(args);
        match stop {
            Stop::MaxRuntime => command.args(["--max-runtime", "2s"]),
            Stop::Sigterm => command.args(["--kill-grace", "1s"]),
        };
        command.args([spec, "sh", "-c", &tree.script]);
        let mut wrapper = sb.spawn(command, &label);
        let Some(pids) = tree.wait_for_pids(&mut wrapper) else {
            continue;
        };
        let _guard = KillOnDrop(pids.clone());
        let expected = match stop {
            Stop::MaxRuntime => 124,
            Stop::Sigterm => {
                assert_eq!(probe(sb, args, spec, &pids, &log), 1, "not held");
                wrapper.signal(Signal::SIGTERM);
                143
            }
        };
        probe_until_exit(sb, args, spec, &mut wrapper, &pids, &log);
        let out = wrapper.finish();
        let running = still_running(&pids);
        assert!(
            running.is_empty(),
            "{stop:?} {detach:?}: the wrapper exited while pids {running:?} of the tree \
             {pids:?} still ran: {out:?}"
        );
        out.assert_code(expected);
        assert_no_overlap(&log, &format!("{stop:?} {detach:?}"));
        assert_eq!(probe(sb, args, spec, &[], &log), 0, "not released");
        return;
    }
    panic!("--max-runtime fired before the command's tree had started, 3 times");
}
