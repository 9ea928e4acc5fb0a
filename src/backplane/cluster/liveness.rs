//! Liveness: each instance keeps its [`INSTANCE`](super::keys::INSTANCE) key alive for
//! [`LIVENESS`] at a time, saying whether it takes sessions ([`ALIVE`]) or is draining its own
//! to stop ([`LEAVING`]). Another instance reads these keys to pick where to drain, and to tell
//! a dead instance (key expired, own channel unread) from a busy one.

use std::sync::atomic::{AtomicBool, Ordering};

use redis::AsyncCommands;
use uuid::Uuid;

use super::keys::{Keys, LIVENESS, unavailable};
use super::transport::Conn;
use crate::registry::RegistryError;

/// The liveness key's value of an instance that takes sessions.
const ALIVE: &str = "alive";
/// The liveness key's value of an instance that is stopping: alive, but not a place for sessions.
const LEAVING: &str = "leaving";

/// This instance's liveness key, and what it reads of the others'.
pub(super) struct Liveness {
    conn: Conn,
    keys: Keys,
    here: Uuid,
    /// Stopping: its sessions are being drained to the others, and it takes no new ones.
    leaving: AtomicBool,
}

impl Liveness {
    pub(super) fn new(conn: Conn, keys: Keys, here: Uuid) -> Self {
        Liveness {
            conn,
            keys,
            here,
            leaving: AtomicBool::new(false),
        }
    }

    /// Whether this instance is stopping.
    pub(super) fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Relaxed)
    }

    /// From now on this instance is stopping; says so at once, so that no instance stopping
    /// now drains sessions here.
    ///
    /// # Errors
    /// `Unavailable` when Redis cannot be reached.
    pub(super) async fn leave(&self) -> Result<(), RegistryError> {
        self.leaving.store(true, Ordering::Relaxed);
        self.refresh().await
    }

    /// Sets this instance's key for another [`LIVENESS`], saying whether it is leaving.
    pub(super) async fn refresh(&self) -> Result<(), RegistryError> {
        let state = if self.is_leaving() { LEAVING } else { ALIVE };
        redis::cmd("SET")
            .arg(self.keys.instance(self.here))
            .arg(state)
            .arg("PX")
            .arg(LIVENESS.as_millis() as u64)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// The other instances that are alive and take sessions.
    pub(super) async fn hosts(&self) -> Result<Vec<Uuid>, RegistryError> {
        let mut conn = self.conn.clone();
        let keys = conn
            .keys_matching(self.keys.instances())
            .await
            .map_err(unavailable)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = conn.mget(&keys).await.map_err(unavailable)?;
        Ok(keys
            .iter()
            .zip(values)
            // Anything but "leaving" takes sessions: older instances wrote "1".
            .filter(|(_, value)| value.as_deref().is_some_and(|v| v != LEAVING))
            .filter_map(|(key, _)| Uuid::parse_str(key.rsplit(':').next()?).ok())
            .filter(|instance| *instance != self.here)
            .collect())
    }

    /// Whether `instance` is alive: its liveness key is there, or it still reads its own
    /// channel. An instance too busy to refresh its key in time (its Redis commands timing out
    /// under load) keeps its subscription; a dead one's connection, and so its subscription,
    /// closed with its process.
    pub(super) async fn is_alive(&self, instance: Uuid) -> Result<bool, RegistryError> {
        let mut conn = self.conn.clone();
        let keyed: bool = conn
            .exists(self.keys.instance(instance))
            .await
            .map_err(unavailable)?;
        if keyed {
            return Ok(true);
        }
        let readers = self
            .conn
            .readers(self.keys.channel_of(instance))
            .await
            .map_err(unavailable)?;
        Ok(readers > 0)
    }
}
