//! The directory: every session of the cluster, in one Redis hash
//! ([`SESSIONS`](super::keys::SESSIONS)), with its name, a hash of its token, its rooms and
//! the instance it is homed on; and beside it each room's member count
//! ([`ROOMS`](super::keys::ROOMS)), kept by the same scripts that write the entries, so the two
//! never disagree.
//!
//! Entries are rewritten whole: a session's rooms change through whichever instance took the
//! request (read, changed, written back), its home through the instance it moves to. Two
//! writes of one session at once (a join on one instance while it moves to another) may lose
//! one of the two room changes in the directory; its home's registry, which applies them in
//! bus order, stays right, and the next write of the entry carries it.
//!
//! An entry also carries when its session ends (its lifetime, see
//! [`lifetime`](super::lifetime)), so that a survivor adopting it after a crash ends it then.
//! The lifetime is written by its home (with the entry, and alone on each refresh); a write
//! without one keeps the one the entry has (see [`PUT`]): a room change read and written back
//! elsewhere cannot undo a refresh it raced with, and an entry written by a release without
//! lifetimes does not wipe one recorded for it.

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::{AsyncCommands, Script};
use uuid::Uuid;

pub(super) use super::entry::Entry;
use super::keys::{Keys, unavailable};
use super::transport::Conn;
use crate::identity::{RoomName, SessionId};
use crate::registry::lifetime::Deadline;
use crate::registry::{Homed, Peer, RegistryError};

/// The Lua both entry scripts share: an entry's rooms (those of an entry written before rooms
/// existed: `lobby`), and adding to the room counts.
const ROOM_COUNTS: &str = r"
local function rooms_in(entry)
    if entry.rooms == nil then return {'lobby'} end
    return entry.rooms
end
local function rooms_of(json)
    return rooms_in(cjson.decode(json))
end
local function count(key, rooms, by)
    for _, room in ipairs(rooms) do
        if redis.call('HINCRBY', key, room, by) <= 0 then redis.call('HDEL', key, room) end
    end
end
";

/// Writes entry ARGV[2] of session ARGV[1], moving the room counts from its old rooms to its
/// new ones; with KEYS[3], also starts the session's counts with the field/value pairs
/// ARGV[3..]. KEYS: the directory, the room counts. An entry without a `lifetime` keeps the one
/// its old entry had, and returns it (JSON); else nothing.
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{ROOM_COUNTS}{WRITE_ENTRY}
        local kept = write_entry()
        if KEYS[3] then redis.call('HSET', KEYS[3], 'direct', 0, unpack(ARGV, 3)) end
        return kept
        "
    ))
});

/// The body [`PUT`] and [`RECLAIM`] share: writes entry ARGV[2] of session ARGV[1] in the
/// directory KEYS[1], moves the room counts KEYS[2], keeps the old entry's lifetime when the new
/// one has none, and returns that lifetime (JSON) or false.
const WRITE_ENTRY: &str = r"
local function write_entry()
    local old = redis.call('HGET', KEYS[1], ARGV[1])
    local json, kept = ARGV[2], false
    if old then
        local was = cjson.decode(old)
        count(KEYS[2], rooms_in(was), -1)
        local new = was.lifetime and cjson.decode(json)
        if new and not new.lifetime then
            new.lifetime = was.lifetime
            json = cjson.encode(new)
            kept = cjson.encode(was.lifetime)
        end
    end
    redis.call('HSET', KEYS[1], ARGV[1], json)
    count(KEYS[2], rooms_of(json), 1)
    return kept
end
";

/// [`PUT`] without counts, unless session ARGV[1] is in the set KEYS[3] of the sessions a
/// survivor adopted from this instance: `{0, ''}` then, else `{1, kept lifetime or ''}`. For an
/// instance re-registering after it was cut off from Redis for longer than its liveness key
/// lived: what was adopted meanwhile lives elsewhere now (or left since), and its entry must
/// stand.
static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{ROOM_COUNTS}{WRITE_ENTRY}
        if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return {{0, ''}} end
        return {{1, write_entry() or ''}}
        "
    ))
});

