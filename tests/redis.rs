//! Redis locks against a real, throwaway redis-server: the shared server-lock
//! scenarios (tests/servers/scenarios.rs) and what only Redis has (fencing
//! tokens, wake-ups, the key on the server, a stopped server).

#![cfg(feature = "redis")]

mod common;
mod servers;

use common::records::{hostname, live_process, now_ms};
use std::time::{Duration, Instant};

use common::waiters;
use common::{Sandbox, WAIT, assert_replace_did_not_signal, catches, wait_until};
use servers::scenarios::{self, run};
use servers::{Engine, RedisSentinel, RedisServer, RedisTlsServer, SENTINEL_MASTER, with};

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

/// The waiter is woken through the wake-up list: `wait_for_waiters` sees it
/// blocked on it before the holder lets go.
#[test]
fn conflicts_time_out_and_a_release_wakes_the_waiter_through_the_wake_list() {
    with(|server: &RedisServer| {
        let token = scenarios::conflicts_time_out_and_a_release_wakes_the_waiter(server);
        assert!(token.parse::<u64>().is_ok(), "a numeric token: {token:?}");
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
    replace_revokes_the_holders_lease,
    a_server_of_another_kind_is_one_line_and_75,
    connecting_honours_w,
    sigterm_while_connecting_exits_143,
    the_waiting_line_opens_no_connections,
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

/// A password the server refuses (it has none: AUTH fails) is not printed,
/// and is an authentication failure (77, issue 10); Redis locks have no
/// shared holders.
#[test]
fn a_refused_password_is_masked_and_shared_is_refused() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("auth");
        let with_password = RedisServer::url(server.port, Some("hunter2"));
        let out = run(&sb, &[&format!("{with_password}#x"), "true"]);
        out.assert_error(77);
        assert!(!out.stderr.contains("hunter2"), "{out:?}");
        let masked = with_password.replace("hunter2", "***");
        assert!(out.stderr.contains(&masked), "no '{masked}' in {out:?}");

        run(&sb, &["-s", &server.lock("x"), "true"]).assert_error(64);
    });
}

/// Issue 10 (1c, 2): any client can write a holder hash naming a local
/// pid; `--replace` must not signal that pid on the server's word (it may
/// revoke the lease and take the lock, or refuse).
#[test]
fn replace_never_signals_a_pid_named_by_a_forged_holder_hash() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("forged-hash");
        let mut victim = live_process(&sb);
        let pid = victim.pid().to_string();
        let reply = server.command(&["SET", "lockwrap:forged", "forged-token", "PX", "60000"]);
        assert!(reply.starts_with("+OK"), "{reply:?}");
        let acquired = now_ms().to_string();
        let reply = server.command(&[
            "HSET",
            "lockwrap:forged:holder",
            "host",
            &hostname(),
            "pid",
            &pid,
            "command",
            "forged",
            "acquired_ms",
            &acquired,
            "fence",
            "1",
        ]);
        assert!(reply.starts_with(':'), "{reply:?}");
        let lock = server.lock("forged");
        // The forged holder is believed by --status, as far as it goes.
        let status = run(&sb, &["--status", &lock]);
        assert!(
            status.stdout.contains(&format!("held by pid {pid}")),
            "{status:?}"
        );
        let marker = sb.work_path("ran");
        let out = common::replace_and_touch(&sb, &lock, &marker);
        assert_replace_did_not_signal(&out, &lock, victim.pid(), &marker);
        victim.kill_and_reap();
    });
}

/// Issue 10 (6): a wrong password and a missing one are failures to fix,
/// not to retry: 77 (EX_NOPERM), one line, the password never shown; the
/// missing one says where a password goes.
#[test]
fn a_wrong_or_missing_password_exits_77() {
    let Some(server) = RedisServer::with_password("right-pa55") else {
        return;
    };
    let sb = Sandbox::new("requirepass");
    let with = |password: Option<&str>| format!("{}#x", RedisServer::url(server.port, password));
    let run_clean = |lock: &str, auth: Option<&str>| {
        let mut command = sb.lockwrap([lock, "true"]);
        command.env_remove("REDISCLI_AUTH");
        if let Some(auth) = auth {
            command.env("REDISCLI_AUTH", auth);
        }
        sb.run(command)
    };
    // The right password, in the URL or in REDISCLI_AUTH, works.
    run_clean(&with(Some("right-pa55")), None).assert_code(0);
    run_clean(&with(None), Some("right-pa55")).assert_code(0);

    for (lock, auth) in [
        (with(Some("wr0ng-pa55")), None),
        (with(None), Some("wr0ng-pa55")),
    ] {
        let out = run_clean(&lock, auth);
        out.assert_error(77);
        assert!(!out.stderr.contains("wr0ng-pa55"), "{out:?}");
        assert!(!out.stderr.contains("right-pa55"), "{out:?}");
    }
    let out = run_clean(&with(None), None);
    out.assert_error(77);
    assert!(
        out.stderr.contains("REDISCLI_AUTH"),
        "a missing password says where one goes: {out:?}"
    );
}

/// The number of connections the server has accepted so far (INFO stats).
fn connections_received(server: &RedisServer) -> u64 {
    let info = server.command(&["INFO", "stats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total_connections_received in {info:?}"))
}

/// The replies the server has written so far (INFO stats): one per round
/// trip of a client that waits for each answer before it asks again.
fn replies_written(server: &RedisServer) -> u64 {
    let info = server.command(&["INFO", "stats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("total_writes_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total_writes_processed in {info:?}"))
}

/// Issue 15: an uncontended run makes three round trips to the server:
/// the greeting (PING) goes in one write with the acquire, then the
/// command's pid is recorded, then the lock released. (The first run on a
/// server also loads the scripts; a database other than 0 and a password
/// cost one more each.)
#[test]
fn an_uncontended_run_makes_three_round_trips() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("round-trips");
        let lock = server.lock("trips");
        run(&sb, &[&lock, "true"]).assert_code(0);
        for round in 0..3 {
            let before = replies_written(server);
            run(&sb, &[&lock, "sh", "-c", "true & wait"]).assert_code(0);
            // Less the reply to the INFO that asked before.
            let trips = replies_written(server) - before - 1;
            assert_eq!(trips, 3, "round {round}: {trips} round trips");
        }
    });
}

/// A listening port that never completes a TCP handshake: its accept
/// queue (backlog 0) is full of connections nobody accepts, so the kernel
/// drops every further SYN and a connect waits for the retransmissions.
/// Returns the port and what keeps it so.
fn unaccepting_port() -> (u16, Vec<std::os::fd::OwnedFd>) {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, connect, getsockname, listen,
        socket,
    };
    use std::os::fd::AsRawFd;
    let listener = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    bind(
        listener.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::LOCALHOST,
            0,
        )),
    )
    .expect("bind");
    listen(&listener, Backlog::new(0).expect("backlog 0")).expect("listen");
    let addr: SockaddrIn = getsockname(listener.as_raw_fd()).expect("getsockname");
    let mut kept = vec![listener];
    for _ in 0..4 {
        let filler = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .expect("socket");
        let _ = connect(filler.as_raw_fd(), &addr);
        kept.push(filler);
    }
    (addr.port(), kept)
}

/// Whether process `pid` has a TCP connection to 127.0.0.1:`port` that is
/// still connecting (SYN_SENT in /proc/net/tcp).
fn connecting_to(pid: u32, port: u16) -> bool {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 9
            && fields[2].ends_with(&format!(":{port:04X}"))
            && fields[3] == "02"
            && inodes.iter().any(|inode| inode == fields[9])
    })
}

/// Issue 15: a plain `redis://` lock to an address connects on lockwrap's
/// own thread (no helper thread); a connect the server never completes
/// still ends at once at SIGTERM (143) and at the deadline of `-w`.
#[test]
fn a_connect_that_never_completes_ends_at_sigterm_and_at_w() {
    let (port, _kept) = unaccepting_port();
    let sb = Sandbox::new("syn-dropped");
    let lock = format!("redis://127.0.0.1:{port}#x");
    let mut plain = sb.spawn(sb.lockwrap([&lock, "sh", "-c", "true & wait"]), "plain");
    wait_until("lockwrap to be connecting", WAIT, || {
        connecting_to(plain.pid() as u32, port)
    });
    plain.signal(nix::sys::signal::Signal::SIGTERM);
    let status = plain.wait_timeout(Duration::from_secs(1));
    plain.output(status).assert_code(143);

    let started = Instant::now();
    let out = run(&sb, &["-w", "0.5", &lock, "true"]);
    assert!(
        matches!(out.code(), 1 | 75),
        "-w 0.5 ended neither with 1 nor 75: {out:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "-w 0.5 took {:?}",
        started.elapsed()
    );
}

