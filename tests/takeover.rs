//! Semaphores (--slots), --replace and --max-runtime.

mod support;

use support::*;

#[test]
fn slots_let_exactly_n_holders_in_and_number_them() {
    let dir = tempfile::tempdir().unwrap();
    for lock in all_specs(dir.path(), "sem") {
        let tag = lock.replace(['/', ':', '@', '.'], "_");
        let slot_file = |n: usize| dir.path().join(format!("{tag}-holder{n}"));
        let release = format!("{tag}-release");
        // Each holder records its slot, then waits for the release file.
        let script = |n: usize| {
            format!(
                "echo $LOCKWRAP_SLOT > {}.tmp && mv {0}.tmp {0}; while [ ! -e {release} ]; do sleep 0.02; done",
                slot_file(n).display()
            )
        };
        let first = spawn_wrapper(dir.path(), &["--slots", "2"], &lock, &script(0));
        let second = spawn_wrapper(dir.path(), &["--slots", "2"], &lock, &script(1));
        wait_for_file(&slot_file(0));
        wait_for_file(&slot_file(1));
        let slots: Vec<String> = (0..2)
            .map(|n| {
                std::fs::read_to_string(slot_file(n))
                    .unwrap()
                    .trim()
                    .to_owned()
            })
            .collect();
        assert!(
            slots.contains(&"0".into()) && slots.contains(&"1".into()),
            "{lock}: {slots:?}"
        );

        // Both slots taken: a third holder cannot get in.
        let (code, _, _) = run(dir.path(), &["--slots", "2", "-n", &lock, "true"]);
        assert_eq!(code, 1, "{lock}: a third holder got in");
        let (code, out, _) = run(dir.path(), &["--status", "--slots", "2", &lock]);
        assert_eq!(code, 1, "{lock}: {out}");
        assert_eq!(out.matches("held by").count(), 2, "{out}");

        // A waiting third holder gets a slot once they leave.
        let mut third = spawn_wrapper(
            dir.path(),
            &["--slots", "2", "-w", "20"],
            &lock,
            "echo $LOCKWRAP_SLOT",
        );
        std::fs::write(dir.path().join(&release), "").unwrap();
        assert_eq!(third.wait_code(), 0, "{lock}");
        drop((first, second));
    }
}

#[test]
fn slots_never_admit_more_than_n_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let lock = format!("excl:{}", dir.path().join("sem").display());
    let log = dir.path().join("log");
    // Each holder appends enter/exit around a short critical section.
    let script = format!(
        "echo enter >> {0}; sleep 0.05; echo exit >> {0}",
        log.display()
    );
    let mut holders: Vec<Proc> = (0..6)
        .map(|_| spawn_wrapper(dir.path(), &["--slots", "2"], &lock, &script))
        .collect();
    for holder in &mut holders {
        assert_eq!(holder.wait_code(), 0);
    }
    let mut inside = 0;
    let mut most = 0;
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        inside += if line == "enter" { 1 } else { -1 };
        most = most.max(inside);
    }
    assert_eq!(inside, 0);
    assert!(most <= 2, "{most} holders were inside at once");
}

#[test]
fn replace_stops_the_holder_and_takes_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    for (i, lock) in all_specs(dir.path(), "rep").iter().enumerate() {
        let termed = dir.path().join(format!("termed{i}"));
        let ready = dir.path().join(format!("ready{i}"));
        let script = format!(
            "trap 'touch {}; exit 0' TERM; touch {}; while :; do sleep 0.02; done",
            termed.display(),
            ready.display()
        );
        let mut holder = spawn_wrapper(dir.path(), &[], lock, &script);
        wait_for_file(&ready);
        let (code, out, err) = run(
            dir.path(),
            &["--replace", "-w", "20", lock, "echo", "replaced"],
        );
        assert_eq!((code, out.trim()), (0, "replaced"), "{lock}: {err}");
        assert!(termed.exists(), "{lock}: the holder's command got SIGTERM");
        assert_eq!(
            holder.wait_code(),
            0,
            "{lock}: the old wrapper exits with its child's status"
        );
    }
}

#[test]
fn replace_kills_a_holder_that_ignores_sigterm_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let lock = format!("mkdir:{}", dir.path().join("stubborn").display());
    let script = "trap '' TERM; touch ready; while :; do sleep 0.02; done";
    let mut holder = spawn_wrapper(dir.path(), &[], &lock, script);
    wait_for_file(&dir.path().join("ready"));
    let (code, _, err) = run(
        dir.path(),
        &[
            "--replace",
            "--kill-grace",
            "200ms",
            "-w",
            "20",
            &lock,
            "true",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(holder.wait_code(), 128 + libc::SIGKILL);
}

#[test]
fn replace_refuses_a_holder_it_cannot_identify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("by-script");
    std::fs::create_dir(&path).unwrap();
    let lock = format!("mkdir:{}", path.display());
    let (code, _, err) = run(dir.path(), &["--replace", &lock, "true"]);
    assert_eq!(code, 65, "{err}");
    assert!(
        err.starts_with(&format!("lockwrap: {lock}: cannot replace the holder")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    assert!(path.is_dir(), "the unknown holder's lock is left alone");
}

#[test]
fn max_runtime_stops_the_command_and_exits_124() {
    let dir = tempfile::tempdir().unwrap();
    for lock in all_specs(dir.path(), "rt") {
        let (code, _, err) = run(
            dir.path(),
            &["--max-runtime", "100ms", &lock, "sleep", "30"],
        );
        assert_eq!(code, 124, "{lock}: {err}");
        let (code, _, _) = run(dir.path(), &["-n", &lock, "true"]);
        assert_eq!(code, 0, "{lock}: released after the command ended");
    }
}

#[test]
fn max_runtime_kills_a_command_that_ignores_sigterm_before_releasing() {
    let dir = tempfile::tempdir().unwrap();
    let lock = format!("excl:{}", dir.path().join("rt").display());
    let pidfile = dir.path().join("pid");
    let script = format!(
        "trap '' TERM; echo $$ > {}; while :; do sleep 0.02; done",
        pidfile.display()
    );
    let (code, _, err) = run(
        dir.path(),
        &[
            "--max-runtime",
            "100ms",
            "--kill-grace",
            "100ms",
            &lock,
            "sh",
            "-c",
            &script,
        ],
    );
    assert_eq!(code, 124, "{err}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the command is gone"
    );
    assert!(!dir.path().join("rt").exists(), "the lock was released");
}

#[test]
fn durations_accept_suffixes_and_reject_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("d").display().to_string();
    for good in ["1.5", "500ms", "30s", "5m", "2h"] {
        assert_eq!(run(dir.path(), &["-w", good, &lock, "true"]).0, 0, "{good}");
    }
    for bad in ["-1", "nan", "5x", "inf"] {
        for option in ["-w", "--max-runtime", "--kill-grace", "--stale-after"] {
            let (code, _, err) = run(dir.path(), &[option, bad, &lock, "true"]);
            assert_eq!(code, 64, "{option} {bad}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}
