//! A directory entry: one session of the cluster as the [directory](super::directory) stores
//! it, JSON in the sessions hash, and how entries written by older releases (without rooms,
//! broadcast rights or lifetimes) or rewritten by Lua (whose JSON writes an empty list as `{}`)
//! read.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::identity::{DisplayName, RoomName, RoomPatterns, SessionId, Token, TokenHash};
use crate::registry::Peer;
use crate::registry::lifetime::{Bound, Deadline, unix_ms};

/// A session in the directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Entry {
    pub(super) name: DisplayName,
    /// The app's user id, on a server running `--auth jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) user: Option<String>,
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
    pub(super) token: String,
    /// The instance holding the session's mailbox.
    pub(super) home: Uuid,
    /// When the session ends, if anything bounds it; none in entries from before lifetimes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) lifetime: Option<Deadline>,
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

    /// Why the session ended, if its lifetime is over by this instance's clock (its home ends
    /// it then, or the survivor that adopts it).
    pub(super) fn ended(&self) -> Option<Bound> {
        self.lifetime.as_ref()?.ended_at(unix_ms(SystemTime::now()))
    }

    /// Whether `token` is the one this entry was written with, compared in constant time.
    pub(super) fn proves(&self, token: &Token) -> bool {
        TokenHash::from_hex(&self.token).is_some_and(|hash| hash.verifies(token))
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
            lifetime: None,
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
        assert_eq!(entry.lifetime, None, "no lifetime: no end");
        assert_eq!(entry.ended(), None);
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

    #[test]
    fn an_entrys_lifetime_reads_back_and_says_when_it_ended() {
        let home = Uuid::nil();
        // As Lua's JSON rewrites it: keys in any order, the milliseconds as plain digits.
        let past = format!(
            r#"{{"home":"{home}","lifetime":{{"bound":"join_token","ends_ms":1000000000000}},"name":"ann","rooms":{{}},"token":"00"}}"#
        );
        let entry: Entry = serde_json::from_str(&past).unwrap();
        assert_eq!(entry.ended(), Some(Bound::JoinToken));
        let ends_ms = unix_ms(SystemTime::now()) + 60_000;
        let future = format!(
            r#"{{"home":"{home}","lifetime":{{"bound":"server","ends_ms":{ends_ms},"warn_at_ms":{ends_ms}}},"name":"ann","token":"00"}}"#
        );
        let entry: Entry = serde_json::from_str(&future).unwrap();
        assert_eq!(entry.ended(), None);
        assert_eq!(entry.lifetime.map(|l| l.ends_ms), Some(ends_ms));
    }
}
