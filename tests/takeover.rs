//! Semaphores (--slots), --replace and --max-runtime.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::Command;

use common::records::{hostname, live_process, now_ms, plant, record, record_of_uid, start_time};
use common::{
    ALL_BACKENDS, Backend, Sandbox, assert_replace_did_not_signal, process_is_running,
    wait_for_pid_file,
};

#[test]
fn slots_let_exactly_n_holders_in_and_number_them() {
    for backend in ALL_BACKENDS {
        let sb = Sandbox::new(&format!("slots-{backend:?}"));
        let lock = backend.spec(&sb, "sem");
        let slot_file = |n: usize| sb.work_path(&format!("slot{n}"));
        // Each holder records its slot before it says it holds the lock.
        let hold = |n: usize| {
            let setup = format!("echo $LOCKWRAP_SLOT > '{}'", slot_file(n).display());
            sb.hold_after(&["--slots", "2"], &lock, &setup)
        };
        let mut first = hold(0);
        let mut second = hold(1);
        let slots: Vec<String> = (0..2)
            .map(|n| fs::read_to_string(slot_file(n)).unwrap())
            .collect();
        assert!(
            slots.contains(&"0\n".into()) && slots.contains(&"1\n".into()),
            "{lock}: {slots:?}"
        );

        // Both slots taken: a third holder cannot get in.
        let marker = sb.work_path("third-ran");
        let out = sb.run(sb.lockwrap([
            "--slots",
            "2",
            "-n",
            &lock,
            "touch",
            marker.to_str().unwrap(),
        ]));
        assert_eq!(out.code(), 1, "{lock}: a third holder got in: {out:?}");
        assert!(!marker.exists(), "{lock}: a third holder ran");
        let out = sb.run(sb.lockwrap(["--status", "--slots", "2", &lock]));
        out.assert_code(1);
        assert_eq!(out.stdout.matches("held by").count(), 2, "{out:?}");
        for holder in [&first, &second] {
            assert!(
                out.stdout
                    .contains(&format!("held by pid {}", holder.proc.pid())),
                "{out:?}"
            );
        }

        // A waiting third holder gets the slot the first one leaves.
        let command = sb.lockwrap([
            "--slots",
            "2",
            "-w",
            "20",
            &lock,
            "sh",
            "-c",
            "echo $LOCKWRAP_SLOT",
        ]);
        let mut third = sb.spawn(command, "third");
        first.release_and_finish().assert_code(0);
        let out = third.finish();
        out.assert_code(0);
        assert_eq!(out.stdout, slots[0], "{lock}: {out:?}");
        second.release_and_finish().assert_code(0);
    }
}

#[test]
fn slots_never_admit_more_than_n_at_once() {
    const HOLDERS: usize = 6;
    let sb = Sandbox::new("slots-at-once");
    let lock = format!("excl:{}", sb.locks.join("sem").display());
    let log = sb.work_path("log");
    // Each holder appends enter/exit around a short critical section (the
    // sleep is the work that widens the window, not a synchronisation).
    let script = format!(
        "echo enter >> '{0}'; sleep 0.05; echo exit >> '{0}'",
        log.display()
    );
    let mut holders: Vec<_> = (0..HOLDERS)
        .map(|i| {
            let command = sb.lockwrap(["--slots", "2", &lock, "sh", "-c", &script]);
            sb.spawn(command, &format!("holder{i}"))
        })
        .collect();
    for holder in &mut holders {
        holder.finish().assert_code(0);
    }
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 2 * HOLDERS, "{text}");
    let mut inside = 0;
    let mut most = 0;
    for line in text.lines() {
        inside += match line {
            "enter" => 1,
            "exit" => -1,
            _ => panic!("garbled log:\n{text}"),
        };
        most = most.max(inside);
    }
    assert_eq!(inside, 0, "{text}");
    assert!(most <= 2, "{most} holders were inside at once:\n{text}");
}