/// Issue 11 (2): a `--slots 2` waiter keeps its connections for the whole
/// wait: over 3 s it opens at most 6 (one per slot for its first look,
/// which takes a free slot at once, then one per slot to wait on and one
/// for its place in line), not a new one per look at the slots.
#[test]
fn a_slots_waiter_keeps_its_connections() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("slots-conns");
        let lock = server.lock("slots-conns");
        let (mut first, _) = sb.hold_slot(&["--slots", "2"], &lock);
        let (mut second, _) = sb.hold_slot(&["--slots", "2"], &lock);
        let before = connections_received(server);
        let command = sb.lockwrap(["--slots", "2", "-w", "20", &lock, "true"]);
        let mut waiter = sb.spawn(command, "waiter");
        wait_until("the waiter to catch SIGTERM", WAIT, || {
            catches(waiter.pid(), libc::SIGTERM)
        });
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs(3).saturating_sub(started.elapsed()));
        assert!(waiter.is_running(), "the waiter ended");
        // Less the connection that asks.
        let opened = connections_received(server) - before - 1;
        assert!(
            opened <= 6,
            "a --slots 2 waiter opened {opened} connections in 3 s"
        );
        first.release_and_finish().assert_code(0);
        waiter.finish().assert_code(0);
        second.release_and_finish().assert_code(0);
    });
}

/// Issue 11 (4): a wait that timed out leaves no key behind on the server:
/// once the holder has released the lock, nobody holds it.
#[test]
fn a_timed_out_acquire_leaves_no_key_behind() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("phantom");
        let lock = server.lock("phantom");
        for round in 0..10 {
            let mut holder = sb.hold(&[], &lock);
            run(&sb, &["-w", "0.3", &lock, "true"]).assert_code(1);
            holder.release_and_finish().assert_code(0);
            assert_eq!(
                server.command(&["EXISTS", "lockwrap:phantom"]),
                ":0\r\n",
                "round {round}: the key outlived its holder"
            );
        }
    });
}

/// Issue 11 (2): a waiter keeps one connection for the whole wait to try
/// the lock with (it used to keep another one, subscribed to the release
/// channel), and (issue 13) one for its place in the line of waiters, whose
/// lease a helper thread renews; three waiters hold six connections next to
/// the holder's.
#[test]
fn a_waiter_keeps_two_connections() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("one-conn");
        let lock = server.lock("one");
        let mut holder = sb.hold(&[], &lock);
        let mut waiters: Vec<_> = (0..3)
            .map(|i| sb.spawn(sb.lockwrap(["-w", "30", &lock, "true"]), &format!("w{i}")))
            .collect();
        // Waiting: blocked on the wake-up list (or, as they used to,
        // subscribed to the release channel).
        wait_until("three waiting clients", WAIT, || {
            server
                .command(&["CLIENT", "LIST"])
                .lines()
                .filter(|l| l.contains(" flags=b ") || l.contains(" sub=1 "))
                .count()
                == 3
        });
        // The holder's, the waiters' (two each, the second once a waiter
        // has waited long enough to take a place in the line), and the one
        // that asks; and no more.
        let clients = || {
            let list = server.command(&["CLIENT", "LIST"]);
            let count = list.lines().filter(|l| l.starts_with("id=")).count();
            (count, list)
        };
        wait_until("each waiter's place in the line", WAIT, || {
            clients().0 > 3 * 2 + 1
        });
        let (count, list) = clients();
        assert_eq!(count, 1 + 3 * 2 + 1, "{lock}: {count} clients: {list}");
        holder.release_and_finish().assert_code(0);
        for waiter in &mut waiters {
            waiter.finish().assert_code(0);
        }
    });
}

/// A waiter with a short lease (its calls time out after a third of it)
/// still waits for its `-w` and ends with 1, not 75: a blocked BLPOP ends on
/// the server's clock tick, up to 100 ms after its timeout.
#[test]
fn a_short_lease_waiter_waits_for_its_w() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("short-lease-wait");
        let lock = server.lock("short-lease");
        let mut holder = sb.hold(&[], &lock);
        for lease in ["0.2", "0.3"] {
            let out = run(&sb, &["--lease", lease, "-w", "1", &lock, "true"]);
            out.assert_code(1);
        }
        holder.release_and_finish().assert_code(0);
    });
}

/// A key of another type at the wake-up list's name: the holder's release
/// still frees the lock without a warning, and a waiter still gets it.
#[test]
fn a_wake_list_of_another_type_changes_nothing() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("wake-type");
        let lock = server.lock("wt");
        server.command(&["SET", "lockwrap:wt:wake", "hello"]);
        let mut holder = sb.hold(&[], &lock);
        let mut waiter = sb.spawn(sb.lockwrap(["-w", "20", &lock, "true"]), "waiter");
        wait_until("the waiter to catch SIGTERM", WAIT, || {
            catches(waiter.pid(), libc::SIGTERM)
        });
        let out = holder.release_and_finish();
        out.assert_code(0);
        assert_eq!(out.stderr, "", "{lock}: the release warned: {out:?}");
        waiter.finish().assert_code(0);
    });
}

/// A `--slots` waiter ends promptly on SIGTERM, with 143, although its slot
/// threads block in BLPOP on the server.
#[test]
fn a_slots_waiter_ends_promptly_at_sigterm() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("slots-term");
        let lock = server.lock("st");
        let (mut first, _) = sb.hold_slot(&["--slots", "2"], &lock);
        let (mut second, _) = sb.hold_slot(&["--slots", "2"], &lock);
        let mut waiter = sb.spawn(sb.lockwrap(["--slots", "2", &lock, "true"]), "waiter");
        server.wait_for_waiters("st.slot0", 2);
        let sent = Instant::now();
        waiter.signal(nix::sys::signal::Signal::SIGTERM);
        let status = waiter.wait_timeout(WAIT);
        let took = sent.elapsed();
        waiter.output(status).assert_code(143);
        assert!(
            took < Duration::from_millis(800),
            "{lock}: SIGTERM took {took:?} to end the waiter"
        );
        first.release_and_finish().assert_code(0);
        second.release_and_finish().assert_code(0);
    });
}

/// A waiter stopped (SIGSTOP, Ctrl-Z) and continued while it blocks in
/// BLPOP waits on: Linux ends a socket call that has a timeout with EINTR
/// after a stop and continue, even without a signal handler, which is no
/// reason to give up with 75.
#[test]
fn a_stopped_and_continued_waiter_waits_on() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("stop-cont");
        let lock = server.lock("sc");
        let mut holder = sb.hold(&[], &lock);
        let mut waiter = sb.spawn(sb.lockwrap([&lock, "true"]), "waiter");
        // Blocked in BLPOP again: at least one blocked client (a connection
        // given up at the stop may still be closing when the new one blocks).
        let blocked_again = || {
            wait_until("the waiter to block in BLPOP again", WAIT, || {
                server
                    .command(&["CLIENT", "LIST"])
                    .lines()
                    .any(|l| l.contains(" flags=b ") && l.contains(" cmd=blpop "))
            })
        };
        for _ in 0..3 {
            blocked_again();
            drop(servers::Stopped::stop(waiter.pid()));
        }
        blocked_again();
        assert!(waiter.is_running(), "{lock}: the waiter gave up");
        holder.release_and_finish().assert_code(0);
        waiter.finish().assert_code(0);
    });
}

/// Whether process `pid` is stopped (state T in /proc/PID/stat).
fn is_stopped(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(") ")?.1.starts_with('T')))
        .unwrap_or(false)
}

