//! PostgreSQL locks against a real, throwaway cluster (initdb + pg_ctl): the
//! shared server-lock scenarios (tests/servers/scenarios.rs) and what only
//! PostgreSQL has (psql on the same lock, shared holders, terminated and
//! stopped sessions, unix sockets).

#![cfg(feature = "postgres")]

mod common;
mod servers;

use std::ffi::OsStr;
use std::time::Duration;

use common::records::{hostname, live_process};
use common::waiters;
use common::{Sandbox, WAIT, assert_replace_did_not_signal, wait_until};
use lockwrap::backend;
use lockwrap::spec::LockSpec;
use servers::scenarios::{self, run};
use servers::{Engine, PgServer, PgTlsServer, Postgres, Stopped, with};

/// Issue 12 (4): every holder gets a fencing token from the server, and a
/// later holder's is larger.
#[test]
fn wrappers_exclude_each_other_and_tokens_only_grow() {
    with(|server: &Postgres| {
        let tokens: Vec<u64> = scenarios::wrappers_exclude_each_other(server)
            .iter()
            .map(|t| {
                t.parse()
                    .unwrap_or_else(|_| panic!("a numeric fencing token: {t:?}"))
            })
            .collect();
        assert!(
            tokens.windows(2).all(|w| w[0] < w[1]),
            "tokens in entry order: {tokens:?}"
        );
    });
}

/// Issue 12 (4): shared (-s) holders get fencing tokens too, each its own,
/// and an exclusive holder after them a larger one.
#[test]
fn shared_holders_get_tokens_too() {
    with(|server: &Postgres| {
        let sb = Sandbox::new("shared-tokens");
        let lock = server.lock("shared-tokens");
        let first_token = sb.work_path("first");
        let setup = format!("echo \"$LOCKWRAP_TOKEN\" > '{}'", first_token.display());
        let mut first = sb.hold_after(&["-s"], &lock, &setup);
        let second = run(&sb, &["-s", &lock, "sh", "-c", "echo \"$LOCKWRAP_TOKEN\""]);
        second.assert_code(0);
        first.release_and_finish().assert_code(0);
        let exclusive = run(&sb, &[&lock, "sh", "-c", "echo \"$LOCKWRAP_TOKEN\""]);
        exclusive.assert_code(0);
        let tokens: Vec<u64> = [
            std::fs::read_to_string(&first_token).unwrap(),
            second.stdout.clone(),
            exclusive.stdout.clone(),
        ]
        .iter()
        .map(|t| {
            t.trim()
                .parse()
                .unwrap_or_else(|_| panic!("a numeric fencing token: {t:?}"))
        })
        .collect();
        assert!(
            tokens[0] < tokens[1] && tokens[1] < tokens[2],
            "{lock}: tokens {tokens:?}"
        );
    });
}