/// Sets the `lifetime` of session ARGV[1]'s entry to ARGV[3] (JSON) if the entry still names
/// ARGV[2] its home; 1 if it did. KEYS: the directory. (Lua's JSON keeps the numbers exact:
/// milliseconds since the epoch have 13 digits, and it writes 14.)
static SET_LIFETIME: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local json = redis.call('HGET', KEYS[1], ARGV[1])
        if not json then return 0 end
        local entry = cjson.decode(json)
        if entry.home ~= ARGV[2] then return 0 end
        entry.lifetime = cjson.decode(ARGV[3])
        redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(entry))
        return 1
        ",
    )
});

/// Removes session ARGV[1]'s entry and its counts KEYS[3], and it from the room counts;
/// returns the entry it removed, if any. KEYS: the directory, the room counts, the counts.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{ROOM_COUNTS}
        local old = redis.call('HGET', KEYS[1], ARGV[1])
        redis.call('DEL', KEYS[3])
        if not old then return false end
        count(KEYS[2], rooms_of(old), -1)
        redis.call('HDEL', KEYS[1], ARGV[1])
        return old
        "
    ))
});

/// Entries per round trip of a walk of the directory ([`Directory::homes`]).
const SCAN_PAGE: usize = 1000;

/// This instance's view of the directory hash and the room counts.
pub(super) struct Directory {
    conn: Conn,
    /// `<prefix>:sessions`.
    key: String,
    /// `<prefix>:rooms`.
    rooms: String,
    /// `<prefix>:adopted:<this instance>`.
    adopted: String,
    /// This instance: the home written for the sessions it puts.
    here: Uuid,
}

impl Directory {
    pub(super) fn new(conn: Conn, keys: &Keys, here: Uuid) -> Self {
        Directory {
            conn,
            key: keys.sessions(),
            rooms: keys.rooms(),
            adopted: keys.adopted(here),
            here,
        }
    }

    /// The entry of session `id`, if the cluster knows it.
    pub(super) async fn get(&self, id: SessionId) -> Result<Option<Entry>, RegistryError> {
        let json: Option<String> = self
            .conn
            .clone()
            .hget(&self.key, id.to_string())
            .await
            .map_err(unavailable)?;
        Ok(json.and_then(|json| serde_json::from_str(&json).ok()))
    }

    /// Writes `session`'s entry, homed here. Returns the lifetime the entry kept when
    /// `session` has none (see [`PUT`]).
    pub(super) async fn put(&self, session: &Homed) -> Result<Option<Deadline>, RegistryError> {
        let kept: Option<String> = PUT
            .key(&self.key)
            .key(&self.rooms)
            .arg(session.peer.id.to_string())
            .arg(self.entry(session))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(kept.and_then(|json| serde_json::from_str(&json).ok()))
    }

    /// Writes `session`'s entry, homed here, unless a survivor adopted it while this instance
    /// was cut off from Redis: `None` then, else the lifetime the entry kept, as [`put`](Self::put).
    pub(super) async fn reclaim(
        &self,
        session: &Homed,
    ) -> Result<Option<Option<Deadline>>, RegistryError> {
        let (written, kept): (bool, Option<String>) = RECLAIM
            .key(&self.key)
            .key(&self.rooms)
            .key(&self.adopted)
            .arg(session.peer.id.to_string())
            .arg(self.entry(session))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(written.then(|| kept.and_then(|json| serde_json::from_str(&json).ok())))
    }

    /// Forgets which sessions were adopted from this instance, once it re-registered the
    /// others (none is adopted while its liveness key lives): a session that comes back here
    /// later is homed here again.
    pub(super) async fn reclaimed(&self) -> Result<(), RegistryError> {
        self.conn
            .clone()
            .del(&self.adopted)
            .await
            .map_err(unavailable)
    }

