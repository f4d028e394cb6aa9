//! The lockwrap binary: parse, run, map the outcome to an exit code.

use std::io::Write;
use std::process::ExitCode;

use lockwrap::child::Ending;
use lockwrap::cli::{self, Parsed};

fn main() -> ExitCode {
    let invocation = match cli::parse(std::env::args_os()) {
        Ok(Parsed::Invocation(invocation)) => *invocation,
        Ok(Parsed::Status(query)) => {
            return match lockwrap::status(&query) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    lockwrap::say!("{e}");
                    ExitCode::from(e.exit_code(query.conflict_exit_code))
                }
            };
        }
        Ok(Parsed::Check(query)) => {
            return match lockwrap::check::run(&query) {
                Ok(Ending::Code(code)) => ExitCode::from(code),
                Ok(Ending::DieOf(signal)) => {
                    lockwrap::child::die_of(signal);
                    ExitCode::from(128u8.wrapping_add(signal as u8))
                }
                Err(e) => {
                    lockwrap::say!("{e}");
                    ExitCode::from(e.exit_code(1))
                }
            };
        }
        Ok(Parsed::CheckHolder(lock)) => return ExitCode::from(lockwrap::check::hold(&lock)),
        Ok(Parsed::Info(text)) => {
            let mut stdout = std::io::stdout().lock();
            let written = stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush());
            return if written.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Err(e) => {
            lockwrap::say!("{e}");
            return ExitCode::from(e.exit_code(1));
        }
    };
    let verbose = invocation.verbose;
    let conflict_code = invocation.conflict_exit_code;
    match lockwrap::run(invocation) {
        Ok(Ending::Code(code)) => ExitCode::from(code),
        Ok(Ending::DieOf(signal)) => {
            lockwrap::child::die_of(signal);
            ExitCode::from(128u8.wrapping_add(signal as u8))
        }
        Err(e) => {
            // A held lock under -n or -w is an expected outcome: silent, as
            // with flock(1), so cron mails stay empty; --verbose tells.
            if verbose || !e.is_conflict() {
                lockwrap::say!("{e}");
            }
            ExitCode::from(e.exit_code(conflict_code))
        }
    }
}