#[test]
fn replace_stops_the_holder_and_takes_the_lock() {
    for backend in ALL_BACKENDS {
        let sb = Sandbox::new(&format!("replace-{backend:?}"));
        let lock = backend.spec(&sb, "rep");
        let termed = sb.work_path("termed");
        let ready = sb.work_path("ready");
        // The command idles in short foreground sleeps, after each of which
        // the shell runs a pending trap (see signals.rs, trapping_script).
        let script = format!(
            "trap 'touch \"{}\"; exit 0' TERM\necho $$ > '{}'\nwhile :; do sleep 0.02; done",
            termed.display(),
            ready.display()
        );
        let mut holder = sb.spawn(sb.lockwrap([lock.as_str(), "sh", "-c", &script]), "holder");
        wait_for_pid_file(&ready);
        let out = sb.run(sb.lockwrap(["--replace", "-w", "20", &lock, "echo", "replaced"]));
        out.assert_code(0);
        assert_eq!(out.stdout, "replaced\n", "{lock}: {out:?}");
        assert!(termed.exists(), "{lock}: the holder's command got SIGTERM");
        assert_eq!(
            holder.finish().code(),
            0,
            "{lock}: the old wrapper exits with its child's status"
        );
    }
}

#[test]
fn replace_kills_a_holder_that_ignores_sigterm_after_the_grace() {
    let sb = Sandbox::new("stubborn");
    let lock = format!("mkdir:{}", sb.locks.join("stubborn").display());
    let mut holder = sb.hold_after(&[], &lock, "trap '' TERM");
    let out = sb.run(sb.lockwrap([
        "--replace",
        "--kill-grace",
        "200ms",
        "-w",
        "20",
        &lock,
        "true",
    ]));
    out.assert_code(0);
    let status = holder.proc.wait_timeout(common::WAIT);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
}

#[test]
fn replace_refuses_a_holder_it_cannot_identify() {
    let sb = Sandbox::new("unknown-holder");
    let path = sb.locks.join("by-script");
    fs::create_dir(&path).unwrap();
    let lock = format!("mkdir:{}", path.display());
    let out = sb.run(sb.lockwrap(["--replace", &lock, "true"]));
    out.assert_error(65);
    assert!(
        out.stderr
            .starts_with(&format!("lockwrap: {lock}: cannot replace the holder")),
        "{out:?}"
    );
    assert!(path.is_dir(), "the unknown holder's lock is left alone");
    assert_eq!(sb.lock_dir_entries(), ["by-script"]);
}

/// Issue 10 (1a): a record whose pid is alive but started at another time
/// names a process that is gone; its pid now belongs to a stranger, which
/// --replace must not signal (reclaiming the lock as stale is fine).
#[test]
fn replace_never_signals_a_live_pid_whose_start_time_differs() {
    let sb = Sandbox::new("replace-reused-pid");
    for backend in common::records::ARTIFACTS {
        let mut stranger = live_process(&sb);
        let pid = stranger.pid();
        let name = format!("{backend:?}-reused");
        let text = record(pid, start_time(pid) + 1, &hostname(), now_ms());
        let lock = plant(&sb, backend, &name, &text);
        let marker = sb.work_path(&format!("{name}.ran"));
        let out = common::replace_and_touch(&sb, &lock, &marker);
        assert_replace_did_not_signal(&out, &lock, pid, &marker);
        stranger.kill_and_reap();
    }
}

