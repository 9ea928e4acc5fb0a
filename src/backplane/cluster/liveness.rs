//! Liveness: each instance keeps its [`INSTANCE`](super::INSTANCE) key alive, and any instance
//! that finds directory entries homed on an instance whose key expired, and which no longer
//! reads its own channel, adopts them: a crashed instance's sessions continue on a survivor
//! within [`LIVENESS`] plus a sweep, with their ids and tokens, and leave (`user_left`) only
//! if nobody resumes them within their TTL (see [`sequence`](super::sequence)).
//!
//! The key's value says whether the instance takes sessions: [`ALIVE`], or [`LEAVING`] once it
//! is handing its own away to stop (see [`handoff`](super::handoff)).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::AsyncCommands;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use uuid::Uuid;

use super::{Cluster, INSTANCE, LIVENESS, unavailable};
use crate::registry::{RegistryError, SessionId};

/// The liveness key's value of an instance that takes sessions.
const ALIVE: &str = "alive";
/// The liveness key's value of an instance that is stopping: alive, but not a place for sessions.
const LEAVING: &str = "leaving";

impl Cluster {
    fn instance_key(&self, instance: Uuid) -> String {
        format!("{}:{INSTANCE}:{instance}", self.prefix)
    }

    /// The other instances that are alive and take sessions.
    pub(super) async fn hosts(&self) -> Result<Vec<Uuid>, RegistryError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}:{INSTANCE}:*", self.prefix);
        let keys: Vec<String> = {
            let mut keys = Vec::new();
            let mut scan = conn
                .scan_match::<_, String>(&pattern)
                .await
                .map_err(unavailable)?;
            while let Some(key) = scan.next_item().await {
                keys.push(key.map_err(unavailable)?);
            }
            keys
        };
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
            .filter(|instance| *instance != self.instance)
            .collect())
    }

    /// Refreshes this instance's liveness key and removes sessions of instances that died,
    /// until `shutdown` fires.
    pub(super) async fn keep_alive(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(LIVENESS / 3);
        // After an outage the other instances need time to refresh their own keys too: until
        // two liveness periods have passed, a missing key means "not back yet", not "dead".
        let mut reachable = true;
        let mut sweep_after = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let settled = reachable && Instant::now() >= sweep_after;
            let result = async {
                self.refresh_liveness().await?;
                if settled {
                    self.sweep().await?;
                }
                Ok::<_, RegistryError>(())
            }
            .await;
            match result {
                Ok(()) if !reachable => {
                    info!("Redis reachable again");
                    reachable = true;
                    sweep_after = Instant::now() + LIVENESS * 2;
                }
                Err(err) if reachable => {
                    error!(error = %err, "Redis unreachable");
                    reachable = false;
                }
                _ => {}
            }
        }
    }

    /// Re-writes the directory entries of the sessions homed here, liveness key first: Redis
    /// may have restarted empty, and another instance's sweep must not find these entries
    /// without it and adopt them as a dead instance's. Called after (re)subscribing, before
    /// any message is applied: counting starts again from where the bus stands, and a session
    /// whose counts Redis lost starts them at its newest event id
    /// (see [`sequence`](super::sequence)).
    pub(super) async fn reregister(&self) -> Result<(), RegistryError> {
        self.refresh_liveness().await?;
        self.catch_up().await?;
        let homed = self.registry.homed();
        let count = homed.len();
        for (peer, may_broadcast, hash) in homed {
            self.directory.put(&peer, may_broadcast, &hash).await?;
            let newest = self.registry.newest(peer.id).unwrap_or(0);
            self.restart_counts(peer.id, self.applied() - newest as i64)
                .await?;
        }
        if count > 0 {
            info!(sessions = count, "re-registered homed sessions");
        }
        Ok(())
    }

    /// Sets this instance's liveness key for another [`LIVENESS`], saying whether it is leaving.
    pub(super) async fn refresh_liveness(&self) -> Result<(), RegistryError> {
        let mut conn = self.conn.clone();
        let state = if self.leaving.load(Ordering::Relaxed) {
            LEAVING
        } else {
            ALIVE
        };
        redis::cmd("SET")
            .arg(self.instance_key(self.instance))
            .arg(state)
            .arg("PX")
            .arg(LIVENESS.as_millis() as u64)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    /// Whether `instance` is alive: its liveness key is there, or it still reads its own
    /// channel. An instance too busy to refresh its key in time (its Redis commands timing out
    /// under load) keeps its subscription; a dead one's connection, and so its subscription,
    /// closed with its process.
    async fn is_alive(&self, instance: Uuid) -> Result<bool, RegistryError> {
        let mut conn = self.conn.clone();
        let keyed: bool = conn
            .exists(self.instance_key(instance))
            .await
            .map_err(unavailable)?;
        if keyed {
            return Ok(true);
        }
        let (_, readers): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(self.channel_of(instance))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(readers > 0)
    }

    /// Adopts the directory entries homed on instances that died (see
    /// [`sequence`](super::sequence)); each session is adopted once, by whichever instance's
    /// script finds it first. A stopping instance adopts none.
    async fn sweep(&self) -> Result<(), RegistryError> {
        if self.leaving.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut homes: HashMap<Uuid, Vec<SessionId>> = HashMap::new();
        for (id, entry) in self.directory.entries().await? {
            if entry.home != self.instance {
                homes.entry(entry.home).or_default().push(id);
            }
        }
        for (home, ids) in homes {
            if !self.is_alive(home).await? {
                self.adopt_from(home, &ids).await?;
            }
        }
        Ok(())
    }
}
