//! Several locks taken as one (`--also`): the canonical order in which every
//! wrapper takes them, the refusal of a lock named twice, and [`HeldSet`],
//! which holds them all and answers for them as one [`Held`].
//!
//! Deadlock freedom rests on the order alone: every wrapper takes the locks
//! of its set in ascending [`order key`](LockSet::members), keeping those it
//! has while it waits for the next, so no two wrappers can each hold what
//! the other waits for. The key therefore depends only on which lock a spec
//! names, never on how it was written or in which order the locks were
//! given. This module knows nothing of any backend: it orders specs and
//! delegates to the locks it holds.

use std::ffi::OsString;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::backend::Held;
use crate::error::Error;
use crate::spec::{LockSpec, RemoteLock, redact_url};

/// One lock of a set.
#[derive(Debug, Clone)]
pub struct Member {
    /// The lock.
    pub spec: LockSpec,
    /// The lock exactly as given, for `LOCKWRAP_LOCKS`.
    pub text: OsString,
    /// Where it was given: 0 for LOCK, then the `--also` locks in turn.
    pub given: usize,
    key: OrderKey,
}

/// What orders the locks of a set: the kind's name, then where the lock
/// lives (see [`place`]). Compared as bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct OrderKey {
    kind: &'static str,
    place: Vec<u8>,
}

/// LOCK and its `--also` locks, in the order they are taken.
#[derive(Debug, Clone)]
pub struct LockSet {
    members: Vec<Member>,
}

impl LockSet {
    /// The set of `first` (LOCK) and `also`, each with its text as given.
    /// Refuses (usage error) a lock named twice, however it was spelt: the
    /// second attempt on a lock this process already holds would wait for
    /// itself (mkdir, excl, abstract, and flock on a second open file).
    pub fn new(
        first: (LockSpec, OsString),
        also: &[(LockSpec, OsString)],
    ) -> Result<LockSet, Error> {
        let mut members: Vec<Member> = std::iter::once(first)
            .chain(also.iter().cloned())
            .enumerate()
            .map(|(given, (spec, text))| Member {
                key: order_key(&spec),
                spec,
                text,
                given,
            })
            .collect();
        for (i, one) in members.iter().enumerate() {
            if let Some(other) = members[..i].iter().find(|other| same_lock(other, one)) {
                return Err(Error::Usage(format!(
                    "{}: named twice (also as {}); give each lock once",
                    one.spec, other.spec
                )));
            }
        }
        members.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LockSet { members })
    }

    /// The locks in the order they are taken: ascending by kind name
    /// (abstract, excl, fcntl, flock, mkdir, postgres, redis), then by
    /// place: the absolute path with symlinks resolved, the abstract name,
    /// or the server URL (without its password) and lock name.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The set for messages: `LOCK --also LOCK2 ...`, as given.
    pub fn describe(&self) -> String {
        let mut given: Vec<&Member> = self.members.iter().collect();
        given.sort_by_key(|m| m.given);
        let names: Vec<String> = given.iter().map(|m| m.spec.to_string()).collect();
        names.join(" --also ")
    }

    /// `LOCKWRAP_LOCKS`: every lock as given, one per line, in the order
    /// given.
    pub fn texts(&self) -> OsString {
        let mut given: Vec<&Member> = self.members.iter().collect();
        given.sort_by_key(|m| m.given);
        join_lines(given.iter().map(|m| m.text.as_os_str().as_bytes().to_vec()))
    }
}

fn join_lines(lines: impl Iterator<Item = Vec<u8>>) -> OsString {
    let lines: Vec<Vec<u8>> = lines.collect();
    OsString::from(std::ffi::OsStr::from_bytes(&lines.join(&b'\n')))
}

