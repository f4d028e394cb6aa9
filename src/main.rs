//! The lockwrap binary: parse, run, map the outcome to an exit code.
//!
//! It starts at C's `main`, not through Rust's runtime start-up: that
//! start-up reads and parses /proc/self/maps (the main thread's stack
//! guard), sets up an alternate signal stack and SIGSEGV/SIGBUS handlers
//! (the "stack overflow" message): about 15 system calls, 0.05 ms of CPU
//! on the benchmark machine (BENCHMARKS.md), in a wrapper run once per
//! command. The two things of it lockwrap relies on are done here: fds 0 to
//! 2 are open (so the lock file never lands on stdout), and SIGPIPE is
//! ignored (a write to a closed pipe is EPIPE; the command still starts with
//! SIGPIPE at its default, which std's spawn and exec restore).

#![no_main]

use std::ffi::{CStr, OsString, c_char, c_int};
use std::io::Write;
use std::os::unix::ffi::OsStringExt as _;

use lockwrap::child::Ending;
use lockwrap::cli::{self, Parsed};
use lockwrap::{Error, program};
use nix::errno::Errno;
use nix::sys::signal::Signal;

/// The static musl build allocates from an arena first: musl's malloc
/// would map and unmap pages about 30 times in a run (see src/arena.rs).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: lockwrap::arena::Arena = lockwrap::arena::Arena::new();

/// The process's entry point, called by the C runtime with the command
/// line.
#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    // SAFETY: the C runtime passes argc NUL-terminated strings in argv,
    // valid for the whole run; they are copied before anything else.
    let argv = unsafe { arguments(argc, argv) };
    open_standard_fds();
    one_malloc_arena();
    // SAFETY: SIG_IGN runs no code in this process.
    let _ =
        unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) };
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
    // Nothing is left in std's stdout buffer to flush at exit: help,
    // version and generated text are flushed by print(), report lines by
    // finish_stdout().
    match ending {
        Ending::Code(code) => c_int::from(code),
        Ending::DieOf(signal) => {
            lockwrap::child::die_of(signal);
            c_int::from(128u8.wrapping_add(signal as u8))
        }
    }
}

/// glibc gives each thread that allocates its own malloc arena (a 128 MiB
/// reservation mapped, trimmed and made writable: four system calls and
/// more resident memory), and a contended wait starts a thread. lockwrap's
/// few threads allocate little: one arena serves them all.
#[cfg(target_env = "gnu")]
fn one_malloc_arena() {
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
}

/// Other C libraries have no per-thread arenas to limit (the static musl
/// build allocates from src/arena.rs first).
#[cfg(not(target_env = "gnu"))]
fn one_malloc_arena() {}

/// The command line as `argc` and `argv` give it.
///
/// # Safety
///
/// `argv` holds `argc` pointers to NUL-terminated strings.
unsafe fn arguments(argc: c_int, argv: *const *const c_char) -> Vec<OsString> {
    (0..usize::try_from(argc).unwrap_or(0))
        // SAFETY: as the caller promises.
        .map(|i| unsafe { CStr::from_ptr(*argv.add(i)) })
        .map(|arg| OsString::from_vec(arg.to_bytes().to_vec()))
        .collect()
}

/// As Rust's runtime does at start-up: any of fds 0, 1 and 2 that is closed
/// is opened on /dev/null, so that no file lockwrap opens (the lock) takes
/// its number and receives what is written to stdout or stderr. Aborts if
/// /dev/null cannot be opened, as the runtime does.
fn open_standard_fds() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll reads and writes only the three pollfd structs we own;
    // it does not use the fds (closed ones are reported with POLLNVAL).
    let polled = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) };
    if polled < 0 {
        return;
    }
    for _closed in fds.iter().filter(|p| p.revents & libc::POLLNVAL != 0) {
        // The lowest free fd, so it is this one: the lower ones are open.
        match nix::fcntl::open(
            "/dev/null",
            nix::fcntl::OFlag::O_RDWR,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(null) => {
                let _ = std::os::fd::IntoRawFd::into_raw_fd(null);
            }
            Err(_) => std::process::abort(),
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
