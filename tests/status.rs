//! `--status` and `--verbose` tell who holds a lock, for every backend.

mod common;

use std::fs;

use common::records::{ARTIFACTS, dead_process, hostname, now_ms, plant, record};
use common::{ALL_BACKENDS, Backend, Sandbox, WAIT, wait_until};

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

/// Issue 10 (3): `--status` exits exactly as `-n` would. A provably dead
/// mkdir/excl holder is "stale" and exit 0 (the next wrapper reclaims it).
#[test]
fn status_reports_a_dead_holder_as_stale_and_exits_as_nonblocking_would() {
    let sb = Sandbox::new("status-stale");
    let (pid, start) = dead_process(&sb);
    for backend in ARTIFACTS {
        let name = format!("{backend:?}-dead");
        let lock = plant(
            &sb,
            backend,
            &name,
            &record(pid, start, &hostname(), now_ms()),
        );
        let status = sb.run(sb.lockwrap(["--status", &lock]));
        let probe = sb.run(sb.lockwrap(["-n", &lock, "true"]));
        probe.assert_code(0);
        assert_eq!(
            status.status.code(),
            Some(0),
            "{lock}: -n reclaims it, so --status must exit 0: {status:?}"
        );
        assert!(
            status.stdout.starts_with(&format!("{lock}: ")) && status.stdout.contains("stale"),
            "{lock}: a provably dead holder is reported as stale: {status:?}"
        );
    }
}

/// Issue 10 (3): a lock in a directory that does not exist cannot be taken
/// (-n exits 66), so --status exits 66 too, with one line.
#[test]
fn status_of_a_lock_in_a_missing_directory_exits_66_as_nonblocking_would() {
    let sb = Sandbox::new("status-missing");
    for backend in [
        Backend::Flock,
        Backend::Fcntl,
        Backend::Mkdir,
        Backend::Excl,
    ] {
        let lock = backend.spec(&sb, "no-such-dir/lk");
        sb.run(sb.lockwrap(["-n", &lock, "true"])).assert_error(66);
        let out = sb.run(sb.lockwrap(["--status", &lock]));
        out.assert_error(66);
        assert!(out.stdout.is_empty(), "{lock}: {out:?}");
    }
    assert_eq!(sb.lock_dir_entries(), Vec::<String>::new());
}

/// Issue 10 (3): the text output escapes control characters in a holder's
/// command: a terminal must not interpret what a holder chose to run.
#[test]
fn status_text_escapes_control_characters_in_the_command() {
    for backend in ALL_BACKENDS {
        let sb = Sandbox::new(&format!("status-escape-{backend:?}"));
        let lock = backend.spec(&sb, "esc");
        let mut holder = sb.hold_after(&[], &lock, ": '\x1b[31mred\x07'");
        let pid = holder.proc.pid();
        let mut out = sb.run(sb.lockwrap(["--status", &lock]));
        // mkdir/excl: the command is in the record once the wrapper wrote it.
        wait_until("--status to name the command", WAIT, || {
            out = sb.run(sb.lockwrap(["--status", &lock]));
            out.stdout.contains("red")
        });
        out.assert_code(1);
        assert!(
            out.stdout.contains(&format!("held by pid {pid}")),
            "{out:?}"
        );
        let text = out.stdout.strip_suffix('\n').unwrap_or(&out.stdout);
        assert!(
            !text.chars().any(char::is_control),
            "{backend:?}: --status printed a control character raw: {:?}",
            out.stdout
        );
        holder.release_and_finish().assert_code(0);
    }
}

/// Issue 10 (4): a record with a 20 kB command is read: --status names a
/// live holder instead of "owner unknown".
#[test]
fn status_names_a_holder_with_a_20_kb_command() {
    for backend in ARTIFACTS {
        let sb = Sandbox::new(&format!("status-long-{backend:?}"));
        let lock = backend.spec(&sb, "long");
        let long = format!(": {}", "x".repeat(20_000));
        let mut holder = sb.hold_after(&[], &lock, &long);
        let record_file = backend.record_path(&sb, "long").unwrap();
        let wanted = format!("child_pid={}\n", holder.child_pid);
        wait_until("the record to name the command", WAIT, || {
            fs::read_to_string(&record_file).is_ok_and(|r| r.contains(&wanted))
        });
        let out = sb.run(sb.lockwrap(["--status", &lock]));
        out.assert_code(1);
        assert!(
            out.stdout.starts_with(&format!(
                "{lock}: exclusive, held by pid {} (child {})",
                holder.proc.pid(),
                holder.child_pid
            )),
            "{backend:?}: a 20 kB record is unreadable: {:?}",
            &out.stdout[..out.stdout.len().min(300)]
        );
        holder.release_and_finish().assert_code(0);
    }
}

#[test]
fn status_of_a_byte_range_shows_it_and_the_holders_of_overlapping_bytes() {
    let sb = Sandbox::new("range-status");
    let path = sb.locks.join("lk").display().to_string();
    let mut holder = sb.hold(&["--start", "100", "--length", "10"], &path);
    let pid = holder.proc.pid();
    let out = sb.run(sb.lockwrap(["--status", "--start", "105", "--length", "1", &path]));
    out.assert_code(1);
    assert!(
        out.stdout.starts_with(&format!(
            "fcntl:{path} (bytes 105-105): exclusive, held by pid {pid}"
        )),
        "{out:?}"
    );
    let json = sb.run(sb.lockwrap([
        "--status", "--json", "--start", "105", "--length", "1", &path,
    ]));
    json.assert_code(1);
    assert!(
        json.stdout
            .contains("\"range\":{\"start\":105,\"length\":1}")
            && json.stdout.contains("\"held\":true")
            && json.stdout.contains(&format!("\"pid\":{pid}")),
        "{json:?}"
    );
    // Beside the held bytes: free.
    let out = sb.run(sb.lockwrap(["--status", "--start", "110", &path]));
    out.assert_code(0);
    assert_eq!(out.stdout, format!("fcntl:{path} (bytes 110-EOF): free\n"));
    // The whole file overlaps; a flock(2) lock is another lock.
    let fcntl = format!("fcntl:{path}");
    let out = sb.run(sb.lockwrap(["--status", &fcntl]));
    out.assert_code(1);
    assert!(
        out.stdout
            .starts_with(&format!("{fcntl}: exclusive, held by pid {pid}")),
        "{out:?}"
    );
    let json = sb.run(sb.lockwrap(["--status", "--json", &fcntl])).stdout;
    assert!(
        json.contains("\"range\":{\"start\":0,\"length\":0}"),
        "{json}"
    );
    let json = sb.run(sb.lockwrap(["--status", "--json", &path]));
    json.assert_code(0);
    assert!(json.stdout.contains("\"range\":null"), "{json:?}");
    holder.release_and_finish().assert_code(0);
}
