//! `lockwrap --check [DIR]`: does each lock mechanism exclude on DIR's
//! filesystem? Proven with real processes, reported as a table or JSON,
//! leaving nothing in DIR, also when interrupted.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::json::Json;
use common::{Output, Sandbox, WAIT, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const MECHANISMS: [&str; 5] = ["flock", "fcntl", "mkdir", "excl", "abstract"];

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `stat -f -c FORMAT DIR`: what coreutils says about DIR's filesystem.
fn stat_f(format: &str, dir: &Path) -> String {
    let out = Command::new("stat")
        .args(["-f", "-c", format])
        .arg(dir)
        .output()
        .expect("run stat -f");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs `lockwrap --check --json DIR` and checks what every report must
/// say: every mechanism works, the filesystem as `stat -f` sees it, the
/// network namespace of this process, and DIR as empty as before.
fn check_json(sb: &Sandbox, dir: &Path) -> Json {
    let before = entries(dir);
    let out = sb.run(sb.lockwrap(["--check".as_ref(), "--json".as_ref(), dir.as_os_str()]));
    out.assert_code(0);
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "one JSON object: {out:?}");
    let report = Json::parse(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(report.get("version").number(), 1.0);
    assert_eq!(
        Path::new(report.get("dir").str()),
        fs::canonicalize(dir).unwrap()
    );
    assert!(report.get("all_work").bool(), "{report:?}");
    let fs_info = report.get("filesystem");
    assert_eq!(
        fs_info.get("f_type").str(),
        format!("0x{}", stat_f("%t", dir)),
        "{report:?}"
    );
    let mechanisms = report.get("mechanisms").array();
    let names: Vec<&str> = mechanisms
        .iter()
        .map(|m| m.get("mechanism").str())
        .collect();
    assert_eq!(names, MECHANISMS);
    for mechanism in mechanisms {
        assert!(mechanism.get("works").bool(), "{mechanism:?}");
        assert!(mechanism.get("checked").bool(), "{mechanism:?}");
        assert!(!mechanism.get("detail").str().is_empty(), "{mechanism:?}");
    }
    let netns = fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(
        format!("net:[{}]", mechanisms[4].get("net_namespace").number()),
        netns.to_string_lossy(),
    );
    assert_eq!(entries(dir), before, "--check left something in {dir:?}");
    report
}

#[test]
fn every_mechanism_works_on_tmpfs() {
    if stat_f("%T", Path::new("/dev/shm")) != "tmpfs" {
        eprintln!("skipped: /dev/shm is not a tmpfs here");
        return;
    }
    let sb = Sandbox::new("check-tmpfs");
    let dir = tempfile::Builder::new()
        .prefix("lockwrap-check-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let report = check_json(&sb, dir.path());
    let fs_info = report.get("filesystem");
    assert_eq!(fs_info.get("f_type").str(), "0x1021994");
    assert_eq!(fs_info.get("statfs_name").str(), "tmpfs");
    assert_eq!(fs_info.get("type").str(), "tmpfs", "{report:?}");
}

/// On the repository's own filesystem (ext4 on the machines this was
/// written on; whatever it is, the report must agree with `stat -f`).
#[test]
fn every_mechanism_works_on_the_repositorys_filesystem() {
    let sb = Sandbox::new("check-repo-fs");
    let dir = tempfile::Builder::new()
        .prefix("check-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let report = check_json(&sb, dir.path());
    let fs_info = report.get("filesystem");
    if stat_f("%T", dir.path()) == "ext2/ext3" {
        assert_eq!(fs_info.get("statfs_name").str(), "ext2/ext3/ext4");
        assert!(
            ["ext2", "ext3", "ext4"].contains(&fs_info.get("type").str()),
            "{report:?}"
        );
    }
    assert!(!fs_info.get("source").str().is_empty(), "{report:?}");
    assert!(!fs_info.get("mount_point").str().is_empty(), "{report:?}");
}

/// Without DIR, the current directory; the table has a line per mechanism.
#[test]
fn the_table_checks_the_current_directory_by_default() {
    let sb = Sandbox::new("check-table");
    let mut command = sb.lockwrap(["--check"]);
    command.current_dir(&sb.locks);
    let out = sb.run(command);
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].contains(&*fs::canonicalize(&sb.locks).unwrap().to_string_lossy()),
        "{out:?}"
    );
    for mechanism in MECHANISMS {
        assert!(
            lines.iter().any(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.len() > 2 && words[0] == mechanism && words[1] == "yes"
            }),
            "no '{mechanism} yes ...' line: {out:?}"
        );
    }
    assert!(
        sb.lock_dir_entries().is_empty(),
        "{:?}",
        sb.lock_dir_entries()
    );
}

/// A DIR that cannot be used is one line naming it, with the code of the
/// cause: missing or not a directory 66, read-only 73, not writable 77.
#[test]
fn a_directory_that_cannot_be_used_is_one_line() {
    let sb = Sandbox::new("check-bad-dir");
    let missing = sb.work_path("missing");
    let file = sb.work_path("file");
    fs::write(&file, "").unwrap();
    for (dir, code) in [(&missing, 66), (&file, 66)] {
        let out = sb.run(sb.lockwrap(["--check".as_ref(), dir.as_os_str()]));
        out.assert_error(code);
        assert!(out.stderr.contains(&*dir.to_string_lossy()), "{out:?}");
    }
    sb.run(sb.lockwrap(["--check", "--json", "a", "b"]))
        .assert_error(64);
    sb.run(sb.lockwrap(["--json", "lk", "true"]))
        .assert_error(64);

    // Not writable: as root, checked as nobody.
    let closed = sb.work_path("closed");
    fs::create_dir(&closed).unwrap();
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o555)).unwrap();
    let mut command = if nix::unistd::geteuid().is_root() {
        fs::set_permissions(&sb.work, fs::Permissions::from_mode(0o777)).unwrap();
        let mut command = Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        command.arg(common::bin());
        command
    } else {
        Command::new(common::bin())
    };
    command.arg("--check").arg(&closed).current_dir(&sb.work);
    let out = sb.run(command);
    out.assert_error(77);
    assert!(out.stderr.contains(&*closed.to_string_lossy()), "{out:?}");
    assert!(entries(&closed).is_empty());

    // Read-only: a read-only tmpfs, where one can be mounted (root).
    let ro = sb.work_path("ro");
    fs::create_dir(&ro).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs"])
        .arg(&ro)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        let out = sb.run(sb.lockwrap(["--check".as_ref(), ro.as_os_str()]));
        let _ = Command::new("umount").arg("-l").arg(&ro).status();
        out.assert_error(73);
        assert!(out.stderr.contains(&*ro.to_string_lossy()), "{out:?}");
    } else {
        eprintln!("skipped the read-only case: cannot mount a tmpfs (needs root)");
    }
}

