//! Liveness: each instance keeps its [`INSTANCE`](super::keys::INSTANCE) key alive for
//! [`LIVENESS`] at a time, saying whether it takes sessions ([`ALIVE`]) or is draining its own
//! to stop ([`LEAVING`]). Another instance reads these keys to pick where to drain, and to tell
//! a dead instance (key expired, own channel unread) from a busy one.
//!
//! Beside it, an instance of protocol 2 or later keeps a [`PROTOCOL`](super::keys::PROTOCOL)
//! key with the same lifetime; a live instance without one is of an older protocol, which
//! reads room traffic on the bus only. While one is alive, and for [`LIVENESS`] after, the
//! cluster is *mixed* ([`Liveness::mixed`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::{AsyncCommands, Script};
use tracing::info;
use uuid::Uuid;

use super::keys::{Keys, LIVENESS, unavailable};
use super::protocol::{PROTOCOL, ROOM_CHANNELS};
use super::transport::Conn;
use crate::registry::RegistryError;

/// Sets the protocol key KEYS[1] to ARGV[1] and the liveness key KEYS[2] to ARGV[2], both for
/// ARGV[3] milliseconds.
static REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
        redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
        ",
    )
});

/// The liveness key's value of an instance that takes sessions.
const ALIVE: &str = "alive";
/// The liveness key's value of an instance that is stopping: alive, but not a place for sessions.
const LEAVING: &str = "leaving";

/// What another instance can do for the sessions homed on it, as its keys say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Standing {
    /// It reads its own channel: it answers.
    Reading,
    /// It stopped reading, but it is stopping: its sessions are on their way elsewhere.
    Leaving,
    /// It stopped reading, and its key lives for this long yet: dead, or cut off from Redis.
    Silent(Duration),
    /// Neither key nor reader: dead, its sessions to be adopted.
    Dead,
}

/// This instance's liveness key, and what it reads of the others'.
pub(super) struct Liveness {
    conn: Conn,
    keys: Keys,
    here: Uuid,
    /// Stopping: its sessions are being drained to the others, and it takes no new ones.
    leaving: AtomicBool,
    /// The live instances of an older protocol at the last look, and until when the cluster
    /// counts as mixed (`None`: not looked yet, so it may be).
    older: Mutex<(HashSet<Uuid>, Option<Instant>)>,
}

impl Liveness {
    pub(super) fn new(conn: Conn, keys: Keys, here: Uuid) -> Self {
        Liveness {
            conn,
            keys,
            here,
            leaving: AtomicBool::new(false),
            older: Mutex::new((HashSet::new(), None)),
        }
    }

    /// Whether an instance of an older protocol is alive, or was within [`LIVENESS`]: then
    /// room traffic goes on the bus, where it reads it. The margin lets every instance of
    /// this protocol subscribe to the rooms such an instance handed it before traffic leaves
    /// the bus.
    pub(super) fn mixed(&self) -> bool {
        let until = self.older.lock().expect("liveness lock poisoned").1;
        until.is_none_or(|until| Instant::now() < until)
    }

    /// Whether `instance` was of an older protocol at the last look.
    pub(super) fn is_older(&self, instance: Uuid) -> bool {
        self.older
            .lock()
            .expect("liveness lock poisoned")
            .0
            .contains(&instance)
    }

    /// Looks which live instances are of an older protocol.
    pub(super) async fn observe(&self) -> Result<(), RegistryError> {
        let mut conn = self.conn.clone();
        let instances = self.alive_keys().await?;
        let mut older = HashSet::new();
        if !instances.is_empty() {
            let keys: Vec<String> = instances.iter().map(|i| self.keys.protocol(*i)).collect();
            let protocols: Vec<Option<u32>> = conn.mget(&keys).await.map_err(unavailable)?;
            older.extend(
                instances
                    .iter()
                    .zip(protocols)
                    .filter(|(_, protocol)| protocol.is_none_or(|p| p < ROOM_CHANNELS))
                    .map(|(instance, _)| *instance),
            );
        }
        let mut state = self.older.lock().expect("liveness lock poisoned");
        let now = Instant::now();
        match (state.0.is_empty(), older.is_empty()) {
            (true, false) => info!(
                instances = older.len(),
                "an instance of an older protocol is alive: room traffic rides the bus"
            ),
            (false, true) => info!("every instance alive reads room channels"),
            _ => {}
        }
        if !older.is_empty() {
            state.1 = Some(now + LIVENESS);
        } else if state.1.is_none() {
            state.1 = Some(now);
        }
        state.0 = older;
        Ok(())
    }

    /// Every instance with a liveness key.
    async fn alive_keys(&self) -> Result<Vec<Uuid>, RegistryError> {
        let keys = self
            .conn
            .keys_matching(self.keys.instances())
            .await
            .map_err(unavailable)?;
        Ok(keys
            .iter()
            .filter_map(|key| key.rsplit(':').next()?.parse().ok())
            .collect())
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

    /// Sets this instance's key for another [`LIVENESS`], saying whether it is leaving, and
    /// its protocol key with it (one script: no instance sees the one without the other; a
    /// script, not MULTI, because a Redis Cluster client follows a moved slot for a script and
    /// not for a transaction).
    pub(super) async fn refresh(&self) -> Result<(), RegistryError> {
        let state = if self.is_leaving() { LEAVING } else { ALIVE };
        let lifetime = LIVENESS.as_millis() as u64;
        REFRESH
            .key(self.keys.protocol(self.here))
            .key(self.keys.instance(self.here))
            .arg(PROTOCOL)
            .arg(state)
            .arg(lifetime)
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// The other instances that are alive and take sessions.
    pub(super) async fn hosts(&self) -> Result<Vec<Uuid>, RegistryError> {
        let instances = self.alive_keys().await?;
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = instances.iter().map(|i| self.keys.instance(*i)).collect();
        let values: Vec<Option<String>> =
            self.conn.clone().mget(&keys).await.map_err(unavailable)?;
        Ok(instances
            .into_iter()
            .zip(values)
            // Anything but "leaving" takes sessions: older instances wrote "1".
            .filter(|(_, value)| value.as_deref().is_some_and(|v| v != LEAVING))
            .map(|(instance, _)| instance)
            .filter(|instance| *instance != self.here)
            .collect())
    }

    /// Whether `instance` is alive: its liveness key is there, or it still reads its own
    /// channel. An instance too busy to refresh its key in time (its Redis commands timing out
    /// under load) keeps its subscription; a dead one's connection, and so its subscription,
    /// closed with its process.
    pub(super) async fn is_alive(&self, instance: Uuid) -> Result<bool, RegistryError> {
        Ok(self.standing(instance).await? != Standing::Dead)
    }

    /// What `instance` can do now for the sessions homed on it.
    pub(super) async fn standing(&self, instance: Uuid) -> Result<Standing, RegistryError> {
        let key = self.keys.instance(instance);
        // The key and its life in one round trip (one slot); the readers apart, as a channel's
        // readers are counted where the channel lives (sharded on a cluster).
        let (state, ttl): (Option<String>, i64) = redis::pipe()
            .get(&key)
            .pttl(&key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let readers = self
            .conn
            .readers(self.keys.channel_of(instance))
            .await
            .map_err(unavailable)?;
        Ok(match state {
            _ if readers > 0 => Standing::Reading,
            Some(state) if state == LEAVING => Standing::Leaving,
            Some(_) => Standing::Silent(Duration::from_millis(ttl.max(0) as u64)),
            None => Standing::Dead,
        })
    }
}
