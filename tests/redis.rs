//! Redis locks against a real, throwaway redis-server: the shared server-lock
//! scenarios (tests/servers/scenarios.rs) and what only Redis has (fencing
//! tokens, pub/sub wake-ups, the key on the server, a stopped server).

#![cfg(feature = "redis")]

mod common;
mod servers;

use common::Sandbox;
use servers::scenarios::{self, run};
use servers::{Engine, RedisServer, with};

#[test]
fn wrappers_exclude_each_other_and_tokens_only_grow() {
    with(|server: &RedisServer| {
        let tokens: Vec<u64> = scenarios::wrappers_exclude_each_other(server)
            .iter()
            .map(|t| t.parse().expect("a numeric fencing token"))
            .collect();
        assert!(
            tokens.windows(2).all(|w| w[0] < w[1]),
            "tokens in entry order: {tokens:?}"
        );
    });
}

/// The waiter is woken through pub/sub: `wait_for_waiters` sees it subscribed
/// to the release channel before the holder lets go.
#[test]
fn conflicts_time_out_and_a_release_wakes_the_waiter_through_pub_sub() {
    with(|server: &RedisServer| {
        let token = scenarios::conflicts_time_out_and_a_release_wakes_the_waiter(server);
        // The holder got token 1; attempts that failed took none.
        assert_eq!(token, "2");
    });
}

servers::shared_scenarios!(RedisServer:
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
fn a_stalled_server_stops_the_command_and_exits_75() {
    with(|server: &RedisServer| {
        let sb = scenarios::losing_the_lock_stops_the_command(
            server,
            "lossy",
            || server.stop(),
            "lock lost",
        );
        // The lease runs out on the server, and another wrapper gets the lock.
        run(&sb, &["-w", "20", &server.lock("lossy"), "true"]).assert_code(0);
    });
}

#[test]
fn a_lock_taken_away_on_the_server_stops_the_command() {
    with(|server: &RedisServer| {
        scenarios::losing_the_lock_stops_the_command(
            server,
            "stolen",
            || {
                let reply = server.command(&["SET", "lockwrap:stolen", "someone-else"]);
                assert!(reply.starts_with("+OK"), "{reply:?}");
            },
            "gone or taken",
        );
        // The owner check kept our release from deleting the other holder's key.
        assert_eq!(
            server.command(&["GET", "lockwrap:stolen"]),
            "$12\r\nsomeone-else\r\n"
        );
    });
}

/// A lock deleted on the server stops the whole tree of the command, also
/// grandchildren that ignore SIGTERM, before the wrapper exits 75.
#[test]
fn a_lock_deleted_on_the_server_stops_the_commands_tree() {
    with(|server: &RedisServer| {
        let sb = scenarios::losing_the_lock_stops_the_tree(server, "deleted", || {
            let reply = server.command(&["DEL", "lockwrap:deleted"]);
            assert_eq!(reply, ":1\r\n");
        });
        run(&sb, &["-n", &server.lock("deleted"), "true"]).assert_code(0);
    });
}

/// A password the server refuses (it has none: AUTH fails) is not printed;
/// Redis locks have no shared holders.
#[test]
fn a_refused_password_is_masked_and_shared_is_refused() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("auth");
        let with_password = RedisServer::url(server.port, Some("hunter2"));
        let out = run(&sb, &[&format!("{with_password}#x"), "true"]);
        out.assert_error(75);
        assert!(!out.stderr.contains("hunter2"), "{out:?}");
        let masked = with_password.replace("hunter2", "***");
        assert!(out.stderr.contains(&masked), "no '{masked}' in {out:?}");

        run(&sb, &["-s", &server.lock("x"), "true"]).assert_error(64);
    });
}
