//! Reading the certificate and key files the server backends' TLS settings
//! name, shared by Redis and PostgreSQL: only regular files are read, and
//! only so much of them, so that a FIFO, a device (`/dev/zero`) or a socket
//! named as a CA file is refused at once instead of hanging lockwrap in
//! `open()` or filling its memory.

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// No certificate bundle is this large; the system's is under 1 MiB.
const LARGEST: u64 = 64 * 1024 * 1024;

/// The contents of the regular file at `path`, or why it cannot be used
/// (lower case, for a message that names the file).
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        // A FIFO opened for reading waits for a writer without it.
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| describe(&e))?;
    let meta = file.metadata().map_err(|e| describe(&e))?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    if meta.len() > LARGEST {
        return Err(format!("larger than {} MiB", LARGEST >> 20));
    }
    let mut contents = Vec::with_capacity(meta.len() as usize);
    file.take(LARGEST + 1)
        .read_to_end(&mut contents)
        .map_err(|e| describe(&e))?;
    if contents.len() as u64 > LARGEST {
        return Err(format!("larger than {} MiB", LARGEST >> 20));
    }
    Ok(contents)
}

/// Refuses an `SSL_CERT_FILE` that is not a regular file, or an
/// `SSL_CERT_DIR` that holds something other than files and directories:
/// the system trust store is read from them by code that would block on a
/// FIFO or read a device forever.
pub fn check_trust_store_env() -> Result<(), String> {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        match std::fs::metadata(&file) {
            Ok(meta) if !meta.is_file() => {
                return Err(format!(
                    "SSL_CERT_FILE={} is not a regular file",
                    Path::new(&file).display()
                ));
            }
            Ok(meta) if meta.len() > LARGEST => {
                return Err(format!(
                    "SSL_CERT_FILE={} is larger than {} MiB",
                    Path::new(&file).display(),
                    LARGEST >> 20
                ));
            }
            _ => {}
        }
    }
    if let Some(dirs) = std::env::var_os("SSL_CERT_DIR").filter(|d| !d.is_empty()) {
        for dir in std::env::split_paths(&dirs) {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let usable = std::fs::metadata(&path)
                    .map(|meta| (meta.is_file() && meta.len() <= LARGEST) || meta.is_dir())
                    .unwrap_or(true);
                if !usable {
                    return Err(format!(
                        "SSL_CERT_DIR holds {}, which is not a regular file (or is larger than {} MiB)",
                        path.display(),
                        LARGEST >> 20
                    ));
                }
            }
        }
    }
    Ok(())
}

fn describe(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(errno) => nix::errno::Errno::from_raw(errno).desc().to_lowercase(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read() {
        assert_eq!(
            read(Path::new("/dev/zero")),
            Err("not a regular file".into())
        );
        assert!(read(Path::new("/")).is_err());
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(read(&fifo), Err("not a regular file".into()));
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, "x").unwrap();
        assert_eq!(read(&pem), Ok(b"x".to_vec()));
    }
}
