//! Recovery: what keeps the cluster whole when an instance dies or Redis restarts.
//!
//! Every instance refreshes its liveness key (see [`liveness`](super::liveness)) and sweeps
//! the directory: entries homed on an instance that is dead are adopted (see
//! [`sequence`](super::sequence)), so a crashed instance's sessions continue on a survivor
//! within [`LIVENESS`] plus a sweep, with their ids, tokens and lifetimes (the entry carries
//! when each ends, see [`lifetime`](super::lifetime)), and leave (`user_left`) only if nobody
//! resumes them within their TTL, or at their end. A sweep reads the whole directory
//! (O(sessions)), so it runs only when there may be something to adopt: when an instance alive
//! at the previous look is not any more, at the first settled tick after start or after Redis
//! was unreachable, while a home without a liveness key still reads its channel, and every
//! [`SWEEP_EVERY`] whatever (a home that died unseen: one that started and died between two
//! looks). Until then an attach is told at once to retry
//! ([`Cluster::reachable`]), instead of asking the dead instance and waiting in vain. After
//! each (re)subscription an instance re-registers the sessions it homes, since Redis may have
//! restarted empty (see [`restart`](super::restart)).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use super::instance::{ANSWER_TIMEOUT, Cluster, HOLD};
use super::keys::LIVENESS;
use super::liveness::Standing;
use super::migrate::LAGS_BEHIND;
use super::sequence::{Missed, Points};
use super::transit::Transit;
use super::wire::Orphan;
use crate::identity::{RoomName, SessionId, TokenHash};
use crate::registry::{Closed, Departure, EventId, RegistryError, Snapshot};

/// How often a sweep runs when nothing called for one: a backstop for a death no look saw.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