/// SIGTERM or SIGINT in the middle of the check: the holders are stopped,
/// the scratch locks removed, and lockwrap dies of the signal (or, if the
/// signal came after the last step, finishes). DIR is empty either way.
#[test]
fn an_interrupted_check_leaves_nothing_behind() {
    let sb = Sandbox::new("check-signal");
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut interrupted = false;
        for _ in 0..20 {
            let dir = sb.locks.join(format!("{signal}"));
            fs::create_dir_all(&dir).unwrap();
            let mut command = sb.lockwrap(["--check".as_ref(), dir.as_os_str()]);
            command.current_dir(&sb.work);
            let mut proc = sb.spawn(command, &sb.label("check"));
            // Caught as soon as the scratch directory appears, and frozen
            // there, so that the signal lands mid-check.
            let pid = Pid::from_raw(proc.pid());
            wait_until("the check to start", WAIT, || {
                !entries(&dir).is_empty() || !proc.is_running()
            });
            if kill(pid, Signal::SIGSTOP).is_err() || !proc.is_running() {
                let _ = kill(pid, Signal::SIGCONT);
                proc.finish().assert_code(0);
                continue;
            }
            kill(pid, signal).unwrap();
            kill(pid, Signal::SIGCONT).unwrap();
            let out: Output = proc.finish();
            assert!(entries(&dir).is_empty(), "{signal}: {:?}", entries(&dir));
            assert_ne!(out.status.code(), Some(101), "{out:?}");
            if out.status.signal() == Some(signal as i32) {
                interrupted = true;
                break;
            }
            out.assert_code(0);
        }
        assert!(interrupted, "{signal} never landed mid-check in 20 tries");
        assert_no_holder_left();
    }
}

/// No `lockwrap --check` holder process is left.
fn assert_no_holder_left() {
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let ours = words.first().is_some_and(|w| w.ends_with(b"lockwrap"))
            && words.iter().any(|w| w.starts_with(b"--check-holder"))
            && words
                .iter()
                .any(|w| w.windows(15).any(|s| s == b"check-signal"));
        assert!(!ours, "a holder is left: {:?}", entry.path());
    }
}