/// A holder stopped (Ctrl-Z) and continued while it waits for the answer
/// to its release still releases the lock: Linux ends a socket read that
/// has a timeout with EINTR after a stop and continue, even with every
/// caught signal held back, and the lock used to stay taken for the whole
/// lease ("cannot release the lock (Interrupted system call)").
#[test]
fn a_holder_stopped_and_continued_in_its_release_still_releases() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("stop-release");
        let lock = server.lock("sr");
        let mut holder = sb.hold(&[], &lock);
        // The release (a script that writes) waits while writes are paused.
        server.command(&["CLIENT", "PAUSE", "60000", "WRITE"]);
        holder.release();
        wait_until("the release to wait for the paused server", WAIT, || {
            server
                .command(&["CLIENT", "LIST"])
                .lines()
                .any(|l| l.contains(" flags=b ") && l.contains(" cmd=evalsha "))
        });
        let stopped = servers::Stopped::stop(holder.proc.pid());
        wait_until("the holder to stop", WAIT, || is_stopped(holder.proc.pid()));
        drop(stopped);
        wait_until("the holder to go on", WAIT, || {
            !is_stopped(holder.proc.pid())
        });
        server.command(&["CLIENT", "UNPAUSE"]);
        let out = holder.proc.finish();
        out.assert_code(0);
        assert!(out.stderr.is_empty(), "{lock}: {out:?}");
        assert_eq!(
            server.command(&["EXISTS", "lockwrap:sr"]).trim(),
            ":0",
            "{lock}: the lock is still taken after its holder ended"
        );
    });
}

/// Issue 12 (5): the fencing token never goes backwards, even when the
/// server loses its data (a restart without persistence, here FLUSHALL):
/// a holder after the loss gets a larger token than every holder before.
#[test]
fn the_token_never_goes_backwards_after_data_loss() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("fence-loss");
        let lock = server.lock("fence");
        let token = || {
            let out = run(&sb, &[&lock, "sh", "-c", "echo \"$LOCKWRAP_TOKEN\""]);
            out.assert_code(0);
            out.stdout
                .trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("a numeric token: {out:?}"))
        };
        let first = token();
        let second = token();
        assert!(first < second, "{first} then {second}");
        server.command(&["FLUSHALL"]);
        let after_loss = token();
        assert!(
            second < after_loss,
            "{lock}: token {after_loss} after the data loss, {second} before"
        );
    });
}

/// Issue 12 (5): the token keeps growing across a restart of a server
/// without persistence, which forgets the counter.
#[test]
fn the_token_grows_across_a_restart_without_persistence() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let sb = Sandbox::new("fence-restart");
    let lock = server.lock("fence");
    let token = || {
        let out = run(&sb, &[&lock, "sh", "-c", "echo \"$LOCKWRAP_TOKEN\""]);
        out.assert_code(0);
        out.stdout
            .trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("a numeric token: {out:?}"))
    };
    let before = token();
    server.restart();
    let after = token();
    assert!(
        before < after,
        "{lock}: token {after} after the restart, {before} before"
    );
}

/// Issue 12 (1): `lockwrap` with `rediss://` `args`, the trust store given
/// by `ssl_cert_file` only (SSL_CERT_FILE; SSL_CERT_DIR unset) or, with
/// None, the system's alone; the command writes `$LOCKWRAP_TOKEN` to
/// `token` in the sandbox.
fn run_tls(sb: &Sandbox, ssl_cert_file: Option<&std::path::Path>, args: &[&str]) -> common::Output {
    let token = sb.work_path("token");
    let _ = std::fs::remove_file(&token);
    let mut command = sb.lockwrap(args);
    command.args([
        "sh",
        "-c",
        &format!("echo \"$LOCKWRAP_TOKEN\" > '{}'", token.display()),
    ]);
    command
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    if let Some(file) = ssl_cert_file {
        command.env("SSL_CERT_FILE", file);
    }
    sb.run(command)
}

/// The fencing token the last [`run_tls`] command saw.
fn tls_token(sb: &Sandbox) -> u64 {
    let token = std::fs::read_to_string(sb.work_path("token")).expect("the command ran");
    token
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("LOCKWRAP_TOKEN is not a number: {token:?}"))
}

/// Issue 12 (1a, 1b): over TLS, with the private CA from SSL_CERT_FILE (as
/// OpenSSL takes it) or from `?tls_ca=`, the lock is taken, the command gets
/// its fencing token, and the lock is released (a `-n` after it gets it).
#[test]
fn rediss_takes_the_lock_with_the_ca_from_ssl_cert_file_or_tls_ca() {
    let Some(server) = RedisTlsServer::start(false) else {
        return;
    };
    let sb = Sandbox::new("rediss");
    let ca = server.files.path("ca.pem");
    let lock = format!("{}#tls", server.url("127.0.0.1"));
    run_tls(&sb, Some(&ca), &["-n", &lock]).assert_code(0);
    let first = tls_token(&sb);
    run_tls(&sb, Some(&ca), &["-n", &lock]).assert_code(0);
    let second = tls_token(&sb);
    assert!(first < second, "tokens {first}, {second}");

    let with_ca = format!(
        "{}?tls_ca={}#tls",
        server.url("127.0.0.1"),
        server.files.url_path("ca.pem")
    );
    run_tls(&sb, None, &["-n", &with_ca]).assert_code(0);
    assert!(second < tls_token(&sb));
    // SSL_CERT_DIR: a directory of CA files, as OpenSSL's CApath.
    let dir = sb.work_path("certs");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(&ca, dir.join("lockwrap-test-ca.pem")).unwrap();
    let mut command = sb.lockwrap(["-n", &lock, "true"]);
    command
        .env_remove("SSL_CERT_FILE")
        .env("SSL_CERT_DIR", &dir);
    sb.run(command).assert_code(0);
}

