//! Lock specs: the text the user gives as LOCK, parsed into one enum.
//!
//! This module only recognises the shape; whether the path exists or the name
//! fits the kernel's limits is for the backend to find out.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Which mechanism a lock uses, and where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockSpec {
    /// `PATH` or `flock:PATH`: flock(2) on a file or directory.
    Flock(PathBuf),
    /// `fcntl:PATH` or `--fcntl PATH`: open-file-description record locks
    /// on a byte range (`--start`, `--length`; the whole file by default).
    Ofd(PathBuf, ByteRange),
    /// `mkdir:PATH`: an atomically created directory.
    Mkdir(PathBuf),
    /// `excl:PATH`: an O_CREAT|O_EXCL file.
    Excl(PathBuf),
    /// `abstract:NAME` or `@NAME`: a Linux abstract unix socket name.
    Abstract(Vec<u8>),
    /// `redis://[user:pass@]host[:port][/db]#NAME` (or `rediss://`): a key on a Redis server;
    /// `redis+sentinel://[user:pass@]host1:port1,host2:port2/MASTERNAME[/db]#NAME`
    /// (or `rediss+sentinel://`): on the master that Redis Sentinel names.
    Redis(RemoteLock),
    /// `postgres://[user[:pass]@]host[:port]/db#NAME` (or `postgresql://`):
    /// a session advisory lock on a PostgreSQL server.
    Postgres(RemoteLock),
}

/// The bytes an fcntl lock covers (`--start OFFSET`, `--length N`), as in
/// fcntl(2): from `start`, `length` bytes; a length of 0 runs to the end of
/// the file, however far it grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteRange {
    /// The first byte (`l_start`, from the start of the file).
    pub start: u64,
    /// How many bytes (`l_len`); 0: to the end of the file.
    pub length: u64,
}

impl ByteRange {
    /// The whole file: what `--fcntl` locks without `--start`/`--length`.
    pub const WHOLE: ByteRange = ByteRange {
        start: 0,
        length: 0,
    };

    /// The last byte covered; None: to the end of the file.
    pub fn last(&self) -> Option<u64> {
        // The parser keeps both below 2^63, so the sum cannot overflow.
        (self.length > 0).then(|| self.start + self.length - 1)
    }

    /// Whether it shares a byte with the bytes `first..=last` (`last`
    /// None: to the end of the file), as /proc/locks lists a lock.
    pub fn overlaps(&self, first: u64, last: Option<u64>) -> bool {
        self.last().is_none_or(|mine| first <= mine)
            && last.is_none_or(|theirs| self.start <= theirs)
    }
}

/// "bytes 1000-2023", or "bytes 1000-EOF" for a range to the end of the
/// file: first and last byte, as /proc/locks and lslocks(8) show them.
impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.last() {
            Some(last) => write!(f, "bytes {}-{last}", self.start),
            None => write!(f, "bytes {}-EOF", self.start),
        }
    }
}

/// A lock on a server: where to connect, and the lock's name there.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteLock {
    /// The server URL without the fragment; may hold a password, so it is
    /// never printed as is (see [`redact_url`]).
    pub url: String,
    /// The URL fragment: the lock's name on the server (empty if missing).
    pub name: String,
}

impl fmt::Debug for RemoteLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteLock")
            .field("url", &redact_url(&self.url))
            .field("name", &self.name)
            .finish()
    }
}

impl fmt::Display for RemoteLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", redact_url(&self.url), self.name)
    }
}

impl RemoteLock {
    /// The same server with `suffix` appended to the lock name (`--slots`).
    pub fn suffixed(&self, suffix: &str) -> RemoteLock {
        RemoteLock {
            url: self.url.clone(),
            name: format!("{}{suffix}", self.name),
        }
    }

