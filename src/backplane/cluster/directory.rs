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

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::{AsyncCommands, Script};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use super::keys::{Keys, unavailable};
use super::transport::Conn;
use crate::identity::{DisplayName, RoomName, RoomPatterns, SessionId, Token, TokenHash};
use crate::registry::{Homed, Peer, RegistryError};

/// The Lua both entry scripts share: an entry's rooms (those of an entry written before rooms
/// existed: `lobby`), and adding to the room counts.
const ROOM_COUNTS: &str = r"
local function rooms_of(json)
    local rooms = cjson.decode(json).rooms
    if rooms == nil then return {'lobby'} end
    return rooms
end
local function count(key, rooms, by)
    for _, room in ipairs(rooms) do
        if redis.call('HINCRBY', key, room, by) <= 0 then redis.call('HDEL', key, room) end
    end
end
";

/// Writes entry ARGV[2] of session ARGV[1], moving the room counts from its old rooms to its
/// new ones; with KEYS[3], also starts the session's counts at `base` ARGV[3]. KEYS: the
/// directory, the room counts.
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{ROOM_COUNTS}
        local old = redis.call('HGET', KEYS[1], ARGV[1])
        if old then count(KEYS[2], rooms_of(old), -1) end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        count(KEYS[2], rooms_of(ARGV[2]), 1)
        if KEYS[3] then redis.call('HSET', KEYS[3], 'base', ARGV[3]) end
        "
    ))
});

/// [`PUT`], unless session ARGV[1] is in the set KEYS[3] of the sessions a survivor adopted
/// from this instance; returns whether it wrote. An instance re-registering after it was cut
/// off from Redis for longer than its liveness key lived: what was adopted meanwhile lives
/// elsewhere now (or left since), and its entry must stand.
static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{ROOM_COUNTS}
        if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return 0 end
        local old = redis.call('HGET', KEYS[1], ARGV[1])
        if old then count(KEYS[2], rooms_of(old), -1) end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        count(KEYS[2], rooms_of(ARGV[2]), 1)
        return 1
        "
    ))
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

/// A session in the directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Entry {
    pub(super) name: DisplayName,
    /// The app's user id, on a server running `--auth jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    /// False when its join token said `"broadcast": false`; entries written before the field
    /// existed mean yes.
    #[serde(default = "allowed")]
    pub(super) may_broadcast: bool,
    /// The rooms it is in; entries written before rooms existed mean `lobby`. Read as a list
    /// or an empty object: Lua's JSON writes an empty list as `{}`.
    #[serde(default = "in_lobby", deserialize_with = "list_or_empty")]
    pub(super) rooms: Vec<RoomName>,
    /// The rooms its join token allows, if it had a claim.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_list_or_empty"
    )]
    pub(super) may_join: Option<Vec<String>>,
    /// The [`TokenHash`] of the token, hex: enough to check a token, useless to forge one.
    token: String,
    /// The instance holding the session's mailbox.
    pub(super) home: Uuid,
}

impl Entry {
    /// Session `id` as others see it.
    pub(super) fn peer(&self, id: SessionId) -> Peer {
        Peer {
            id,
            name: self.name.clone(),
            user: self.user.clone(),
        }
    }

    /// The rooms its join token allows, if it had a claim; a claim that no longer parses
    /// allows none.
    pub(super) fn claim(&self) -> Option<RoomPatterns> {
        let claim = self.may_join.as_ref()?;
        Some(RoomPatterns::parse(claim).unwrap_or_else(|_| RoomPatterns::none()))
    }

    /// The hash of the session's token.
    pub(super) fn token_hash(&self) -> Option<TokenHash> {
        TokenHash::from_hex(&self.token)
    }