/// Issue 15: `?tls_ca=` is the whole trust store, so the system's is not
/// read at all (reading it was most of a TLS lock's cost: about 5 ms for
/// Debian's 146 CAs, in a bundle and in a directory): a broken
/// SSL_CERT_FILE or SSL_CERT_DIR does not stop a lock that names its CA,
/// and still stops one that relies on them (78).
#[test]
fn rediss_with_tls_ca_reads_no_system_trust_store() {
    let Some(server) = RedisTlsServer::start(false) else {
        return;
    };
    let sb = Sandbox::new("rediss-own-ca");
    let broken = sb.work_path("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let fifo = sb.work_path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let dir = sb.work_path("certs");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(&broken, dir.join("broken.pem")).unwrap();
    let with_ca = format!(
        "{}?tls_ca={}#own-ca",
        server.url("127.0.0.1"),
        server.files.url_path("ca.pem")
    );
    let without = format!("{}#own-ca", server.url("127.0.0.1"));
    for (var, value) in [
        ("SSL_CERT_FILE", &broken),
        ("SSL_CERT_FILE", &fifo),
        ("SSL_CERT_DIR", &dir),
    ] {
        let mut command = sb.lockwrap(["-n", &with_ca, "true"]);
        command
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .env(var, value);
        let out = sb.run(command);
        out.assert_code(0);
        let mut command = sb.lockwrap(["-n", &without, "true"]);
        command
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .env(var, value);
        let out = sb.run(command);
        out.assert_error(78);
        assert!(out.stderr.contains("trust store"), "{var}: {out:?}");
    }
}

/// Issue 12 (1c, 1d): a certificate the trust store does not vouch for, or
/// one for another name, is refused: 78, one line naming the host and why,
/// and the command does not run.
#[test]
fn rediss_refuses_an_untrusted_or_mismatched_certificate() {
    let Some(server) = RedisTlsServer::start(false) else {
        return;
    };
    let sb = Sandbox::new("rediss-untrusted");
    let lock = format!("{}#tls", server.url("127.0.0.1"));
    let out = run_tls(&sb, None, &["-n", &lock]);
    out.assert_error(78);
    assert!(out.stderr.contains("127.0.0.1"), "names the host: {out:?}");
    assert!(out.stderr.contains("TLS"), "{out:?}");
    assert!(out.stderr.contains("not trusted"), "{out:?}");
    assert!(!sb.work_path("token").exists(), "the command ran");

    // The certificate is for 127.0.0.1 only.
    let ca = server.files.path("ca.pem");
    let lock = format!("{}#tls", server.url("localhost"));
    let out = run_tls(&sb, Some(&ca), &["-n", &lock]);
    out.assert_error(78);
    assert!(out.stderr.contains("(host localhost)"), "{out:?}");
    assert!(out.stderr.contains("not valid for"), "{out:?}");
    assert!(!sb.work_path("token").exists(), "the command ran");
}

/// Issue 12 (1e): a server with `tls-auth-clients yes` refuses a client
/// without a certificate (one line, not 0) and takes the one from
/// `?tls_cert=&tls_key=`.
#[test]
fn rediss_gives_the_client_certificate_from_the_url() {
    let Some(server) = RedisTlsServer::start(true) else {
        return;
    };
    let sb = Sandbox::new("rediss-mtls");
    let ca = server.files.path("ca.pem");
    let lock = format!("{}#mtls", server.url("127.0.0.1"));
    let out = run_tls(&sb, Some(&ca), &["-n", &lock]);
    assert_ne!(out.code(), 0, "{out:?}");
    out.assert_error(out.code());
    assert!(out.stderr.contains("client certificate"), "{out:?}");
    assert!(!sb.work_path("token").exists(), "the command ran");

    let with_cert = format!(
        "{}?tls_cert={}&tls_key={}#mtls",
        server.url("127.0.0.1"),
        server.files.url_path("client.pem"),
        server.files.url_path("client.key"),
    );
    run_tls(&sb, Some(&ca), &["-n", &with_cert]).assert_code(0);
    tls_token(&sb);
}

/// Issue 12 (1): missing or unreadable TLS files named in the URL are 78,
/// naming the parameter and the path; TLS parameters on a `redis://` URL
/// are refused rather than ignored (no plain text where TLS was meant).
#[test]
fn rediss_file_parameters_are_checked() {
    let Some(server) = RedisTlsServer::start(false) else {
        return;
    };
    let sb = Sandbox::new("rediss-files");
    let missing = sb.work_path("no-such.pem");
    let missing = missing.to_str().unwrap();
    let base = server.url("127.0.0.1");
    let client = server.files.url_path("client.pem");
    for (url, parameter) in [
        (format!("{base}?tls_ca={missing}#f"), "tls_ca"),
        (
            format!("{base}?tls_cert={missing}&tls_key={client}#f"),
            "tls_cert",
        ),
        (
            format!("{base}?tls_cert={client}&tls_key={missing}#f"),
            "tls_key",
        ),
    ] {
        let out = run_tls(&sb, None, &["-n", &url]);
        out.assert_error(78);
        assert!(out.stderr.contains(parameter), "{out:?}");
        assert!(out.stderr.contains(missing), "{out:?}");
    }
    let out = run_tls(&sb, None, &["-n", &format!("{base}?tls_cert={client}#f")]);
    out.assert_error(78);
    assert!(out.stderr.contains("tls_key"), "{out:?}");
    // A key that is not the certificate's (the server's key).
    let other_key = server.files.url_path("server.key");
    let out = run_tls(
        &sb,
        None,
        &[
            "-n",
            &format!("{base}?tls_cert={client}&tls_key={other_key}#f"),
        ],
    );
    out.assert_error(78);
    assert!(out.stderr.contains("does not go with"), "{out:?}");

    let plain = format!(
        "redis://127.0.0.1:{}?tls_ca={}#f",
        server.port,
        server.files.url_path("ca.pem")
    );
    let out = run_tls(&sb, None, &["-n", &plain]);
    out.assert_error(78);
    assert!(out.stderr.contains("rediss://"), "{out:?}");
}

/// Issue 12 (1): `rediss://` to a server that does not speak TLS fails
/// with one line naming TLS (no silent fallback to plain text), and the
/// command does not run: 78 from a server that answers with something
/// else, 75 (a timeout) from plain Redis, which waits for the end of a
/// line that the TLS handshake never sends.
#[test]
fn rediss_to_a_plain_port_fails() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("rediss-plain");
        let lock = format!("rediss://127.0.0.1:{}#plain", server.port);
        // A short lease: calls, the handshake too, give up after a third of it.
        let out = run_tls(&sb, None, &["--lease", "3", &lock]);
        out.assert_error(75);
        assert!(out.stderr.contains("TLS"), "{out:?}");
        assert!(out.stderr.contains("(host 127.0.0.1"), "{out:?}");
        assert!(!sb.work_path("token").exists(), "the command ran");
        assert_eq!(server.command(&["EXISTS", "lockwrap:plain"]), ":0\r\n");

        let lock = format!("rediss://127.0.0.1:{}#http", servers::http_server());
        let out = run_tls(&sb, None, &["--lease", "3", &lock]);
        out.assert_error(78);
        assert!(out.stderr.contains("does not answer with TLS"), "{out:?}");
        assert!(out.stderr.contains("(host 127.0.0.1)"), "{out:?}");
        assert!(!sb.work_path("token").exists(), "the command ran");
    });
}

/// Issue 12 (6): a lock through Redis Sentinel
/// (`redis+sentinel://SENTINEL/MASTER#NAME`) is taken on the master the
/// sentinel names.
#[test]
fn sentinel_finds_the_master() {
    let Some(setup) = RedisSentinel::start() else {
        return;
    };
    let sb = Sandbox::new("sentinel");
    let lock = setup.lock(SENTINEL_MASTER, "viasentinel");
    let out = run(&sb, &[&lock, "sh", "-c", "echo $LOCKWRAP_TOKEN"]);
    out.assert_code(0);
    let token: u64 = out.stdout.trim().parse().expect("a numeric token");
    // Taken on the master: it handed out that fencing token.
    assert_eq!(
        setup.master.command(&["GET", "lockwrap:viasentinel:fence"]),
        format!("${}\r\n{token}\r\n", token.to_string().len())
    );
}

/// Issue 12 (6): a forced failover while a holder runs. Each renewal goes
/// to the master the sentinels name now, so the holder keeps a valid lock on
/// the new master, where its key was replicated before the failover (had it
/// not been, the renewal would find no key and stop the command with 75).
/// It never keeps renewing only the old master, which Sentinel demotes
/// seconds later: that let a second wrapper take the lock on the new master
/// while the first still ran. Once the holder is done, a new wrapper through
/// the sentinel takes the lock on the new master, with a larger token.
#[test]
fn a_sentinel_failover_keeps_the_lock_on_the_new_master() {
    let Some(setup) = RedisSentinel::start() else {
        return;
    };
    let sb = Sandbox::new("failover");
    let lock = setup.lock(SENTINEL_MASTER, "failover");
    let token_file = sb.work_path("token");
    let mut holder = sb.hold_after(
        &["--lease", "1"],
        &lock,
        &format!("echo $LOCKWRAP_TOKEN > '{}'", token_file.display()),
    );
    let first: u64 = std::fs::read_to_string(&token_file)
        .expect("the token file")
        .trim()
        .parse()
        .expect("a numeric token");
    let reply = setup.sentinel_command(&["SENTINEL", "FAILOVER", SENTINEL_MASTER]);
    assert!(reply.starts_with("+OK"), "{reply:?}");
    wait_until("the sentinel to name the new master", WAIT, || {
        setup.master_port() == Some(setup.replica.port)
    });
    // Within a renewal or two the holder either renews on the new master
    // (its key is there) or finds its key gone there and stops (75). While
    // it runs after that, nobody else gets in on the new master.
    let started = Instant::now();
    let mut held_on_the_new_master = 0;
    while started.elapsed() < Duration::from_secs(4) && holder.proc.is_running() {
        if started.elapsed() > Duration::from_secs(1) {
            let out = run(&sb, &["-n", &lock, "true"]);
            if holder.proc.is_running() {
                out.assert_code(1);
                held_on_the_new_master += 1;
            }
        }
    }
    if holder.proc.is_running() {
        assert!(held_on_the_new_master > 0, "{lock}: never checked");
        holder.release_and_finish().assert_code(0);
    } else {
        let out = holder.proc.finish();
        out.assert_error(75);
        assert!(
            !common::process_is_running(holder.child_pid),
            "the command was stopped"
        );
    }

    let out = run(
        &sb,
        &["-w", "20", &lock, "sh", "-c", "echo $LOCKWRAP_TOKEN"],
    );
    out.assert_code(0);
    let second: u64 = out.stdout.trim().parse().expect("a numeric token");
    assert!(second > first, "{second} > {first}");
    // Taken on the new master.
    assert_eq!(
        setup.replica.command(&["GET", "lockwrap:failover:fence"]),
        format!("${}\r\n{second}\r\n", second.to_string().len())
    );
}

