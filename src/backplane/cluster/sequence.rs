//! Counting events in Redis, so that the sessions of an instance that crashed continue
//! elsewhere with their ids, and what was lost with the dead mailbox is reported exactly.
//!
//! A session's mailbox numbers its events 1, 2, 3, ... (see [`crate::registry`]); a crash
//! loses the mailbox, but not the *count*, because Redis can tell how many events each
//! session was given. Events come down *lines*, each with its own counter in Redis, and every
//! message that puts an event into the mailboxes of a line's sessions is numbered on it by the
//! script that publishes it ([`counting`](super::counting)):
//!
//! - each room is a line (its counter [`SEQ`](super::keys::SEQ)`:<room>`; `lobby`'s is the
//!   bus's, `seq`): its broadcasts, server messages, and the joins and leaves its other
//!   members hear of (only those: not with presence off, nor above the presence limit);
//! - server messages to everyone are a line of their own ([`EVERYONE`](super::keys::EVERYONE)),
//!   which the sessions outside `lobby` are on (those in `lobby` hear them as `lobby`'s
//!   traffic, on the bus, numbered on the bus's counter too);
//! - a session keeps a starting point on each line it is on (its counts hash,
//!   [`COUNTS`](super::keys::COUNTS)): `r:<room>` per room, `base` for `lobby`, `all` for the
//!   everyone line while out of `lobby`. It is set where the session joins the line, at that
//!   point in the line's order: at creation, the number its home had applied on each line (the
//!   home reads the line's channel in order, so the session gets exactly those after it), and
//!   on entering a room by the script that publishes the `enter`. Leaving a room, the script
//!   that publishes the `exit` moves what the room gave it into `done` and drops the point.
//! - what the session hears alone is `direct`: direct messages (counted when published to its
//!   home, or before a local append, and uncounted when the home did not append them), its own
//!   `joined` and `left` (by the scripts above), and `room_count` (counted by its home before
//!   appending it, [`Sequence::count_each`]); `own` is what it sent itself on its lines (its
//!   broadcasts, its own join), which it does not hear.
//!
//! So at any point, session S has been given exactly
//! `total = direct + done - own + Σ over its lines (counter - start)` events, whichever
//! instances held it meanwhile (a migration moves the mailbox, ids included). When an instance
//! is found dead, a survivor adopts its sessions in one script: it rewrites their home, reads
//! each `total` at that point, and publishes `adopted` on the bus at that very point (the
//! survivor reads the sessions' rooms before, so it gets every later message of their lines).
//! Reading `adopted`, the survivor creates each session with an empty mailbox whose newest id
//! is `total`: a client resuming with `Last-Event-ID: n` gets `lagged` with `total - n`
//! missed, then every event after. Counting before appending makes an error safe: a direct
//! message whose home died before answering (its sender got 503), a `room_count` to a session
//! that left the room meanwhile, may be counted as missed; an event appended is never missed
//! uncounted, so a total is never below an id the session was given.
//!
//! A message carries its channel's number (`"seq"`, first), and a server message to everyone
//! also its everyone number (`"all"`, after `"v"`): an instance keeps, per line it reads, the
//! last number it applied, to drop what it read twice (around a re-subscription) and to know a
//! session's starting points. A gap in a room's numbers is no loss (a room's channel is read
//! only while a session here is in it). An instance cut off from Redis starts again from
//! where each line stands when it is back ([`Sequence::catch_up`]); what went by meanwhile is
//! reported in each mailbox as missed: per line the session is on, the numbers it did not read.
//!
//! While the cluster is mixed (an instance of protocol 1 lives, see the [module doc](super)),
//! room traffic travels on the bus, numbered on the bus's counter as protocol 1 requires and on
//! its rooms' counters: a session in `lobby` and another room counts it twice, and an instance
//! cut off meanwhile may report more missed than a later adoption counts. Counts are exact
//! again once the cluster is not mixed; sessions that lived through it may keep an overstated
//! `lagged` after a crash.
//!
//! With rooms sharded (on a Redis Cluster, see [`transport`](super::transport)), a room's
//! counter is in the room's own slot, and so are its members' starting points (the room's
//! [`STARTS`](super::keys::STARTS) hash, not `r:<room>` in their counts), so that the scripts
//! of a room's traffic touch one slot: a sender's own broadcast moves its starting point past
//! the message instead of counting `own`, and leaving keeps what the room gave as `<id>:done`
//! in the room's hash (the counts note the room, `x:<room>`). The total is then the counts'
//! own plus, per room, what [`ROOM_PARTS`](super::counting) reads there; an adopting instance
//! reads that after `adopted`, and continues each room after where its counter stood then
//! (see [`recovery`](super::recovery)).
//!
//! The cost: numbered messages are published by a script (`EVALSHA`) instead of `PUBLISH`; a
//! direct message to a local session takes one Redis round trip it did not take before, and so
//! does each `room_count` round (one script for all of an instance's recipients).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use redis::{Script, ScriptInvocation};
use tracing::{info, warn};
use uuid::Uuid;

