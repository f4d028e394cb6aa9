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
