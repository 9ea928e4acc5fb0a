//! Draining: an instance told to stop sends every session it homes to the others first
//! ([`Cluster::drain`]).
//!
//! A publishes `Drain` (on the wire `handoff`) naming B; the same message is the point where B
//! starts buffering what concerns the sessions (see [`transit`](super::transit)) and where A
//! exports them (closing their streams) and sends each to B (`Migrated`), as in a migration.
//! A then waits until the directory names the new homes, forwarding what still reaches it,
//! before it stops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};
use uuid::Uuid;

use super::instance::{ANSWER_TIMEOUT, Cluster};
use super::migrate::{LAGS_BEHIND, skip_missed};
use super::sequence::Points;
use super::transit::{Held, Pulled, Transit};
use super::wire::{DRAINED, Message};
use crate::identity::{RoomName, SessionId, TokenHash};
use crate::registry::{Closed, RegistryError, Snapshot};

/// Longest a stopping instance waits for the others to take its sessions; also how long a
/// session drained to an instance may take to arrive there.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Sessions per `Drain` message.
const DRAIN_CHUNK: usize = 100;

impl Cluster {
    /// Drains every session homed here to the other instances that take sessions, then waits
    /// (at most [`DRAIN_TIMEOUT`]) until the directory names their new homes. From the first
    /// step on, this instance takes no new session or stream: it is stopping.
    ///
    /// Without another instance the sessions stay in the directory, and the next instance to
    /// start adopts them, as a crashed instance's (see [`sequence`](super::sequence)).
    pub(crate) async fn drain(self: &Arc<Self>) {
        // At once, even with nothing to drain: no instance stopping now may drain sessions here.
        if let Err(err) = self.liveness.leave().await {
            warn!(error = %err, "could not say this instance is leaving");
        }
        if self.registry.stats().sessions == 0 {
            return;
        }
        let started = Instant::now();
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, self.drain_all()).await;
        let left = self.registry.stats().sessions;
        match drained {
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

    /// [`Cluster::drain`]'s work: how many sessions went to how many instances.
    async fn drain_all(self: &Arc<Self>) -> Result<(usize, usize), RegistryError> {
        let hosts = self.liveness.hosts().await?;
        if hosts.is_empty() {
            return Ok((0, 0));
        }
        let mut next = hosts.iter().cycle();
        let mut sent = 0;
        // Until none is left: a stream that began attaching before this instance was leaving
        // may still move its session here meanwhile.
        loop {
            let homed = self.registry.homed();
            if homed.is_empty() {
                return Ok((sent, hosts.len()));
            }
            sent += homed.len();
            // Round robin, a chunk at a time: each chunk's snapshots are on their way before
            // the next is exported, so a large drain paces itself instead of flooding Redis.
            for chunk in homed.chunks(DRAIN_CHUNK) {
                let mut shares: HashMap<Uuid, Vec<(SessionId, TokenHash)>> = HashMap::new();
                let mut rooms: HashMap<Uuid, Vec<RoomName>> = HashMap::new();
                for session in chunk {
                    let to = *next.next().expect("hosts is not empty");
                    let share = (session.peer.id, session.token_hash.clone());
                    shares.entry(to).or_default().push(share);
                    rooms
                        .entry(to)
                        .or_default()
                        .extend(session.rooms.iter().cloned());
                }
                for (to, sessions) in shares {
                    self.prepare_host(to, rooms.remove(&to).unwrap_or_default())
                        .await;
                    let drain = Message::Drain {
                        from: self.instance,
                        to,
                        sessions,
                    };
                    self.publish(&drain).await?;
                }
                let ids: Vec<SessionId> = chunk.iter().map(|session| session.peer.id).collect();
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

    /// Has `to` read the channels of `rooms` before sessions in them are drained there, so
    /// that they miss nothing of their rooms on the way. One that does not answer in time is
    /// drained to anyway (logged): its sessions may miss what their rooms said meanwhile. An
    /// instance of an older protocol reads room traffic on the bus: nothing to prepare.
    async fn prepare_host(&self, to: Uuid, mut rooms: Vec<RoomName>) {
        rooms.retain(|room| !room.is_lobby());
        rooms.sort();
        rooms.dedup();
        if rooms.is_empty() || self.liveness.is_older(to) {
            return;
        }
        let request = self.replies.open();
        let prepare = Message::Prepare {
            req: request.id(),
            origin: self.instance,
            session: None,
            rooms,
        };
        if let Err(err) = request.ask(self.send(to, &prepare), ANSWER_TIMEOUT).await {
            warn!(%to, error = ?err, "an instance did not prepare the rooms drained to it");
        }
    }

    /// Reads a `Drain` to this instance: buffers what concerns each session until its
    /// snapshot arrives, for at most [`DRAIN_TIMEOUT`].
    pub(super) fn receive_drain(
        self: &Arc<Self>,
        transit: &mut Transit,
        sessions: Vec<(SessionId, TokenHash)>,
    ) {
        let from = self
            .keys
            .is_sharded()
            .then(|| Arc::new(self.sequence.all_points()));
        let wait = transit.expect_drained(sessions, from);
        self.forget_later(wait);
    }

    /// Ends wait `wait` (a drain to here, or a late answer) after [`DRAIN_TIMEOUT`],
    /// forgetting the sessions that have not arrived by then.
    pub(super) fn forget_later(self: &Arc<Self>, wait: u64) {
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(DRAIN_TIMEOUT).await;
            let lost = cluster.migrations.lock().expire(wait);
            if lost > 0 {
                error!(sessions = lost, "sessions on their way here never arrived");
            }
        });
    }

    /// Reads our own `Drain`: exports each session (its stream closes as for a shutdown, so
    /// its client reconnects) and sends it to `to`.
    pub(super) fn send_away(
        self: &Arc<Self>,
        transit: &mut Transit,
        to: Uuid,
        sessions: Vec<(SessionId, TokenHash)>,
    ) {
        for (id, _) in sessions {
            match self.registry.export(id, Closed::Shutdown) {
                Some(snapshot) => {
                    transit.sent(id, to);
                    let applied = self.applied_on(&snapshot.rooms);
                    self.publish_soon(Message::Migrated {
                        req: DRAINED,
                        origin: to,
                        session: id,
                        snapshot: Box::new(snapshot),
                        applied,
                    });
                }
                // Moved elsewhere or left since the drain listed it.
                None => self.publish_soon(Message::NotComing {
                    origin: to,
                    session: id,
                }),
            }
        }
    }

    /// A session handed here (drained, or the late answer to a pull) arrived. It continues
    /// once this instance has applied its rooms as far as its old home had (`applied`):
    /// what it reads of them later is then after, not a second copy. Until then it stays on
    /// its way here, buffering, for at most [`ANSWER_TIMEOUT`].
    pub(super) fn arrive_when_read(
        self: &Arc<Self>,
        transit: &mut Transit,
        snapshot: Snapshot,
        applied: Option<Points>,
    ) {
        match applied {
            Some(points) if !self.sequence.reached(&points) => {
                let cluster = Arc::clone(self);
                tokio::spawn(async move {
                    if !cluster.sequence.reach(&points, ANSWER_TIMEOUT).await {
                        warn!(session = %snapshot.peer.id, "{LAGS_BEHIND}");
                    }
                    let mut transit = cluster.migrations.lock();
                    cluster.arrive_handed(&mut transit, snapshot, Some(&points));
                });
            }
            applied => self.arrive_handed(transit, snapshot, applied.as_ref()),
        }
    }

    /// [`Cluster::arrive_drained`], unless the session left on its way.
    fn arrive_handed(
        self: &Arc<Self>,
        transit: &mut Transit,
        snapshot: Snapshot,
        applied: Option<&Points>,
    ) {
        match transit.take_drained(snapshot.peer.id) {
            Some((hash, held, asked)) => {
                self.arrive_drained(snapshot, hash, (held, applied), asked)
            }
            None => debug!(session = %snapshot.peer.id, "a session handed here left on its way"),
        }
    }

    /// A session drained here arrived: continues it, applies what it kept on the way (after
    /// what its old home `applied` on its room lines, with rooms sharded), and names this
    /// instance its home in the directory. Also how a session adopted here with rooms sharded
    /// is created (see [`recovery`](super::recovery)).
    pub(super) fn arrive_drained(
        self: &Arc<Self>,
        mut snapshot: Snapshot,
        hash: TokenHash,
        (held, applied): (Held, Option<&Points>),
        asked: Option<u64>,
    ) {
        let (missed, buffer) = held.after(applied, &snapshot.rooms);
        skip_missed(&mut snapshot, missed);
        let peer = snapshot.peer.clone();
        let imported = self.registry.import(snapshot, hash);
        // Our own request for it gets no answer of its own: it is here now.
        if let Some(req) = asked {
            self.migrations.answer(req, Pulled::NotYet);
        }
        if let Err(err) = imported {
            error!(session = %peer.id, error = %err, "could not take a session handed off here");
            return;
        }
        for message in buffer {
            self.apply_to(&message, Some(peer.id));
        }
        let Some(homed) = self.registry.homed_one(peer.id) else {
            return; // left again at once
        };
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            match cluster.put_homed(&homed).await {
                Ok(()) => debug!(session = %peer.id, "handed off here"),
                Err(err) => {
                    warn!(session = %peer.id, error = %err, "could not write a session's new home")
                }
            }
        });
    }
}
