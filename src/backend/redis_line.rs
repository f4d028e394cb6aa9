//! The line of waiters of a Redis lock (issue 13; see FAIR-DESIGN.md): a
//! sorted set `lockwrap:NAME:line` of ticket ids, scored by their number
//! in line, and one key per ticket, `lockwrap:NAME:line:ID`, holding the
//! waiter's record with a short lease ([`TICKET_LEASE`]) that a helper
//! thread of the waiter renews, on a connection of its own, until the
//! ticket is dropped. The id is `f.` (a `--fair` waiter) or `w.` followed
//! by 128 random bits.
//!
//! Live = the ticket's key exists. A waiter SIGKILLed (or a machine that
//! vanished) stops renewing, and its ticket is dead a lease later; whoever
//! looks at the line next removes it from the sorted set ([`LIVE`]). Every
//! key has a TTL: the sorted set's is pushed to at least a lease by every
//! join and renewal, so the whole line is gone about a lease after its
//! last waiter died, with nobody left to clean up.
//!
//! Order: a ticket's number is the highest in the set plus one, taken in
//! the same script that adds it, so the numbers of the tickets present are
//! in the order they joined (no counter key that could expire or be lost
//! while tickets remain).
//!
//! A fair waiter waits for the live fair ticket just ahead of it with
//! `BLPOP` on that ticket's "left" list, `lockwrap:NAME:line:ID:left`,
//! which the leaver pushes to (kept for a lease), for at most as long as
//! that ticket's lease has left: so a predecessor that leaves wakes it at
//! once, and one that died is noticed when its lease runs out. The `BLPOP`
//! is the acquire path's ([`RedisLock::wait_on_list`]): `-w`, signals and
//! cancelled slot waits end it as they end a wait for the lock.
//!
//! Signals: the helper thread blocks the forwarded signals, so that they
//! interrupt the waiting thread's blocked call and never a renewal or the
//! join (whose outcome would be unknown). Joining therefore runs on the
//! helper thread too; the waiter waits for it as its wait allows (`-w`,
//! signals, a cancelled slot wait), and a join given up on is undone by
//! the thread once it is done (it leaves the line).
//!
//! The scripts name ticket keys that are not among their KEYS (they are
//! derived from the members): fine on a single server or through Sentinel,
//! which is what lockwrap supports, not on Redis Cluster.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use ::redis::{RedisError, Script};

use super::Con as Connection;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};

use super::{
    CONNECT_TIMEOUT, RedisLock, Target, failure, random_token, set_call_timeout, within_deadline,
};
use crate::backend::{Line, LineEntry, Ticket, WaiterInfo};
use crate::error::Error;
use crate::holder::HolderRecord;
use crate::wait::Waiter;

/// How long a ticket stays in line after its last renewal: how long a
/// waiter that died (or was stopped) holds up the fair waiters behind it.
pub const TICKET_LEASE: Duration = Duration::from_secs(3);
/// How often the helper thread renews the ticket: twice more before the
/// lease runs out, should one renewal fail.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How long a renewal or a leave may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long connecting for the line and the joining script may take each.
const JOIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a waiter waits for its helper thread to join (connecting may
/// ask several sentinels in turn), at most: its deadline and signals end
/// the wait sooner.
const JOIN_AT_MOST: Duration = Duration::from_secs(10);
/// How long dropping a ticket waits for the helper thread to leave the
/// line (a failed leave lets the ticket lapse within its lease instead).
const LEAVE_AT_MOST: Duration = Duration::from_secs(3);
/// How much later than the lease of the ticket ahead a fair waiter looks
/// again, so that it finds the ticket gone.
const LAPSE_MARGIN: Duration = Duration::from_millis(20);

/// Whether a member of the line is a ticket lockwrap keeps (Lua, shared by
/// [`JOIN`] and [`LIVE`]): its number an integer from 1 to 2^53 (beyond,
/// numbers lose their order as doubles; an infinite one ties), its key
/// alive with a lease no longer than a ticket's (a key without a TTL, or
/// a longer one, was planted or changed by someone else and would hold up
/// the fair waiters behind it for ever).
const IS_TICKET: &str = r"
local function is_ticket(score, pttl, lease)
  return pttl >= 0 and pttl <= lease and score ~= nil and score >= 1
    and score <= 9007199254740992 and score == math.floor(score)
end
";

/// Drops the members that are not live tickets, then adds a ticket with
/// the next number and returns it. KEYS: line, ticket. ARGV: member,
/// record, lease ms, ticket key prefix. Used again, with the same member,
/// to rejoin at the end. (Scripts that write after reading what expiry
/// decides replicate their commands, not themselves, on servers older
/// than 5 that would not.)
const JOIN: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local lease = tonumber(ARGV[3])
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #members, 2 do
  local pttl = redis.call('PTTL', ARGV[4] .. members[i])
  if not is_ticket(tonumber(members[i + 1]), pttl, lease) then
    redis.call('ZREM', KEYS[1], members[i])
  end
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local seq = 1
if last[2] then seq = tonumber(last[2]) + 1 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', lease)
redis.call('ZADD', KEYS[1], seq, ARGV[1])
if redis.call('PTTL', KEYS[1]) < lease then redis.call('PEXPIRE', KEYS[1], lease) end
return seq
";

/// Extends the ticket's lease (and the line's, to at least as long): 1, or
/// 0 when the ticket has lapsed. KEYS: line, ticket. ARGV: lease ms.
const RENEW: &str = r"
if redis.call('PEXPIRE', KEYS[2], ARGV[1]) == 0 then return 0 end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
";

/// Leaves the line: removes the ticket, wakes the fair waiter behind a
/// fair one (the "left" list, kept for a while), and removes the line once
/// empty. KEYS: line, ticket, left list. ARGV: member, left kept ms, fair.
const LEAVE: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
if ARGV[3] == '1' then
  redis.pcall('LPUSH', KEYS[3], 'left')
  redis.pcall('PEXPIRE', KEYS[3], ARGV[2])
end
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]) end
return 1
";

