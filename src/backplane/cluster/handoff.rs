//! Hand-off: an instance told to stop hands every session it homes to the others first
//! ([`Cluster::hand_off`]).
//!
//! A publishes `handoff` naming B; the same message is the point where B starts buffering
//! what concerns the sessions and where A exports them (closing their streams) and sends each
//! to B (`handed_over`), as in a pulled hand-over. A then waits until the directory names the
//! new homes, forwarding what still reaches it, before it stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};
use uuid::Uuid;

use super::bus::Bus;
use super::handover::{Handed, Moving, PUSHED};
use super::{ANSWER_TIMEOUT, Cluster};
use crate::registry::{Closed, RegistryError, SessionId, Snapshot, TokenHash};

/// Longest a stopping instance waits for the others to take its sessions; also how long a
/// session handed off to an instance may take to arrive there.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(10);
/// Sessions per `handoff` message.
const HANDOFF_CHUNK: usize = 100;

impl Cluster {
    /// Hands every session homed here to the other instances that take sessions, then waits
    /// (at most [`HANDOFF_TIMEOUT`]) until the directory names their new homes. From the first
    /// step on, this instance takes no new session or stream: it is stopping.
    ///
    /// Without another instance the sessions stay in the directory, and the next instance to
    /// start adopts them, as a crashed instance's (see [`sequence`](super::sequence)).
    pub(crate) async fn hand_off(self: &Arc<Self>) {
        self.leaving.store(true, Ordering::Relaxed);
        // At once, even with nothing to hand: no instance stopping now may hand sessions here.
        if let Err(err) = self.refresh_liveness().await {
            warn!(error = %err, "could not say this instance is leaving");
        }
        if self.registry.stats().sessions == 0 {
            return;
        }
        let started = Instant::now();
        let handed = tokio::time::timeout(HANDOFF_TIMEOUT, self.hand_off_all()).await;
        let left = self.registry.stats().sessions;
        match handed {
            Ok(Ok((_, 0))) => warn!(
                sessions = left,
                "no other instance takes sessions: the next one to start adopts them"
            ),
            Ok(Ok((sessions, instances))) => info!(
                sessions,
                instances,
                elapsed = ?started.elapsed(),
                "handed every session to the cluster"
            ),
            Ok(Err(err)) => error!(sessions = left, error = %err, "could not hand sessions off"),
            Err(_) => error!(
                sessions = left,
                "the cluster did not take every session in time: the rest leave once this \
                 instance has stopped"
            ),
        }
    }

    /// [`Cluster::hand_off`]'s work: how many sessions went to how many instances.
    async fn hand_off_all(self: &Arc<Self>) -> Result<(usize, usize), RegistryError> {
        let hosts = self.hosts().await?;
        if hosts.is_empty() {
            return Ok((0, 0));
        }
        let mut next = hosts.iter().cycle();
        let mut handed = 0;
        // Until none is left: a stream that began attaching before this instance was leaving
        // may still move its session here meanwhile.
        loop {
            let homed = self.registry.homed();
            if homed.is_empty() {
                return Ok((handed, hosts.len()));
            }
            handed += homed.len();
            // Round robin, a chunk at a time: each chunk's snapshots are on their way before
            // the next is exported, so a large hand-off paces itself instead of flooding Redis.
            for chunk in homed.chunks(HANDOFF_CHUNK) {
                let mut shares: HashMap<Uuid, Vec<(SessionId, TokenHash)>> = HashMap::new();
                for (peer, _, hash) in chunk {
                    let to = *next.next().expect("hosts is not empty");
                    shares.entry(to).or_default().push((peer.id, hash.clone()));
                }
                for (to, sessions) in shares {
                    let handoff = Bus::Handoff {
                        from: self.instance,
                        to,
                        sessions,
                    };
                    self.publish(&handoff).await?;
                }
                let ids: Vec<SessionId> = chunk.iter().map(|(peer, ..)| peer.id).collect();
                let deadline = Instant::now() + ANSWER_TIMEOUT;
                loop {
                    let left = self.directory.homed_on(self.instance, &ids).await?;
                    if left == 0 {
                        break;
                    }
                    // One its target could not take (its session limit, say) must not hold up
                    // the rest: once this instance is gone, a survivor adopts it (`sequence`).
                    if Instant::now() >= deadline {
                        warn!(
                            sessions = left,
                            "sessions handed off were not taken in time"
                        );
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }

    /// Reads a `handoff` to this instance: buffers what concerns each session until its
    /// snapshot arrives, for at most [`HANDOFF_TIMEOUT`].
    pub(super) fn expect(
        self: &Arc<Self>,
        moving: &mut Moving,
        sessions: Vec<(SessionId, TokenHash)>,
    ) {
        let handoff = moving.expect(sessions);
        self.forget_later(handoff);
    }

    /// Ends wait `wait` (a hand-off to here, or a late answer) after [`HANDOFF_TIMEOUT`],
    /// forgetting the sessions that have not arrived by then.
    pub(super) fn forget_later(self: &Arc<Self>, wait: u64) {
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(HANDOFF_TIMEOUT).await;
            let lost = cluster.handovers.lock().expire(wait);
            if lost > 0 {
                error!(sessions = lost, "sessions on their way here never arrived");
            }
        });
    }

    /// Reads our own `handoff`: exports each session (its stream closes as for a shutdown, so
    /// its client reconnects) and sends it to `to`.
    pub(super) fn hand_away(
        self: &Arc<Self>,
        moving: &mut Moving,
        to: Uuid,
        sessions: Vec<(SessionId, TokenHash)>,
    ) {
        for (id, _) in sessions {
            match self.registry.export(id, Closed::Shutdown) {
                Some(snapshot) => {
                    moving.moved(id, to);
                    self.publish_soon(Bus::HandedOver {
                        req: PUSHED,
                        origin: to,
                        session: id,
                        snapshot: Box::new(snapshot),
                    });
                }
                // Moved elsewhere or left since the hand-off listed it.
                None => self.publish_soon(Bus::NotComing {
                    origin: to,
                    session: id,
                }),
            }
        }
    }

    /// A session handed off here arrived: continues it, applies what it buffered on the way,
    /// and names this instance its home in the directory.
    pub(super) fn adopt(
        self: &Arc<Self>,
        snapshot: Snapshot,
        hash: TokenHash,
        buffer: Vec<Bus>,
        asked: Option<u64>,
    ) {
        let peer = snapshot.peer.clone();
        let may_broadcast = snapshot.may_broadcast;
        let imported = self.registry.import(snapshot, hash.clone());
        // Our own request for it gets no answer of its own: it is here now.
        if let Some(req) = asked {
            self.handovers.arrived(req, Handed::NotYet);
        }
        if let Err(err) = imported {
            error!(session = %peer.id, error = %err, "could not take a session handed off here");
            return;
        }
        for message in buffer {
            self.apply_to(&message, Some(peer.id));
        }
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            match cluster.directory.put(&peer, may_broadcast, &hash).await {
                Ok(()) => debug!(session = %peer.id, "handed off here"),
                Err(err) => {
                    warn!(session = %peer.id, error = %err, "could not write a session's new home")
                }
            }
        });
    }
}
