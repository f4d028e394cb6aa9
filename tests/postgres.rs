//! PostgreSQL locks against a real, throwaway cluster (initdb + pg_ctl): the
//! shared server-lock scenarios (tests/servers/scenarios.rs) and what only
//! PostgreSQL has (psql on the same lock, shared holders, terminated and
//! stopped sessions, unix sockets).

#![cfg(feature = "postgres")]

mod common;
mod servers;

use std::ffi::OsStr;

use common::{Sandbox, WAIT, wait_until};
use lockwrap::backend;
use lockwrap::spec::LockSpec;
use servers::scenarios::{self, run};
use servers::{Engine, PgServer, Postgres, Stopped, with};

#[test]
fn wrappers_exclude_each_other() {
    with(|server: &Postgres| {
        let tokens = scenarios::wrappers_exclude_each_other(server);
        assert!(
            tokens.iter().all(String::is_empty),
            "no fencing tokens: {tokens:?}"
        );
    });
}

/// The waiter queues for the advisory lock on the server: `wait_for_waiters`
/// counts the sessions in pg_locks that wait for it.
#[test]
fn conflicts_time_out_and_a_release_wakes_the_waiter() {
    with(|server: &Postgres| {
        let token = scenarios::conflicts_time_out_and_a_release_wakes_the_waiter(server);
        assert_eq!(token, "", "no fencing token");
    });
}

servers::shared_scenarios!(Postgres:
    slots_let_two_holders_in,
    a_short_command_releases_the_lock,
    status_names_the_holder,
    a_killed_holder_frees_the_lock,
    unreachable_server_and_usage_errors,
    an_orphaned_worker_keeps_the_lock,
    max_runtime_stops_the_tree,
    sigterm_stops_the_tree,
    sigkill_of_the_wrapper_takes_the_command_with_it,
    a_long_stop_keeps_the_lease,
);

#[test]
fn psql_takes_the_same_lock() {
    with(|server: &Postgres| {
        let sb = Sandbox::new("psql");
        let try_lock = "SELECT pg_try_advisory_lock(hashtextextended('interop', 0))";
        let mut holder = sb.hold(&[], &server.lock("interop"));
        assert_eq!(server.sql(try_lock), "f");
        holder.release_and_finish().assert_code(0);
        // psql's session, and with it its lock, ends with psql.
        assert_eq!(server.sql(try_lock), "t");
    });
}

#[test]
fn shared_holders_coexist_and_status_names_them() {
    with(|server: &Postgres| {
        let sb = Sandbox::new("readers");
        let lock = server.lock("readers");
        let backend = backend::open(&LockSpec::parse(OsStr::new(&lock)));
        assert!(!backend.status().unwrap().held);
        let mut a = sb.hold(&["-s"], &lock);
        let mut b = sb.hold(&["-s", "-n"], &lock);
        run(&sb, &["-n", &lock, "true"]).assert_code(1);
        let mut status = backend.status().unwrap();
        wait_until("both commands' pids in the status", WAIT, || {
            status = backend.status().unwrap();
            status.holders.len() == 2 && status.holders.iter().all(|h| h.child_pid.is_some())
        });
        assert!(status.held && status.shared, "{status:?}");
        for holder in [&a, &b] {
            let info = status
                .holders
                .iter()
                .find(|h| h.pid == Some(holder.proc.pid()))
                .unwrap_or_else(|| panic!("pid {} not in {status:?}", holder.proc.pid()));
            scenarios::assert_names_the_holder(info, holder);
        }
        a.release_and_finish().assert_code(0);
        b.release_and_finish().assert_code(0);
        assert!(!backend.status().unwrap().held);
    });
}

#[test]
fn a_terminated_session_stops_the_command_and_exits_75() {
    with(|server: &Postgres| {
        let sb = scenarios::losing_the_lock_stops_the_command(
            server,
            "lossy",
            || {
                let sql = format!(
                    "SELECT count(pg_terminate_backend(pid)) {}",
                    PgServer::lock_rows("lossy", "granted")
                );
                assert_eq!(server.sql(&sql), "1");
            },
            "lock lost",
        );
        run(&sb, &["-n", &server.lock("lossy"), "true"]).assert_code(0);
    });
}

/// A terminated session stops the whole tree of the command, also
/// grandchildren that ignore SIGTERM, before the wrapper exits 75.
#[test]
fn a_terminated_session_stops_the_commands_tree() {
    with(|server: &Postgres| {
        let sb = scenarios::losing_the_lock_stops_the_tree(server, "cut", || {
            let sql = format!(
                "SELECT count(pg_terminate_backend(pid)) {}",
                PgServer::lock_rows("cut", "granted")
            );
            assert_eq!(server.sql(&sql), "1");
        });
        run(&sb, &["-n", &server.lock("cut"), "true"]).assert_code(0);
    });
}

#[test]
fn a_stalled_session_stops_the_command_and_exits_75() {
    with(|server: &Postgres| {
        let sb = scenarios::losing_the_lock_stops_the_command(
            server,
            "stalled",
            || {
                let sql = format!("SELECT pid {}", PgServer::lock_rows("stalled", "granted"));
                Stopped::stop(server.sql(&sql).parse().expect("a backend pid"))
            },
            "did not answer",
        );
        // The session ends once the server sees the closed connection.
        run(&sb, &["-w", "20", &server.lock("stalled"), "true"]).assert_code(0);
    });
}

#[test]
fn unix_sockets_by_query_or_percent_encoded_host() {
    with(|server: &Postgres| {
        let sb = Sandbox::new("sock");
        let mut holder = sb.hold(&[], &server.socket_lock("sock"));
        let encoded = format!(
            "postgresql://postgres@{}:{}/postgres#sock",
            server.socket_dir.display().to_string().replace('/', "%2F"),
            server.port
        );
        // Same server, same lock: over TCP too.
        run(&sb, &["-n", &encoded, "true"]).assert_code(1);
        run(&sb, &["-n", &server.lock("sock"), "true"]).assert_code(1);
        holder.release_and_finish().assert_code(0);
        run(&sb, &["-n", &encoded, "true"]).assert_code(0);
    });
}
