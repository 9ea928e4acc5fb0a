//! The directory: every session of the cluster, in one Redis hash
//! ([`SESSIONS`](super::keys::SESSIONS)), with its name, a hash of its token, and the instance
//! it is homed on.

use std::collections::HashMap;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys::unavailable;
use crate::identity::{DisplayName, SessionId, Token, TokenHash};
use crate::registry::{Peer, RegistryError};

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

    /// The hash of the session's token.
    pub(super) fn token_hash(&self) -> Option<TokenHash> {
        TokenHash::from_hex(&self.token)
    }

    /// Whether `token` is the one this entry was written with, compared in constant time.
    pub(super) fn proves(&self, token: &Token) -> bool {
        TokenHash::from_hex(&self.token).is_some_and(|hash| hash.verifies(token))
    }
}

/// This instance's view of the directory hash.
pub(super) struct Directory {
    conn: ConnectionManager,
    /// `<prefix>:sessions`.
    key: String,
    /// This instance: the home written for the sessions it puts.
    here: Uuid,
}

impl Directory {
    pub(super) fn new(conn: ConnectionManager, key: String, here: Uuid) -> Self {
        Directory { conn, key, here }
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

    /// Writes `peer`'s entry, homed here; `token` is the hash of its token.
    pub(super) async fn put(
        &self,
        peer: &Peer,
        may_broadcast: bool,
        token: &TokenHash,
    ) -> Result<(), RegistryError> {
        self.conn
            .clone()
            .hset::<_, _, _, ()>(
                &self.key,
                peer.id.to_string(),
                self.entry(peer, may_broadcast, token),
            )
            .await
            .map_err(unavailable)
    }

    /// Writes a new session's entry, homed here, with the `base` of its counts (key `counts`,
    /// see [`sequence`](super::sequence)), at once: an entry is never adopted without them.
    pub(super) async fn put_new(
        &self,
        peer: &Peer,
        may_broadcast: bool,
        token: &TokenHash,
        (counts, base): (String, i64),
    ) -> Result<(), RegistryError> {
        redis::pipe()
            .atomic()
            .hset(
                &self.key,
                peer.id.to_string(),
                self.entry(peer, may_broadcast, token),
            )
            .hset(counts, "base", base)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// The entry JSON of `peer` homed here.
    fn entry(&self, peer: &Peer, may_broadcast: bool, token: &TokenHash) -> String {
        let entry = Entry {
            name: peer.name.clone(),
            user: peer.user.clone(),
            may_broadcast,
            token: token.to_hex(),
            home: self.here,
        };
        serde_json::to_string(&entry).expect("entries serialise")
    }

    /// Removes an entry, and the session's counts (`counts` is their key); true when this
    /// call removed it (so the caller announces the leave, and only one caller does).
    pub(super) async fn delete(
        &self,
        id: SessionId,
        counts: String,
    ) -> Result<bool, RegistryError> {
        let (removed, _): (u64, u64) = redis::pipe()
            .atomic()
            .hdel(&self.key, id.to_string())
            .del(counts)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(removed == 1)
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
            token: hash,
            home: Uuid::nil(),
        };
        assert!(entry.proves(&token));
        let other = Token::parse(&format!("{}.{}", token.session(), "cd".repeat(32))).unwrap();
        assert!(!entry.proves(&other));
    }
}
