//! `--status` and `--verbose` tell who holds a lock, for every backend.

mod support;

use support::*;

#[test]
fn status_reports_free_then_the_holder_for_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    for (i, lock) in all_specs(dir.path(), "st").iter().enumerate() {
        let (code, out, err) = run(dir.path(), &["--status", lock]);
        assert_eq!(
            (code, out.trim()),
            (0, format!("{lock}: free").as_str()),
            "{err}"
        );
        let (_, json, _) = run(dir.path(), &["--status", "--json", lock]);
        assert!(json.contains("\"held\":false"), "{json}");

        let ready = format!("ready{i}");
        let release = format!("release{i}");
        let mut holder = hold(dir.path(), &[], lock, &ready, &release);
        let (code, out, _) = run(dir.path(), &["--status", lock]);
        assert_eq!(code, 1, "{lock}: {out}");
        assert!(
            out.starts_with(&format!("{lock}: exclusive, held by pid {}", holder.pid())),
            "{out}"
        );
        let (code, _, _) = run(dir.path(), &["--status", "-E", "7", lock]);
        assert_eq!(code, 7);
        let (_, json, _) = run(dir.path(), &["--status", "--json", lock]);
        assert!(
            json.contains("\"held\":true") && json.contains("\"mode\":\"exclusive\""),
            "{json}"
        );
        assert!(
            json.contains(&format!("\"pid\":{}", holder.pid())),
            "{json}"
        );
        assert!(json.contains("\"uid\":"), "{json}");

        // --verbose names the holder on a conflict.
        let (code, _, err) = run(dir.path(), &["--verbose", "-n", lock, "true"]);
        assert_eq!(code, 1);
        assert!(err.contains("already locked: held by pid"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");

        std::fs::write(dir.path().join(&release), "").unwrap();
        assert_eq!(holder.wait_code(), 0);
        let (code, out, _) = run(dir.path(), &["--status", lock]);
        assert_eq!((code, out.trim()), (0, format!("{lock}: free").as_str()));
    }
}

#[test]
fn a_conflict_without_verbose_is_silent() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("quiet").display().to_string();
    let _holder = hold(dir.path(), &[], &lock, "ready", "release");
    let (code, out, err) = run(dir.path(), &["-n", &lock, "true"]);
    assert_eq!((code, out.as_str(), err.as_str()), (1, "", ""));
    std::fs::write(dir.path().join("release"), "").unwrap();
}

#[test]
fn status_of_a_shared_lock_says_shared_and_allows_shared() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("shared").display().to_string();
    let _holder = hold(dir.path(), &["-s"], &lock, "ready", "release");
    let (code, out, _) = run(dir.path(), &["--status", &lock]);
    assert_eq!(code, 1);
    assert!(out.contains(": shared, held by pid"), "{out}");
    let (code, _, _) = run(dir.path(), &["--status", "-s", &lock]);
    assert_eq!(code, 0, "a shared holder does not block another shared one");
    std::fs::write(dir.path().join("release"), "").unwrap();
}

#[test]
fn a_plain_mkdir_lock_is_held_with_owner_unknown() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("script.lock")).unwrap();
    let lock = format!("mkdir:{}", dir.path().join("script.lock").display());
    let (code, out, _) = run(dir.path(), &["--status", &lock]);
    assert_eq!(
        (code, out.trim()),
        (
            1,
            format!("{lock}: exclusive, held, owner unknown").as_str()
        )
    );
    let (_, json, _) = run(dir.path(), &["--status", "--json", &lock]);
    assert!(
        json.contains("\"held\":true") && json.contains("\"holders\":[]"),
        "{json}"
    );
}

#[test]
fn status_of_several_locks_exits_nonzero_if_any_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let free = dir.path().join("free").display().to_string();
    let held = format!("excl:{}", dir.path().join("held").display());
    let _holder = hold(dir.path(), &[], &held, "ready", "release");
    let (code, out, _) = run(dir.path(), &["--status", &free, &held]);
    assert_eq!(code, 1);
    assert_eq!(out.lines().count(), 2, "{out}");
    std::fs::write(dir.path().join("release"), "").unwrap();
}

#[test]
fn status_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent");
    for lock in [
        path.display().to_string(),
        format!("mkdir:{}", path.display()),
    ] {
        let (code, _, _) = run(dir.path(), &["--status", &lock]);
        assert_eq!(code, 0);
        assert!(!path.exists(), "--status created {lock}");
    }
}
