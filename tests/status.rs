//! `--status` and `--verbose` tell who holds a lock, for every backend.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use common::json::Json;

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

/// Bidirectional controls (U+202E RIGHT-TO-LEFT OVERRIDE, isolates) and
/// line separators in a holder's command are escaped too: a terminal that
/// honours them would show the rest of the line reordered (the "Trojan
/// Source" trick), so a holder could disguise what it runs, or the lock's
/// name and the text after it, in `--status` and in the waiting line.
#[test]
fn status_text_escapes_bidi_controls_in_the_command() {
    let sb = Sandbox::new("status-bidi");
    let lock = Backend::Flock.spec(&sb, "bidi");
    let mut holder = sb.hold_after(&[], &lock, ": 'safe\u{202e}hs.mr\u{2066}x\u{2028}y'");
    let out = sb.run(sb.lockwrap(["--status", &lock]));
    out.assert_code(1);
    for c in ['\u{202e}', '\u{2066}', '\u{2028}'] {
        assert!(
            !out.stdout.contains(c),
            "--status printed {c:?} raw: {:?}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("safe\\u{202e}hs.mr"),
        "{:?}",
        out.stdout
    );
    holder.release_and_finish().assert_code(0);
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

/// The keys of the `--status --json` objects as README's field table
/// documents them: `holders[].pid` is `pid` under `holders`.
fn documented_json_fields() -> BTreeMap<String, BTreeSet<String>> {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme
        .split("#### `--status --json`")
        .nth(1)
        .expect("README has a --status --json section");
    let mut fields: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in table.lines().skip_while(|l| !l.starts_with('|')) {
        let Some(row) = line.strip_prefix("| `") else {
            if line.starts_with('|') {
                continue;
            }
            break;
        };
        let name = row.split('`').next().unwrap();
        let (parent, key) = match name.rsplit_once('.') {
            Some((parent, key)) => (parent.trim_end_matches("[]").to_owned(), key),
            None => (String::new(), name),
        };
        fields.entry(parent).or_default().insert(key.to_owned());
    }
    fields
}

/// The keys `value` has, by where they sit (as [`documented_json_fields`]).
fn json_fields(value: &Json, at: &str, out: &mut BTreeMap<String, BTreeSet<String>>) {
    match value {
        Json::Object(map) => {
            for (key, member) in map {
                out.entry(at.to_owned()).or_default().insert(key.clone());
                let inner = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                json_fields(member, &inner, out);
            }
        }
        Json::Array(items) => items.iter().for_each(|item| json_fields(item, at, out)),
        _ => {}
    }
}

#[test]
fn status_json_has_exactly_the_documented_fields_for_every_backend() {
    let documented = documented_json_fields();
    let mut all_seen = BTreeMap::new();
    for (backend, args) in ALL_BACKENDS
        .iter()
        .map(|b| (*b, &[][..]))
        .chain([(Backend::Fcntl, &["--start", "10", "--length", "5"][..])])
    {
        let sb = Sandbox::new(&format!("json-fields-{backend:?}"));
        let lock = backend.spec(&sb, "jf");
        let mut holder = sb.hold(args, &lock);
        let mut waiter_args = args.to_vec();
        waiter_args.extend(["-w", "60", &lock, "true"]);
        let mut waiter = sb.spawn(sb.lockwrap(&waiter_args), "waiter");
        let mut status = vec!["--status", "--json"];
        status.extend(args);
        status.push(&lock);
        let mut json = Json::Null;
        wait_until("the waiter to be listed", WAIT, || {
            let out = sb.run(sb.lockwrap(&status));
            json = Json::parse(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
            !json.get("waiters").array().is_empty()
        });
        let mut seen = BTreeMap::new();
        json_fields(&json, "", &mut seen);
        for (at, keys) in &seen {
            assert_eq!(
                Some(keys),
                documented.get(at),
                "{backend:?} {args:?} at {at:?}: {json:?}"
            );
        }
        all_seen.extend(seen);
        assert_eq!(json.get("schema").number(), 1.0);
        holder.release_and_finish().assert_code(0);
        waiter.finish().assert_code(0);
    }
    // Every documented object was seen (range only for fcntl).
    assert_eq!(
        all_seen.keys().collect::<Vec<_>>(),
        documented.keys().collect::<Vec<_>>()
    );
}

#[test]
fn status_lists_a_kernel_lock_wrapper_and_its_command_as_one_holder() {
    for backend in [Backend::Flock, Backend::Fcntl] {
        let sb = Sandbox::new(&format!("one-holder-{backend:?}"));
        let lock = backend.spec(&sb, "one");
        // The command's tree: a background process that inherits the lock
        // too, and stays a holder of its own (it is not the wrapper's child).
        let bg = sb.work_path("bg.pid");
        let setup = format!("sleep 300 & echo $! > '{}'", bg.display());
        let mut holder = sb.hold_after(&[], &lock, &setup);
        let wrapper = holder.proc.pid();
        let child = holder.child_pid;
        let grandchild = common::wait_for_pid_file(&bg);
        let out = sb.run(sb.lockwrap(["--status", "--json", &lock]));
        out.assert_code(1);
        let json = Json::parse(&out.stdout).unwrap();
        let holders = json.get("holders").array();
        assert_eq!(holders.len(), 2, "{backend:?}: {json:?}");
        let first = &holders[0];
        assert_eq!(first.get("pid").number(), f64::from(wrapper), "{json:?}");
        assert_eq!(
            first.get("child_pid").number(),
            f64::from(child),
            "{json:?}"
        );
        assert!(first.get("command").str().contains("sh -c"), "{json:?}");
        assert_eq!(holders[1].get("pid").number(), f64::from(grandchild));
        assert_eq!(holders[1].get("child_pid"), &Json::Null, "{json:?}");
        let text = sb.run(sb.lockwrap(["--status", &lock])).stdout;
        assert!(
            text.starts_with(&format!(
                "{lock}: exclusive, held by pid {wrapper} (child {child}) ("
            )),
            "{text}"
        );
        assert!(!text.contains(&format!("pid {child} (")), "{text}");
        holder.release_and_finish().assert_code(0);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(grandchild),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
