//! Stale mkdir/excl locks are reclaimed only when their holder is provably
//! gone, and exactly one of several racing reclaimers wins.

mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use support::*;

/// A process that ran and is gone: (pid, start time).
fn dead_process() -> (i32, u64) {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    let start = start_time(pid);
    child.kill().unwrap();
    child.wait().unwrap();
    (pid, start)
}

/// Plants a holder record as the artifact of `kind` ("mkdir" or "excl").
fn plant(kind: &str, path: &Path, record: &str) {
    if kind == "mkdir" {
        std::fs::create_dir(path).unwrap();
        std::fs::write(path.join("lockwrap-holder"), record).unwrap();
    } else {
        std::fs::write(path, record).unwrap();
    }
}

#[test]
fn sigkill_of_wrapper_and_child_leaves_a_lock_the_next_wrapper_reclaims() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["mkdir", "excl"] {
        let path = dir.path().join(kind);
        let lock = format!("{kind}:{}", path.display());
        let ready = format!("{kind}.ready");
        let holder = hold(dir.path(), &[], &lock, &ready, "never");
        let child_pid: i32 = {
            let (_, json, _) = run(dir.path(), &["--status", "--json", &lock]);
            let at = json.find("\"child_pid\":").unwrap() + 12;
            json[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        holder.signal(libc::SIGKILL);
        // SAFETY: kill only sends a signal.
        unsafe { libc::kill(child_pid, libc::SIGKILL) };
        drop(holder);
        wait_until("the child to die", || {
            std::fs::read_to_string(format!("/proc/{child_pid}/stat"))
                .map_or(true, |s| s.contains(") Z"))
        });
        assert!(path.exists(), "the artifact outlives its SIGKILLed holder");
        let (code, out, err) = run(dir.path(), &["-n", &lock, "echo", "reclaimed"]);
        assert_eq!((code, out.trim()), (0, "reclaimed"), "{kind}: {err}");
        assert!(!path.exists(), "{kind}: the reclaimed lock was released");
    }
}

#[test]
fn pid_reuse_does_not_fool_the_liveness_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut live = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = live.id() as i32;
    let start = start_time(pid);
    for kind in ["mkdir", "excl"] {
        // A live pid with the wrong start time: the recorded process is gone.
        let path = dir.path().join(format!("{kind}-reused"));
        plant(kind, &path, &record(pid, start + 1, &hostname(), now_ms()));
        let lock = format!("{kind}:{}", path.display());
        let (code, _, err) = run(dir.path(), &["-n", &lock, "true"]);
        assert_eq!(code, 0, "{kind}: a reused pid must count as dead: {err}");

        // A live pid with the right start time: held.
        let path = dir.path().join(format!("{kind}-alive"));
        let planted = record(pid, start, &hostname(), now_ms());
        plant(kind, &path, &planted);
        let lock = format!("{kind}:{}", path.display());
        let (code, _, _) = run(dir.path(), &["-n", &lock, "true"]);
        assert_eq!(code, 1, "{kind}: a live holder must not be reclaimed");
        let record_file = if kind == "mkdir" {
            path.join("lockwrap-holder")
        } else {
            path
        };
        assert_eq!(std::fs::read_to_string(record_file).unwrap(), planted);
    }
    live.kill().unwrap();
    live.wait().unwrap();
}

