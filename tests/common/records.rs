//! Holder records as lockwrap writes them, and the processes they name:
//! for planting a record of a live, dead, remote or forged holder at a
//! mkdir/excl lock path.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::process::Command;

use super::{Backend, Proc, Sandbox};

/// The two backends whose lock is an artifact that carries a record.
pub const ARTIFACTS: [Backend; 2] = [Backend::Mkdir, Backend::Excl];

/// Field 22 of /proc/PID/stat: the start time lockwrap records.
pub fn start_time(pid: i32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

/// A holder record as lockwrap writes it, for this process's uid.
pub fn record(pid: i32, start_time: u64, host: &str, acquired_ms: u64) -> String {
    record_of_uid(
        pid,
        start_time,
        host,
        acquired_ms,
        nix::unistd::getuid().as_raw(),
    )
}

/// A holder record as lockwrap writes it, claiming uid `uid`.
pub fn record_of_uid(pid: i32, start_time: u64, host: &str, acquired_ms: u64, uid: u32) -> String {
    let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let pid_ns = fs::metadata("/proc/self/ns/pid").unwrap().ino();
    format!(
        "lockwrap-holder 1\npid={pid}\nstart_time={start_time}\nboot_id={}\nhost={host}\npid_ns={pid_ns}\nuid={uid}\nacquired_ms={acquired_ms}\ncommand=test holder\n",
        boot_id.trim(),
    )
}

/// This machine's host name.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A `sleep 30` that runs until killed (and is killed and reaped on drop).
pub fn live_process(sb: &Sandbox) -> Proc {
    let mut command = Command::new("sleep");
    command.arg("30");
    sb.spawn(command, &sb.label("live"))
}

/// A process that ran and is gone (reaped): (pid, start time).
pub fn dead_process(sb: &Sandbox) -> (i32, u64) {
    let mut proc = live_process(sb);
    let pid = proc.pid();
    let start = start_time(pid);
    proc.kill_and_reap();
    (pid, start)
}

/// Plants `record` as the artifact of a `backend` lock called `name`;
/// returns the lock spec.
pub fn plant(sb: &Sandbox, backend: Backend, name: &str, record: &str) -> String {
    if backend == Backend::Mkdir {
        fs::create_dir(sb.locks.join(name)).unwrap();
    }
    let record_file = backend
        .record_path(sb, name)
        .expect("a backend with an artifact");
    fs::write(record_file, record).unwrap();
    backend.spec(sb, name)
}