/// The live tickets, first come first: `{member, number, pttl, record}`
/// (record empty unless asked for). KEYS: line. ARGV: ticket key prefix,
/// `1` to remove the members that are not live tickets, `1` for the
/// records, lease ms.
const LIVE: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local lease = tonumber(ARGV[4])
local live = {}
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #members, 2 do
  local key = ARGV[1] .. members[i]
  local pttl = redis.call('PTTL', key)
  local score = tonumber(members[i + 1])
  if not is_ticket(score, pttl, lease) then
    if ARGV[2] == '1' then redis.call('ZREM', KEYS[1], members[i]) end
  else
    local record = ''
    if ARGV[3] == '1' then
      local value = redis.pcall('GET', key)
      if type(value) == 'string' then record = value end
    end
    live[#live + 1] = {members[i], score, pttl, record}
  end
end
return live
";

static JOIN_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&[IS_TICKET, JOIN].concat()));
static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RENEW));
static LEAVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LEAVE));
static LIVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&[IS_TICKET, LIVE].concat()));

/// The key names of one lock's line.
#[derive(Debug, Clone)]
struct LineKeys {
    line: String,
    prefix: String,
}

impl LineKeys {
    fn new(name: &str) -> LineKeys {
        LineKeys {
            line: format!("lockwrap:{name}:line"),
            prefix: format!("lockwrap:{name}:line:"),
        }
    }

    fn ticket(&self, member: &str) -> String {
        format!("{}{member}", self.prefix)
    }

    fn left(&self, member: &str) -> String {
        format!("{}{member}:left", self.prefix)
    }

    /// What a failed script call on the line means: a key of another type
    /// at the line's name (planted, or left by something else) is not
    /// lockwrap's to use or remove, like a line directory that is not this
    /// user's; anything else as [`failure`] says.
    fn failure(&self, lock: &str, what: &str, e: &RedisError) -> Error {
        if e.code() == Some("WRONGTYPE") {
            return Error::Artifact {
                lock: lock.to_owned(),
                reason: format!(
                    "{what}: the line of waiters {} is a key of another type, not lockwrap's; lockwrap does not use it (remove it with DEL)",
                    self.line
                ),
            };
        }
        failure(lock, what, e)
    }

    /// The live tickets, first come first; `trim` removes the dead ones.
    fn live(
        &self,
        con: &mut Connection,
        trim: bool,
        records: bool,
    ) -> Result<Vec<Listed>, RedisError> {
        // Bytes: anyone may write a member or record that is not UTF-8.
        let rows: Vec<(Vec<u8>, i64, i64, Vec<u8>)> = LIVE_SCRIPT
            .key(&self.line)
            .arg(&self.prefix)
            .arg(u8::from(trim))
            .arg(u8::from(records))
            .arg(TICKET_LEASE.as_millis() as u64)
            .invoke(con)?;
        Ok(rows
            .into_iter()
            // Not a member lockwrap wrote (its ids are text): no ticket.
            .filter_map(|(member, seq, pttl, record)| {
                let member = String::from_utf8(member).ok()?;
                Some(Listed {
                    fair: member.starts_with("f."),
                    member,
                    seq,
                    pttl,
                    record: String::from_utf8_lossy(&record).into_owned(),
                })
            })
            .collect())
    }
}

