//! Lock artifacts get restrictive modes, and holders of another uid are
//! reported as such (abstract names have no permissions).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use common::{Backend, Sandbox};

#[test]
fn artifacts_are_created_with_restrictive_modes_honouring_the_umask() {
    for (umask, file_mode, dir_mode) in [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)] {
        let sb = Sandbox::new("modes");
        for backend in [Backend::Flock, Backend::Mkdir, Backend::Excl] {
            let name = format!("{backend:?}-{umask:o}");
            let spec = backend.spec(&sb, &name);
            let path = sb.locks.join(&name);
            let probe = sb.work_path(&format!("{backend:?}-{umask:o}.mode"));
            // The command reports the artifact's mode while the lock is held.
            let script = format!("stat -c %a '{}' > '{}'", path.display(), probe.display());
            let mut command = sb.lockwrap([spec.as_str(), "sh", "-c", &script]);
            // SAFETY: umask is async-signal-safe and only changes the child's mask.
            unsafe {
                command.pre_exec(move || {
                    libc::umask(umask);
                    Ok(())
                });
            }
            sb.run(command).assert_code(0);
            let mode =
                u32::from_str_radix(std::fs::read_to_string(&probe).unwrap().trim(), 8).unwrap();
            let expected = if backend == Backend::Mkdir {
                dir_mode
            } else {
                file_mode
            };
            assert_eq!(mode, expected, "{backend:?} under umask {umask:o}");
        }
        let kept = std::fs::metadata(sb.locks.join(format!("Flock-{umask:o}"))).unwrap();
        assert_eq!(
            kept.permissions().mode() & 0o777,
            file_mode,
            "the flock file stays"
        );
    }
}

#[test]
fn a_holder_of_another_uid_is_reported_with_its_uid() {
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    if !setpriv.exists() || !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root and setpriv to run a holder as another user");
        return;
    }
    let sb = Sandbox::new("other-uid");
    let spec = Backend::Abstract.spec(&sb, "lk");
    let ready = sb.work_path("ready");
    // The holder runs as nobody; the work dir must let it write its ready file.
    std::fs::set_permissions(&sb.work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = format!("touch '{}'; exec sleep 30", ready.display());
    let mut command = Command::new(setpriv);
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(common::bin())
        .args([spec.as_str(), "sh", "-c", &script])
        .current_dir(&sb.work);
    let _holder = sb.spawn(command, "holder");
    common::wait_for_file(&ready, common::WAIT);
    let out = sb.run(sb.lockwrap(["--status", &spec]));
    out.assert_code(1);
    assert!(out.stdout.contains("of uid 65534"), "{}", out.stdout);
    let out = sb.run(sb.lockwrap(["--status", "--json", &spec]));
    assert!(out.stdout.contains("\"uid\":65534"), "{}", out.stdout);
}

