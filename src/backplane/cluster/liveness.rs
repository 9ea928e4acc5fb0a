//! Liveness: each instance keeps its [`INSTANCE`](super::keys::INSTANCE) key alive for
//! [`LIVENESS`] at a time, saying whether it takes sessions ([`ALIVE`]) or is draining its own
//! to stop ([`LEAVING`]). Another instance reads these keys to pick where to drain, and to tell
//! a dead instance (key expired, own channel unread) from a busy one.
//!
//! Beside it, an instance of protocol 2 or later keeps a [`PROTOCOL`](super::keys::PROTOCOL)
//! key with the same lifetime; a live instance without one is of an older protocol, which
//! reads room traffic on the bus only. While one is alive, and for [`LIVENESS`] after, the
//! cluster is *mixed* ([`Liveness::mixed`]).
//!
//! Which instances are alive costs O(instances), not O(keys): each refresh lists the instance
//! in the set [`INSTANCES`](super::keys::INSTANCES), and a look reads its members' keys (one
//! MGET), removing the members whose liveness key is gone. Releases before this one do not list
//! themselves, so a look also scans the keyspace for liveness keys: at the first look, every
//! [`SCAN_EVERY`], and whenever the bus has more readers than the live instances known (each
//! instance reads it on one connection), which is how an unlisted instance that starts shows up
//! within a tick. The trade-off: should an unlisted instance start while a listed one, alive
//! but cut off, stops reading the bus (the counts match), it is seen within [`SCAN_EVERY`], not
//! a tick; and while the bus has a reader that is no instance, every look scans, as all did.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::{AsyncCommands, Script};
use tracing::{error, info};
use uuid::Uuid;

use super::keys::{Keys, LIVENESS, unavailable};
use super::protocol::{PROTOCOL, ROOM_CHANNELS, SHARDED_ROOMS};
use super::transport::Conn;
use crate::registry::RegistryError;

/// Sets the protocol key KEYS[1] to ARGV[1] and the liveness key KEYS[2] to ARGV[2], both for
/// ARGV[3] milliseconds, and lists the instance ARGV[4] in the set KEYS[3], which lives as long.
static REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
        redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
        redis.call('SADD', KEYS[3], ARGV[4])
        redis.call('PEXPIRE', KEYS[3], ARGV[3])
        ",
    )
});

/// How often a look scans the keyspace for instances that do not list themselves, whatever the
/// bus's readers say: a backstop, as a scan costs O(keys) (one per session) and the readers'
/// count usually tells sooner.
const SCAN_EVERY: Duration = Duration::from_secs(15);

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
    /// What the last look found.
    looked: Mutex<Looked>,
}

/// What [`Liveness::observe`] found.
#[derive(Default)]
struct Looked {
    /// The live instances of an older protocol.
    older: HashSet<Uuid>,
    /// The live instances that disagree with this one on sharding rooms.
    disagree: HashSet<Uuid>,
    /// Until when the cluster counts as mixed (`None`: not looked yet, so it may be).
    until: Option<Instant>,
    /// The live instances that do not list themselves, as the last scan found them.
    unlisted: HashSet<Uuid>,
    /// When the keyspace was last scanned.
    scanned: Option<Instant>,
}

/// An instance, its liveness key's value and its protocol key's.
type Seen = (Uuid, String, Option<u32>);

impl Liveness {
    pub(super) fn new(conn: Conn, keys: Keys, here: Uuid) -> Self {
        Liveness {
            conn,
            keys,
            here,
            leaving: AtomicBool::new(false),
            looked: Mutex::default(),
        }
    }

    /// Whether an instance of an older protocol is alive, or was within [`LIVENESS`]: then
    /// room traffic goes on the bus, where it reads it. The margin lets every instance of
    /// this protocol subscribe to the rooms such an instance handed it before traffic leaves
    /// the bus.
    pub(super) fn mixed(&self) -> bool {
        let until = self.looked().until;
        until.is_none_or(|until| Instant::now() < until)
    }

    /// What this instance writes as its protocol key.
    fn speaks(&self) -> u32 {
        match self.keys.is_sharded() {
            true => SHARDED_ROOMS,
            false => PROTOCOL,
        }
    }

    /// Why this instance cannot serve with the others, if an instance alive at the last look
    /// disagrees with it on sharding rooms.
    pub(super) fn disagreement(&self) -> Option<String> {
        let disagree = !self.looked().disagree.is_empty();
        disagree.then(|| disagreement(self.keys.is_sharded()))
    }

    /// Whether `instance` was of an older protocol at the last look.
    pub(super) fn is_older(&self, instance: Uuid) -> bool {
        self.looked().older.contains(&instance)
    }