fn order_key(spec: &LockSpec) -> OrderKey {
    OrderKey {
        // flock and fcntl locks on one file conflict on NFS (where flock(2)
        // is emulated with fcntl locks): they sort as one kind, so that
        // `flock:X --also Y` and `fcntl:X --also Y` take X first alike.
        kind: match spec {
            LockSpec::Flock(_) | LockSpec::Ofd(..) => "file",
            _ => spec.kind(),
        },
        place: place(spec),
    }
}

/// Where a lock lives, the same for every spelling of the same lock: a
/// path made absolute with the symlinks of its directory resolved (and of
/// the path itself for flock and fcntl, which follow a final symlink;
/// mkdir and excl never do); the abstract name; for a server lock see
/// [`server_place`].
fn place(spec: &LockSpec) -> Vec<u8> {
    match spec {
        LockSpec::Flock(path) | LockSpec::Ofd(path, _) => canonical_path(path, true),
        LockSpec::Mkdir(path) | LockSpec::Excl(path) => canonical_path(path, false),
        LockSpec::Abstract(name) => name.clone(),
        LockSpec::Redis(remote) | LockSpec::Postgres(remote) => server_place(remote),
    }
}

/// The server URL without any password (neither its masked user-info
/// password nor a secret query parameter: one machine may give the
/// password in the URL, another in the environment), `postgresql://`
/// written `postgres://`, then `#NAME`.
fn server_place(remote: &RemoteLock) -> Vec<u8> {
    let url = redact_url(&remote.url).replacen(":***@", "@", 1);
    let url = match url.split_once('?') {
        Some((base, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|param| !param.ends_with("=***"))
                .collect();
            if kept.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", kept.join("&"))
            }
        }
        None => url,
    };
    let url = match url.strip_prefix("postgresql://") {
        Some(rest) => format!("postgres://{rest}"),
        None => url,
    };
    format!("{}#{}", with_defaults_spelt_out(&url), remote.name).into_bytes()
}

/// A server URL with its defaults written out, so that `redis://h#n`,
/// `redis://H:6379#n` and `redis://h:6379/0#n` order alike: the host in
/// lower case, the default port (6379, 5432) and Redis's default database 0.
/// Sentinel URLs and anything unusual are left as they are.
fn with_defaults_spelt_out(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let default_port = match scheme {
        "redis" | "rediss" => "6379",
        "postgres" => "5432",
        _ => return url.to_owned(),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (user, host_port) = match authority.rsplit_once('@') {
        // `redis://:pw@h` is `redis://@h` once the password is gone.
        Some(("", host_port)) => (String::new(), host_port),
        Some((user, host_port)) => (format!("{user}@"), host_port),
        None => (String::new(), authority),
    };
    // An IPv6 address keeps its brackets; a port follows the last ':' after them.
    let host_end = host_port.rfind(']').map_or(0, |i| i + 1);
    let host_port = if host_port[host_end..].contains(':') {
        host_port.to_ascii_lowercase()
    } else {
        format!("{}:{default_port}", host_port.to_ascii_lowercase())
    };
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, format!("?{query}")),
        None => (tail, String::new()),
    };
    let path = match (default_port, path) {
        ("6379", "" | "/") => "/0",
        _ => path,
    };
    format!("{scheme}://{user}{host_port}{path}{query}")
}

/// `path` made absolute, with symlinks resolved in its directory (and in
/// its last component too when `follow`, even a dangling one: the lock
/// file it names is created there); lexically cleaned where the
/// filesystem cannot tell (a missing directory: the lock fails anyway).
fn canonical_path(path: &Path, follow: bool) -> Vec<u8> {
    let absolute = match std::env::current_dir() {
        Ok(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    };
    let absolute = if follow {
        dangling_target(absolute)
    } else {
        absolute
    };
    let resolved = match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => follow
            .then(|| std::fs::canonicalize(&absolute).ok())
            .flatten()
            .or_else(|| std::fs::canonicalize(parent).ok().map(|dir| dir.join(name))),
        _ => std::fs::canonicalize(&absolute).ok(),
    };
    let cleaned = resolved.unwrap_or_else(|| absolute.components().collect::<PathBuf>());
    cleaned.as_os_str().as_bytes().to_vec()
}