/// Issue 10 (8): a password never appears in a message: not for an
/// unreachable server, not in --status, not in a usage error, wherever the
/// password came from (the URL, its query, PGPASSWORD, REDISCLI_AUTH).
#[cfg(all(feature = "redis", feature = "postgres"))]
#[test]
fn passwords_never_appear_in_messages() {
    const SECRET: &str = "s3cr3t-pa55";
    let sb = Sandbox::new("secrets");
    let redis = format!("redis://:{SECRET}@127.0.0.1:1");
    let pg = format!("postgres://u:{SECRET}@127.0.0.1:1/db");
    // The arguments, an environment variable to set, the exit code.
    type Case = (Vec<String>, Option<(&'static str, &'static str)>, i32);
    let cases: Vec<Case> = vec![
        (vec![format!("{redis}#x"), "true".into()], None, 75),
        (vec!["--status".into(), format!("{redis}#x")], None, 75),
        (
            vec![
                "--slots".into(),
                "0".into(),
                format!("{redis}#x"),
                "true".into(),
            ],
            None,
            64,
        ),
        (vec![format!("{redis}#x")], None, 64),
        (vec![redis.clone(), "true".into()], None, 64),
        (vec![format!("{pg}#x"), "true".into()], None, 75),
        (vec!["--status".into(), format!("{pg}#x")], None, 75),
        (vec![pg.clone(), "true".into()], None, 64),
        (vec![format!("{pg}#x")], None, 64),
        (
            vec![
                format!("postgres://u@127.0.0.1:1/db?password={SECRET}#x"),
                "true".into(),
            ],
            None,
            75,
        ),
        (
            vec!["postgres://u@127.0.0.1:1/db#x".into(), "true".into()],
            Some(("PGPASSWORD", SECRET)),
            75,
        ),
        (
            vec!["redis://127.0.0.1:1#x".into(), "true".into()],
            Some(("REDISCLI_AUTH", SECRET)),
            75,
        ),
    ];
    for (args, env, code) in cases {
        let mut command = sb.lockwrap(&args);
        if let Some((name, value)) = env {
            command.env(name, value);
        }
        let out = sb.run(command);
        out.assert_error(code);
        assert!(
            !out.stderr.contains(SECRET) && !out.stdout.contains(SECRET),
            "{args:?} {env:?}: the password was printed: {out:?}"
        );
    }
}

/// Issue 10 (8): redaction goes by the URL's structure, not by searching
/// for the password's text: a password that also occurs elsewhere (a
/// common letter, the host, the lock name) hides only the password field,
/// and the rest of the message stays readable.
#[cfg(all(feature = "redis", feature = "postgres"))]
#[test]
fn passwords_are_redacted_by_structure_not_by_substring() {
    let sb = Sandbox::new("structure");
    let cases = [
        (
            "postgres://postgres:e@127.0.0.1:1/postgres#e",
            "postgres://postgres:***@127.0.0.1:1/postgres#e: cannot connect to the PostgreSQL server",
        ),
        (
            "redis://:e@127.0.0.1:1#e",
            "redis://:***@127.0.0.1:1#e: cannot connect to the Redis server",
        ),
        (
            "redis://:127.0.0.1@127.0.0.1:1#x",
            "redis://:***@127.0.0.1:1#x: cannot connect",
        ),
        (
            "redis://:s3cr3t-pa55@127.0.0.1:1#s3cr3t-pa55",
            "redis://:***@127.0.0.1:1#s3cr3t-pa55: cannot connect",
        ),
    ];
    for (lock, shown) in cases {
        let out = sb.run(sb.lockwrap([lock, "true"]));
        out.assert_error(75);
        assert!(
            out.stderr.starts_with(&format!("lockwrap: {shown}")),
            "{lock}: want 'lockwrap: {shown}...': {out:?}"
        );
        assert_eq!(
            out.stderr.matches("***").count(),
            1,
            "{lock}: only the password field is masked: {out:?}"
        );
    }
}

/// Started with stdin and stdout closed, lockwrap opens them on /dev/null
/// before anything else, so the lock file never takes fd 0 or 1 (where
/// --verbose lines, or a command's writes to its inherited stdout, would
/// land in it).
#[test]
fn closed_standard_fds_are_opened_on_dev_null_not_reused_for_the_lock() {
    let sb = Sandbox::new("closed-stdio");
    let spec = Backend::Flock.spec(&sb, "stdio");
    let out = Command::new("sh")
        .args(["-c", r#"exec "$@" <&- >&-"#, "sh"])
        .arg(common::bin())
        .args([
            "--verbose",
            spec.as_str(),
            "sh",
            "-c",
            "readlink /proc/$PPID/fd/0 /proc/$PPID/fd/1 >&2",
        ])
        .output()
        .expect("run sh");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr, "/dev/null\n/dev/null\n", "{out:?}");
    let lock = std::fs::read(sb.locks.join("stdio")).expect("lock file");
    assert!(lock.is_empty(), "the lock file got {lock:?}");
}
