//! Recovery: what keeps the cluster whole when an instance dies or Redis restarts.
//!
//! Every instance refreshes its liveness key (see [`liveness`](super::liveness)) and sweeps
//! the directory: entries homed on an instance that is dead are adopted (see
//! [`sequence`](super::sequence)), so a crashed instance's sessions continue on a survivor
//! within [`LIVENESS`] plus a sweep, with their ids and tokens, and leave (`user_left`) only if
//! nobody resumes them within their TTL. After each (re)subscription an instance re-registers
//! the sessions it homes, since Redis may have restarted empty.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use super::instance::Cluster;
use super::keys::LIVENESS;
use super::wire::Orphan;
use crate::identity::SessionId;
use crate::registry::{Departure, EventId, RegistryError, Snapshot};

impl Cluster {
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
                self.liveness.refresh().await?;
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
        self.liveness.refresh().await?;
        self.sequence.catch_up().await?;
        let homed = self.registry.homed();
        let count = homed.len();
        for session in homed {
            self.directory.put(&session).await?;
            let id = session.peer.id;
            let newest = self.registry.newest(id).unwrap_or(0);
            self.sequence
                .restart_counts(id, self.sequence.applied() - newest as i64)
                .await?;
        }
        if count > 0 {
            info!(sessions = count, "re-registered homed sessions");
        }
        Ok(())
    }

    /// Adopts the directory entries homed on instances that died (see
    /// [`sequence`](super::sequence)); each session is adopted once, by whichever instance's
    /// script finds it first. A stopping instance adopts none.
    async fn sweep(&self) -> Result<(), RegistryError> {
        if self.liveness.is_leaving() {
            return Ok(());
        }
        let mut homes: HashMap<Uuid, Vec<SessionId>> = HashMap::new();
        for (id, entry) in self.directory.entries().await? {
            if entry.home != self.instance {
                homes.entry(entry.home).or_default().push(id);
            }
        }
        for (home, ids) in homes {
            if !self.liveness.is_alive(home).await? {
                self.sequence.adopt_from(home, self.instance, &ids).await?;
            }
        }
        Ok(())
    }

    /// Reads `adopted` for this instance, at its point in the bus's order: each session
    /// continues here, detached, its mailbox empty and its newest id its total.
    pub(super) fn adopted(self: &Arc<Self>, orphans: Vec<Orphan>) {
        for Orphan { id, total, entry } in orphans {
            let last_id: EventId = u64::try_from(total).unwrap_or_else(|_| {
                warn!(session = %id, "a session without counts: its lost events are not counted");
                0
            });
            let Some(hash) = entry.token_hash() else {
                error!(session = %id, "an adopted session's entry has no valid token hash");
                continue;
            };
            let peer = entry.peer(id);
            let rooms = entry.rooms.clone();
            let snapshot = Snapshot {
                peer: peer.clone(),
                may_broadcast: entry.may_broadcast,
                rooms: rooms.clone(),
                may_join: entry.claim(),
                last_id,
                // A stream resuming without `Last-Event-ID` starts after the crash.
                delivered: last_id,
                events: Vec::new(),
                sent: Default::default(),
                // The directory does not know its lifetime (see the module doc).
                lifetime: None,
            };
            match self.registry.import(snapshot, hash) {
                Ok(()) => {
                    self.registry.metrics().sessions_adopted.inc();
                }
                Err(err) => {
                    // Homed here in the directory but not held: it must leave, not linger.
                    error!(session = %id, error = %err, "could not adopt a session; it leaves");
                    self.expired(vec![Departure { peer, rooms }]);
                }
            }
        }
    }
}