impl Cluster {
    /// Refreshes this instance's liveness key and removes sessions of instances that died,
    /// until `shutdown` fires.
    pub(super) async fn keep_alive(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(LIVENESS / 3);
        // After an outage the other instances need time to refresh their own keys too: until
        // two liveness periods have passed, a missing key means "not back yet", not "dead".
        let mut reachable = true;
        let mut sweep_after = Instant::now();
        // Whether a sweep is called for (at the first settled tick: yes), the instances alive at
        // the previous look, and when the last sweep ran.
        let mut sweep_due = true;
        let mut seen: HashSet<Uuid> = HashSet::new();
        let mut swept = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let settled = reachable && Instant::now() >= sweep_after;
            let result = async {
                self.liveness.refresh().await?;
                let alive = self.liveness.observe().await?;
                if seen.iter().any(|instance| !alive.contains(instance)) {
                    sweep_due = true;
                }
                if settled && (sweep_due || swept.elapsed() >= SWEEP_EVERY) {
                    sweep_due = self.sweep(&alive).await?;
                    swept = Instant::now();
                }
                seen = alive;
                Ok::<_, RegistryError>(())
            }
            .await;
            self.tidy_rooms().await;
            match result {
                Ok(()) if !reachable => {
                    info!("Redis reachable again");
                    reachable = true;
                    sweep_after = Instant::now() + LIVENESS * 2;
                }
                Err(err) if reachable => {
                    error!(error = %err, "Redis unreachable");
                    reachable = false;
                    sweep_due = true;
                }
                _ => {}
            }
        }
    }

    /// Reads the channels of the rooms with a session here (and held ones), no others.
    pub(super) async fn tidy_rooms(&self) {
        let rooms = self.registry.rooms().into_iter().map(|(room, _)| room);
        self.subscriptions.tidy(rooms.collect()).await;
    }

    /// Re-writes the directory entries of the sessions homed here, liveness key first: Redis
    /// may have restarted empty, and another instance's sweep must not find these entries
    /// without it and adopt them as a dead instance's. Called after (re)subscribing, before
    /// any message is applied: counting starts again from where each line stands, and a
    /// session whose counts Redis lost starts them at its newest event id (see
    /// [`sequence`](super::sequence)). Returns what each line went by meanwhile.
    ///
    /// A session a survivor adopted is not written: this instance was cut off for longer than
    /// its liveness key lived, and the session lives elsewhere now (or left since). The
    /// adoption script rehomes only while the liveness key is missing, and records what it
    /// adopted; this key is written first, so each session is either adopted and given up
    /// here, or kept here. The copy here is dropped, without a leave, and its stream ends:
    /// the client reconnects, with `Last-Event-ID`, to the session where it now lives, whose
    /// count covers every event accepted here before the cut (`lagged`, as after a crash).
    /// Nothing is accepted here meanwhile: a local delivery waits for this
    /// ([`Cluster::deliver`]).
    pub(super) async fn reregister(&self) -> Result<Missed, RegistryError> {
        self.liveness.refresh().await?;
        let missed = self.subscriptions.catch_up().await?;
        let homed = self.registry.homed();
        let mut count = 0;
        for session in homed {
            let id = session.peer.id;
            let Some(kept) = self.directory.reclaim(&session).await? else {
                if self.registry.export(id, Closed::TakenOver).is_some() {
                    warn!(session = %id, "adopted elsewhere while cut off from Redis: dropped here");
                }
                continue;
            };
            // A lifetime recorded while the session was homed on an older instance.
            if let Some(kept) = kept {
                self.registry.take_deadline(id, &kept);
            }
            count += 1;
            // Its mailbox skips what it missed before the stream reads on.
            let newest = self.registry.newest(id).unwrap_or(0) + missed.of(&session.rooms);
            self.sequence
                .restart_counts(id, &session.rooms, newest)
                .await?;
        }
        self.directory.reclaimed().await?;
        if count > 0 {
            info!(sessions = count, "re-registered homed sessions");
        }
        self.restart.registered().await?;
        Ok(missed)
    }

    /// Before asking `home` for session `id`: a home that stopped reading its channel cannot
    /// answer, and a pull would wait
    /// [`ANSWER_TIMEOUT`](super::instance::ANSWER_TIMEOUT) for nothing. `Recovering` at once,
    /// then, saying when a survivor adopts the session (its liveness key's life, then a sweep).
    /// A stopping home is asked: its sessions are on their way elsewhere, and the instance they
    /// go to answers (see [`migrate`](super::migrate)).
    pub(super) async fn reachable(&self, id: SessionId, home: Uuid) -> Result<(), RegistryError> {
        if home == self.instance || self.migrations.lock().is_drained_here(id) {
            return Ok(());
        }
        let expires = match self.liveness.standing(home).await? {
            Standing::Reading | Standing::Leaving => return Ok(()),
            Standing::Silent(expires) => expires,
            Standing::Dead => Duration::ZERO,
        };
        let retry_after = expires + LIVENESS / 3;
        Err(RegistryError::Recovering {
            message: format!(
                "the instance holding this session stopped answering (it died, or lost Redis); \
                 a survivor adopts its sessions once its liveness key runs out: retry in {} s",
                retry_after.as_secs_f64().ceil()
            ),
            retry_after,
        })
    }

    /// Adopts the directory entries homed on instances that died (see
    /// [`sequence`](super::sequence)); each session is adopted once, by whichever instance's
    /// script finds it first: the script rewrites an entry only while it still names the dead
    /// instance, in one step, so two sweeps never both adopt a session. A stopping instance
    /// adopts none.
    ///
    /// Releases before adoption (before issue 11) removed a dead instance's entries instead,
    /// entry by entry and whatever home they named by then: mixed with this one in a rolling
    /// upgrade, such a sweep may remove a session just adopted here, which then leaves
    /// (`user_left`), as it would have with that release alone. No claim can stop a binary
    /// that reads none; every release since adopts through the one script.
    ///
    /// Whether to sweep again at the next tick: a home not among the `alive` ones still reads
    /// its channel (cut off, or too busy to refresh its key), and may die any time.
    async fn sweep(&self, alive: &HashSet<Uuid>) -> Result<bool, RegistryError> {
        if self.liveness.is_leaving() {
            return Ok(false);
        }
        let mut again = false;
        let mut homes: HashMap<Uuid, (Vec<SessionId>, Vec<RoomName>)> = HashMap::new();
        for (id, entry) in self.directory.scan_entries().await? {
            if entry.home != self.instance {
                let (ids, rooms) = homes.entry(entry.home).or_default();
                ids.push(id);
                rooms.extend(entry.rooms);
            }
        }
        for (home, (ids, rooms)) in homes {
            if self.liveness.is_alive(home).await? {
                again |= !alive.contains(&home);
            } else {
                // Read before `adopted` is published: the sessions miss nothing of their rooms.
                self.subscriptions.ensure(&rooms, HOLD).await?;
                self.sequence.adopt_from(home, self.instance, &ids).await?;
            }
        }
        Ok(again)
    }

    /// Reads `adopted` for this instance, at its point in the bus's order: each session
    /// continues here, detached, its mailbox empty and its newest id its total.
    ///
    /// With rooms sharded, the total from the bus is that of the session's counts alone:
    /// what each of its rooms gave it is in the room's own slot, read after this point by
    /// [`Cluster::adopt_rooms`]; meanwhile each session is on its way here, keeping what
    /// concerns it.
    pub(super) fn adopted(self: &Arc<Self>, transit: &mut Transit, orphans: Vec<Orphan>) {
        if self.keys.is_sharded() {
            let arriving = orphans
                .iter()
                .filter_map(|orphan| Some((orphan.id, orphan.entry.token_hash()?)))
                .collect();
            let wait = transit.expect_adopted(arriving);
            self.forget_later(wait);
            tokio::spawn(Arc::clone(self).adopt_rooms(orphans));
            return;
        }
        for orphan in orphans {
            let Some((snapshot, hash)) = self.snapshot_of(&orphan, 0) else {
                continue;
            };
            let peer = snapshot.peer.clone();
            let rooms = snapshot.rooms.clone();
            match self.registry.import(snapshot, hash) {
                Ok(()) => {
                    self.registry.metrics().sessions_adopted.inc();
                }
                Err(err) => {
                    // Homed here in the directory but not held: it must leave, not linger.
                    error!(session = %orphan.id, error = %err, "could not adopt a session; it leaves");
                    self.expired(vec![Departure { peer, rooms }]);
                }
            }
        }
    }

    /// With rooms sharded, completes the adoption of `orphans`: reads what each of their rooms
    /// gave them and where each room's counter stands (one script in each room's slot), waits
    /// until this instance has applied each room that far (what it reads later is after), and
    /// creates each session with its whole total, applying what it kept meanwhile after those
    /// points.
    async fn adopt_rooms(self: Arc<Self>, orphans: Vec<Orphan>) {
        let mut rooms: HashMap<RoomName, Vec<SessionId>> = HashMap::new();
        for orphan in &orphans {
            let all = orphan.entry.rooms.iter().chain(&orphan.left);
            for room in all.filter(|room| !room.is_lobby()) {
                rooms.entry(room.clone()).or_default().push(orphan.id);
            }
        }
        // A slot each: read at once, a few dozen at a time, each tried three times.
        let reads = rooms.into_iter().map(|(room, ids)| {
            let sequence = Arc::clone(&self.sequence);
            async move {
                let mut parts = sequence.room_parts(&room, &ids).await;
                for _ in 0..2 {
                    if parts.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    parts = sequence.room_parts(&room, &ids).await;
                }
                (room, ids, parts)
            }
        });
        let read: Vec<_> = futures_util::stream::iter(reads)
            .buffer_unordered(32)
            .collect()
            .await;
        let mut given: HashMap<SessionId, u64> = HashMap::new();
        let mut at = Points::new();
        for (room, ids, parts) in read {
            match parts {
                Ok((counter, parts)) => {
                    at.insert(room, counter);
                    for (id, part) in ids.iter().zip(parts) {
                        *given.entry(*id).or_default() += part;
                    }
                }
                Err(err) => error!(
                    %room, error = %err,
                    "could not read what a room gave adopted sessions: their lagged may be short"
                ),
            }
        }
        // Only the rooms they are in are read here; those they left only gave a count.
        let read_here: Points = at
            .iter()
            .filter(|(room, _)| orphans.iter().any(|o| o.entry.rooms.contains(room)))
            .map(|(room, n)| (room.clone(), *n))
            .collect();
        if !self.sequence.reach(&read_here, ANSWER_TIMEOUT).await {
            warn!(sessions = orphans.len(), "{LAGS_BEHIND}");
        }
        let mut transit = self.migrations.lock();
        for orphan in orphans {
            // Gone meanwhile (it left, or expired: nothing to create).
            let Some((hash, held, _)) = transit.take_drained(orphan.id) else {
                continue;
            };
            let extra = given.get(&orphan.id).copied().unwrap_or(0);
            let Some((snapshot, _)) = self.snapshot_of(&orphan, extra) else {
                continue;
            };
            let applied: Points = at
                .iter()
                .filter(|(room, _)| snapshot.rooms.contains(room))
                .map(|(room, n)| (room.clone(), *n))
                .collect();
            self.registry.metrics().sessions_adopted.inc();
            self.arrive_drained(snapshot, hash, (held, Some(&applied)), None);
        }
    }

    /// An adopted session as this instance creates it: its mailbox empty, its newest id its
    /// total (the orphan's, plus `extra`), and its token's hash.
    fn snapshot_of(&self, orphan: &Orphan, extra: u64) -> Option<(Snapshot, TokenHash)> {
        let Orphan {
            id, total, entry, ..
        } = orphan;
        let last_id: EventId = u64::try_from(*total).unwrap_or_else(|_| {
            warn!(session = %id, "a session without counts: its lost events are not counted");
            0
        }) + extra;
        let Some(hash) = entry.token_hash() else {
            error!(session = %id, "an adopted session's entry has no valid token hash");
            return None;
        };
        let snapshot = Snapshot {
            peer: entry.peer(*id),
            may_broadcast: entry.may_broadcast,
            rooms: entry.rooms.clone(),
            may_join: entry.claim(),
            last_id,
            // A stream resuming without `Last-Event-ID` starts after the crash.
            delivered: last_id,
            events: Vec::new(),
            sent: Default::default(),
            // Its end, as its home last wrote it: a session ended by now ends at once.
            lifetime: entry.lifetime.clone(),
        };
        Some((snapshot, hash))
    }
}
