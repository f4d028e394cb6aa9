//! The lockwrap binary: parse, run, map the outcome to an exit code.

use std::io::Write;
use std::process::ExitCode;

use lockwrap::child::Ending;
use lockwrap::cli::{self, Parsed};
use lockwrap::{Error, program};
use nix::errno::Errno;
use nix::sys::signal::Signal;

fn main() -> ExitCode {
    let argv: Vec<_> = std::env::args_os().collect();
    program::set_from_argv0(argv.first().map(|a| a.as_os_str()));
    let ending = run(argv);
    // As flock(1)'s close_stdout(): --verbose lines that could not be
    // written make the exit status 1, once the command has run; a reader
    // that went away kills with SIGPIPE, as it kills flock(1).
    let ending = match program::finish_stdout() {
        None => ending,
        Some(Errno::EPIPE) => Ending::DieOf(Signal::SIGPIPE),
        Some(errno) => {
            let e = Error::Stdout { errno };
            e.print();
            Ending::Code(e.exit_code(1))
        }
    };
    match ending {
        Ending::Code(code) => ExitCode::from(code),
        Ending::DieOf(signal) => {
            lockwrap::child::die_of(signal);
            ExitCode::from(128u8.wrapping_add(signal as u8))
        }
    }
}

fn run(argv: Vec<std::ffi::OsString>) -> Ending {
    let invocation = match cli::parse(argv) {
        Ok(Parsed::Invocation(invocation)) => *invocation,
        Ok(Parsed::Status(query)) => {
            return Ending::Code(match lockwrap::status(&query) {
                Ok(code) => code,
                Err(e) => {
                    e.print();
                    e.exit_code(query.conflict_exit_code)
                }
            });
        }
        Ok(Parsed::Check(query)) => {
            return match lockwrap::check::run(&query) {
                Ok(ending) => ending,
                Err(e) => {
                    e.print();
                    Ending::Code(e.exit_code(1))
                }
            };
        }
        Ok(Parsed::CheckHolder(lock)) => return Ending::Code(lockwrap::check::hold(&lock)),
        Ok(Parsed::Info(text)) => return print("the help", text.as_bytes()),
        Ok(Parsed::Generate(kind)) => {
            return match lockwrap::generate::render(kind, cli::command()) {
                Ok(bytes) => print(kind.what(), &bytes),
                Err(io) => {
                    // Only writes into memory: no error is expected.
                    let errno = Errno::from_raw(io.raw_os_error().unwrap_or(libc::EIO));
                    let e = Error::Print {
                        what: kind.what(),
                        errno,
                    };
                    e.print();
                    Ending::Code(e.exit_code(1))
                }
            };
        }
        Err(e) => {
            e.print();
            return Ending::Code(e.exit_code(1));
        }
    };
    let verbose = invocation.verbose;
    let conflict_code = invocation.conflict_exit_code;
    match lockwrap::run(invocation) {
        Ok(ending) => ending,
        Err(e) => {
            // A held lock under -n or -w is an expected outcome: silent, as
            // with flock(1), so cron mails stay empty; --verbose tells.
            if verbose || !e.is_conflict() {
                e.print();
            }
            Ending::Code(e.exit_code(conflict_code))
        }
    }
}

/// Writes help, version or generated text to stdout: exit 0, or 1 when it
/// could not be written. A full disk says so (a man page cut short must not
/// pass for a whole one); a reader that went away (`--help | head`) is no
/// news to anyone.
fn print(what: &'static str, bytes: &[u8]) -> Ending {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ending::Code(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ending::Code(1),
        Err(e) => {
            let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
            let e = Error::Print { what, errno };
            e.print();
            Ending::Code(e.exit_code(1))
        }
    }
}