/// Issue 10 (1b): nobody (uid 65534) plants, in a directory it owns, a
/// record that names one of root's processes with its true start time and
/// uid=0. The record's uid does not own the artifact, so it is not believed:
/// root's --replace refuses (owner unknown, 65) and the process survives.
#[test]
fn replace_does_not_believe_a_record_planted_by_another_user() {
    let setpriv = Path::new("/usr/bin/setpriv");
    if !setpriv.exists() || !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root and setpriv to plant a record as another user");
        return;
    }
    let sb = Sandbox::new("replace-forged");
    // Like /tmp: nobody can get to it and create in it.
    let root = sb.locks.parent().unwrap();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    let shared = sb.locks.join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    let mut victim = live_process(&sb);
    let pid = victim.pid();
    for backend in common::records::ARTIFACTS {
        let path = shared.join(format!("{backend:?}-deploy.lock"));
        let text = record_of_uid(pid, start_time(pid), &hostname(), now_ms(), 0);
        let (record_file, script) = match backend {
            Backend::Mkdir => {
                let file = path.join("lockwrap-holder");
                let script = format!(
                    "mkdir '{}' && printf %s \"$1\" > '{}'",
                    path.display(),
                    file.display()
                );
                (file, script)
            }
            _ => (
                path.clone(),
                format!("printf %s \"$1\" > '{}'", path.display()),
            ),
        };
        let mut plant = Command::new(setpriv);
        plant
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["sh", "-c", &script, "sh", &text]);
        sb.run(plant).assert_code(0);
        assert_eq!(fs::metadata(&record_file).unwrap().uid(), 65534);
        let lock = match backend {
            Backend::Mkdir => format!("mkdir:{}", path.display()),
            _ => format!("excl:{}", path.display()),
        };
        let marker = sb.work_path(&format!("{backend:?}.ran"));
        let out = common::replace_and_touch(&sb, &lock, &marker);
        assert!(
            process_is_running(pid),
            "{lock}: --replace signalled root's pid {pid} on the word of a record nobody wrote: {out:?}"
        );
        out.assert_error(65);
        assert!(
            out.stderr
                .starts_with(&format!("lockwrap: {lock}: cannot replace the holder: ")),
            "{out:?}"
        );
        assert!(!marker.exists(), "{lock}: refused, yet the command ran");
        assert_eq!(
            fs::read_to_string(&record_file).unwrap(),
            text,
            "{lock}: the planted lock is left as it is"
        );
    }
    victim.kill_and_reap();
}

#[test]
fn max_runtime_stops_the_command_and_exits_124() {
    for backend in ALL_BACKENDS {
        let sb = Sandbox::new(&format!("max-runtime-{backend:?}"));
        let lock = backend.spec(&sb, "rt");
        let out = sb.run(sb.lockwrap(["--max-runtime", "100ms", &lock, "sleep", "30"]));
        out.assert_code(124);
        let out = sb.run(sb.lockwrap(["-n", &lock, "true"]));
        assert_eq!(
            out.code(),
            0,
            "{lock}: released after the command ended: {out:?}"
        );
    }
}

#[test]
fn max_runtime_kills_a_command_that_ignores_sigterm_before_releasing() {
    let sb = Sandbox::new("max-runtime-stubborn");
    let lock = format!("excl:{}", sb.locks.join("rt").display());
    let pidfile = sb.work_path("pid");
    let script = format!(
        "trap '' TERM; echo $$ > '{}'; while :; do sleep 0.02; done",
        pidfile.display()
    );
    let out = sb.run(sb.lockwrap([
        "--max-runtime",
        "100ms",
        "--kill-grace",
        "100ms",
        &lock,
        "sh",
        "-c",
        &script,
    ]));
    out.assert_code(124);
    let pid = wait_for_pid_file(&pidfile);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the command is gone"
    );
    assert_eq!(
        sb.lock_dir_entries(),
        Vec::<String>::new(),
        "the lock was released"
    );
}

#[test]
fn durations_accept_suffixes_and_reject_garbage() {
    let sb = Sandbox::new("durations");
    let lock = sb.locks.join("d").display().to_string();
    for good in ["1.5", "500ms", "30s", "5m", "2h"] {
        let out = sb.run(sb.lockwrap(["-w", good, &lock, "true"]));
        assert_eq!(out.code(), 0, "{good}: {out:?}");
    }
    for bad in ["-1", "nan", "5x", "inf"] {
        for option in ["-w", "--max-runtime", "--kill-grace", "--stale-after"] {
            let marker = sb.work_path("ran");
            let out = sb.run(sb.lockwrap([option, bad, &lock, "touch", marker.to_str().unwrap()]));
            out.assert_error(64);
            assert!(!marker.exists(), "{option} {bad}: the command ran");
        }
    }
}