/// Issue 12 (6): a master name the sentinels do not know is a setting that
/// cannot work (78); no sentinel answering may pass (75). One line each.
#[test]
fn an_unknown_master_name_is_78_and_no_sentinel_75() {
    let Some(setup) = RedisSentinel::start() else {
        return;
    };
    let sb = Sandbox::new("sentinel-unknown");
    let out = run(&sb, &[&setup.lock("nosuchmaster", "x"), "true"]);
    out.assert_error(78);
    assert!(out.stderr.contains("nosuchmaster"), "{out:?}");

    let nobody = servers::free_port();
    let lock = format!("redis+sentinel://127.0.0.1:{nobody}/{SENTINEL_MASTER}#x");
    run(&sb, &[&lock, "true"]).assert_error(75);
}

/// A FIFO or a device named as a CA file (or as SSL_CERT_FILE) is refused at
/// once with 78: it used to block lockwrap in open() (a FIFO, deaf even to
/// SIGTERM) or fill its memory (/dev/zero).
#[test]
fn a_fifo_or_device_as_a_ca_file_is_refused() {
    let sb = Sandbox::new("tls-fifo");
    let fifo = sb.fifo("ca.pem");
    let fifo = fifo.to_str().unwrap();
    let port = 1; // nothing listens; the files are checked before connecting
    for (lock, env) in [
        (format!("rediss://127.0.0.1:{port}?tls_ca={fifo}#x"), None),
        (
            format!("rediss://127.0.0.1:{port}?tls_ca=/dev/zero#x"),
            None,
        ),
        (format!("rediss://127.0.0.1:{port}#x"), Some(fifo)),
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

/// A SIGTERM during a TLS handshake the server never answers ends lockwrap
/// with 143 at once: the handshake's reads retry on EINTR, so it runs on a
/// helper thread the wait can leave (it took the handshake's 10 s timeout).
#[test]
fn sigterm_during_a_stalled_tls_handshake_exits_143() {
    let sb = Sandbox::new("tls-stall-term");
    let (port, accepted) = servers::silent_server();
    let lock = format!("rediss://127.0.0.1:{port}#x");
    let mut wrapper = sb.spawn(sb.lockwrap([&lock, "true"]), "wrapper");
    accepted
        .recv_timeout(WAIT)
        .expect("lockwrap to connect to the silent server");
    wait_until("the wrapper to catch SIGTERM", WAIT, || {
        catches(wrapper.pid(), libc::SIGTERM)
    });
    assert!(wrapper.is_running(), "{lock}: it ended before the signal");
    wrapper.signal(nix::sys::signal::Signal::SIGTERM);
    let status = wrapper.wait_timeout(Duration::from_secs(1));
    wrapper.output(status).assert_code(143);
}

/// `--also` (issue 13): every Redis lock of a set is renewed (each stays
/// held for longer than its lease), the command gets each one's fencing
/// token, and losing any one of them stops the command (75) and releases
/// the others at once.
#[test]
fn a_set_renews_every_lease_and_losing_any_stops_the_command() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("redis-set");
        let x = server.lock("also-x");
        let y = server.lock("also-y");
        let m = format!("mkdir:{}", sb.locks.join("m").display());
        let held = |lock: &str| match run(&sb, &["-n", lock, "true"]).code() {
            0 => false,
            1 => true,
            other => panic!("{lock}: exit {other}"),
        };
        let tokens = sb.work_path("tokens");
        let setup = format!(
            "printf '%s\\n%s' \"$LOCKWRAP_TOKEN\" \"$LOCKWRAP_TOKENS\" > '{}'",
            tokens.display()
        );
        let mut args = scenarios::SHORT_LEASE.to_vec();
        args.extend(["--also", &m, "--also", &x]);
        let mut holder = sb.hold_after(&args, &y, &setup);
        // LOCKWRAP_TOKEN: the first lock given that has one (y); then
        // "TOKEN LOCK" for y and x, in the order given.
        let text = std::fs::read_to_string(&tokens).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text:?}");
        let (y_token, y_lock) = lines[1].split_once(' ').expect("TOKEN LOCK");
        let (x_token, x_lock) = lines[2].split_once(' ').expect("TOKEN LOCK");
        assert_eq!((y_lock, x_lock), (y.as_str(), x.as_str()), "{text:?}");
        assert_eq!(lines[0], y_token, "{text:?}");
        assert!(y_token.parse::<u64>().is_ok() && x_token.parse::<u64>().is_ok());
        // Longer than the lease: every lock has been renewed.
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(3500) {
            for lock in [&x, &y, &m] {
                assert!(held(lock), "{lock} was lost");
            }
        }
        let reply = server.command(&["DEL", "lockwrap:also-x"]);
        assert_eq!(reply, ":1\r\n");
        let out = holder.proc.finish();
        out.assert_code(75);
        assert!(out.stderr.contains("lock lost"), "{out:?}");
        assert!(
            !common::process_is_running(holder.child_pid),
            "the command was not stopped: {out:?}"
        );
        // Released, not left to expire.
        for lock in [&x, &y, &m] {
            assert!(!held(lock), "{lock} is still held");
        }
        assert_eq!(sb.lock_dir_entries(), Vec::<String>::new());
    });
}

/// Issue 13 (7): `--min-hold` leaves the rest of the interval to the
/// server. lockwrap exits as soon as the job is done, with the job's status,
/// and the key, although its lease (600 ms) is shorter, lasts the two
/// seconds and then expires: the waiter gets the lock then.
#[test]
fn min_hold_leaves_the_lock_to_the_server_and_exits_at_once() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("min-hold");
        let lock = server.lock("fleet");
        let run = common::min_hold_run(&sb, &["--lease", "600ms"], &lock, "2s");
        run.assert_held_two_seconds();
        assert!(
            run.wrapper_gone <= run.probe.0,
            "lockwrap stayed for the interval: {run:?}"
        );
    });
}

/// `--also`: a lock of the set already taken stays held while lockwrap
/// waits for the next one, however long the wait: its lease is renewed
/// during the wait (not only once the command runs), so nobody else takes
/// it meanwhile and the command, once every lock is free, runs holding all.
#[test]
fn a_set_renews_the_leases_it_holds_while_it_waits_for_the_next_lock() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("redis-set-wait");
        let first = server.lock("wait-a");
        let second = server.lock("wait-b");
        let mut holder = sb.hold(&[], &second);
        let marker = sb.work_path("ran");
        let script = format!("touch '{}'", marker.display());
        let mut args = scenarios::SHORT_LEASE.to_vec();
        args.extend(["-w", "60", &first, "--also", &second, "sh", "-c", &script]);
        let mut waiter = sb.spawn(sb.lockwrap(&args), "waiter");
        server.wait_for_waiters("wait-b", 1);
        // Longer than the lease of the lock the waiter holds.
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(3500) {
            let out = run(&sb, &["-n", &first, "true"]);
            assert_eq!(out.code(), 1, "{first} was lost while waiting: {out:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        holder.release_and_finish().assert_code(0);
        waiter.finish().assert_code(0);
        assert!(marker.exists());
    });
}

/// `--min-hold` with a set of Redis locks (`--also`): every key is left to
/// the server with the rest of the interval, and lockwrap exits at once, as
/// with one Redis lock (it used to stay for the whole interval, so that a
/// SIGKILL of it freed the keys when their lease ran out).
#[test]
fn min_hold_leaves_every_redis_lock_of_a_set_to_the_server() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("min-hold-set");
        let lock = server.lock("fleet-a");
        let other = server.lock("fleet-b");
        let run = common::min_hold_run(&sb, &["--lease", "600ms", "--also", &other], &lock, "2s");
        run.assert_held_two_seconds();
        assert!(
            run.wrapper_gone <= run.probe.0,
            "lockwrap stayed for the interval: {run:?}"
        );
    });
}

/// A set of a Redis lock and a flock lock: lockwrap stays for the flock
/// lock, but the Redis key is the server's until the interval ends, so a
/// SIGKILL of lockwrap during the hold frees only the flock lock, not the
/// Redis lock once its (short) lease would have run out.
#[test]
fn min_hold_with_a_mixed_set_survives_a_sigkill_for_the_redis_lock() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("min-hold-mixed");
        let lock = server.lock("fleet-mixed");
        let file = common::Backend::Flock.spec(&sb, "fleet-mixed");
        let done = sb.work_path("done");
        let mut command = sb.lockwrap(["--lease", "600ms", "--min-hold", "60s", &lock]);
        command.args(["--also", &file, "sh", "-c"]);
        command.arg(format!("touch '{}'", done.display()));
        let mut wrapper = sb.spawn(command, "wrapper");
        wait_until("the job to end", WAIT, || done.exists());
        // lockwrap now holds both for the rest of the minute.
        sb.run(sb.lockwrap(["-n", &file, "true"])).assert_code(1);
        wrapper.kill_and_reap();
        sb.run(sb.lockwrap(["-n", &file, "true"])).assert_code(0);
        // The key is still there, with the interval's lease rather than
        // one of 600 ms that nobody renews any more.
        sb.run(sb.lockwrap(["-n", &lock, "true"])).assert_code(1);
        let reply = server.command(&["PTTL", "lockwrap:fleet-mixed"]);
        let ttl: i64 = reply
            .trim()
            .trim_start_matches(':')
            .parse()
            .unwrap_or_else(|_| panic!("PTTL answered {reply:?}"));
        assert!(ttl > 50_000, "the key's lease is not the interval's: {ttl}");
    });
}

