//! `--status` and `--verbose` tell who holds a lock, for every backend.

mod common;

use std::fs;

use common::{ALL_BACKENDS, Sandbox};

#[test]
fn status_reports_free_then_the_holder_for_every_backend() {
    for backend in ALL_BACKENDS {
        let sb = Sandbox::new(&format!("status-{backend:?}"));
        let lock = backend.spec(&sb, "st");
        let out = sb.run(sb.lockwrap(["--status", &lock]));
        out.assert_code(0);
        assert_eq!(out.stdout, format!("{lock}: free\n"), "{out:?}");
        let out = sb.run(sb.lockwrap(["--status", "--json", &lock]));
        assert!(out.stdout.contains("\"held\":false"), "{out:?}");

        let mut holder = sb.hold(&[], &lock);
        let pid = holder.proc.pid();
        let out = sb.run(sb.lockwrap(["--status", &lock]));
        out.assert_code(1);
        assert!(
            out.stdout
                .starts_with(&format!("{lock}: exclusive, held by pid {pid}")),
            "{out:?}"
        );
        sb.run(sb.lockwrap(["--status", "-E", "7", &lock]))
            .assert_code(7);
        let json = sb.run(sb.lockwrap(["--status", "--json", &lock])).stdout;
        assert!(
            json.contains("\"held\":true") && json.contains("\"mode\":\"exclusive\""),
            "{json}"
        );
        assert!(json.contains(&format!("\"pid\":{pid}")), "{json}");
        assert!(json.contains("\"uid\":"), "{json}");

        // --verbose names the holder on a conflict, in one line.
        let out = sb.run(sb.lockwrap(["--verbose", "-n", &lock, "true"]));
        out.assert_error(1);
        assert!(
            out.stderr.contains("already locked: held by pid"),
            "{out:?}"
        );

        holder.release_and_finish().assert_code(0);
        let out = sb.run(sb.lockwrap(["--status", &lock]));
        out.assert_code(0);
        assert_eq!(out.stdout, format!("{lock}: free\n"), "{out:?}");
    }
}

#[test]
fn a_conflict_without_verbose_is_silent() {
    let sb = Sandbox::new("quiet");
    let lock = sb.locks.join("quiet").display().to_string();
    let mut holder = sb.hold(&[], &lock);
    let out = sb.run(sb.lockwrap(["-n", &lock, "true"]));
    assert_eq!(
        (out.code(), out.stdout.as_str(), out.stderr.as_str()),
        (1, "", "")
    );
    holder.release_and_finish().assert_code(0);
}

#[test]
fn status_of_a_shared_lock_says_shared_and_allows_shared() {
    let sb = Sandbox::new("shared");
    let lock = sb.locks.join("shared").display().to_string();
    let mut holder = sb.hold(&["-s"], &lock);
    let out = sb.run(sb.lockwrap(["--status", &lock]));
    out.assert_code(1);
    assert!(out.stdout.contains(": shared, held by pid"), "{out:?}");
    let out = sb.run(sb.lockwrap(["--status", "-s", &lock]));
    assert_eq!(
        out.code(),
        0,
        "a shared holder does not block another shared one: {out:?}"
    );
    holder.release_and_finish().assert_code(0);
}

#[test]
fn a_plain_mkdir_lock_is_held_with_owner_unknown() {
    let sb = Sandbox::new("plain-mkdir");
    let path = sb.locks.join("script.lock");
    fs::create_dir(&path).unwrap();
    let lock = format!("mkdir:{}", path.display());
    let out = sb.run(sb.lockwrap(["--status", &lock]));
    out.assert_code(1);
    assert_eq!(
        out.stdout,
        format!("{lock}: exclusive, held, owner unknown\n"),
        "{out:?}"
    );
    let json = sb.run(sb.lockwrap(["--status", "--json", &lock])).stdout;
    assert!(
        json.contains("\"held\":true") && json.contains("\"holders\":[]"),
        "{json}"
    );
    assert!(path.is_dir(), "--status left the lock directory alone");
}

#[test]
fn status_of_several_locks_exits_nonzero_if_any_is_held() {
    let sb = Sandbox::new("several");
    let free = sb.locks.join("free").display().to_string();
    let held = format!("excl:{}", sb.locks.join("held").display());
    let mut holder = sb.hold(&[], &held);
    let out = sb.run(sb.lockwrap(["--status", &free, &held]));
    out.assert_code(1);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert_eq!(lines[0], format!("{free}: free"), "{out:?}");
    assert!(
        lines[1].starts_with(&format!(
            "{held}: exclusive, held by pid {}",
            holder.proc.pid()
        )),
        "{out:?}"
    );
    holder.release_and_finish().assert_code(0);
}

#[test]
fn status_creates_nothing() {
    let sb = Sandbox::new("creates-nothing");
    let path = sb.locks.join("absent");
    for lock in [
        path.display().to_string(),
        format!("mkdir:{}", path.display()),
    ] {
        sb.run(sb.lockwrap(["--status", &lock])).assert_code(0);
        assert_eq!(
            sb.lock_dir_entries(),
            Vec::<String>::new(),
            "--status created {lock}"
        );
    }
}