/// A record in a lock directory that anyone may write to (made with umask
/// 000) is not believed, even when it names a live process of the directory
/// owner's uid with its true start time: anyone could have written it.
#[test]
fn replace_does_not_believe_a_record_in_a_world_writable_lock_directory() {
    let sb = Sandbox::new("world-writable");
    let victim = live_process(&sb);
    let pid = victim.pid();
    let dir = sb.locks.join("open");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(
        dir.join("lockwrap-holder"),
        record(pid, start_time(pid), &hostname(), now_ms()),
    )
    .unwrap();
    let lock = format!("mkdir:{}", dir.display());
    let marker = sb.work_path("took");
    let out = sb.run(sb.lockwrap([
        "--replace",
        "--kill-grace",
        "100ms",
        &lock,
        "touch",
        marker.to_str().unwrap(),
    ]));
    out.assert_error(65);
    assert!(process_is_running(pid), "{out:?}");
    assert!(!marker.exists());
}

/// A lockwrap run by the holder itself (it inherited the lock fd) never
/// signals its caller, nor itself: it refuses at once.
#[test]
fn replace_never_signals_its_own_caller() {
    let sb = Sandbox::new("own-caller");
    let lock = sb.locks.join("held-by-caller");
    let lock = lock.to_str().unwrap();
    let inner = format!("\"$0\" --replace --kill-grace 100ms '{lock}' echo took; echo inner=$?",);
    let out = sb.run(sb.lockwrap([lock, "sh", "-c", &inner, common::bin().to_str().unwrap()]));
    out.assert_code(0);
    assert_eq!(out.stdout, "inner=65\n", "{out:?}");
    assert!(out.stderr.contains("cannot replace the holder"), "{out:?}");
}

/// A kernel lock's wrapper that is not a lockwrap (flock(1), or a shell
/// holding the lock on an fd) does not forward SIGTERM: --replace must send
/// it to the command itself, which `--status` lists as the wrapper's child,
/// instead of leaving the command to SIGKILL after the grace period.
#[test]
fn replace_terms_the_command_of_a_wrapper_that_does_not_forward_signals() {
    let sb = Sandbox::new("replace-foreign");
    let lock = sb.locks.join("foreign").display().to_string();
    let flock = common::system_flock().map(|f| f.display().to_string());
    let lockwrap = common::bin().display().to_string();
    let mut wrappers = vec![(
        "shell-fd",
        // `; :` keeps the subshell from exec'ing its last command: it
        // stays the command's parent, holding the lock.
        format!("( '{lockwrap}' 9 && sh -c \"$0\"; : ) 9>'{lock}'"),
    )];
    if let Some(flock) = flock {
        wrappers.push(("flock(1)", format!("'{flock}' '{lock}' sh -c \"$0\"")));
    }
    for (what, wrapper) in wrappers {
        let termed = sb.work_path(&format!("{what}.termed"));
        let ready = sb.work_path(&format!("{what}.ready"));
        let script = format!(
            "trap 'touch \"{}\"; exit 0' TERM\necho $$ > '{}'\nwhile :; do sleep 0.02; done",
            termed.display(),
            ready.display()
        );
        let mut command = Command::new("sh");
        command.args(["-c", &wrapper, &script]);
        let mut holder = sb.spawn(command, what);
        wait_for_pid_file(&ready);
        let out =
            sb.run(sb.lockwrap(["--replace", "--kill-grace", "8s", "-w", "60", &lock, "true"]));
        out.assert_code(0);
        assert!(termed.exists(), "{what}: the command got no SIGTERM");
        holder.wait_timeout(common::WAIT);
    }
}