/// Where a chain of symlinks ending in a missing file leads: opening it
/// with O_CREAT creates that file, and once it exists the place is the
/// file's (canonicalize). Without this, the first wrapper (before the file
/// exists) and every later one would order the lock differently.
/// Anything else (not a symlink, a loop) is left as it is.
fn dangling_target(mut path: PathBuf) -> PathBuf {
    // As the kernel's limit on symlinks followed in one lookup.
    for _ in 0..40 {
        let Ok(target) = std::fs::read_link(&path) else {
            return path;
        };
        path = match path.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
    }
    path
}

/// Whether two members name the same lock, or locks that would wait for
/// each other in one process: any two locks on one path (flock, fcntl,
/// mkdir and excl all need the name; on NFS flock is emulated with fcntl
/// locks), a file reached through two hard links, the same abstract name
/// or server lock.
fn same_lock(a: &Member, b: &Member) -> bool {
    let on_path = |spec: &LockSpec| match spec {
        LockSpec::Flock(p) | LockSpec::Ofd(p, _) | LockSpec::Mkdir(p) | LockSpec::Excl(p) => {
            Some(p.clone())
        }
        _ => None,
    };
    match (on_path(&a.spec), on_path(&b.spec)) {
        (Some(pa), Some(pb)) => a.key.place == b.key.place || same_file(&a.spec, &pa, &b.spec, &pb),
        (None, None) => a.key == b.key,
        _ => false,
    }
}

/// Whether two flock/fcntl paths name one existing file (hard links; the
/// key already resolved symlinks and `..`).
fn same_file(a: &LockSpec, pa: &Path, b: &LockSpec, pb: &Path) -> bool {
    let follows = |spec: &LockSpec| matches!(spec, LockSpec::Flock(_) | LockSpec::Ofd(..));
    follows(a)
        && follows(b)
        && match (std::fs::metadata(pa), std::fs::metadata(pb)) {
            (Ok(ma), Ok(mb)) => ma.dev() == mb.dev() && ma.ino() == mb.ino(),
            _ => false,
        }
}

/// Every lock of a set, held: one [`Held`] that answers for all of them.
/// Dropping it releases them in the reverse of the order they were taken.
#[derive(Default)]
pub struct HeldSet {
    /// In the order taken.
    held: Vec<HeldMember>,
}

struct HeldMember {
    given: usize,
    text: OsString,
    lock: Box<dyn Held>,
}

impl HeldSet {
    /// Adds the next lock taken; `given` and `text` as in [`Member`].
    pub fn push(&mut self, given: usize, text: OsString, lock: Box<dyn Held>) {
        self.held.push(HeldMember { given, text, lock });
    }

    /// The held locks in the order given (LOCK first).
    fn in_given_order(&self) -> Vec<&HeldMember> {
        let mut given: Vec<&HeldMember> = self.held.iter().collect();
        given.sort_by_key(|m| m.given);
        given
    }
}