    fn looked(&self) -> std::sync::MutexGuard<'_, Looked> {
        self.looked.lock().expect("liveness lock poisoned")
    }

    /// Looks which instances are alive, and which of them are of an older protocol.
    pub(super) async fn observe(&self) -> Result<HashSet<Uuid>, RegistryError> {
        let (unlisted, scanned) = {
            let looked = self.looked();
            (looked.unlisted.clone(), looked.scanned)
        };
        let listed = self.listed().await?;
        let mut candidates: HashSet<Uuid> = listed.iter().chain(&unlisted).copied().collect();
        let due = scanned.is_none_or(|at| at.elapsed() >= SCAN_EVERY);
        let mut scan = due;
        if due {
            candidates.extend(self.scan().await?);
        }
        let mut seen = self.read(&candidates).await?;
        if !scan {
            let readers = self
                .conn
                .readers(self.keys.bus())
                .await
                .map_err(unavailable)?;
            if readers > seen.len() as u64 {
                scan = true;
                candidates.extend(self.scan().await?);
                seen = self.read(&candidates).await?;
            }
        }
        let alive: HashSet<Uuid> = seen.iter().map(|(instance, _, _)| *instance).collect();
        let gone: Vec<String> = listed
            .iter()
            .filter(|instance| !alive.contains(instance))
            .map(ToString::to_string)
            .collect();
        if !gone.is_empty() {
            let () = self
                .conn
                .clone()
                .srem(self.keys.listed(), gone)
                .await
                .map_err(unavailable)?;
        }
        let older: HashSet<Uuid> = seen
            .iter()
            .filter(|(_, _, protocol)| protocol.is_none_or(|p| p < ROOM_CHANNELS))
            .map(|(instance, _, _)| *instance)
            .collect();
        let sharded = |protocol: Option<u32>| protocol == Some(SHARDED_ROOMS);
        let disagree: HashSet<Uuid> = seen
            .iter()
            .filter(|(instance, _, protocol)| {
                *instance != self.here && sharded(*protocol) != self.keys.is_sharded()
            })
            .map(|(instance, _, _)| *instance)
            .collect();
        let mut looked = self.looked();
        let now = Instant::now();
        if let Some(other) = disagree.difference(&looked.disagree).next() {
            error!(
                %other,
                "{}",
                disagreement(self.keys.is_sharded())
            );
        }
        looked.disagree = disagree;
        match (looked.older.is_empty(), older.is_empty()) {
            (true, false) => info!(
                instances = older.len(),
                "an instance of an older protocol is alive: room traffic rides the bus"
            ),
            (false, true) => info!("every instance alive reads room channels"),
            _ => {}
        }
        if !older.is_empty() {
            looked.until = Some(now + LIVENESS);
        } else if looked.until.is_none() {
            looked.until = Some(now);
        }
        looked.older = older;
        looked.unlisted = alive.difference(&listed).copied().collect();
        if scan {
            looked.scanned = Some(now);
        }
        Ok(alive)
    }

    /// The instances in the set of listed ones.
    async fn listed(&self) -> Result<HashSet<Uuid>, RegistryError> {
        let members: Vec<String> = self
            .conn
            .clone()
            .smembers(self.keys.listed())
            .await
            .map_err(unavailable)?;
        Ok(members.iter().filter_map(|m| m.parse().ok()).collect())
    }

    /// Every instance with a liveness key, found by scanning the keyspace: O(keys).
    async fn scan(&self) -> Result<Vec<Uuid>, RegistryError> {
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

    /// Those of `instances` whose liveness key is there, with its value and their protocol
    /// key's: one MGET (the keys share a slot).
    async fn read(&self, instances: &HashSet<Uuid>) -> Result<Vec<Seen>, RegistryError> {
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        let instances: Vec<Uuid> = instances.iter().copied().collect();
        let keys: Vec<String> = instances
            .iter()
            .map(|i| self.keys.instance(*i))
            .chain(instances.iter().map(|i| self.keys.protocol(*i)))
            .collect();
        let values: Vec<Option<String>> =
            self.conn.clone().mget(&keys).await.map_err(unavailable)?;
        let (states, protocols) = values.split_at(instances.len());
        Ok(instances
            .into_iter()
            .zip(states.iter().zip(protocols))
            .filter_map(|(instance, (state, protocol))| {
                let protocol = protocol.as_deref().and_then(|p| p.parse().ok());
                Some((instance, state.clone()?, protocol))
            })
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
    /// not for a transaction), and lists it among the instances.
    pub(super) async fn refresh(&self) -> Result<(), RegistryError> {
        let state = if self.is_leaving() { LEAVING } else { ALIVE };
        let lifetime = LIVENESS.as_millis() as u64;
        REFRESH
            .key(self.keys.protocol(self.here))
            .key(self.keys.instance(self.here))
            .key(self.keys.listed())
            .arg(self.speaks())
            .arg(state)
            .arg(lifetime)
            .arg(self.here.to_string())
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// The instances known without a scan: the listed ones, and those the last look found
    /// unlisted. Some may be gone since (their keys expired).
    pub(super) async fn known(&self) -> Result<HashSet<Uuid>, RegistryError> {
        let mut instances = self.listed().await?;
        instances.extend(self.looked().unlisted.iter().copied());
        Ok(instances)
    }

    /// The other instances that are alive and take sessions, of those [`known`](Self::known).
    pub(super) async fn hosts(&self) -> Result<Vec<Uuid>, RegistryError> {
        let instances = self.known().await?;
        Ok(self
            .read(&instances)
            .await?
            .into_iter()
            // Anything but "leaving" takes sessions: older instances wrote "1".
            .filter(|(instance, state, _)| state != LEAVING && *instance != self.here)
            .map(|(instance, _, _)| instance)
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

/// What an instance says when another alive disagrees with it on sharding rooms.
fn disagreement(sharded: bool) -> String {
    let (here, there) = match sharded {
        true => ("true", "false (or a release before it)"),
        false => ("false", "true"),
    };
    format!(
        "another instance of this deployment runs with --redis-shard-rooms {there}, this one \
         with {here}: their room keys are in different slots, so every instance must run with \
         the same; stop them all to switch"
    )
}