    /// Writes a new session's entry, homed here, with the starting points of its counts (key
    /// `counts`, see [`sequence`](super::sequence)), at once: an entry is never adopted
    /// without them.
    pub(super) async fn put_new(
        &self,
        session: &Homed,
        (counts, starts): (String, Vec<(String, u64)>),
    ) -> Result<(), RegistryError> {
        let mut invocation = PUT.key(&self.key);
        invocation
            .key(&self.rooms)
            .key(counts)
            .arg(session.peer.id.to_string())
            .arg(self.entry(session));
        for (field, at) in starts {
            invocation.arg(field).arg(at);
        }
        invocation
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// Rewrites `entry` of session `id` as it stands (its rooms changed), keeping the lifetime
    /// the directory has: `entry`'s may be older.
    pub(super) async fn rewrite(&self, id: SessionId, entry: &Entry) -> Result<(), RegistryError> {
        let entry = Entry {
            lifetime: None,
            ..entry.clone()
        };
        let json = serde_json::to_string(&entry).expect("entries serialise");
        PUT.key(&self.key)
            .key(&self.rooms)
            .arg(id.to_string())
            .arg(json)
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// Sets when session `id` ends, if its entry still names `home` its home; whether it did.
    pub(super) async fn set_lifetime(
        &self,
        id: SessionId,
        home: Uuid,
        lifetime: &Deadline,
    ) -> Result<bool, RegistryError> {
        SET_LIFETIME
            .key(&self.key)
            .arg(id.to_string())
            .arg(home.to_string())
            .arg(serde_json::to_string(lifetime).expect("deadlines serialise"))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// The entry JSON of `session` homed here.
    fn entry(&self, session: &Homed) -> String {
        let entry = Entry {
            name: session.peer.name.clone(),
            user: session.peer.user.clone(),
            may_broadcast: session.may_broadcast,
            rooms: session.rooms.clone(),
            may_join: session.may_join.clone().map(Vec::from),
            token: session.token_hash.to_hex(),
            home: self.here,
            lifetime: session.lifetime.clone(),
        };
        serde_json::to_string(&entry).expect("entries serialise")
    }

    /// Removes an entry, its rooms' counts and the session's counts (`counts` is their key);
    /// the rooms it was in when this call removed it and its home (so the caller announces the
    /// leave in them and to its home, and only one caller does).
    pub(super) async fn delete(
        &self,
        id: SessionId,
        counts: String,
    ) -> Result<Option<(Vec<RoomName>, Option<Uuid>)>, RegistryError> {
        let removed: Option<String> = DELETE
            .key(&self.key)
            .key(&self.rooms)
            .key(counts)
            .arg(id.to_string())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        // An entry that does not parse was still removed: it left no rooms anyone knows.
        Ok(removed.map(|json| {
            serde_json::from_str::<Entry>(&json)
                .map(|entry| (entry.rooms, Some(entry.home)))
                .unwrap_or_default()
        }))
    }

    /// How many members `room` has in the cluster.
    pub(super) async fn room_size(&self, room: &RoomName) -> Result<usize, RegistryError> {
        let size: Option<usize> = self
            .conn
            .clone()
            .hget(&self.rooms, room.as_str())
            .await
            .map_err(unavailable)?;
        Ok(size.unwrap_or(0))
    }

    /// Which of `rooms` have no member in the cluster (one `HMGET`), each once.
    pub(super) async fn empty_rooms<'a>(
        &self,
        rooms: &'a [RoomName],
    ) -> Result<Vec<&'a RoomName>, RegistryError> {
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        let fields: Vec<&str> = rooms.iter().map(RoomName::as_str).collect();
        let sizes: Vec<Option<usize>> = redis::cmd("HMGET")
            .arg(&self.rooms)
            .arg(&fields)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let mut empty: Vec<&RoomName> = rooms
            .iter()
            .zip(sizes)
            .filter(|(_, size)| size.unwrap_or(0) == 0)
            .map(|(room, _)| room)
            .collect();
        empty.sort();
        empty.dedup();
        Ok(empty)
    }

    /// How many rooms have members in the cluster (a room's count is removed at 0).
    pub(super) async fn room_count(&self) -> Result<usize, RegistryError> {
        self.conn
            .clone()
            .hlen(&self.rooms)
            .await
            .map_err(unavailable)
    }

    /// Every room of the cluster with its member count.
    pub(super) async fn rooms(&self) -> Result<Vec<(RoomName, usize)>, RegistryError> {
        let all: HashMap<String, i64> = self
            .conn
            .clone()
            .hgetall(&self.rooms)
            .await
            .map_err(unavailable)?;
        Ok(all
            .into_iter()
            .filter(|&(_, n)| n > 0)
            .filter_map(|(room, n)| Some((RoomName::parse(&room).ok()?, n as usize)))
            .collect())
    }

    /// Every member of `room` in the cluster (a walk of the whole directory).
    pub(super) async fn room_members(&self, room: &RoomName) -> Result<Vec<Peer>, RegistryError> {
        Ok(self
            .entries()
            .await?
            .into_iter()
            .filter(|(_, entry)| entry.rooms.contains(room))
            .map(|(id, entry)| entry.peer(id))
            .collect())
    }

    /// How many sessions the cluster holds.
    pub(super) async fn count(&self) -> Result<usize, RegistryError> {
        self.conn.clone().hlen(&self.key).await.map_err(unavailable)
    }

    /// How many of `ids` still name `home` as their home.
    pub(super) async fn homed_on(
        &self,
        home: Uuid,
        ids: &[SessionId],
    ) -> Result<usize, RegistryError> {
        let fields: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let entries: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&self.key)
            .arg(&fields)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(entries
            .iter()
            .flatten()
            .filter_map(|json| serde_json::from_str::<Entry>(json).ok())
            .filter(|entry| entry.home == home)
            .count())
    }