impl Held for HeldSet {
    fn lock_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.held.iter().flat_map(|m| m.lock.lock_fds()).collect()
    }

    /// Only when the kernel keeps every one of them: otherwise lockwrap
    /// must stay for the locks it keeps itself, and keeps all of them
    /// until the command's tree is gone.
    fn kernel_keeps_lock(&self) -> bool {
        !self.held.is_empty() && self.held.iter().all(|m| m.lock.kernel_keeps_lock())
    }

    /// Tells every lock; the first failure is reported, after all were told.
    fn child_started(&mut self, child: Pid) -> Result<(), Error> {
        let mut first = Ok(());
        for member in &mut self.held {
            let told = member.lock.child_started(child);
            if first.is_ok() {
                first = told;
            }
        }
        first
    }

    fn command_started(&mut self) {
        for member in &mut self.held {
            member.lock.command_started();
        }
    }

    /// Each variable a lock sets (`LOCKWRAP_TOKEN`) comes from the first
    /// lock in the order given that sets it, and the same name with an `S`
    /// (`LOCKWRAP_TOKENS`) lists it for every lock that sets it, one line
    /// each: the value, a space, the lock as given.
    fn child_env(&self) -> Vec<(OsString, OsString)> {
        let mut names: Vec<OsString> = Vec::new();
        let mut firsts: Vec<OsString> = Vec::new();
        let mut lists: Vec<Vec<Vec<u8>>> = Vec::new();
        for member in self.in_given_order() {
            for (name, value) in member.lock.child_env() {
                let line = [value.as_bytes(), b" ", member.text.as_os_str().as_bytes()].concat();
                match names.iter().position(|n| *n == name) {
                    Some(i) => lists[i].push(line),
                    None => {
                        names.push(name);
                        firsts.push(value);
                        lists.push(vec![line]);
                    }
                }
            }
        }
        let mut env = Vec::new();
        for ((name, first), list) in names.into_iter().zip(firsts).zip(lists) {
            let mut plural = name.clone();
            plural.push("S");
            env.push((name, first));
            env.push((plural, join_lines(list.into_iter())));
        }
        env
    }

    /// The shortest interval of any lock: each renewal renews all of them.
    fn renew_every(&self) -> Option<Duration> {
        self.held.iter().filter_map(|m| m.lock.renew_every()).min()
    }

    /// Renews every lock, the others too when one fails (they must stay
    /// valid while the command is stopped); the first failure is reported.
    fn renew(&mut self) -> Result<(), Error> {
        let mut first = Ok(());
        for member in &mut self.held {
            if member.lock.renew_every().is_none() {
                continue;
            }
            let renewed = member.lock.renew();
            if first.is_ok() {
                first = renewed;
            }
        }
        first
    }

    /// Leaves to its server every lock whose server can keep it (a Redis
    /// key, with the rest of the interval as its lease), so that a SIGKILL
    /// of lockwrap cannot free those early; true only when every lock was,
    /// else lockwrap stays for the others (and releases them at `until`).
    /// The first failure is reported, after all were asked.
    fn release_later(&mut self, until: Instant) -> Result<bool, Error> {
        let mut all = true;
        let mut first = Ok(());
        for member in &mut self.held {
            match member.lock.release_later(until) {
                Ok(kept) => all &= kept,
                Err(e) => {
                    all = false;
                    if first.is_ok() {
                        first = Err(e);
                    }
                }
            }
        }
        first.map(|()| all)
    }

    /// Releases every lock, in the reverse of the order taken; the first
    /// failure is reported, after all were released.
    fn release(mut self: Box<Self>) -> Result<(), Error> {
        let mut first = Ok(());
        while let Some(member) = self.held.pop() {
            let released = member.lock.release();
            if first.is_ok() {
                first = released;
            }
        }
        first
    }
}