/// A live ticket as [`LIVE`] returns it.
#[derive(Debug)]
struct Listed {
    member: String,
    seq: i64,
    fair: bool,
    /// Its lease left, ms (at most [`TICKET_LEASE`]).
    pttl: i64,
    record: String,
}

/// The line of waiters of a Redis lock.
pub struct RedisLine {
    lock: RedisLock,
    keys: LineKeys,
    /// The connection [`Line::is_empty`] found a line on, for the join
    /// that follows.
    spare: Mutex<Option<Connection>>,
}

impl RedisLine {
    /// The line of `lock`.
    pub fn new(lock: RedisLock) -> RedisLine {
        let keys = LineKeys::new(&lock.remote.name);
        RedisLine {
            lock,
            keys,
            spare: Mutex::new(None),
        }
    }
}

impl Line for RedisLine {
    /// One round trip (`EXISTS`), as `waiter` allows; unsure (no answer) is
    /// "not empty", so that a `--fair` waiter joins and finds out.
    fn is_empty(&self, waiter: &Waiter<'_>) -> Result<bool, Error> {
        let Ok(target) = self.lock.connection_info() else {
            return Ok(false);
        };
        let mut con = match self.lock.connect(&target, JOIN_TIMEOUT, Some(waiter)) {
            Ok(con) => con,
            Err(ended @ (Error::Interrupted { .. } | Error::Timeout { .. })) => return Err(ended),
            Err(_) => return Ok(false),
        };
        set_call_timeout(&con, within_deadline(JOIN_TIMEOUT, waiter));
        let exists = ::redis::cmd("EXISTS")
            .arg(&self.keys.line)
            .query::<i64>(&mut con);
        match exists {
            Ok(0) => Ok(true),
            Ok(_) => {
                *self.spare.lock().unwrap_or_else(|e| e.into_inner()) = Some(con);
                Ok(false)
            }
            // A signal that interrupted the call, or the deadline.
            Err(_) => {
                waiter.watch(&[], Some(Duration::ZERO))?;
                waiter.ended().map_or(Ok(false), Err)
            }
        }
    }

    fn join(&self, entry: &LineEntry, waiter: &Waiter<'_>) -> Result<Box<dyn Ticket>, Error> {
        let cannot_join = "--fair: cannot join the line of waiters";
        let kind = if entry.fair { "f" } else { "w" };
        let place = Arc::new(Place {
            lock: self.lock.clone(),
            target: self.lock.connection_info()?,
            keys: self.keys.clone(),
            member: format!("{kind}.{}", random_token()),
            fair: entry.fair,
            record: entry.record.encode(),
        });
        let seq = Arc::new(AtomicI64::new(i64::MAX));
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (joined, joined_here) = mpsc::channel();
        // Closed by the thread once it has sent how joining went.
        let (news, news_sent) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::os(&self.lock.lock, cannot_join, e))?;
        let (leave, leave_there) = mpsc::channel();
        let (gone_there, gone) = mpsc::channel();
        let kept = (Arc::clone(&place), Arc::clone(&seq));
        spawn_without_signals(move || {
            let (place, seq) = kept;
            place.keep(&seq, spare, &joined, news_sent, &leave_there);
            let _ = gone_there.send(());
        })
        .map_err(|e| {
            let errno = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN));
            Error::os(&self.lock.lock, cannot_join, errno)
        })?;
        // Given up on (the wait ended, or the thread took too long), the
        // thread leaves the line once it finds nobody took its news, or
        // that the ticket is gone.
        let give_up = Instant::now() + JOIN_AT_MOST;
        loop {
            match joined_here.try_recv() {
                Ok(Ok(())) => {
                    return Ok(Box::new(RedisTicket {
                        place,
                        seq,
                        leave,
                        gone,
                    }));
                }
                Ok(Err(e)) => return Err(e),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => break,
            }
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            waiter.watch(&[news.as_fd()], Some(left))?;
        }
        Err(Error::TempFail {
            lock: self.lock.lock.clone(),
            reason: format!("{cannot_join}: the server did not answer in time"),
        })
    }

    fn waiters(&self) -> Result<Vec<WaiterInfo>, Error> {
        let target = self.lock.connection_info()?;
        let mut con = self.lock.connect(&target, CONNECT_TIMEOUT, None)?;
        let listed = self.keys.live(&mut con, false, true).map_err(|e| {
            self.keys
                .failure(&self.lock.lock, "cannot read the line of waiters", &e)
        })?;
        let mut waiters: Vec<WaiterInfo> = listed
            .into_iter()
            .map(|t| match HolderRecord::parse(&t.record) {
                Some(record) => WaiterInfo::of_entry(&LineEntry {
                    record,
                    fair: t.fair,
                }),
                // Not a record lockwrap wrote: a waiter nothing is known of.
                None => WaiterInfo {
                    fair: t.fair,
                    ..WaiterInfo::default()
                },
            })
            .collect();
        WaiterInfo::number_fair(&mut waiters);
        Ok(waiters)
    }
}