/// Where flock(2) does not exclude, --check says so: the C library's flock
/// is replaced (LD_PRELOAD) by one that always succeeds, as on a network
/// filesystem that grants every lock locally. The flock row is "no" and
/// lockwrap exits 65.
#[test]
fn a_flock_that_does_not_exclude_is_reported() {
    let sb = Sandbox::new("check-broken-flock");
    let source = sb.work_path("fakeflock.c");
    let library: PathBuf = sb.work_path("fakeflock.so");
    fs::write(&source, "int flock(int fd, int operation) { return 0; }\n").unwrap();
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !built {
        eprintln!("skipped: no C compiler to build the LD_PRELOAD library");
        return;
    }
    let dir = sb.locks.join("fs");
    fs::create_dir(&dir).unwrap();
    let mut command = sb.lockwrap(["--check".as_ref(), "--json".as_ref(), dir.as_os_str()]);
    command.env("LD_PRELOAD", &library);
    let out = sb.run(command);
    out.assert_code(65);
    let report = Json::parse(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert!(!report.get("all_work").bool());
    let flock = &report.get("mechanisms").array()[0];
    assert_eq!(flock.get("mechanism").str(), "flock");
    assert!(!flock.get("works").bool(), "{report:?}");
    let fcntl = &report.get("mechanisms").array()[1];
    assert!(fcntl.get("works").bool(), "{report:?}");
    assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
}

/// A report that cannot be written is one line on stderr with the code of
/// the cause (a full device 73, a reader gone 71), not a silent 71.
#[test]
fn a_report_that_cannot_be_written_is_one_line() {
    let sb = Sandbox::new("check-stdout-full");
    let dir = sb.locks.join("fs");
    fs::create_dir(&dir).unwrap();
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    let (reader, closed_pipe) = nix::unistd::pipe().unwrap();
    drop(reader);
    for (json, stdout, code) in [
        (false, Stdio::from(full.try_clone().unwrap()), 73),
        (true, Stdio::from(full), 73),
        (false, Stdio::from(closed_pipe), 71),
    ] {
        let mut command = sb.lockwrap(["--check"]);
        if json {
            command.arg("--json");
        }
        command.arg(&dir).stdout(stdout);
        let out = command.output().expect("run lockwrap");
        assert_eq!(out.status.code(), Some(code), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
        assert!(
            stderr.contains("--check") && stderr.contains("report"),
            "{stderr:?}"
        );
        assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
    }
}

/// A directory in which no directory can be created although it exists
/// (/proc answers ENOENT, /sys EPERM even to root) is 73 with a line that
/// does not claim it is missing, nor that another user would do better.
#[test]
fn a_pseudo_filesystem_is_not_called_missing() {
    let sb = Sandbox::new("check-proc");
    for dir in ["/proc", "/sys"] {
        if !Path::new(dir).is_dir() {
            continue;
        }
        if dir == "/sys" && !nix::unistd::geteuid().is_root() {
            // mkdir there fails with EACCES before EPERM for anyone but
            // root: "not writable by this user" (77), which is true.
            eprintln!("skipped /sys: needs root (other users get EACCES there)");
            continue;
        }
        let out = sb.run(sb.lockwrap(["--check", dir]));
        out.assert_error(73);
        assert!(out.stderr.contains(dir), "{out:?}");
        assert!(!out.stderr.contains("does not exist"), "{out:?}");
        assert!(!out.stderr.contains("as the user"), "{out:?}");
    }
}

/// A full filesystem on which the scratch directory can still be made (a
/// tmpfs, where directories take no space) but no lock record can be
/// written: the table says why each such mechanism could not be checked,
/// and lockwrap exits 73 (full) rather than 65, which would claim that
/// locking does not work there. Nothing is left behind.
#[test]
fn a_full_filesystem_is_73_not_65() {
    let sb = Sandbox::new("check-full");
    let dir = sb.work_path("full");
    fs::create_dir(&dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs (needs root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&dir);
    {
        use std::io::Write as _;
        let mut filler = fs::File::create(dir.join("filler")).unwrap();
        while filler.write_all(&[b'x'; 4096]).is_ok() {}
    }
    let out = sb.run(sb.lockwrap(["--check".as_ref(), "--json".as_ref(), dir.as_os_str()]));
    out.assert_code(73);
    let report = Json::parse(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert!(!report.get("all_work").bool(), "{report:?}");
    let mkdir = &report.get("mechanisms").array()[2];
    assert_eq!(mkdir.get("mechanism").str(), "mkdir");
    assert!(!mkdir.get("works").bool(), "{report:?}");
    assert!(!mkdir.get("checked").bool(), "{report:?}");
    assert!(mkdir.get("detail").str().contains("no space"), "{report:?}");
    assert_eq!(entries(&dir), ["filler"]);
}