impl Drop for HeldSet {
    fn drop(&mut self) {
        // A Vec drops in order; locks go in reverse.
        while let Some(member) = self.held.pop() {
            drop(member);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(specs: &[&str]) -> Result<LockSet, Error> {
        let mut locks: Vec<(LockSpec, OsString)> = specs
            .iter()
            .map(|s| (LockSpec::parse(s.as_ref()), OsString::from(s)))
            .collect();
        let first = locks.remove(0);
        LockSet::new(first, &locks)
    }

    fn order(specs: &[&str]) -> Vec<String> {
        set(specs)
            .unwrap()
            .members()
            .iter()
            .map(|m| m.spec.to_string())
            .collect()
    }

    #[test]
    fn server_defaults_are_spelt_out() {
        for (a, b) in [
            ("redis://h#n", "redis://H:6379/0#n"),
            ("redis://:pw@h/#n", "redis://h:6379#n"),
            ("postgres://u@h/db#n", "postgresql://u@h:5432/db#n"),
            ("redis://[::1]#n", "redis://[::1]:6379/0#n"),
        ] {
            let a = order_key(&LockSpec::parse(a.as_ref()));
            let b = order_key(&LockSpec::parse(b.as_ref()));
            assert_eq!(a, b);
        }
        let a = order_key(&LockSpec::parse("redis://h/1#n".as_ref()));
        let b = order_key(&LockSpec::parse("redis://h#n".as_ref()));
        assert_ne!(a, b);
    }

    #[test]
    fn flock_and_fcntl_locks_sort_by_path_alike() {
        // On NFS they conflict: both wrappers must take /nonexistent/a first.
        let one = order(&["fcntl:/nonexistent/z", "/nonexistent/a"]);
        let other = order(&["/nonexistent/z", "fcntl:/nonexistent/a"]);
        assert_eq!(one[0], "/nonexistent/a");
        assert_eq!(other[0], "fcntl:/nonexistent/a");
    }

    #[test]
    fn the_order_does_not_depend_on_the_order_given() {
        let forward = order(&[
            "/nonexistent/b",
            "mkdir:/nonexistent/a",
            "@z",
            "redis://h#q",
        ]);
        let backward = order(&[
            "redis://h#q",
            "@z",
            "mkdir:/nonexistent/a",
            "/nonexistent/b",
        ]);
        assert_eq!(forward, backward);
        assert_eq!(
            forward,
            [
                "@z",
                "/nonexistent/b",
                "mkdir:/nonexistent/a",
                "redis://h#q"
            ]
        );
    }

    #[test]
    fn passwords_and_scheme_spellings_do_not_change_the_place() {
        let a = order_key(&LockSpec::parse("redis://:one@h#n".as_ref()));
        let b = order_key(&LockSpec::parse("redis://:two@h#n".as_ref()));
        assert_eq!(a, b);
        let a = order_key(&LockSpec::parse("postgres://u@h/db#n".as_ref()));
        let b = order_key(&LockSpec::parse("postgresql://u:pw@h/db#n".as_ref()));
        assert_eq!(a, b);
        let a = order_key(&LockSpec::parse("redis+sentinel://s1,s2/m#n".as_ref()));
        let b = order_key(&LockSpec::parse(
            "redis+sentinel://s1,s2/m?sentinel_password=x#n".as_ref(),
        ));
        assert_eq!(a, b);
        let a = order_key(&LockSpec::parse("rediss://h?tls_ca=/ca.pem#n".as_ref()));
        assert_eq!(a.place, b"rediss://h:6379/0?tls_ca=/ca.pem#n");
    }

    #[test]
    fn a_lock_named_twice_is_refused() {
        for twice in [
            &["/nonexistent/x/a", "/nonexistent/x/./a"][..],
            &["mkdir:/nonexistent/m", "mkdir:/nonexistent//m/"],
            &["mkdir:/nonexistent/m", "excl:/nonexistent/m"],
            &["@n", "abstract:n"],
            &["redis://:a@h#n", "redis://:b@h#n"],
        ] {
            let e = set(twice).unwrap_err();
            assert_eq!(e.exit_code(1), 64, "{twice:?}");
            assert!(e.to_string().contains("named twice"), "{e}");
        }
        assert!(set(&["redis://h#n", "redis://h#m", "@n"]).is_ok());
    }

    #[test]
    fn lockwrap_locks_lists_the_locks_as_given() {
        let set = set(&["mkdir:/nonexistent/b", "@a", "/nonexistent/c"]).unwrap();
        assert_eq!(set.texts(), "mkdir:/nonexistent/b\n@a\n/nonexistent/c");
        assert_eq!(
            set.describe(),
            "mkdir:/nonexistent/b --also @a --also /nonexistent/c"
        );
    }
}