/// How long a Redis waiter's ticket outlives its last renewal (the
/// constant in src/backend/redis_line.rs): a waiter killed without a word
/// holds nobody up for longer.
const TICKET_LEASE: Duration = Duration::from_secs(3);

/// The keys of the line of lock `name` on `server` (`lockwrap:NAME:line*`).
fn line_keys(server: &RedisServer, name: &str) -> Vec<String> {
    let reply = server.command(&["KEYS", &format!("lockwrap:{name}:line*")]);
    let mut lines = reply.split("\r\n");
    let count: usize = lines
        .next()
        .and_then(|l| l.strip_prefix('*'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("KEYS: {reply:?}"));
    let keys: Vec<String> = lines
        .filter(|l| !l.is_empty() && !l.starts_with('$'))
        .map(str::to_owned)
        .collect();
    assert_eq!(keys.len(), count, "KEYS: {reply:?}");
    keys
}

/// An integer reply (`:N`).
fn integer(reply: &str) -> i64 {
    reply
        .trim_end()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an integer reply: {reply:?}"))
}

/// Issue 13 (5): five `--fair` waiters, each started once the one before
/// is visibly waiting, get a Redis lock in the order they came. The third,
/// SIGKILLed while it waits, neither runs nor holds the others up for much
/// longer than its ticket's lease; then nothing is left on the server.
#[test]
fn fair_waiters_get_a_redis_lock_in_order_despite_a_sigkilled_one() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("redis-fair-order");
        let lock = server.lock("lk");
        let log = sb.work_path("order.log");
        let mut holder = sb.hold(&[], &lock);
        let mut waiters = Vec::new();
        for n in 1..=5 {
            let proc = waiters::start_fair_waiter(&sb, &lock, &log, n);
            let listed = waiters::wait_listed(&sb, &lock, proc.pid());
            assert!(listed.fair, "waiter {n} is fair: {listed:?}");
            assert_eq!(listed.position, Some(n as u32), "waiter {n}: {listed:?}");
            assert_eq!(listed.host.as_deref(), Some(hostname().as_str()));
            waiters.push(proc);
        }
        let json = waiters::status_json(&sb, &lock);
        let positions: Vec<u32> = waiters::waiters(&json)
            .iter()
            .filter_map(|w| w.position)
            .collect();
        assert_eq!(positions, [1, 2, 3, 4, 5], "{json}");
        // The one in the middle dies without a word, and the lock is
        // released at once: its ticket is still in line.
        waiters[2].kill_and_reap();
        let released = Instant::now();
        holder.release_and_finish().assert_code(0);
        for (n, proc) in waiters.iter_mut().enumerate() {
            if n != 2 {
                proc.finish().assert_code(0);
            }
        }
        let took = released.elapsed();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "1\n2\n4\n5\n");
        assert!(
            took < 2 * TICKET_LEASE + Duration::from_secs(2),
            "{lock}: the killed waiter held the line up for {took:?}"
        );
        let json = waiters::status_json(&sb, &lock);
        assert!(waiters::waiters(&json).is_empty(), "{json}");
        wait_until("the line's keys to expire", 2 * TICKET_LEASE, || {
            line_keys(server, "lk").is_empty()
        });
    });
}

/// Issue 13 (5): the head of the line is stopped (SIGSTOP) when the lock
/// is released, and the wake-up goes to its blocked call: the fair waiter
/// behind it leaves the free lock alone (a waiter without `--fair` takes it
/// at its next look, within a second), and gets it after the head, once
/// that continues. Watched for a second: a stopped waiter keeps its place
/// for at least its ticket's lease less a renewal period.
#[test]
fn a_fair_redis_waiter_never_overtakes_a_stopped_head() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("redis-fair-stopped");
        let lock = server.lock("fair-stopped");
        let log = sb.work_path("order.log");
        let mut holder = sb.hold(&[], &lock);
        let mut first = waiters::start_fair_waiter(&sb, &lock, &log, 1);
        waiters::wait_listed(&sb, &lock, first.pid());
        let mut second = waiters::start_fair_waiter(&sb, &lock, &log, 2);
        waiters::wait_listed(&sb, &lock, second.pid());
        server.wait_for_waiters("fair-stopped", 2);
        let stopped = servers::Stopped::stop(first.pid());
        holder.release_and_finish().assert_code(0);
        let watched = Instant::now();
        while watched.elapsed() < Duration::from_secs(1) {
            let json = waiters::status_json(&sb, &lock);
            assert!(
                json.contains("\"held\":false"),
                "{lock}: the lock was taken while the head of the line was stopped: {json}"
            );
            assert!(
                waiters::waiters(&json)
                    .iter()
                    .any(|w| w.pid == Some(second.pid())),
                "{json}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(stopped);
        first.finish().assert_code(0);
        second.finish().assert_code(0);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "1\n2\n");
    });
}

/// Issue 13 (6): `--status` lists the waiters of a Redis lock, in text and
/// JSON: pid, host, command, since when, fair or not, and the fair ones'
/// places. `-n --fair` behind a fair waiter is a conflict and leaves no
/// ticket. The last one to leave removes the line.
#[test]
fn waiters_of_a_redis_lock_are_listed() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("redis-waiters");
        let lock = server.lock("wl");
        let mut holder = sb.hold(&[], &lock);
        let marker = sb.work_path("ran");
        let before = now_ms();
        let mut plain = sb.spawn(
            sb.lockwrap([&lock, "touch", marker.to_str().unwrap()]),
            "plain",
        );
        let listed = waiters::wait_listed(&sb, &lock, plain.pid());
        assert!(!listed.fair && listed.position.is_none(), "{listed:?}");
        assert!(
            listed.command.as_deref().unwrap_or("").contains("touch"),
            "{listed:?}"
        );
        assert_eq!(listed.host.as_deref(), Some(hostname().as_str()));
        let since = listed.since_ms.expect("since when it waits");
        assert!(since >= before && since <= now_ms(), "{listed:?}");
        let log = sb.work_path("order.log");
        let mut fair = waiters::start_fair_waiter(&sb, &lock, &log, 1);
        assert_eq!(
            waiters::wait_listed(&sb, &lock, fair.pid()).position,
            Some(1)
        );
        let text = run(&sb, &["--status", &lock]).stdout;
        assert!(
            text.contains(&format!("waiting: pid {} (touch ", plain.pid())),
            "{text}"
        );
        assert!(
            text.contains(&format!("waiting: pid {} (sh -c ", fair.pid()))
                && text.contains(", fair #1"),
            "{text}"
        );
        run(&sb, &["-n", "--fair", &lock, "true"]).assert_code(1);
        let json = waiters::status_json(&sb, &lock);
        assert_eq!(waiters::waiters(&json).len(), 2, "{json}");
        assert_eq!(integer(&server.command(&["ZCARD", "lockwrap:wl:line"])), 2);
        holder.release_and_finish().assert_code(0);
        plain.finish().assert_code(0);
        fair.finish().assert_code(0);
        assert!(marker.exists());
        let json = waiters::status_json(&sb, &lock);
        assert!(waiters::waiters(&json).is_empty(), "{json}");
        assert_eq!(server.command(&["EXISTS", "lockwrap:wl:line"]), ":0\r\n");
    });
}