use super::counting::{Counting, DIRECT, FORGET_ROOM, RESTART, START_ROOM, Scripts, start_field};
use super::keys::{Keys, unavailable};
use super::transport::Conn;
use super::wire::Message;
use crate::identity::{RoomName, SessionId};
use crate::registry::RegistryError;

/// Sessions adopted per script call, and counts written per call.
const CHUNK: usize = 200;

/// The prefix of the fields of a session's counts naming a room with a slot of its own that it
/// left (`x:<room>`): that room's hash keeps what the room gave it.
const LEFT: &str = "x:";

/// The last number applied on each room line (but `lobby`'s): where a session's mailbox stood
/// on each when it was handed from one instance to another (see [`transit`](super::transit)).
pub(super) type Points = std::collections::BTreeMap<RoomName, u64>;

/// A new session's starting points: those in its counts (and with rooms not sharded, every
/// one), and those in the hashes of rooms with a slot of their own (the hash's key, the point).
#[derive(Debug, Default)]
pub(super) struct Starts {
    pub(super) counts: Vec<(String, u64)>,
    pub(super) rooms: Vec<(String, u64)>,
}

/// The numbers a message came with, and where: on the bus (`room` none) or a room's channel.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Numbers {
    pub(super) room: Option<RoomName>,
    pub(super) seq: u64,
    /// Its number on the everyone line, for a server message to everyone.
    pub(super) all: Option<u64>,
}

/// The last number applied here on each line read.
#[derive(Clone, Debug, Default)]
struct Applied {
    /// Whether a line was read since start (before, nothing was missed).
    caught_up: bool,
    bus: u64,
    everyone: u64,
    rooms: HashMap<RoomName, u64>,
}

/// How many numbered messages of each line went by while this instance was cut off.
#[derive(Debug, Default)]
pub(super) struct Missed(Applied);

impl Missed {
    /// What a session in `rooms` missed.
    pub(super) fn of(&self, rooms: &[RoomName]) -> u64 {
        let Applied {
            bus,
            everyone,
            rooms: missed,
            ..
        } = &self.0;
        let in_lobby = rooms.iter().any(RoomName::is_lobby);
        let lines: u64 = rooms
            .iter()
            .map(|room| match room.is_lobby() {
                true => *bus,
                false => missed.get(room).copied().unwrap_or(0),
            })
            .sum();
        lines + if in_lobby { 0 } else { *everyone }
    }
}

/// This instance's side of the count: where each line stands here, and the scripts that
/// number, count and adopt.
pub(super) struct Sequence {
    conn: Conn,
    scripts: Scripts,
    keys: Keys,
    /// Written by the task reading the channels (under the migration lock, see
    /// [`transit`](super::transit)) and when a room's channel is subscribed; held only to read
    /// or write numbers.
    applied: Mutex<Applied>,
}