#[test]
fn what_cannot_be_proven_dead_is_kept_unless_stale_after_says_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let (pid, start) = dead_process();
    let hour_ago = now_ms() - 3_600_000;
    for kind in ["mkdir", "excl"] {
        // Another host (a shared NFS directory): never reclaimed on sight.
        let path = dir.path().join(format!("{kind}-remote"));
        plant(
            kind,
            &path,
            &record(pid, start, "some-other-host", hour_ago),
        );
        let lock = format!("{kind}:{}", path.display());
        assert_eq!(
            run(dir.path(), &["-n", &lock, "true"]).0,
            1,
            "{kind}: remote holder"
        );
        assert_eq!(
            run(dir.path(), &["-n", "--stale-after", "2h", &lock, "true"]).0,
            1
        );
        let (code, _, err) = run(dir.path(), &["-n", "--stale-after", "30m", &lock, "true"]);
        assert_eq!(code, 0, "{kind}: older than --stale-after: {err}");
        assert!(!path.exists());

        // No parseable record: owner unknown, and the file is left as it is.
        let path = dir.path().join(format!("{kind}-garbage"));
        plant(kind, &path, "not a record\n");
        let lock = format!("{kind}:{}", path.display());
        assert_eq!(run(dir.path(), &["-n", &lock, "true"]).0, 1);
        assert_eq!(
            run(dir.path(), &["-n", "--stale-after", "1h", &lock, "true"]).0,
            1,
            "just made"
        );
        let record_file = if kind == "mkdir" {
            path.join("lockwrap-holder")
        } else {
            path.clone()
        };
        assert_eq!(
            std::fs::read_to_string(&record_file).unwrap(),
            "not a record\n"
        );
    }
}

#[test]
fn a_record_from_another_boot_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rebooted");
    let text = record(1, 1, &hostname(), now_ms()).replace("boot_id=", "boot_id=0");
    plant("excl", &path, &text);
    let lock = format!("excl:{}", path.display());
    assert_eq!(run(dir.path(), &["-n", &lock, "true"]).0, 0);
}

#[test]
fn racing_reclaimers_never_both_win() {
    const RACERS: usize = 8;
    const ROUNDS: usize = 15;
    let dir = tempfile::tempdir().unwrap();
    let (pid, start) = dead_process();
    for round in 0..ROUNDS {
        for kind in ["mkdir", "excl"] {
            let path = dir.path().join(format!("{kind}-race{round}"));
            plant(kind, &path, &record(pid, start, &hostname(), now_ms()));
            let lock = format!("{kind}:{}", path.display());
            let winners = dir.path().join(format!("{kind}-winners{round}"));
            let release = dir.path().join(format!("{kind}-release{round}"));
            // A winner records itself and holds the lock until released, so a
            // second winner could only be a reclaim race.
            let script = format!(
                "echo $$ >> {}; while [ ! -e {} ]; do sleep 0.02; done",
                winners.display(),
                release.display()
            );
            let mut racers: Vec<Proc> = (0..RACERS)
                .map(|_| {
                    Proc(
                        lockwrap()
                            .args(["-n", &lock, "sh", "-c", &script])
                            .stderr(Stdio::null())
                            .process_group(0)
                            .spawn()
                            .unwrap(),
                    )
                })
                .collect();
            wait_until("all racers but the winner to give up", || {
                racers
                    .iter_mut()
                    .map(|r| r.0.try_wait().unwrap().is_some() as usize)
                    .sum::<usize>()
                    >= RACERS - 1
            });
            // `>>` creates the file before it writes the line.
            wait_until("the winner's line", || {
                std::fs::read_to_string(&winners).is_ok_and(|text| text.ends_with('\n'))
            });
            let lines = std::fs::read_to_string(&winners).unwrap();
            assert_eq!(
                lines.lines().count(),
                1,
                "{kind} round {round}: winners {lines:?}"
            );
            std::fs::write(&release, "").unwrap();
            let codes: Vec<i32> = racers.iter_mut().map(Proc::wait_code).collect();
            assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
            assert!(!path.exists(), "the winner released the lock");
        }
    }
}

#[test]
fn a_symlink_at_the_lock_path_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("precious");
    std::fs::write(&target, "keep me").unwrap();
    for kind in ["mkdir", "excl"] {
        let link = dir.path().join(format!("{kind}-link"));
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let lock = format!("{kind}:{}", link.display());
        let (code, _, err) = run(dir.path(), &["-n", &lock, "true"]);
        assert_eq!(code, 66, "{kind}: {err}");
        assert!(
            err.starts_with("lockwrap: ") && err.contains("symlink"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