/// What the helper thread of a ticket needs to keep it.
struct Place {
    lock: RedisLock,
    target: Target,
    keys: LineKeys,
    member: String,
    fair: bool,
    record: String,
}

impl Place {
    fn connect(&self, timeout: Duration) -> Result<Connection, Error> {
        self.lock.connect(&self.target, timeout, None)
    }

    /// Adds the ticket at the end of the line; its number.
    fn join_on(&self, con: &mut Connection) -> Result<i64, RedisError> {
        set_call_timeout(con, JOIN_TIMEOUT);
        JOIN_SCRIPT
            .key(&self.keys.line)
            .key(self.keys.ticket(&self.member))
            .arg(&self.member)
            .arg(&self.record)
            .arg(TICKET_LEASE.as_millis() as u64)
            .arg(&self.keys.prefix)
            .invoke(con)
    }

    fn leave_on(&self, con: &mut Connection) -> Result<(), RedisError> {
        set_call_timeout(con, CALL_TIMEOUT);
        LEAVE_SCRIPT
            .key(&self.keys.line)
            .key(self.keys.ticket(&self.member))
            .key(self.keys.left(&self.member))
            .arg(&self.member)
            .arg(TICKET_LEASE.as_millis() as u64)
            .arg(u8::from(self.fair))
            .invoke(con)
    }

    /// The helper thread: joins (telling `joined` how it went, and closing
    /// `news_sent` then, which wakes the waiter), renews until told to
    /// `leave` (or the ticket is dropped), and leaves.
    fn keep(
        &self,
        seq: &AtomicI64,
        spare: Option<Connection>,
        joined: &mpsc::Sender<Result<(), Error>>,
        news_sent: OwnedFd,
        leave: &mpsc::Receiver<()>,
    ) {
        let mut con = None;
        let outcome = spare
            .map_or_else(|| self.connect(JOIN_TIMEOUT), Ok)
            .and_then(|mut c| {
                let number = self.join_on(&mut c);
                con = Some(c);
                number.map(|n| seq.store(n, Ordering::SeqCst)).map_err(|e| {
                    self.keys.failure(
                        &self.lock.lock,
                        "--fair: cannot join the line of waiters",
                        &e,
                    )
                })
            });
        let failed = outcome.is_err();
        let taken = joined.send(outcome).is_ok();
        drop(news_sent);
        // Nobody took the news (the join took too long for the waiter), or
        // the script may have run although its reply was lost: take it back.
        if !taken || failed {
            self.leave(con);
            return;
        }
        // Until told to leave, or the ticket is gone (the sender dropped).
        while let Err(RecvTimeoutError::Timeout) = leave.recv_timeout(RENEW_EVERY) {
            self.renew(&mut con, seq);
        }
        self.leave(con);
    }

    /// Extends the ticket's lease, on `con` or (if the last call failed) a
    /// new connection. A ticket that lapsed (this process was stopped for
    /// longer than the lease, or the server lost its data) joins again, at
    /// the end of the line.
    fn renew(&self, con: &mut Option<Connection>, seq: &AtomicI64) {
        let mut c = match con.take() {
            Some(c) => c,
            None => match self.connect(CALL_TIMEOUT) {
                Ok(c) => c,
                Err(_) => return,
            },
        };
        set_call_timeout(&c, CALL_TIMEOUT);
        let renewed: Result<i64, RedisError> = RENEW_SCRIPT
            .key(&self.keys.line)
            .key(self.keys.ticket(&self.member))
            .arg(TICKET_LEASE.as_millis() as u64)
            .invoke(&mut c);
        let kept = match renewed {
            Ok(1) => true,
            Ok(_) => self
                .join_on(&mut c)
                .map(|n| seq.store(n, Ordering::SeqCst))
                .is_ok(),
            // The reply may still come: this connection is out of step.
            Err(_) => false,
        };
        if kept {
            *con = Some(c);
        }
    }