impl Sequence {
    pub(super) fn new(conn: Conn, keys: Keys) -> Self {
        Sequence {
            scripts: Scripts::new(conn.publish_command()),
            conn,
            keys,
            applied: Mutex::default(),
        }
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.applied.lock().expect("sequence lock poisoned")
    }

    /// Publishes `message` on `channel` (`room`'s, if it is a room's) as `counting` says; the
    /// room's members when the room's own slot counted them (rooms sharded, a numbered
    /// message).
    ///
    /// # Errors
    /// `Unavailable` when Redis cannot be reached.
    pub(super) async fn publish_counted(
        &self,
        channel: String,
        room: Option<&RoomName>,
        message: &Message,
        counting: Counting,
    ) -> Result<Option<usize>, RegistryError> {
        // With rooms sharded, a room's traffic is numbered in the room's own slot.
        if let Some(starts) = room.and_then(|room| self.keys.starts(room)) {
            return self
                .publish_in_room(channel, starts, message, counting)
                .await;
        }
        let mut invocation;
        match counting {
            Counting::Plain => return self.publish_plain(channel, message).await.map(|()| None),
            Counting::Numbered { counters, all, own } => {
                invocation = invoke(&self.scripts.numbered, &counters);
                if let Some(own) = own {
                    invocation.key(self.keys.counts(own));
                }
                invocation
                    .arg(channel)
                    .arg(message.to_json())
                    .arg(counters.len() - 1)
                    .arg(u8::from(all));
            }
            Counting::Move {
                counters,
                numbered,
                peer,
                room,
                enter,
            } => {
                invocation = invoke(&self.scripts.moved, &counters);
                invocation
                    .key(self.keys.counts(peer))
                    .key(self.keys.room_seq(&room))
                    .key(self.keys.everyone())
                    .arg(channel)
                    .arg(message.to_json())
                    .arg(counters.len() - 1)
                    .arg(u8::from(numbered))
                    .arg(if enter { "enter" } else { "exit" })
                    .arg(start_field(&room))
                    .arg(u8::from(room.is_lobby()));
            }
        }
        self.run(&invocation).await.map(|()| None)
    }

    /// Publishes `message` on `channel` as it is.
    async fn publish_plain(&self, channel: String, message: &Message) -> Result<(), RegistryError> {
        let published = self.conn.publish(channel, message.to_json()).await;
        published.map(drop).map_err(unavailable)
    }

    /// Runs a script that publishes.
    async fn run(&self, invocation: &ScriptInvocation<'_>) -> Result<(), RegistryError> {
        invocation
            .invoke_async::<redis::Value>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(unavailable)
    }