/// Issue 13 (5): a fair waiter that gives up (-w) or is stopped (SIGTERM,
/// promptly although it blocks on the server) takes its ticket with it at
/// once: the list shows only who is left, and the one behind moves up.
#[test]
fn a_fair_redis_waiter_that_gives_up_leaves_no_ticket() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("redis-fair-give-up");
        let lock = server.lock("gu");
        let log = sb.work_path("order.log");
        let mut holder = sb.hold(&[], &lock);
        let mut first = waiters::start_fair_waiter(&sb, &lock, &log, 1);
        waiters::wait_listed(&sb, &lock, first.pid());
        let mut impatient =
            waiters::start_logging_waiter(&sb, &["--fair", "-w", "1"], &lock, &log, 2);
        assert_eq!(
            waiters::wait_listed(&sb, &lock, impatient.pid()).position,
            Some(2)
        );
        impatient.finish().assert_code(1);
        let json = waiters::status_json(&sb, &lock);
        let pids: Vec<Option<i32>> = waiters::waiters(&json).iter().map(|w| w.pid).collect();
        assert_eq!(pids, [Some(first.pid())], "{json}");
        assert_eq!(integer(&server.command(&["ZCARD", "lockwrap:gu:line"])), 1);

        let mut third = waiters::start_fair_waiter(&sb, &lock, &log, 3);
        assert_eq!(
            waiters::wait_listed(&sb, &lock, third.pid()).position,
            Some(2)
        );
        first.signal(nix::sys::signal::Signal::SIGTERM);
        let status = first.wait_timeout(Duration::from_millis(1500));
        first.output(status).assert_code(143);
        let json = waiters::status_json(&sb, &lock);
        let listed = waiters::waiters(&json);
        assert_eq!(listed.len(), 1, "{json}");
        assert_eq!(
            (listed[0].pid, listed[0].position),
            (Some(third.pid()), Some(1)),
            "{json}"
        );
        assert_eq!(integer(&server.command(&["ZCARD", "lockwrap:gu:line"])), 1);
        holder.release_and_finish().assert_code(0);
        third.finish().assert_code(0);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "3\n");
    });
}

/// Issue 13 (5): the line of a Redis lock expires by itself: every key of
/// it has a TTL, and once all its waiters are SIGKILLed (nobody left to
/// clean up) it is gone within about a ticket's lease.
#[test]
fn a_redis_line_expires_when_all_its_waiters_are_sigkilled() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("redis-line-expiry");
        let lock = server.lock("ex");
        let log = sb.work_path("order.log");
        let mut holder = sb.hold(&[], &lock);
        let mut procs = Vec::new();
        for (n, args) in [&["--fair"][..], &["--fair"], &[]].into_iter().enumerate() {
            let proc = waiters::start_logging_waiter(&sb, args, &lock, &log, n);
            waiters::wait_listed(&sb, &lock, proc.pid());
            procs.push(proc);
        }
        let keys = line_keys(server, "ex");
        assert!(keys.len() >= 4, "the line and three tickets: {keys:?}");
        for key in &keys {
            let ttl = integer(&server.command(&["PTTL", key]));
            assert!(
                ttl > 0 && ttl <= TICKET_LEASE.as_millis() as i64,
                "{key} must expire by itself: PTTL {ttl}"
            );
        }
        for proc in &mut procs {
            proc.kill_and_reap();
        }
        wait_until("the line's keys to expire", 2 * TICKET_LEASE, || {
            line_keys(server, "ex").is_empty()
        });
        let json = waiters::status_json(&sb, &lock);
        assert!(waiters::waiters(&json).is_empty(), "{json}");
        holder.release_and_finish().assert_code(0);
        assert!(!log.exists(), "a killed waiter ran its command");
    });
}

/// A holder and a `--fair` waiter on `lock`: the waiter is listed as fair
/// #1 and gets the lock once the holder lets go; then nobody is listed.
fn a_fair_waiter_is_listed_and_served(sb: &Sandbox, lock: &str) {
    let log = sb.work_path("order.log");
    let mut holder = sb.hold(&[], lock);
    let mut waiter = waiters::start_fair_waiter(sb, lock, &log, 1);
    let listed = waiters::wait_listed(sb, lock, waiter.pid());
    assert_eq!(
        (listed.fair, listed.position),
        (true, Some(1)),
        "{listed:?}"
    );
    holder.release_and_finish().assert_code(0);
    waiter.finish().assert_code(0);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "1\n");
    let json = waiters::status_json(sb, lock);
    assert!(waiters::waiters(&json).is_empty(), "{json}");
}

/// Issue 13: the line goes where the lock goes, over TLS with a client
/// certificate (its helper thread connects as the waiter does).
#[test]
fn the_line_of_a_rediss_lock_uses_its_tls_settings() {
    let Some(server) = RedisTlsServer::start(true) else {
        return;
    };
    let sb = Sandbox::new("rediss-line");
    let lock = format!(
        "{}?tls_ca={}&tls_cert={}&tls_key={}#line",
        server.url("127.0.0.1"),
        server.files.url_path("ca.pem"),
        server.files.url_path("client.pem"),
        server.files.url_path("client.key"),
    );
    a_fair_waiter_is_listed_and_served(&sb, &lock);
}

/// Issue 13: through Sentinel, the line is on the master the sentinels
/// name, as the lock is.
#[test]
fn the_line_of_a_sentinel_lock_is_on_the_master() {
    let Some(setup) = RedisSentinel::start() else {
        return;
    };
    let sb = Sandbox::new("sentinel-line");
    let lock = setup.lock(SENTINEL_MASTER, "sline");
    let log = sb.work_path("order.log");
    let mut holder = sb.hold(&[], &lock);
    let mut waiter = waiters::start_fair_waiter(&sb, &lock, &log, 1);
    waiters::wait_listed(&sb, &lock, waiter.pid());
    assert_eq!(
        integer(&setup.master.command(&["ZCARD", "lockwrap:sline:line"])),
        1
    );
    holder.release_and_finish().assert_code(0);
    waiter.finish().assert_code(0);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "1\n");
}

/// `server.command(["EVAL", lua, "0"])`: for keys and members that are not
/// UTF-8 (`string.char`), which the raw command helper cannot send.
fn eval(server: &RedisServer, lua: &str) -> String {
    server.command(&["EVAL", lua, "0"])
}

/// Issue 13 (5), from the attack on the server line: members of the line
/// that are not live tickets lockwrap keeps hold up no `--fair` waiter
/// and break no order: a ticket key planted without a TTL (or with one
/// longer than a ticket's lease: it would block the line for ever, or for
/// as long), an infinite number (every later ticket would tie with it and
/// be served in the order of their random ids), and a member that is not
/// UTF-8 (it failed every fair waiter, 75).
#[test]
fn planted_tickets_hold_up_no_fair_waiter() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("redis-fair-planted");
        let lock = server.lock("pl");
        let plant = "local line = 'lockwrap:pl:line'
            redis.call('ZADD', line, 1, 'f.forever')
            redis.call('SET', line .. ':f.forever', 'x')
            redis.call('ZADD', line, 2, 'f.long')
            redis.call('SET', line .. ':f.long', 'x', 'PX', 600000)
            redis.call('ZADD', line, 'inf', 'w.inf')
            redis.call('SET', line .. ':w.inf', 'x', 'PX', 600000)
            local bad = 'f.' .. string.char(255)
            redis.call('ZADD', line, 3, bad)
            redis.call('SET', line .. ':' .. bad, 'x', 'PX', 2900)
            return redis.call('ZCARD', line)";
        assert_eq!(integer(&eval(server, plant)), 4);
        let mut fair = sb.spawn(sb.lockwrap(["--fair", &lock, "true"]), "fair");
        let status = fair.wait_timeout(WAIT);
        fair.output(status).assert_code(0);

        // Two fair waiters behind a holder get finite numbers, in order.
        assert_eq!(integer(&eval(server, plant)), 4);
        let log = sb.work_path("order.log");
        let mut holder = sb.hold(&[], &lock);
        let mut first = waiters::start_fair_waiter(&sb, &lock, &log, 1);
        assert_eq!(
            waiters::wait_listed(&sb, &lock, first.pid()).position,
            Some(1)
        );
        let mut second = waiters::start_fair_waiter(&sb, &lock, &log, 2);
        assert_eq!(
            waiters::wait_listed(&sb, &lock, second.pid()).position,
            Some(2)
        );
        let scores = server.command(&["ZRANGE", "lockwrap:pl:line", "0", "-1", "WITHSCORES"]);
        assert!(
            ["inf", "forever", "long"]
                .iter()
                .all(|w| !scores.contains(w)),
            "{scores:?}"
        );
        holder.release_and_finish().assert_code(0);
        first.finish().assert_code(0);
        second.finish().assert_code(0);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "1\n2\n");
    });
}