    /// Whether `token` is the one this entry was written with, compared in constant time.
    pub(super) fn proves(&self, token: &Token) -> bool {
        TokenHash::from_hex(&self.token).is_some_and(|hash| hash.verifies(token))
    }
}

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

    /// Writes `session`'s entry, homed here.
    pub(super) async fn put(&self, session: &Homed) -> Result<(), RegistryError> {
        PUT.key(&self.key)
            .key(&self.rooms)
            .arg(session.peer.id.to_string())
            .arg(self.entry(session))
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// Writes `session`'s entry, homed here, unless a survivor adopted it while this instance
    /// was cut off from Redis: false then.
    pub(super) async fn reclaim(&self, session: &Homed) -> Result<bool, RegistryError> {
        RECLAIM
            .key(&self.key)
            .key(&self.rooms)
            .key(&self.adopted)
            .arg(session.peer.id.to_string())
            .arg(self.entry(session))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
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

    /// Writes a new session's entry, homed here, with the `base` of its counts (key `counts`,
    /// see [`sequence`](super::sequence)), at once: an entry is never adopted without them.
    pub(super) async fn put_new(
        &self,
        session: &Homed,
        (counts, base): (String, i64),
    ) -> Result<(), RegistryError> {
        PUT.key(&self.key)
            .key(&self.rooms)
            .key(counts)
            .arg(session.peer.id.to_string())
            .arg(self.entry(session))
            .arg(base)
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// Rewrites `entry` of session `id` as it stands (its rooms changed).
    pub(super) async fn rewrite(&self, id: SessionId, entry: &Entry) -> Result<(), RegistryError> {
        let json = serde_json::to_string(entry).expect("entries serialise");
        PUT.key(&self.key)
            .key(&self.rooms)
            .arg(id.to_string())
            .arg(json)
            .invoke_async::<()>(&mut self.conn.clone())
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

/// What a missing `may_broadcast` means: an entry from before the field, when all could.
fn allowed() -> bool {
    true
}

/// What missing `rooms` mean: an entry from before rooms, when everyone was in one.
fn in_lobby() -> Vec<RoomName> {
    vec![RoomName::lobby()]
}

/// A list, or the empty object Lua's JSON writes for an empty one.
#[derive(Deserialize)]
#[serde(untagged)]
enum ListOrEmpty<T> {
    List(Vec<T>),
    Empty(HashMap<String, serde_json::Value>),
}

fn list_or_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    match ListOrEmpty::deserialize(deserializer)? {
        ListOrEmpty::List(list) => Ok(list),
        ListOrEmpty::Empty(map) if map.is_empty() => Ok(Vec::new()),
        ListOrEmpty::Empty(_) => Err(serde::de::Error::custom("expected a list")),
    }
}

fn some_list_or_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Vec<T>>, D::Error> {
    list_or_empty(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed() {
        let token = Token::parse(&format!(
            "67e55044-10b1-426f-9247-bb680e5fe0c8.{}",
            "ab".repeat(32)
        ))
        .unwrap();
        let hash = TokenHash::of(&token).to_hex();
        assert_eq!(hash.len(), 64);
        assert!(!token.reveal().contains(&hash));
        let entry = Entry {
            name: DisplayName::parse("ann").unwrap(),
            user: None,
            may_broadcast: true,
            rooms: vec![RoomName::lobby()],
            may_join: None,
            token: hash,
            home: Uuid::nil(),
        };
        assert!(entry.proves(&token));
        let other = Token::parse(&format!("{}.{}", token.session(), "cd".repeat(32))).unwrap();
        assert!(!entry.proves(&other));
    }

    #[test]
    fn entries_read_rooms_as_lua_writes_them_and_old_ones_as_the_lobby() {
        let home = Uuid::nil();
        let old = format!(r#"{{"name":"ann","token":"00","home":"{home}"}}"#);
        let entry: Entry = serde_json::from_str(&old).unwrap();
        assert_eq!(entry.rooms, vec![RoomName::lobby()]);
        assert_eq!(entry.claim(), None);
        let lua = format!(
            r#"{{"name":"ann","token":"00","home":"{home}","rooms":{{}},"may_join":{{}}}}"#
        );
        let entry: Entry = serde_json::from_str(&lua).unwrap();
        assert!(entry.rooms.is_empty());
        assert_eq!(
            entry.claim(),
            Some(RoomPatterns::parse::<&str>(&[]).unwrap())
        );
    }
}
