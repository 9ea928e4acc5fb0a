//! Counting events in Redis, so that the sessions of an instance that crashed continue
//! elsewhere with their ids, and what was lost with the dead mailbox is reported exactly.
//!
//! A session's mailbox numbers its events 1, 2, 3, ... (see [`crate::registry`]); a crash
//! loses the mailbox, but not the *count*, because Redis can tell how many events each
//! session was given:
//!
//! - every message that puts an event into every mailbox but its sender's (a join or leave
//!   with presence on, a broadcast, a server message to everyone) is numbered by one counter,
//!   [`SEQ`](super::keys::SEQ), in the same script that publishes it, which also counts it
//!   as the sender's own;
//! - a direct message is counted for its recipient when it is published to the recipient's
//!   home (or before a local append), and uncounted when the home did not append it;
//! - a session's `base` is the last numbered message its home had applied when the session
//!   was created there (the bus applies in order, so it receives exactly those after it).
//!
//! So at any point in the bus's order, session S has been given
//! `total = (seq - base) - own + direct` events, whichever instances held it meanwhile (a
//! migration moves the mailbox, ids included). When an instance is found dead, a survivor
//! adopts its sessions in one script ([`ADOPT`]): it rewrites their home, reads `total` at
//! that point, and publishes `adopted` on the bus at that very point. Reading `adopted`, the
//! survivor creates each session with an empty mailbox whose newest id is `total`: a client
//! resuming with `Last-Event-ID: n` gets `lagged` with `total - n` missed, then every event
//! after. Counting before appending makes an error safe: a direct message whose home died
//! before answering (its sender got 503) may be counted as missed; an accepted event is never
//! missed uncounted.
//!
//! Room channels (see [`rooms`](super::rooms)): an instance reads the numbered messages of
//! the bus and of its rooms only, in the one order of its connection (numbers still only grow
//! along it), so its last applied number lags behind the counter by what other rooms said. A
//! session created there starts its `base` at that number: its count also holds what rooms it
//! is not in said before it joined, so after a crash its `lagged` may say more than it missed,
//! never fewer. It is exact while every session is in `lobby` only (all of that traffic is on
//! the bus, which every instance reads); with other rooms it says at most how many.
//!
//! One kind of event is not counted: `room_count`, which each instance sends to the members it
//! homes at most once a second, outside the bus. A session that got one after its last
//! numbered event (its own join into a room above the presence limit is enough) can be adopted
//! with a total below ids it has seen; the client then gets no `lagged`, and new events reuse
//! those ids. Counting them needs each instance to count a room's members here as direct
//! recipients (one `HINCRBY` each) before appending, in the bus's order; that is not done.
//!
//! An instance cut off from Redis starts again from where the bus stands when it is back
//! ([`Sequence::catch_up`]): what it missed meanwhile was counted, so it is reported as missed
//! if that instance dies later. A stream resuming without `Last-Event-ID` starts after the
//! crash: nothing says what it had read.
//!
//! The cost: numbered messages are published by a script (`EVALSHA`) instead of `PUBLISH`; a
//! direct message to a local session takes one Redis round trip it did not take before.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::Script;
use tracing::{info, warn};
use uuid::Uuid;

use super::keys::{Keys, unavailable};
use super::transport::Conn;
use super::wire::Message;
use crate::identity::SessionId;
use crate::registry::RegistryError;

/// Numbers a message and publishes it with `"seq": n` as its first key (instances that do
/// not know the field ignore it), counting it as its sender's own. KEYS: the counter, the
/// sender's counts (or none); ARGV: the channel, the message (a JSON object).
const NUMBERED: &str = r#"
    local n = redis.call('INCR', KEYS[1])
    if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then
        redis.call('HINCRBY', KEYS[2], 'own', 1)
    end
    redis.call(PUBLISH, ARGV[1], '{"seq":' .. n .. ',' .. string.sub(ARGV[2], 2))
    return n
    "#;

/// Publishes a direct message to its recipient's home, counting it when somebody read it.
/// KEYS: the recipient's counts; ARGV: the home's channel, the message. Returns the readers.
const COUNTED: &str = r"
    local readers = redis.call(PUBLISH, ARGV[1], ARGV[2])
    if readers > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
        redis.call('HINCRBY', KEYS[1], 'direct', 1)
    end
    return readers
    ";