/// Issue 13 (6), from the attack on the server line: a ticket record that
/// is not UTF-8 and full of control characters (anyone who may write the
/// line may write one) hides no waiter from `--status` (it used to empty
/// the whole list) and is printed escaped: no control character reaches
/// the terminal, the JSON stays valid.
#[test]
fn a_planted_ticket_record_hides_no_waiter() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("redis-planted-record");
        let lock = server.lock("pr");
        let log = sb.work_path("order.log");
        let mut holder = sb.hold(&[], &lock);
        let mut fair = waiters::start_fair_waiter(&sb, &lock, &log, 1);
        waiters::wait_listed(&sb, &lock, fair.pid());
        let record = "lockwrap-holder 1\\npid=4242\\nstart_time=1\\nboot_id=b\\n\
            host=h\\27[2J\\r\\npid_ns=1\\nuid=0\\nacquired_ms=1\\n\
            command=evil\\27Ptitle\\7 \\255\\254 \\\\ \\\"q\\\"\\n";
        let plant = format!(
            "redis.call('ZADD', 'lockwrap:pr:line', 7, 'w.planted')
             redis.call('SET', 'lockwrap:pr:line:w.planted', \"{record}\", 'PX', 3000)
             return 1"
        );
        assert_eq!(integer(&eval(server, &plant)), 1);
        let json = waiters::status_json(&sb, &lock);
        let text = run(&sb, &["--status", &lock]).stdout;
        let listed = waiters::waiters(&json);
        assert!(listed.iter().any(|w| w.pid == Some(fair.pid())), "{json}");
        assert!(listed.iter().any(|w| w.pid == Some(4242)), "{json}");
        assert!(json.contains("\\u001bPtitle\\u0007"), "{json}");
        for output in [&json, &text] {
            assert!(
                !output
                    .trim_end()
                    .chars()
                    .any(|c| c.is_control() && c != '\n'),
                "{output:?}"
            );
        }
        holder.release_and_finish().assert_code(0);
        fair.finish().assert_code(0);
    });
}

/// Issue 13 (5), from the attack on the server line: a key of another
/// type at the line's name (not lockwrap's) is neither used nor removed:
/// `--fair` refuses in one line naming it (66, as for a line directory
/// that is not this user's; it was 75, "temporary"), a waiter without
/// `--fair` takes the lock, `--status` works.
#[test]
fn a_line_key_of_another_type_is_refused_with_66() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("redis-line-wrongtype");
        let lock = server.lock("line-type");
        server.command(&["SET", "lockwrap:line-type:line", "not a line"]);
        let out = run(&sb, &["--fair", &lock, "true"]);
        out.assert_error(66);
        assert!(
            out.stderr.contains("lockwrap:line-type:line") && out.stderr.contains("DEL"),
            "{out:?}"
        );
        run(&sb, &[&lock, "true"]).assert_code(0);
        run(&sb, &["--status", &lock]).assert_code(0);
        assert_eq!(
            server.command(&["GET", "lockwrap:line-type:line"]),
            "$10\r\nnot a line\r\n"
        );
    });
}

/// Issue 13 (5), from the attack on the server line: a user whose ACL
/// refuses a command that only the line's scripts run (here `ZADD`) gets
/// a one-line refusal with `--fair` (77, as a refused `NOPERM` is; a
/// server's refusal inside a script used to read as "temporary", 75), and
/// waits unlisted without it.
#[test]
fn a_user_the_acl_refuses_the_line_gets_77_with_fair() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("redis-line-acl");
        let reply = server.command(&[
            "ACL",
            "SETUSER",
            "noline",
            "on",
            ">pw",
            "~lockwrap:*",
            "&*",
            "+@all",
            "-zadd",
        ]);
        assert_eq!(reply, "+OK\r\n");
        let lock = format!("redis://noline:pw@127.0.0.1:{}#acl", server.port);
        let mut holder = sb.hold(&[], &lock);
        let out = run(&sb, &["--fair", &lock, "true"]);
        out.assert_error(77);
        assert!(
            out.stderr.contains("line of waiters") && out.stderr.contains("ACL"),
            "{out:?}"
        );
        assert!(!out.stderr.contains("pw@"), "{out:?}");
        let marker = sb.work_path("ran");
        let mut plain = sb.spawn(
            sb.lockwrap([&lock, "touch", marker.to_str().unwrap()]),
            "plain",
        );
        server.wait_for_waiters("acl", 1);
        holder.release_and_finish().assert_code(0);
        plain.finish().assert_code(0);
        assert!(marker.exists());
    });
}

/// `CLIENT PAUSE ... WRITE` on `server` (writes and scripts wait, reads
/// are answered) for up to a minute, lifted (`CLIENT UNPAUSE`) when
/// dropped, also when the test fails.
struct WritesPaused<'a>(&'a RedisServer);

impl<'a> WritesPaused<'a> {
    fn pause(server: &'a RedisServer) -> WritesPaused<'a> {
        let reply = server.command(&["CLIENT", "PAUSE", "60000", "WRITE"]);
        assert!(reply.starts_with("+OK"), "CLIENT PAUSE: {reply:?}");
        WritesPaused(server)
    }
}

impl Drop for WritesPaused<'_> {
    fn drop(&mut self) {
        let _ = self.0.command(&["CLIENT", "UNPAUSE"]);
    }
}

/// A `--fair` waiter on `lock` whose calls the paused server does not
/// answer ends as its wait allows: `-w 1` with the conflict code after
/// about a second (not 75 after its own timeouts), and SIGTERM at once
/// (143), sent once `in_the_call` says the waiter is in the stuck call.
fn a_fair_waiter_on_a_paused_server_ends_with_its_wait(
    sb: &Sandbox,
    lock: &str,
    in_the_call: impl Fn(i32) -> bool,
) {
    let started = Instant::now();
    let out = run(sb, &["--fair", "-w", "1", lock, "true"]);
    let took = started.elapsed();
    out.assert_code(1);
    assert!(took < Duration::from_secs(3), "{lock}: -w 1 took {took:?}");

    let mut waiter = sb.spawn(sb.lockwrap(["--fair", lock, "true"]), "fair-term");
    wait_until("the fair waiter to be in the stuck call", WAIT, || {
        catches(waiter.pid(), libc::SIGTERM) && in_the_call(waiter.pid())
    });
    let signalled = Instant::now();
    waiter.signal(nix::sys::signal::Signal::SIGTERM);
    let out = waiter.finish();
    let took = signalled.elapsed();
    out.assert_code(143);
    assert!(
        took < Duration::from_secs(3),
        "{lock}: SIGTERM took {took:?}"
    );
}

/// Issue 13 (5): a `--fair` waiter first asks whether anyone is in line;
/// a server that answers nothing (stopped) holds it no longer than its
/// wait allows.
#[test]
fn a_fair_redis_waiter_on_a_stopped_server_ends_with_its_wait() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("redis-fair-paused");
        let lock = server.lock("fp");
        let _stopped = server.stop();
        // Nothing answers (CLIENT LIST neither): handlers in place is all
        // there is to see.
        a_fair_waiter_on_a_paused_server_ends_with_its_wait(&sb, &lock, |_| true);
    });
}

/// Issue 13 (5): joining a line that is not empty (a ticket of a waiter
/// elsewhere) on a server that stalls writes and scripts (`CLIENT PAUSE
/// WRITE`; reads still answer) holds a `--fair` waiter no longer than its
/// wait allows; SIGTERM is sent once its join script is seen waiting.
#[test]
fn a_fair_redis_waiter_stuck_joining_the_line_ends_with_its_wait() {
    with(|server: &RedisServer| {
        let sb = Sandbox::new("redis-fair-join-paused");
        let lock = server.lock("jp");
        server.command(&["ZADD", "lockwrap:jp:line", "1", "f.elsewhere"]);
        server.command(&["SET", "lockwrap:jp:line:f.elsewhere", "a waiter elsewhere"]);
        let _paused = WritesPaused::pause(server);
        let script_waits = |_| {
            server
                .command(&["CLIENT", "LIST"])
                .lines()
                .any(|l| l.contains(" flags=b ") && l.contains(" cmd=evalsha "))
        };
        a_fair_waiter_on_a_paused_server_ends_with_its_wait(&sb, &lock, script_waits);
    });
}