    fn parse(text: &str) -> RemoteLock {
        let (url, name) = text.split_once('#').unwrap_or((text, ""));
        RemoteLock {
            url: url.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// `url` with any password replaced by `***`: the one in the user-info part
/// (`user:secret@host`) and any query parameter whose name looks like it
/// holds a secret (`password=`, `sentinel_password=`, a misspelt
/// `pasword=`, `token=`...). Everything
/// lockwrap prints about a server lock goes through this.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if looks_secret(key) => format!("{key}=***"),
                    _ => param.to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Whether a URL query parameter may hold a secret: a password (also a
/// misspelt one, `pasword`, `passwd`, `pwd`), a secret, a token, a key's
/// passphrase, credentials. Its value is never shown.
fn looks_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pas", "pwd", "pw", "secret", "token", "cred", "auth"]
        .iter()
        .any(|part| key.contains(part))
}

/// The URL schemes of server locks, whose URLs may carry a password.
const SERVER_SCHEMES: [&str; 6] = [
    "redis://",
    "rediss://",
    "redis+sentinel://",
    "rediss+sentinel://",
    "postgres://",
    "postgresql://",
];

/// `text` with every server URL in it shown by [`redact_url`]: for messages
/// that echo what the user typed (a usage error quoting the LOCK argument).
/// A URL starts at a server scheme at the start of a word and runs to the
/// next whitespace or quote; its `#NAME` is kept as is. The password is
/// found by the URL's structure, never by looking for its text, so a
/// password that also occurs elsewhere in the message hides nothing else.
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = next_server_url(rest) {
        out.push_str(&rest[..start]);
        let url_and_after = &rest[start..];
        let end = url_and_after
            .find(|c: char| c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(url_and_after.len());
        let (token, after) = url_and_after.split_at(end);
        match token.split_once('#') {
            Some((url, name)) => {
                out.push_str(&redact_url(url));
                out.push('#');
                out.push_str(name);
            }
            None => out.push_str(&redact_url(token)),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Where the first server URL in `text` starts: a server scheme at the start
/// of `text` or after whitespace or a quote.
fn next_server_url(text: &str) -> Option<usize> {
    text.char_indices()
        .filter(|&(i, _)| {
            text[..i]
                .chars()
                .next_back()
                .is_none_or(|c| c.is_whitespace() || c == '\'' || c == '"' || c == '(')
        })
        .map(|(i, _)| i)
        .find(|&i| {
            SERVER_SCHEMES
                .iter()
                .any(|scheme| text[i..].starts_with(scheme))
        })
}

impl LockSpec {
    /// Parses a LOCK argument. Only the known scheme words are schemes; anything
    /// else (`./mkdir:x`, `foo:bar`) is a plain path for flock(2).
    pub fn parse(text: &OsStr) -> LockSpec {
        let bytes = text.as_bytes();
        let path_after = |prefix: &str| PathBuf::from(OsStr::from_bytes(&bytes[prefix.len()..]));
        if let Some(name) = bytes.strip_prefix(b"@") {
            return LockSpec::Abstract(name.to_vec());
        }
        if let Some(name) = bytes.strip_prefix(b"abstract:") {
            return LockSpec::Abstract(name.to_vec());
        }
        let text_lossy = || String::from_utf8_lossy(bytes);
        if [
            &b"redis://"[..],
            b"rediss://",
            b"redis+sentinel://",
            b"rediss+sentinel://",
        ]
        .iter()
        .any(|scheme| bytes.starts_with(scheme))
        {
            return LockSpec::Redis(RemoteLock::parse(&text_lossy()));
        }
        if bytes.starts_with(b"postgres://") || bytes.starts_with(b"postgresql://") {
            return LockSpec::Postgres(RemoteLock::parse(&text_lossy()));
        }
        for (prefix, make) in [
            ("flock:", LockSpec::Flock as fn(PathBuf) -> LockSpec),
            ("fcntl:", |path| LockSpec::Ofd(path, ByteRange::WHOLE)),
            ("mkdir:", LockSpec::Mkdir),
            ("excl:", LockSpec::Excl),
        ] {
            if bytes.starts_with(prefix.as_bytes()) {
                return make(path_after(prefix));
            }
        }
        LockSpec::Flock(PathBuf::from(text))
    }

    /// `--fcntl`, `--start`, `--length`: a file lock becomes an OFD fcntl
    /// lock on `range`; other kinds come back as `Err`.
    pub fn with_fcntl(self, range: ByteRange) -> Result<LockSpec, LockSpec> {
        match self {
            LockSpec::Flock(path) | LockSpec::Ofd(path, _) => Ok(LockSpec::Ofd(path, range)),
            other => Err(other),
        }
    }

    /// Whether the path or name is empty (`excl:`, `@`): nothing to lock.
    pub fn is_empty(&self) -> bool {
        match self {
            LockSpec::Flock(p) | LockSpec::Ofd(p, _) | LockSpec::Mkdir(p) | LockSpec::Excl(p) => {
                p.as_os_str().is_empty()
            }
            LockSpec::Abstract(name) => name.is_empty(),
            LockSpec::Redis(r) | LockSpec::Postgres(r) => r.name.is_empty(),
        }
    }

    /// The mechanism's name, for messages: flock, fcntl, mkdir, excl,
    /// abstract, redis or postgres.
    pub fn kind(&self) -> &'static str {
        match self {
            LockSpec::Flock(_) => "flock",
            LockSpec::Ofd(..) => "fcntl",
            LockSpec::Mkdir(_) => "mkdir",
            LockSpec::Excl(_) => "excl",
            LockSpec::Abstract(_) => "abstract",
            LockSpec::Redis(_) => "redis",
            LockSpec::Postgres(_) => "postgres",
        }
    }

    /// A mkdir: or excl: path made usable, or why it cannot be: trailing
    /// slashes of a mkdir: path are dropped (`mkdir:/x/` is `/x`); an excl:
    /// path with one names a directory, which an excl: lock cannot be; and
    /// the last component must be a name to create, not `/`, `.` or `..`.
    pub fn normalised(self) -> Result<LockSpec, String> {
        let (path, is_mkdir) = match &self {
            LockSpec::Mkdir(p) => (p, true),
            LockSpec::Excl(p) => (p, false),
            _ => return Ok(self),
        };
        let bytes = path.as_os_str().as_bytes();
        let trimmed_len = bytes.iter().rposition(|b| *b != b'/').map_or(0, |i| i + 1);
        if !is_mkdir && trimmed_len < bytes.len() {
            return Err(format!(
                "{self}: an excl: lock is a file; drop the trailing '/' (or use mkdir: for a lock directory)"
            ));
        }
        let trimmed = &bytes[..trimmed_len];
        let last = trimmed.rsplit(|b| *b == b'/').next().unwrap_or_default();
        let names_something = !matches!(last, b"" | b"." | b"..");
        let trimmed = PathBuf::from(OsStr::from_bytes(trimmed));
        if !names_something {
            return Err(format!(
                "{self}: the path must end in a name to create (such as /run/lock/NAME), not '/', '.' or '..'"
            ));
        }
        Ok(if is_mkdir {
            LockSpec::Mkdir(trimmed)
        } else {
            LockSpec::Excl(trimmed)
        })
    }

    /// Slot `i` of a `--slots N` semaphore: the same kind of lock, with
    /// `.slotI` appended to the path or name.
    pub fn slot(&self, i: u32) -> LockSpec {
        let suffix = format!(".slot{i}");
        let path = |p: &PathBuf| {
            let mut text = p.as_os_str().to_owned();
            text.push(&suffix);
            PathBuf::from(text)
        };
        match self {
            LockSpec::Flock(p) => LockSpec::Flock(path(p)),
            LockSpec::Ofd(p, range) => LockSpec::Ofd(path(p), *range),
            LockSpec::Mkdir(p) => LockSpec::Mkdir(path(p)),
            LockSpec::Excl(p) => LockSpec::Excl(path(p)),
            LockSpec::Abstract(name) => {
                LockSpec::Abstract([name.as_slice(), suffix.as_bytes()].concat())
            }
            LockSpec::Redis(r) => LockSpec::Redis(r.suffixed(&suffix)),
            LockSpec::Postgres(r) => LockSpec::Postgres(r.suffixed(&suffix)),
        }
    }
}

impl LockSpec {
    /// The lock as a lock spec (`fcntl:/x`) under either program name, where
    /// [`Display`](fmt::Display) names an fcntl lock by its path alone under
    /// flock's: for `--status`, whose lines are lockwrap's under both names
    /// and must tell an fcntl lock from a flock(2) lock on the same file.
    pub fn spec_text(&self) -> String {
        match self {
            LockSpec::Ofd(p, _) => format!("fcntl:{}", p.display()),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for LockSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockSpec::Flock(p) => write!(f, "{}", p.display()),
            // flock(1) has no lock specs: under its name a file is named
            // by its path alone, also with --fcntl.
            LockSpec::Ofd(p, _) if crate::program::is_flock() => write!(f, "{}", p.display()),
            LockSpec::Ofd(p, _) => write!(f, "fcntl:{}", p.display()),
            LockSpec::Mkdir(p) => write!(f, "mkdir:{}", p.display()),
            LockSpec::Excl(p) => write!(f, "excl:{}", p.display()),
            LockSpec::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
            LockSpec::Redis(remote) | LockSpec::Postgres(remote) => write!(f, "{remote}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> LockSpec {
        LockSpec::parse(OsStr::new(s))
    }

    #[test]
    fn schemes_are_recognised() {
        assert_eq!(parse("/tmp/x"), LockSpec::Flock("/tmp/x".into()));
        assert_eq!(parse("flock:/tmp/x"), LockSpec::Flock("/tmp/x".into()));
        assert_eq!(
            parse("fcntl:x"),
            LockSpec::Ofd("x".into(), ByteRange::WHOLE)
        );
        assert_eq!(parse("mkdir:/a/b"), LockSpec::Mkdir("/a/b".into()));
        assert_eq!(parse("excl:f"), LockSpec::Excl("f".into()));
        assert_eq!(parse("@name"), LockSpec::Abstract(b"name".to_vec()));
        assert_eq!(parse("abstract:n"), LockSpec::Abstract(b"n".to_vec()));
    }

    #[test]
    fn byte_ranges_overlap_as_fcntl_locks_do() {
        let range = |start, length| ByteRange { start, length };
        // bytes 100-109
        let r = range(100, 10);
        assert!(r.overlaps(109, Some(109)));
        assert!(r.overlaps(0, None));
        assert!(r.overlaps(105, Some(200)));
        assert!(!r.overlaps(110, Some(110)));
        assert!(!r.overlaps(110, None));
        assert!(!r.overlaps(0, Some(99)));
        // bytes 100-EOF
        let r = range(100, 0);
        assert!(r.overlaps(1 << 40, Some(1 << 40)));
        assert!(!r.overlaps(0, Some(99)));
        assert!(ByteRange::WHOLE.overlaps(5, Some(5)));
        assert_eq!(range(1000, 1024).to_string(), "bytes 1000-2023");
        assert_eq!(range(7, 0).to_string(), "bytes 7-EOF");
    }

    #[test]
    fn unknown_or_hidden_schemes_are_paths() {
        assert_eq!(parse("./mkdir:x"), LockSpec::Flock("./mkdir:x".into()));
        assert_eq!(parse("foo:bar"), LockSpec::Flock("foo:bar".into()));
        assert_eq!(parse("MKDIR:x"), LockSpec::Flock("MKDIR:x".into()));
    }

    #[test]
    fn artifact_paths_are_normalised_or_refused() {
        assert_eq!(parse("mkdir:/a/b//").normalised(), Ok(parse("mkdir:/a/b")));
        assert_eq!(parse("excl:a/b").normalised(), Ok(parse("excl:a/b")));
        for bad in [
            "mkdir:/",
            "mkdir:..",
            "mkdir:a/.",
            "mkdir:../",
            "excl:a/",
            "excl:..",
        ] {
            assert!(parse(bad).normalised().is_err(), "{bad}");
        }
        assert_eq!(parse("/").normalised(), Ok(parse("/")));
    }

    #[test]
    fn slots_keep_the_kind() {
        assert_eq!(parse("mkdir:/a").slot(2), parse("mkdir:/a.slot2"));
        assert_eq!(parse("@n").slot(0), parse("@n.slot0"));
    }

    #[test]
    fn display_round_trips() {
        for s in ["/tmp/x", "fcntl:x", "mkdir:/a", "excl:f", "@n"] {
            assert_eq!(parse(s).to_string(), s);
        }
    }

    #[test]
    fn server_specs_split_off_the_lock_name() {
        let LockSpec::Redis(r) = parse("redis://h:6380/2#jobs.nightly") else {
            panic!("not redis")
        };
        assert_eq!(r.url, "redis://h:6380/2");
        assert_eq!(r.name, "jobs.nightly");
        assert!(matches!(parse("rediss://h#n"), LockSpec::Redis(_)));
        let LockSpec::Redis(r) = parse("redis+sentinel://a:26379,b/mymaster/2#n") else {
            panic!("not redis")
        };
        assert_eq!(r.url, "redis+sentinel://a:26379,b/mymaster/2");
        assert_eq!(r.name, "n");
        assert!(matches!(
            parse("rediss+sentinel://a/m#n"),
            LockSpec::Redis(_)
        ));
        let LockSpec::Postgres(p) = parse("postgresql://u@h/db?host=/run/pg#a#b") else {
            panic!("not postgres")
        };
        assert_eq!(p.url, "postgresql://u@h/db?host=/run/pg");
        assert_eq!(p.name, "a#b");
        assert!(
            matches!(parse("postgres://h/db"), LockSpec::Postgres(RemoteLock { ref name, .. }) if name.is_empty())
        );
        assert_eq!(parse("./redis://x"), LockSpec::Flock("./redis://x".into()));
    }

    #[test]
    fn passwords_are_never_displayed() {
        for (given, shown) in [
            ("redis://:s3cret@h:6379/0#n", "redis://:***@h:6379/0#n"),
            ("redis://u:s3cret@h#n", "redis://u:***@h#n"),
            ("redis://h#n", "redis://h#n"),
            (
                "postgres://u:p%40ss@h:5432/db#n",
                "postgres://u:***@h:5432/db#n",
            ),
            ("postgres://u@h/db#n", "postgres://u@h/db#n"),
            (
                "postgresql:///db?host=/tmp&password=s3cret&user=u#n",
                "postgresql:///db?host=/tmp&password=***&user=u#n",
            ),
            ("postgres://u:a@b@h/db#n", "postgres://u:***@h/db#n"),
            (
                "redis+sentinel://u:s3cret@a:26379,b:26380/mymaster/2#n",
                "redis+sentinel://u:***@a:26379,b:26380/mymaster/2#n",
            ),
            (
                "rediss+sentinel://:s3cret@a/m?sentinel_password=s3cret#n",
                "rediss+sentinel://:***@a/m?sentinel_password=***#n",
            ),
            (
                "redis+sentinel://h/m?sentinel_pasword=s3cret&passwd=s3cret&tls_ca=/ca.pem#n",
                "redis+sentinel://h/m?sentinel_pasword=***&passwd=***&tls_ca=/ca.pem#n",
            ),
        ] {
            let spec = parse(given);
            assert_eq!(spec.to_string(), shown);
            assert!(!format!("{spec:?}").contains("s3cret"), "{spec:?}");
        }
    }

    #[test]
    fn urls_in_messages_are_redacted_by_structure() {
        for (given, shown) in [
            (
                "redis://:s3cret@h:1#x: missing command",
                "redis://:***@h:1#x: missing command",
            ),
            (
                "'postgres://u:s3cret@h:1/db': the lock has an empty path or name",
                "'postgres://u:***@h:1/db': the lock has an empty path or name",
            ),
            // A one-letter password hides only the password field.
            (
                "redis://:e@h#e: cannot connect to the server",
                "redis://:***@h#e: cannot connect to the server",
            ),
            ("a and b: redis://h#n, @name", "a and b: redis://h#n, @name"),
            ("./redis://:p@h", "./redis://:p@h"),
            ("no url here: e@x", "no url here: e@x"),
            (
                "redis+sentinel://:s3cret@h1:1,h2:2/mymaster#x: unknown master",
                "redis+sentinel://:***@h1:1,h2:2/mymaster#x: unknown master",
            ),
            (
                "'rediss+sentinel://h/m?sentinel_password=s3cret#x'",
                "'rediss+sentinel://h/m?sentinel_password=***#x'",
            ),
        ] {
            assert_eq!(redact_urls_in(given), shown);
            assert_eq!(
                redact_urls_in(shown),
                shown,
                "redacting twice changes nothing"
            );
        }
    }
}