/// Adds ARGV[2] to field ARGV[1] of a session's counts, if the session still has them.
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('EXISTS', KEYS[1]) == 1 then
            redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
        end
        ",
    )
});

/// Rehomes the sessions ARGV[5..] still homed on the dead ARGV[1] to ARGV[2], and publishes
/// `adopted` with each one's entry and total on the bus ARGV[4]. KEYS: the directory, the
/// counter, the dead instance's liveness key, the set of its sessions adopted (for a day);
/// ARGV[3]: the prefix of the counts keys. Returns how many it adopted: none once the liveness
/// key is back (the instance was only cut off; when it re-registers it gives up those in the
/// set and keeps the others: see `reregister` in [`recovery`](super::recovery)).
const ADOPT: &str = r#"
    if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
    local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
    local adopted = {}
    for i = 5, #ARGV do
        local id = ARGV[i]
        local json = redis.call('HGET', KEYS[1], id)
        if json then
            local entry = cjson.decode(json)
            if entry.home == ARGV[1] then
                entry.home = ARGV[2]
                redis.call('HSET', KEYS[1], id, cjson.encode(entry))
                redis.call('SADD', KEYS[4], id)
                local c = redis.call('HMGET', ARGV[3] .. id, 'base', 'own', 'direct')
                local total = -1
                if c[1] then
                    total = seq - tonumber(c[1]) - tonumber(c[2] or '0')
                        + tonumber(c[3] or '0')
                end
                table.insert(adopted, string.format(
                    '{"id":"%s","total":%d,"entry":%s}', id, total, json))
            end
        end
    end
    if #adopted > 0 then
        redis.call('PEXPIRE', KEYS[4], 86400000)
        redis.call(PUBLISH, ARGV[4], '{"type":"adopted","body":{"home":"' .. ARGV[2]
            .. '","sessions":[' .. table.concat(adopted, ',') .. ']}}')
    end
    return #adopted
    "#;

/// A script that publishes, where `PUBLISH` is `publish` (the command, see
/// [`Conn::publish_command`]).
fn publishing(publish: &str, body: &str) -> Script {
    Script::new(&format!("local PUBLISH = '{publish}'\n{body}"))
}

/// Sessions adopted per script call.
const ADOPT_CHUNK: usize = 200;

/// This instance's side of the count: where the bus stands here, and the scripts that number,
/// count and adopt.
pub(super) struct Sequence {
    conn: Conn,
    /// [`NUMBERED`], [`COUNTED`] and [`ADOPT`], publishing as `conn` does.
    numbered: Script,
    counted: Script,
    adopt: Script,
    keys: Keys,
    /// Whether joins and leaves put events into mailboxes (presence on): then they are numbered.
    announces: bool,
    /// The number of the last numbered message applied here; written under the migration lock
    /// (see [`transit`](super::transit)).
    applied: AtomicU64,
}

impl Sequence {
    pub(super) fn new(conn: Conn, keys: Keys, announces: bool) -> Self {
        let publish = conn.publish_command();
        Sequence {
            numbered: publishing(publish, NUMBERED),
            counted: publishing(publish, COUNTED),
            adopt: publishing(publish, ADOPT),
            conn,
            keys,
            announces,
            applied: AtomicU64::new(0),
        }
    }

    /// Whether `message` puts an event into mailboxes beyond one (so it is numbered), and
    /// whose own it is, if anyone's.
    ///
    /// Numbered as if it reached every mailbox, whatever room it is for: the count of a
    /// session that is not in the room is one more than it got, so after a crash its `lagged`
    /// says at most how many it missed, and never fewer. A join or leave is numbered once
    /// per room (it is published a room at a time), as a session sharing two rooms with the
    /// joiner hears it twice.
    pub(super) fn numbering(&self, message: &Message) -> Option<Option<SessionId>> {
        match message {
            Message::Broadcast { from, .. } => Some(Some(from.id)),
            Message::Announce { .. } => Some(None),
            // The session itself gets `joined` or `left`, with presence on or off.
            Message::Enter { .. } | Message::Exit { .. } => Some(None),
            Message::Join { peer, .. } if self.announces => Some(Some(peer.id)),
            Message::Leave { .. } if self.announces => Some(None),
            _ => None,
        }
    }

