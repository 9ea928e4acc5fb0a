//! Sessions that ended at their lifetime, remembered in Redis for a while: the cluster's
//! counterpart of the registry's own memory (`registry::lifetime::Ended`), so that every
//! instance, not only the one that ended a session, refuses its token with `session_expired`
//! (saying why) rather than as unknown.
//!
//! The instance that ends a session writes [`ENDED`](super::keys::ENDED)
//! `<prefix>:ended:<session id>` (the token's hash and what bounded the session) before it
//! removes the directory entry, so no instance finds neither. Until the entry is gone, the
//! entry's own lifetime says the same (see [`Entry::ended`](super::entry::Entry::ended)). The
//! key is read only on the way to a refusal: a token that proves no session here or in the
//! directory costs one more `GET`.
//!
//! How long a key lives: the session TTL, and at least [`KEPT_AT_LEAST`]. A client away for
//! longer than the TTL would have found its session gone had it not ended (the reaper removes
//! a session without a stream after one TTL), so `session_expired` would tell it nothing more
//! than "unknown" does; the minute covers a client coming back through its reconnect backoff
//! (`switchboard.js` waits at most 10 s) when the TTL is short. A key is about 150 bytes in
//! Redis: a thousand expiries a second with the default 30 s TTL keep 60,000 of them, 9 MB.
//! The instance that ended the session may answer `session_expired` for longer (it remembers
//! the last 10,000 in memory).

use std::time::Duration;

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::keys::{Keys, unavailable};
use super::transport::Conn;
use crate::identity::{SessionId, Token, TokenHash};
use crate::registry::RegistryError;
use crate::registry::lifetime::Bound;

/// The shortest time an ended session is remembered, whatever the TTL.
pub(super) const KEPT_AT_LEAST: Duration = Duration::from_secs(60);

/// What the key holds.
#[derive(Serialize, Deserialize)]
struct Record {
    /// The [`TokenHash`] of the session's token, hex: only its own token learns why it ended.
    token: String,
    bound: Bound,
}

/// This instance's view of the ended sessions' keys.
pub(super) struct Ended {
    conn: Conn,
    keys: Keys,
    /// How long each key lives.
    keep: Duration,
}

impl Ended {
    /// Keys that live `session_ttl`, at least [`KEPT_AT_LEAST`].
    pub(super) fn new(conn: Conn, keys: Keys, session_ttl: Duration) -> Self {
        Ended {
            conn,
            keys,
            keep: session_ttl.max(KEPT_AT_LEAST),
        }
    }

    /// Remembers that session `id`, whose token hashes to `hash`, ended at its lifetime, set
    /// by `bound`.
    pub(super) async fn record(
        &self,
        id: SessionId,
        hash: &TokenHash,
        bound: Bound,
    ) -> Result<(), RegistryError> {
        let record = Record {
            token: hash.to_hex(),
            bound,
        };
        let json = serde_json::to_string(&record).expect("records serialise");
        let ms = u64::try_from(self.keep.as_millis()).unwrap_or(u64::MAX);
        self.conn
            .clone()
            .pset_ex::<_, _, ()>(self.keys.ended(id), json, ms)
            .await
            .map_err(unavailable)
    }

    /// Why `token`'s session ended, if it did lately and the token is its own.
    pub(super) async fn check(&self, token: &Token) -> Result<Option<Bound>, RegistryError> {
        let json: Option<String> = self
            .conn
            .clone()
            .get(self.keys.ended(token.session()))
            .await
            .map_err(unavailable)?;
        let Some(record) = json.and_then(|json| serde_json::from_str::<Record>(&json).ok()) else {
            return Ok(None);
        };
        Ok(TokenHash::from_hex(&record.token)
            .filter(|hash| hash.verifies(token))
            .map(|_| record.bound))
    }
}