/// The waiter queues for the advisory lock on the server: `wait_for_waiters`
/// counts the sessions in pg_locks that wait for it.
#[test]
fn conflicts_time_out_and_a_release_wakes_the_waiter() {
    with(|server: &Postgres| {
        let token = scenarios::conflicts_time_out_and_a_release_wakes_the_waiter(server);
        assert!(token.parse::<u64>().is_ok(), "a numeric token: {token:?}");
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
    replace_revokes_the_holders_lease,
    a_server_of_another_kind_is_one_line_and_75,
    connecting_honours_w,
    sigterm_while_connecting_exits_143,
    the_waiting_line_opens_no_connections,
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

/// Issue 10 (1c, 2): any session can call itself "lockwrap pid=N host=H"
/// (PGAPPNAME) while it holds the advisory lock; `--replace` must not
/// signal local pid N on the server's word (it may terminate that session
/// and take the lock, or refuse).
#[test]
fn replace_never_signals_a_pid_named_by_a_sessions_application_name() {
    with(|server: &Postgres| {
        let sb = Sandbox::new("forged-appname");
        let mut victim = live_process(&sb);
        let pid = victim.pid();
        let mut psql = server.psql();
        psql.env(
            "PGAPPNAME",
            format!("lockwrap pid={pid} host={}", hostname()),
        )
        .args([
            "-c",
            "SELECT pg_advisory_lock(hashtextextended('forged', 0)); SELECT pg_sleep(600)",
        ]);
        let _session = sb.spawn(psql, "psql");
        let held = format!(
            "SELECT count(*) {}",
            PgServer::lock_rows("forged", "granted")
        );
        wait_until("psql to hold the lock", WAIT, || server.sql(&held) == "1");
        let lock = server.lock("forged");
        let status = run(&sb, &["--status", &lock]);
        assert!(
            status.stdout.contains(&format!("held by pid {pid}")),
            "the session passes for a lockwrap holder: {status:?}"
        );
        let marker = sb.work_path("ran");
        let out = common::replace_and_touch(&sb, &lock, &marker);
        assert_replace_did_not_signal(&out, &lock, pid, &marker);
        victim.kill_and_reap();
    });
}

/// lockwrap with `args`, without a password from the environment or a
/// password file.
fn run_without_password(sb: &Sandbox, args: &[&str]) -> common::Output {
    let mut command = sb.lockwrap(args);
    command
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", sb.work_path("no-such-pgpass"));
    sb.run(command)
}

/// Issue 10 (6): a wrong password is a failure to fix, not to retry: 77
/// (EX_NOPERM), one line, the password never shown.
#[test]
fn a_wrong_password_exits_77() {
    with(|server: &Postgres| {
        let sb = Sandbox::new("wrong-password");
        let (role, password) = server.password_role();
        let url = |password: &str| {
            format!(
                "postgres://{role}:{password}@127.0.0.1:{}/postgres#x",
                server.port
            )
        };
        run_without_password(&sb, &[&url(password), "true"]).assert_code(0);
        let out = run_without_password(&sb, &[&url("wr0ng-pa55"), "true"]);
        out.assert_error(77);
        assert!(!out.stderr.contains("wr0ng-pa55"), "{out:?}");
        assert!(
            out.stderr.contains("password authentication failed"),
            "{out:?}"
        );
    });
}

/// Issue 10 (6): a database that does not exist is a setting to fix: 78
/// (EX_CONFIG), one line naming the database.
#[test]
fn a_missing_database_exits_78_and_names_it() {
    with(|server: &Postgres| {
        let sb = Sandbox::new("missing-db");
        let lock = format!(
            "postgres://postgres@127.0.0.1:{}/no_such_db_10#x",
            server.port
        );
        let out = run_without_password(&sb, &[&lock, "true"]);
        out.assert_error(78);
        let reason = out.stderr.replacen(&lock, "", 1);
        assert!(
            reason.contains("no_such_db_10"),
            "the reason names the database: {out:?}"
        );
    });
}

/// Issue 12 (4): tokens strictly increase across five holders, a restart
/// of the server and a crash (transaction IDs are never handed out twice,
/// once their commit is flushed).
#[test]
fn tokens_grow_across_holders_and_a_restart() {
    let Some(server) = PgServer::own() else {
        return;
    };
    let server: Postgres = std::sync::Arc::new(server);
    let sb = Sandbox::new("pg-fence-restart");
    let lock = server.lock("fence");
    let token = || {
        let out = run(&sb, &[&lock, "sh", "-c", "echo \"$LOCKWRAP_TOKEN\""]);
        out.assert_code(0);
        out.stdout
            .trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("a numeric token: {out:?}"))
    };
    let mut tokens: Vec<u64> = (0..5).map(|_| token()).collect();
    server.restart("fast");
    tokens.push(token());
    // A crash (an immediate shutdown) loses what was not flushed: the
    // token's transaction must have been.
    server.restart("immediate");
    tokens.push(token());
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "{lock}: tokens {tokens:?} (the last two after a restart and a crash)"
    );
}

/// Runs `test` against the shared TLS cluster, or skips it.
fn with_tls(test: impl FnOnce(&PgTlsServer)) {
    if let Some(server) = PgTlsServer::shared() {
        test(&server);
    }
}

/// lockwrap with `args` and the environment `env`, with HOME in the sandbox
/// (no ~/.postgresql of the tester's), no TLS settings or password from the
/// tester's environment.
fn run_tls(sb: &Sandbox, env: &[(&str, &str)], args: &[&str]) -> common::Output {
    let mut command = sb.lockwrap(args);
    command
        .env("HOME", &sb.work)
        .env("PGPASSFILE", sb.work_path("no-such-pgpass"));
    for var in [
        "PGPASSWORD",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGSSLCERT",
        "PGSSLKEY",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    sb.run(command)
}

/// Whether lockwrap's session for `lock` (named `name`) uses TLS, "t" or
/// "f", as pg_stat_ssl says to psql, run by lockwrap as its command.
fn session_ssl(
    sb: &Sandbox,
    pg: &PgServer,
    env: &[(&str, &str)],
    lock: &str,
    name: &str,
) -> String {
    let sql = format!(
        "SELECT ssl FROM pg_stat_ssl WHERE pid IN (SELECT pid {})",
        PgServer::lock_rows(name, "granted")
    );
    let psql = pg.psql_args(&sql);
    let mut args = vec![lock];
    args.extend(psql.iter().map(String::as_str));
    let out = run_tls(sb, env, &args);
    out.assert_code(0);
    out.stdout.trim().to_owned()
}

/// The error message of `out` without the lock spec it starts with.
fn reason(out: &common::Output, lock: &str) -> String {
    out.stderr.replacen(lock, "", 1)
}

/// Issue 12 (2): sslmode=require speaks TLS, also to a database that the
/// server lets in over TLS only.
#[test]
fn sslmode_require_talks_tls() {
    with_tls(|tls| {
        let sb = Sandbox::new("tls-require");
        let lock = tls.lock("127.0.0.1", "sslonly", "sslmode=require", "tls_require");
        assert_eq!(session_ssl(&sb, &tls.pg, &[], &lock, "tls_require"), "t");
    });
}

/// Issue 12 (2): verify-full checks the chain against sslrootcert and the
/// host name against the certificate; verify-ca only the chain. A failure is
/// one line naming the host, 78.
#[test]
fn verify_full_checks_the_chain_and_the_host_name() {
    with_tls(|tls| {
        let sb = Sandbox::new("tls-verify");
        let ca = tls.ca.display().to_string();
        let full = format!("sslmode=verify-full&sslrootcert={ca}");
        for host in ["127.0.0.1", "localhost"] {
            let lock = tls.lock(host, "sslonly", &full, "verify");
            run_tls(&sb, &[], &[&lock, "true"]).assert_code(0);
        }
        let lock = tls.lock("127.0.0.2", "sslonly", &full, "verify");
        let out = run_tls(&sb, &[], &[&lock, "true"]);
        out.assert_error(78);
        assert!(reason(&out, &lock).contains("127.0.0.2"), "{out:?}");
        let ca_only = format!("sslmode=verify-ca&sslrootcert={ca}");
        let lock = tls.lock("127.0.0.2", "sslonly", &ca_only, "verify");
        run_tls(&sb, &[], &[&lock, "true"]).assert_code(0);
        let other = format!("sslmode=verify-ca&sslrootcert={}", tls.other_ca.display());
        let lock = tls.lock("127.0.0.1", "sslonly", &other, "verify");
        let out = run_tls(&sb, &[], &[&lock, "true"]);
        out.assert_error(78);
        assert!(reason(&out, &lock).contains("127.0.0.1"), "{out:?}");
    });
}

/// Issue 12 (2): verify-* without a CA to verify against, or a named file
/// that is missing, is a setting to fix: 78, naming the file.
#[test]
fn a_missing_ca_or_certificate_file_is_78() {
    with_tls(|tls| {
        let sb = Sandbox::new("tls-missing");
        let lock = tls.lock("127.0.0.1", "sslonly", "sslmode=verify-ca", "missing");
        let out = run_tls(&sb, &[], &[&lock, "true"]);
        out.assert_error(78);
        assert!(reason(&out, &lock).contains("root.crt"), "{out:?}");
        for param in ["sslrootcert", "sslcert", "sslkey"] {
            let query = format!("sslmode=require&{param}=/no/such/file-{param}.pem");
            let lock = tls.lock("127.0.0.1", "sslonly", &query, "missing");
            let out = run_tls(&sb, &[], &[&lock, "true"]);
            out.assert_error(78);
            assert!(
                out.stderr.matches(&format!("file-{param}.pem")).count() >= 2,
                "the reason names the file: {out:?}"
            );
        }
    });
}

/// Issue 12 (2): unix sockets never use TLS, as with libpq: verify-full
/// without a root CA file still connects there.
#[test]
fn unix_sockets_ignore_sslmode() {
    with_tls(|tls| {
        let sb = Sandbox::new("tls-socket");
        let lock = format!(
            "postgresql://postgres@/postgres?host={}&port={}&sslmode=verify-full#socket",
            tls.pg.socket_dir.display(),
            tls.pg.port
        );
        run_tls(&sb, &[], &[&lock, "true"]).assert_code(0);
        run_tls(&sb, &[("PGSSLMODE", "require")], &[&lock, "true"]).assert_code(0);
    });
}

/// Issue 12 (2): PGSSLMODE and PGSSLROOTCERT work like the URL's
/// parameters, and the URL wins.
#[test]
fn pgsslmode_and_pgsslrootcert_work_like_the_url() {
    with_tls(|tls| {
        let sb = Sandbox::new("tls-env");
        let ca = tls.ca.display().to_string();
        let env = [("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", ca.as_str())];
        let lock = tls.lock("127.0.0.1", "sslonly", "", "env");
        run_tls(&sb, &env, &[&lock, "true"]).assert_code(0);
        let lock = tls.lock("127.0.0.2", "sslonly", "", "env");
        run_tls(&sb, &env, &[&lock, "true"]).assert_error(78);
        let lock = tls.lock("127.0.0.2", "sslonly", "sslmode=verify-ca", "env");
        run_tls(&sb, &env, &[&lock, "true"]).assert_code(0);
        let lock = tls.lock("127.0.0.1", "sslonly", "", "env");
        run_tls(&sb, &[("PGSSLMODE", "disable")], &[&lock, "true"]).assert_error(78);
        run_tls(&sb, &[("PGSSLMODE", "bogus")], &[&lock, "true"]).assert_error(78);
    });
}

/// Issue 12 (2): sslmode=disable never speaks TLS: a database that the
/// server lets in over TLS only refuses it (78, as before TLS support).
#[test]
fn sslmode_disable_is_refused_where_tls_is_required() {
    with_tls(|tls| {
        let sb = Sandbox::new("tls-disable");
        let lock = tls.lock("127.0.0.1", "sslonly", "sslmode=disable", "disable");
        let out = run_tls(&sb, &[], &[&lock, "true"]);
        out.assert_error(78);
        assert!(reason(&out, &lock).contains("no encryption"), "{out:?}");
        let lock = tls.lock("127.0.0.1", "postgres", "sslmode=disable", "disable");
        assert_eq!(session_ssl(&sb, &tls.pg, &[], &lock, "disable"), "f");
    });
}

/// Issue 12 (2): prefer (the default) uses TLS when the server has it and
/// plain text when it has not, or when it refuses the TLS session (libpq's
/// retry).
#[test]
fn prefer_is_the_default_and_uses_tls_when_the_server_has_it() {
    with_tls(|tls| {
        let sb = Sandbox::new("tls-prefer");
        for query in ["", "sslmode=prefer"] {
            let lock = tls.lock("127.0.0.1", "postgres", query, "prefer");
            assert_eq!(session_ssl(&sb, &tls.pg, &[], &lock, "prefer"), "t");
        }
        let lock = tls.lock("127.0.0.1", "plainonly", "", "prefer");
        assert_eq!(session_ssl(&sb, &tls.pg, &[], &lock, "prefer"), "f");
    });
    with(|server: &Postgres| {
        let sb = Sandbox::new("tls-prefer-plain");
        let lock = server.lock("prefer_plain");
        assert_eq!(session_ssl(&sb, server, &[], &lock, "prefer_plain"), "f");
    });
}

/// Issue 12 (2): allow tries plain text first and TLS when the server
/// refuses it.
#[test]
fn allow_tries_plain_text_first() {
    with_tls(|tls| {
        let sb = Sandbox::new("tls-allow");
        let lock = tls.lock("127.0.0.1", "postgres", "sslmode=allow", "allow");
        assert_eq!(session_ssl(&sb, &tls.pg, &[], &lock, "allow"), "f");
        let lock = tls.lock("127.0.0.1", "sslonly", "sslmode=allow", "allow");
        assert_eq!(session_ssl(&sb, &tls.pg, &[], &lock, "allow"), "t");
    });
}

/// Issue 12 (2): a client certificate from sslcert/sslkey, or from
/// ~/.postgresql/postgresql.crt and .key, logs in where the server wants
/// one; without it the server refuses (77).
#[test]
fn a_client_certificate_logs_in_where_one_is_required() {
    with_tls(|tls| {
        let sb = Sandbox::new("tls-client-cert");
        let query = format!(
            "sslmode=require&sslcert={}&sslkey={}",
            tls.client_cert.display(),
            tls.client_key.display()
        );
        let lock = tls.lock("127.0.0.1", "certdb", &query, "cert");
        run_tls(&sb, &[], &[&lock, "true"]).assert_code(0);
        let lock = tls.lock("127.0.0.1", "certdb", "sslmode=require", "cert");
        run_tls(&sb, &[], &[&lock, "true"]).assert_error(77);
        let env = [
            ("PGSSLCERT", tls.client_cert.to_str().unwrap()),
            ("PGSSLKEY", tls.client_key.to_str().unwrap()),
        ];
        run_tls(&sb, &env, &[&lock, "true"]).assert_code(0);
        let dot = sb.work.join(".postgresql");
        std::fs::create_dir(&dot).unwrap();
        std::fs::copy(&tls.client_cert, dot.join("postgresql.crt")).unwrap();
        std::fs::copy(&tls.client_key, dot.join("postgresql.key")).unwrap();
        run_tls(&sb, &[], &[&lock, "true"]).assert_code(0);
    });
}

/// Issue 12 (2): with ~/.postgresql/root.crt, require verifies the chain
/// like verify-ca (libpq), and verify-* use it as their CA.
#[test]
fn a_root_crt_in_home_makes_require_verify_the_chain() {
    with_tls(|tls| {
        let sb = Sandbox::new("tls-root-crt");
        let dot = sb.work.join(".postgresql");
        std::fs::create_dir(&dot).unwrap();
        std::fs::copy(&tls.other_ca, dot.join("root.crt")).unwrap();
        let lock = tls.lock("127.0.0.1", "sslonly", "sslmode=require", "root");
        run_tls(&sb, &[], &[&lock, "true"]).assert_error(78);
        std::fs::copy(&tls.ca, dot.join("root.crt")).unwrap();
        run_tls(&sb, &[], &[&lock, "true"]).assert_code(0);
        let lock = tls.lock("127.0.0.2", "sslonly", "sslmode=require", "root");
        run_tls(&sb, &[], &[&lock, "true"]).assert_code(0);
        let lock = tls.lock("127.0.0.1", "sslonly", "sslmode=verify-full", "root");
        run_tls(&sb, &[], &[&lock, "true"]).assert_code(0);
    });
}

/// Issue 12 (2): a wait over TLS that is given up is cancelled on the
/// server (the cancel request goes over TLS too): nobody stays queued.
#[test]
fn a_wait_over_tls_given_up_leaves_no_waiter() {
    with_tls(|tls| {
        let sb = Sandbox::new("tls-cancel");
        let query = format!("sslmode=verify-full&sslrootcert={}", tls.ca.display());
        let lock = tls.lock("127.0.0.1", "sslonly", &query, "tls_cancel");
        let mut holder = sb.hold(&[], &lock);
        run_tls(&sb, &[], &["-w", "0.3", &lock, "true"]).assert_code(1);
        let queued = format!(
            "SELECT count(*) {}",
            PgServer::lock_rows("tls_cancel", "NOT granted")
        );
        wait_until("the given-up waiter to leave the queue", WAIT, || {
            tls.pg.sql(&queued) == "0"
        });
        holder.release_and_finish().assert_code(0);
    });
}

/// A FIFO or a device named as sslrootcert (or as SSL_CERT_FILE for
/// sslrootcert=system) is refused at once with 78 instead of hanging.
#[test]
fn a_fifo_or_device_as_sslrootcert_is_refused() {
    let sb = Sandbox::new("pg-tls-fifo");
    let fifo = sb.fifo("root.crt");
    let fifo = fifo.to_str().unwrap();
    let url = "postgres://postgres@127.0.0.1:1/postgres";
    for (lock, env) in [
        (
            format!("{url}?sslmode=verify-ca&sslrootcert={fifo}#x"),
            None,
        ),
        (
            format!("{url}?sslmode=verify-ca&sslrootcert=/dev/zero#x"),
            None,
        ),
        (
            format!("{url}?sslmode=verify-full&sslrootcert=system#x"),
            Some(fifo),
        ),
    ] {
        let mut command = sb.lockwrap([lock.as_str(), "true"]);
        if let Some(file) = env {
            command.env("SSL_CERT_FILE", file);
        }
        let mut wrapper = sb.spawn(command, "wrapper");
        let status = wrapper.wait_timeout(WAIT);
        wrapper.output(status).assert_error(78);
    }
}

/// `--also` (issue 13): a PostgreSQL and a Redis lock in one set; a
/// terminated session stops the command (75) and the Redis lock is released
/// at once, not left to expire.
#[cfg(feature = "redis")]
#[test]
fn a_lost_session_stops_a_set_and_releases_its_redis_lock() {
    use servers::RedisServer;
    with(|redis: &RedisServer| {
        with(|pg: &Postgres| {
            let sb = Sandbox::new("pg-redis-set");
            let x = redis.lock("also-pg-x");
            let p = pg.lock("also-pg-p");
            let held = |lock: &str| match run(&sb, &["-n", lock, "true"]).code() {
                0 => false,
                1 => true,
                other => panic!("{lock}: exit {other}"),
            };
            let mut args = scenarios::SHORT_LEASE.to_vec();
            args.extend(["--also", &x]);
            let mut holder = sb.hold(&args, &p);
            assert!(held(&x) && held(&p));
            let sql = format!(
                "SELECT count(pg_terminate_backend(pid)) {}",
                PgServer::lock_rows("also-pg-p", "granted")
            );
            assert_eq!(pg.sql(&sql), "1");
            let out = holder.proc.finish();
            out.assert_code(75);
            assert!(out.stderr.contains("lock lost"), "{out:?}");
            assert!(!held(&x) && !held(&p));
        });
    });
}

/// Issue 13 (7): a PostgreSQL lock has no lease the server could keep by
/// itself: lockwrap stays until the end of `--min-hold`, checking its
/// session as usual, and exits with the job's status then.
#[test]
fn min_hold_keeps_the_session_until_the_interval_ends() {
    with(|server: &Postgres| {
        let sb = Sandbox::new("min-hold");
        let lock = server.lock("min-hold");
        let run = common::min_hold_run(&sb, &scenarios::SHORT_LEASE, &lock, "2s");
        run.assert_held_two_seconds();
        assert!(run.wrapper_gone >= Duration::from_millis(1800), "{run:?}");
    });
}

/// Issue 13 (6): `--status` lists the sessions queued for a PostgreSQL
/// lock, first come first, each with its place (the server's queue is
/// first come, first served for all, so `--fair` changes nothing): a
/// lockwrap waiter with its pid, host, command and since when it waits, a
/// `--fair` one, and a psql session.
#[test]
fn waiters_of_a_postgres_lock_are_listed_in_queue_order() {
    with(|server: &Postgres| {
        let sb = Sandbox::new("pg-waiters");
        let lock = server.lock("queued13");
        let log = sb.work_path("order.log");
        let mut holder = sb.hold(&[], &lock);
        let before = common::records::now_ms();
        let mut plain = waiters::start_logging_waiter(&sb, &[], &lock, &log, 1);
        let listed = waiters::wait_listed(&sb, &lock, plain.pid());
        assert_eq!(listed.position, Some(1), "{listed:?}");
        assert_eq!(listed.host.as_deref(), Some(hostname().as_str()));
        assert!(
            listed.command.as_deref().unwrap_or("").contains("echo 1"),
            "{listed:?}"
        );
        let since = listed.since_ms.expect("since when it waits");
        assert!(
            since + 1000 >= before && since <= common::records::now_ms(),
            "{listed:?} (started at {before})"
        );
        let mut fair = waiters::start_fair_waiter(&sb, &lock, &log, 2);
        assert_eq!(
            waiters::wait_listed(&sb, &lock, fair.pid()).position,
            Some(2)
        );
        let mut psql = server.psql();
        psql.args([
            "-c",
            "SELECT pg_advisory_lock(hashtextextended('queued13', 0))",
        ]);
        let mut psql = sb.spawn(psql, "psql");
        let mut listed = Vec::new();
        wait_until("the psql session to be listed", WAIT, || {
            listed = waiters::waiters(&waiters::status_json(&sb, &lock));
            listed.len() == 3
        });
        let pids: Vec<Option<i32>> = listed.iter().map(|w| w.pid).collect();
        assert_eq!(
            pids,
            [Some(plain.pid()), Some(fair.pid()), None],
            "{listed:?}"
        );
        let positions: Vec<Option<u32>> = listed.iter().map(|w| w.position).collect();
        assert_eq!(positions, [Some(1), Some(2), Some(3)], "{listed:?}");
        assert!(
            listed[2]
                .command
                .as_deref()
                .unwrap_or("")
                .contains("pg_advisory_lock"),
            "{listed:?}"
        );
        let text = run(&sb, &["--status", &lock]).stdout;
        assert!(
            text.contains(&format!("waiting: pid {} (sh -c ", plain.pid()))
                && text.contains(", fair #1"),
            "{text}"
        );
        holder.release_and_finish().assert_code(0);
        plain.finish().assert_code(0);
        fair.finish().assert_code(0);
        psql.finish().assert_code(0);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "1\n2\n");
        let json = waiters::status_json(&sb, &lock);
        assert!(waiters::waiters(&json).is_empty(), "{json}");
    });
}