    /// Publishes on `channel` a message that puts an event into the mailboxes, numbered; `from`
    /// is the session that does not get it (a broadcast's sender, the session joining).
    pub(super) async fn publish_numbered(
        &self,
        channel: String,
        message: &Message,
        from: Option<SessionId>,
    ) -> Result<(), RegistryError> {
        let mut invocation = self.numbered.key(self.keys.seq());
        if let Some(from) = from {
            invocation.key(self.keys.counts(from));
        }
        invocation
            .arg(channel)
            .arg(message.to_json())
            .invoke_async::<u64>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(unavailable)
    }

    /// Publishes direct message `message` for `to` on `channel` (its home's), counting it for
    /// `to` when somebody reads it there; returns how many did.
    ///
    /// # Errors
    /// `Unavailable` when Redis cannot be reached.
    pub(super) async fn send_counted(
        &self,
        channel: String,
        to: SessionId,
        message: &Message,
    ) -> Result<u64, RegistryError> {
        self.counted
            .key(self.keys.counts(to))
            .arg(channel)
            .arg(message.to_json())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// Adds `by` to the direct messages counted for session `id`.
    pub(super) async fn count_direct(&self, id: SessionId, by: i64) -> Result<(), RegistryError> {
        COUNT
            .key(self.keys.counts(id))
            .arg("direct")
            .arg(by)
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// Takes back a direct message's count: its home did not append it.
    pub(super) async fn uncount(&self, id: SessionId) {
        if let Err(err) = self.count_direct(id, -1).await {
            warn!(session = %id, error = %err, "could not uncount a refused direct message");
        }
    }

    /// Starts the counts of session `id` at `base` unless it has some: Redis lost them when
    /// it restarted empty. (A new session's are written with its entry.)
    pub(super) async fn restart_counts(
        &self,
        id: SessionId,
        base: i64,
    ) -> Result<(), RegistryError> {
        redis::cmd("HSETNX")
            .arg(self.keys.counts(id))
            .arg("base")
            .arg(base)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// The last numbered message applied here. Read under the migration lock, it is the
    /// point in the bus's order where a session created now starts.
    pub(super) fn applied(&self) -> i64 {
        self.applied.load(Ordering::Relaxed) as i64
    }

    /// Whether the numbered message `seq` is new here; records it. Called under the migration
    /// lock, in bus order. A number at or below the last one was read before (re)subscribing.
    /// A gap in the numbers is no loss: numbers are shared by every channel, and this instance
    /// reads only the rooms it homes members of (what went by while it was cut off is counted
    /// when it subscribes again, see [`channels`](super::channels)).
    pub(super) fn advance(&self, seq: u64) -> bool {
        self.applied.fetch_max(seq, Ordering::Relaxed) < seq
    }

    /// Starts counting from where the bus stands now: after (re)subscribing, before any
    /// message is applied. What was published while this instance was cut off is not replayed.
    pub(super) async fn catch_up(&self) -> Result<(), RegistryError> {
        let seq: Option<u64> = redis::cmd("GET")
            .arg(self.keys.seq())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        self.applied.store(seq.unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    /// Adopts `ids`, sessions of the dead instance `dead`, for instance `here`; returns how
    /// many were still its. They arrive when `adopted` comes back on the bus.
    pub(super) async fn adopt_from(
        &self,
        dead: Uuid,
        here: Uuid,
        ids: &[SessionId],
    ) -> Result<usize, RegistryError> {
        let mut adopted = 0;
        for chunk in ids.chunks(ADOPT_CHUNK) {
            let mut invocation = self.adopt.key(self.keys.sessions());
            invocation
                .key(self.keys.seq())
                .key(self.keys.instance(dead))
                .key(self.keys.adopted(dead))
                .arg(dead.to_string())
                .arg(here.to_string())
                .arg(self.keys.counts_prefix())
                .arg(self.keys.bus());
            for id in chunk {
                invocation.arg(id.to_string());
            }
            adopted += invocation
                .invoke_async::<usize>(&mut self.conn.clone())
                .await
                .map_err(unavailable)?;
        }
        if adopted > 0 {
            info!(sessions = adopted, %dead, "adopted the sessions of a dead instance");
        }
        Ok(adopted)
    }
}