    /// [`Sequence::publish_counted`] for a room with a slot of its own, whose hash of starting
    /// points is `starts`: a room message is numbered on the room's counter alone (the cluster
    /// is never mixed with rooms sharded: see [`Cluster`](super::Cluster)).
    async fn publish_in_room(
        &self,
        channel: String,
        starts: String,
        message: &Message,
        counting: Counting,
    ) -> Result<Option<usize>, RegistryError> {
        let mut invocation;
        match counting {
            Counting::Plain => return self.publish_plain(channel, message).await.map(|()| None),
            Counting::Numbered { counters, own, .. } => {
                let (_, members): (u64, usize) = self
                    .scripts
                    .numbered_room
                    .key(&counters[0])
                    .key(starts)
                    .arg(channel)
                    .arg(message.to_json())
                    .arg(own.map(|id| id.to_string()).unwrap_or_default())
                    .invoke_async(&mut self.conn.clone())
                    .await
                    .map_err(unavailable)?;
                return Ok(Some(members));
            }
            Counting::Move {
                counters,
                numbered,
                peer,
                room,
                enter,
            } => {
                let left = if enter {
                    String::new()
                } else {
                    format!("{LEFT}{room}")
                };
                self.scripts
                    .count_move
                    .key(self.keys.counts(peer))
                    .arg(left)
                    .invoke_async::<()>(&mut self.conn.clone())
                    .await
                    .map_err(unavailable)?;
                invocation = self.scripts.moved_room.prepare_invoke();
                invocation
                    .key(&counters[0])
                    .key(starts)
                    .arg(channel)
                    .arg(message.to_json())
                    .arg(u8::from(numbered))
                    .arg(if enter { "enter" } else { "exit" })
                    .arg(peer.to_string());
            }
        }
        self.run(&invocation).await.map(|()| None)
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
        self.scripts
            .counted
            .key(self.keys.counts(to))
            .arg(channel)
            .arg(message.to_json())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// Adds `by` to the direct events counted for session `id`.
    pub(super) async fn count_direct(&self, id: SessionId, by: i64) -> Result<(), RegistryError> {
        self.count_each(&[(id, by)]).await
    }

    /// Adds to the direct events counted for each session its number (the `room_count`s its
    /// home is about to append).
    ///
    /// # Errors
    /// `Unavailable` when Redis cannot be reached: then none of a chunk may be counted.
    pub(super) async fn count_each(
        &self,
        counts: &[(SessionId, i64)],
    ) -> Result<(), RegistryError> {
        static SCRIPT: std::sync::LazyLock<Script> =
            std::sync::LazyLock::new(|| Script::new(DIRECT));
        for chunk in counts.chunks(CHUNK) {
            let mut invocation = SCRIPT.prepare_invoke();
            for (id, by) in chunk {
                invocation.key(self.keys.counts(*id)).arg(*by);
            }
            invocation
                .invoke_async::<()>(&mut self.conn.clone())
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Takes back a direct message's count: its home did not append it.
    pub(super) async fn uncount(&self, id: SessionId) {
        if let Err(err) = self.count_direct(id, -1).await {
            warn!(session = %id, error = %err, "could not uncount a refused direct message");
        }
    }

    /// The starting points of a session created here now in `rooms`: where each of its lines
    /// stands here. Read under the migration lock, so that no message is applied meanwhile.
    pub(super) fn starts(&self, rooms: &[RoomName]) -> Starts {
        let applied = self.applied();
        let mut starts = Starts::default();
        for room in rooms {
            let at = match room.is_lobby() {
                true => applied.bus,
                false => applied.rooms.get(room).copied().unwrap_or(0),
            };
            match self.keys.starts(room) {
                Some(hash) => starts.rooms.push((hash, at)),
                None => starts.counts.push((start_field(room), at)),
            }
        }
        if !rooms.iter().any(RoomName::is_lobby) {
            starts.counts.push(("all".to_owned(), applied.everyone));
        }
        starts
    }

    /// Writes session `id`'s starting points in the rooms with a slot of their own (before its
    /// entry: a session adopted is never without them), unless it has some there.
    ///
    /// # Errors
    /// `Unavailable` when Redis cannot be reached.
    pub(super) async fn start_in_rooms(
        &self,
        id: SessionId,
        rooms: &[(String, u64)],
    ) -> Result<(), RegistryError> {
        static SCRIPT: std::sync::LazyLock<Script> =
            std::sync::LazyLock::new(|| Script::new(START_ROOM));
        let id = id.to_string();
        let writes = rooms.iter().map(|(hash, at)| {
            let mut conn = self.conn.clone();
            let mut write = SCRIPT.prepare_invoke();
            write.key(hash).arg(&id).arg(*at);
            async move { write.invoke_async::<()>(&mut conn).await }
        });
        let written: redis::RedisResult<Vec<()>> = join_all(writes).await.into_iter().collect();
        written.map(drop).map_err(unavailable)
    }

    /// The rooms with a slot of their own that session `id` left, whose hashes keep what they
    /// gave it; read before its counts go.
    pub(super) async fn rooms_left(&self, id: SessionId) -> Result<Vec<RoomName>, RegistryError> {
        if !self.keys.is_sharded() {
            return Ok(Vec::new());
        }
        let fields: Vec<String> = redis::cmd("HKEYS")
            .arg(self.keys.counts(id))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let left = fields.iter().filter_map(|field| field.strip_prefix(LEFT));
        Ok(left.filter_map(|room| RoomName::parse(room).ok()).collect())
    }

    /// Removes session `id`, which left the hub, from the hashes of `rooms` with a slot of
    /// their own (those it was in, and those it left).
    pub(super) async fn forget(&self, id: SessionId, rooms: &[RoomName]) {
        static SCRIPT: std::sync::LazyLock<Script> =
            std::sync::LazyLock::new(|| Script::new(FORGET_ROOM));
        let id = id.to_string();
        let removals = rooms
            .iter()
            .filter_map(|room| self.keys.starts(room))
            .map(|hash| {
                let mut conn = self.conn.clone();
                let mut remove = SCRIPT.prepare_invoke();
                remove.key(hash).arg(&id);
                async move { remove.invoke_async::<()>(&mut conn).await }
            });
        for removed in join_all(removals).await {
            if let Err(err) = removed {
                warn!(session = %id, error = %err, "could not forget a session's room starts");
            }
        }
    }

    /// Where `room`'s counter stands, and what it gave each of `ids` by then (rooms sharded).
    ///
    /// # Errors
    /// `Unavailable` when Redis cannot be reached.
    pub(super) async fn room_parts(
        &self,
        room: &RoomName,
        ids: &[SessionId],
    ) -> Result<(u64, Vec<u64>), RegistryError> {
        let Some(starts) = self.keys.starts(room) else {
            return Ok((0, vec![0; ids.len()]));
        };
        let mut invocation = self.scripts.room_parts.prepare_invoke();
        invocation.key(self.keys.room_seq(room)).key(starts);
        for id in ids {
            invocation.arg(id.to_string());
        }
        let mut parts: Vec<u64> = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let at = parts.remove(0);
        Ok((at, parts))
    }

    /// Starts the counts of session `id`, in `rooms`, so that its total is `newest` now, unless
    /// it has some: Redis lost them when it restarted empty. (A new session's are written with
    /// its entry.)
    pub(super) async fn restart_counts(
        &self,
        id: SessionId,
        rooms: &[RoomName],
        newest: u64,
    ) -> Result<(), RegistryError> {
        static SCRIPT: std::sync::LazyLock<Script> =
            std::sync::LazyLock::new(|| Script::new(RESTART));
        let starts = self.starts(rooms);
        let mut invocation = SCRIPT.key(self.keys.counts(id));
        invocation.arg("done").arg(newest);
        for (field, at) in starts.counts {
            invocation.arg(field).arg(at);
        }
        let written: bool = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        // With rooms sharded, the rooms' slots lost theirs too; else they are not touched, so
        // that re-registering never waits on a room's shard.
        if written {
            self.start_in_rooms(id, &starts.rooms).await?;
        }
        Ok(())
    }

    /// The last numbers applied here on the lines of `rooms` (but `lobby`'s).
    pub(super) fn points(&self, rooms: &[RoomName]) -> Points {
        let applied = self.applied();
        rooms
            .iter()
            .filter(|room| !room.is_lobby())
            .map(|room| (room.clone(), applied.rooms.get(room).copied().unwrap_or(0)))
            .collect()
    }

    /// The last numbers applied here on every room line read.
    pub(super) fn all_points(&self) -> Points {
        let applied = self.applied();
        applied.rooms.iter().map(|(r, n)| (r.clone(), *n)).collect()
    }

    /// Whether this instance has applied each room line of `points` up to its number.
    pub(super) fn covers(&self, points: &Points) -> bool {
        let applied = self.applied();
        points
            .iter()
            .all(|(room, at)| applied.rooms.get(room).is_some_and(|n| n >= at))
    }

    /// Whether this instance has applied as far as `points` on each of those lines it reads
    /// (one it does not read has nothing to wait for).
    pub(super) fn reached(&self, points: &Points) -> bool {
        let applied = self.applied();
        points
            .iter()
            .all(|(room, at)| applied.rooms.get(room).is_none_or(|n| n >= at))
    }

    /// Waits, for at most `within`, until this instance has applied as far as `points` on
    /// each line it reads; whether it did. A session handed here arrives only then: its old
    /// home applied up to `points`, and a message of its rooms read here later than its
    /// arrival would reach it a second time.
    pub(super) async fn reach(&self, points: &Points, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.reached(points) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Whether the numbered message `numbers` is new here; records it. Called under the
    /// migration lock, in the order of the channels. A number at or below the last one of its
    /// channel was read before (re)subscribing.
    pub(super) fn advance(&self, numbers: &Numbers) -> bool {
        let mut applied = self.applied();
        let last = match &numbers.room {
            None => &mut applied.bus,
            Some(room) => applied.rooms.entry(room.clone()).or_default(),
        };
        if numbers.seq <= *last {
            return false;
        }
        *last = numbers.seq;
        if let Some(all) = numbers.all {
            applied.everyone = applied.everyone.max(all);
        }
        true
    }

    /// `rooms`' channels were just subscribed, and their counters stood at `at` after: their
    /// messages up to there were published before anything this instance does next.
    pub(super) fn reading(&self, rooms: &[RoomName], at: &[u64]) {
        let mut applied = self.applied();
        for (room, at) in rooms.iter().zip(at) {
            let last = applied.rooms.entry(room.clone()).or_default();
            *last = (*last).max(*at);
        }
    }

    /// `rooms`' channels are no longer read here.
    pub(super) fn not_reading(&self, rooms: &[RoomName]) {
        let mut applied = self.applied();
        for room in rooms {
            applied.rooms.remove(room);
        }
    }

    /// Where the counters of `rooms` stand now.
    ///
    /// # Errors
    /// When Redis cannot be reached.
    pub(super) async fn counters(&self, rooms: &[RoomName]) -> redis::RedisResult<Vec<u64>> {
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        if self.keys.is_sharded() {
            // A slot each: one read each, at once.
            let reads = rooms.iter().map(|room| {
                let mut conn = self.conn.clone();
                let get = redis::cmd("GET").arg(self.keys.room_seq(room)).clone();
                async move { get.query_async::<Option<u64>>(&mut conn).await }
            });
            let values: Vec<Option<u64>> = join_all(reads)
                .await
                .into_iter()
                .collect::<Result<_, _>>()?;
            return Ok(values.into_iter().map(Option::unwrap_or_default).collect());
        }
        let mut mget = redis::cmd("MGET");
        for room in rooms {
            mget.arg(self.keys.room_seq(room));
        }
        let values: Vec<Option<u64>> = mget.query_async(&mut self.conn.clone()).await?;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Starts counting from where every line read here stands now (the bus's, the everyone
    /// line, `rooms`'): after (re)subscribing, before any message is applied; returns how many
    /// numbered messages of each went by since the last message applied here. What was
    /// published while this instance was cut off is not replayed.
    pub(super) async fn catch_up(&self, rooms: &[RoomName]) -> Result<Missed, RegistryError> {
        let rooms: Vec<&RoomName> = rooms.iter().filter(|room| !room.is_lobby()).collect();
        // One command, so every line is read at the same point (with rooms sharded, each
        // room's line on its own, after the deployment's: each line counts on its own).
        let mut mget = redis::cmd("MGET");
        mget.arg(self.keys.seq()).arg(self.keys.everyone());
        if !self.keys.is_sharded() {
            for room in &rooms {
                mget.arg(self.keys.room_seq(room));
            }
        }
        let standing: Vec<Option<u64>> = mget
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let mut standing: Vec<u64> = standing
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect();
        if self.keys.is_sharded() {
            let owned: Vec<RoomName> = rooms.iter().map(|room| (*room).clone()).collect();
            standing.extend(self.counters(&owned).await.map_err(unavailable)?);
        }
        let mut applied = self.applied();
        let mut now = Applied {
            caught_up: true,
            bus: standing[0],
            everyone: standing[1],
            rooms: HashMap::new(),
        };
        if !applied.caught_up {
            applied.bus = now.bus;
            applied.everyone = now.everyone;
        }
        let mut missed = Applied {
            caught_up: true,
            bus: now.bus.saturating_sub(applied.bus),
            everyone: now.everyone.saturating_sub(applied.everyone),
            rooms: HashMap::new(),
        };
        for (room, at) in rooms.into_iter().zip(standing.into_iter().skip(2)) {
            if let Some(last) = applied.rooms.get(room) {
                missed.rooms.insert(room.clone(), at.saturating_sub(*last));
            }
            now.rooms.insert(room.clone(), at);
        }
        *applied = now;
        Ok(Missed(missed))
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
        for chunk in ids.chunks(CHUNK) {
            let mut invocation = self.scripts.adopt.key(self.keys.sessions());
            invocation
                .key(self.keys.seq())
                .key(self.keys.everyone())
                .key(self.keys.instance(dead))
                .key(self.keys.adopted(dead))
                .arg(dead.to_string())
                .arg(here.to_string())
                .arg(self.keys.counts_prefix())
                .arg(self.keys.bus())
                .arg(self.keys.room_seqs());
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

/// An invocation of `script` with `counters` as its first keys.
fn invoke<'a>(script: &'a Script, counters: &[String]) -> ScriptInvocation<'a> {
    let mut invocation = script.prepare_invoke();
    for counter in counters {
        invocation.key(counter);
    }
    invocation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_misses_what_its_own_lines_went_by_and_no_other() {
        let room = |name: &str| RoomName::parse(name).unwrap();
        let missed = Missed(Applied {
            caught_up: true,
            bus: 5,
            everyone: 2,
            rooms: HashMap::from([(room("x"), 3)]),
        });
        // In lobby: its traffic, server messages to everyone included.
        assert_eq!(missed.of(&[RoomName::lobby(), room("x")]), 8);
        assert_eq!(missed.of(&[room("x")]), 3 + 2);
        assert_eq!(missed.of(&[room("y")]), 2, "y was not read here");
        assert_eq!(missed.of(&[]), 2);
    }

    #[tokio::test]
    async fn an_arrival_waits_for_the_lines_read_here_to_reach_its_old_homes_points() {
        let room = |name: &str| RoomName::parse(name).unwrap();
        let conn = super::super::transport::Target::parse("redis://127.0.0.1:1")
            .and_then(|target| target.connect_lazily())
            .unwrap();
        let sequence = std::sync::Arc::new(Sequence::new(conn, Keys::new("t")));
        sequence.reading(&[room("dev")], &[4]);
        // Its old home applied dev to 6, and ops, which is not read here (nothing to wait for).
        let points = Points::from([(room("dev"), 6), (room("ops"), 9)]);
        assert!(!sequence.reached(&points));
        assert!(!sequence.reach(&points, Duration::from_millis(20)).await);
        let said = move |seq| Numbers {
            room: Some(room("dev")),
            seq,
            all: None,
        };
        let reader = std::sync::Arc::clone(&sequence);
        let reading = tokio::spawn(async move {
            assert!(reader.advance(&said(5)));
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(reader.advance(&said(6)));
        });
        assert!(sequence.reach(&points, Duration::from_secs(5)).await);
        assert!(sequence.reached(&points));
        reading.await.unwrap();
    }
}