    /// Leaves the line, on `con` if it is usable, else on a new connection;
    /// best effort (a ticket left behind lapses within its lease).
    fn leave(&self, con: Option<Connection>) {
        let left = con.is_some_and(|mut c| self.leave_on(&mut c).is_ok());
        if !left && let Ok(mut c) = self.connect(CALL_TIMEOUT) {
            let _ = self.leave_on(&mut c);
        }
    }
}

/// A waiter's ticket: its helper thread keeps it in line until it is
/// dropped.
struct RedisTicket {
    place: Arc<Place>,
    /// Its number in line (a lapsed ticket that joined again has a new one).
    seq: Arc<AtomicI64>,
    leave: mpsc::Sender<()>,
    gone: mpsc::Receiver<()>,
}

impl Ticket for RedisTicket {
    fn wait_turn(&mut self, waiter: &Waiter<'_>) -> Result<(), Error> {
        let place = &self.place;
        let failed = |e: &RedisError| -> Error {
            if let Err(ended) = waiter.watch(&[], Some(Duration::ZERO)) {
                return ended;
            }
            waiter.ended().unwrap_or_else(|| {
                place
                    .keys
                    .failure(&place.lock.lock, "cannot read the line of waiters", e)
            })
        };
        // A connection of its own (the helper thread's renews the ticket),
        // for as long as the turn takes.
        let mut con = place
            .lock
            .connect(&place.target, JOIN_TIMEOUT, Some(waiter))?;
        loop {
            set_call_timeout(&con, super::within_deadline(CALL_TIMEOUT, waiter));
            let listed = place
                .keys
                .live(&mut con, true, false)
                .map_err(|e| failed(&e))?;
            let mine = self.seq.load(Ordering::SeqCst);
            let Some(ahead) = listed
                .iter()
                .filter(|t| t.fair && t.seq < mine)
                .max_by_key(|t| t.seq)
            else {
                return Ok(());
            };
            // Until it leaves, or its lease runs out unrenewed.
            let nap = u64::try_from(ahead.pttl)
                .map_or(TICKET_LEASE, |ms| Duration::from_millis(ms) + LAPSE_MARGIN)
                .min(TICKET_LEASE);
            place.lock.wait_on_list(
                &mut con,
                &place.target,
                &place.keys.left(&ahead.member),
                nap,
                CALL_TIMEOUT,
                waiter,
                "cannot wait for the waiter ahead in line",
            )?;
        }
    }
}

impl Drop for RedisTicket {
    fn drop(&mut self) {
        let _ = self.leave.send(());
        let _ = self.gone.recv_timeout(LEAVE_AT_MOST);
    }
}

/// Starts `body` on a thread that never takes the forwarded signals (nor
/// SIGCHLD): they must reach the waiting thread, whose blocked call they
/// interrupt. The signals are blocked while the thread is created, so that
/// it starts with them blocked, and no signal can reach it before.
fn spawn_without_signals(body: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let mut set = SigSet::empty();
    for signal in crate::wait::FORWARDED.into_iter().chain([Signal::SIGCHLD]) {
        set.add(signal);
    }
    let previous = set.thread_swap_mask(SigmaskHow::SIG_BLOCK).ok();
    let spawned = std::thread::Builder::new()
        .name("line-ticket".into())
        .spawn(body);
    if let Some(previous) = previous {
        let _ = previous.thread_set_mask();
    }
    spawned.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_keys_follow_the_lock_name() {
        let keys = LineKeys::new("nightly.slot0");
        assert_eq!(keys.line, "lockwrap:nightly.slot0:line");
        assert_eq!(keys.ticket("f.ab"), "lockwrap:nightly.slot0:line:f.ab");
        assert_eq!(keys.left("f.ab"), "lockwrap:nightly.slot0:line:f.ab:left");
        // What the scripts build from a member must be the ticket's key.
        assert_eq!(format!("{}{}", keys.prefix, "w.cd"), keys.ticket("w.cd"));
    }
}