    /// Every well-formed entry, read [`SCAN_PAGE`] a round trip (`HSCAN`): a sweep reads
    /// the whole directory, and one `HGETALL` of a large one would hold
    /// Redis for one long reply each time. An entry written or removed meanwhile may be missed;
    /// the next sweep sees it.
    pub(super) async fn scan_entries(&self) -> Result<Vec<(SessionId, Entry)>, RegistryError> {
        let mut conn = self.conn.clone();
        let mut scan = redis::cmd("HSCAN")
            .arg(&self.key)
            .cursor_arg(0)
            .arg("COUNT")
            .arg(SCAN_PAGE)
            .clone()
            .iter_async::<(String, String)>(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut entries = Vec::new();
        while let Some(item) = scan.next_item().await {
            let (id, json) = item.map_err(unavailable)?;
            if let (Some(id), Ok(entry)) =
                (SessionId::parse(&id), serde_json::from_str::<Entry>(&json))
            {
                entries.push((id, entry));
            }
        }
        Ok(entries)
    }

    /// Every well-formed entry.
    pub(super) async fn entries(&self) -> Result<Vec<(SessionId, Entry)>, RegistryError> {
        let all: HashMap<String, String> = self
            .conn
            .clone()
            .hgetall(&self.key)
            .await
            .map_err(unavailable)?;
        Ok(all
            .into_iter()
            .filter_map(|(id, json)| {
                Some((SessionId::parse(&id)?, serde_json::from_str(&json).ok()?))
            })
            .collect())
    }

    /// Every session of the cluster.
    pub(super) async fn peers(&self) -> Result<Vec<Peer>, RegistryError> {
        Ok(self
            .entries()
            .await?
            .into_iter()
            .map(|(id, entry)| entry.peer(id))
            .collect())
    }
}
