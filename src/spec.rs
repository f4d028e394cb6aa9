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
    /// `fcntl:PATH` or `--fcntl PATH`: open-file-description record locks.
    Ofd(PathBuf),
    /// `mkdir:PATH`: an atomically created directory.
    Mkdir(PathBuf),
    /// `excl:PATH`: an O_CREAT|O_EXCL file.
    Excl(PathBuf),
    /// `abstract:NAME` or `@NAME`: a Linux abstract unix socket name.
    Abstract(Vec<u8>),
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
        for (prefix, make) in [
            ("flock:", LockSpec::Flock as fn(PathBuf) -> LockSpec),
            ("fcntl:", LockSpec::Ofd),
            ("mkdir:", LockSpec::Mkdir),
            ("excl:", LockSpec::Excl),
        ] {
            if bytes.starts_with(prefix.as_bytes()) {
                return make(path_after(prefix));
            }
        }
        LockSpec::Flock(PathBuf::from(text))
    }

    /// `--fcntl`: a file lock becomes an OFD fcntl lock; other kinds come back as `Err`.
    pub fn with_fcntl(self) -> Result<LockSpec, LockSpec> {
        match self {
            LockSpec::Flock(path) | LockSpec::Ofd(path) => Ok(LockSpec::Ofd(path)),
            other => Err(other),
        }
    }

    /// Whether the path or name is empty (`excl:`, `@`): nothing to lock.
    pub fn is_empty(&self) -> bool {
        match self {
            LockSpec::Flock(p) | LockSpec::Ofd(p) | LockSpec::Mkdir(p) | LockSpec::Excl(p) => {
                p.as_os_str().is_empty()
            }
            LockSpec::Abstract(name) => name.is_empty(),
        }
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
            LockSpec::Ofd(p) => LockSpec::Ofd(path(p)),
            LockSpec::Mkdir(p) => LockSpec::Mkdir(path(p)),
            LockSpec::Excl(p) => LockSpec::Excl(path(p)),
            LockSpec::Abstract(name) => {
                LockSpec::Abstract([name.as_slice(), suffix.as_bytes()].concat())
            }
        }
    }
}

impl fmt::Display for LockSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockSpec::Flock(p) => write!(f, "{}", p.display()),
            LockSpec::Ofd(p) => write!(f, "fcntl:{}", p.display()),
            LockSpec::Mkdir(p) => write!(f, "mkdir:{}", p.display()),
            LockSpec::Excl(p) => write!(f, "excl:{}", p.display()),
            LockSpec::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
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
        assert_eq!(parse("fcntl:x"), LockSpec::Ofd("x".into()));
        assert_eq!(parse("mkdir:/a/b"), LockSpec::Mkdir("/a/b".into()));
        assert_eq!(parse("excl:f"), LockSpec::Excl("f".into()));
        assert_eq!(parse("@name"), LockSpec::Abstract(b"name".to_vec()));
        assert_eq!(parse("abstract:n"), LockSpec::Abstract(b"n".to_vec()));
    }

    #[test]
    fn unknown_or_hidden_schemes_are_paths() {
        assert_eq!(parse("./mkdir:x"), LockSpec::Flock("./mkdir:x".into()));
        assert_eq!(parse("foo:bar"), LockSpec::Flock("foo:bar".into()));
        assert_eq!(parse("MKDIR:x"), LockSpec::Flock("MKDIR:x".into()));
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
}
