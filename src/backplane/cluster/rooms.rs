//! Rooms across the cluster: joining and leaving one, reading who is in which, and where a
//! room's traffic travels.
//!
//! The directory holds each session's rooms and each room's member count
//! ([`directory`](super::directory)); a session's home holds its membership in its registry,
//! which is what fan-outs read. A change is decided by whichever instance took the request: it
//! checks the limits against the directory, rewrites the entry, and publishes `enter` or
//! `exit`; the home puts the session in or out and appends `joined` or `left` to its mailbox,
//! and every instance with members of the room announces it to those it homes.
//!
//! A room's traffic (its joins, leaves, broadcasts and server messages) travels on the room's
//! own channel ([`ROOM`](super::keys::ROOM)), which only the instances homing a member read
//! ([`subscriptions`](super::subscriptions)): an instance without members there reads none of
//! it. `lobby`'s traffic stays on the bus: every session is in it unless it says otherwise, so
//! nearly every instance would read its channel anyway, and a cluster of default sessions
//! keeps the single order (and exact `lagged`, see [`sequence`](super::sequence)) it had.
//!
//! The one race a room channel adds is a session joining a room its home does not read yet:
//! what is published there between the `enter` and the home's subscription would be lost to
//! it. So before publishing `enter`, the instance deciding asks the home to `prepare`: the
//! home subscribes (Redis confirms before it answers) and keeps the session from migrating
//! until it reads that `enter` (a pull meanwhile is answered "not yet"), so the `enter` finds
//! the session on an instance reading the room. A pull names the rooms its puller reads, and
//! the home lets the session go only when they cover its rooms.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::instance::{ANSWER_TIMEOUT, Cluster, HOLD};
use super::keys::unavailable;
use super::request::Unanswered;
use super::wire::{Message, Outcome};
use crate::identity::{RoomName, RoomPatterns, SessionId};
use crate::registry::{Peer, RegistryError};

impl Cluster {
    /// Puts `peer`'s session into `room` within the room limits; the room's member count.
    ///
    /// # Errors
    /// `BadToken` when the session left; `SessionRoomLimit`, `RoomLimit`, `Unavailable`.
    pub(crate) async fn join_room(
        &self,
        peer: &Peer,
        room: RoomName,
    ) -> Result<usize, RegistryError> {
        let mut entry = self
            .directory
            .get(peer.id)
            .await?
            .ok_or(RegistryError::BadToken)?;
        if entry.rooms.contains(&room) {
            return self.directory.room_size(&room).await;
        }
        let per_session = self.registry.settings().max_rooms_per_session;
        if entry.rooms.len() >= per_session {
            return Err(RegistryError::SessionRoomLimit(per_session));
        }
        self.check_room_limit(std::slice::from_ref(&room)).await?;
        if !room.is_lobby() {
            self.prepare_home(peer.id, entry.home, &room).await?;
        }
        entry.rooms.push(room.clone());
        entry.rooms.sort();
        self.directory.rewrite(peer.id, &entry).await?;
        let members = self.directory.room_size(&room).await?;
        let mut enter = Message::Enter {
            peer: peer.clone(),
            room: room.clone(),
            members,
            roster: None,
        };
        // Known here at once: the roster below counts it, as the directory's count does.
        self.peers.apply(&enter);
        if self.events.listed(members)
            && let Message::Enter { roster, .. } = &mut enter
        {
            *roster = Some(self.room_members(&room).await?);
        }
        self.publish(&enter).await?;
        Ok(members)
    }

    /// Has session `id`'s home (`home`, as the directory said) read `room`'s channel and keep
    /// the session until its `enter` comes back; follows the session if it moved meanwhile.
    /// An instance of an older protocol reads room traffic on the bus (the cluster is mixed
    /// while it lives): nothing to prepare there.
    ///
    /// # Errors
    /// `Unavailable` when no home answered in time.
    async fn prepare_home(
        &self,
        id: SessionId,
        mut home: Uuid,
        room: &RoomName,
    ) -> Result<(), RegistryError> {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let prepared = if home == self.instance {
                self.prepare_here(Some(id), vec![room.clone()], HOLD)
                    .await
                    .map(|pinned| {
                        if pinned {
                            Outcome::Prepared
                        } else {
                            Outcome::NotHere
                        }
                    })
            } else if self.liveness.is_older(home) {
                return Ok(());
            } else {
                let request = self.replies.open();
                let prepare = Message::Prepare {
                    req: request.id(),
                    origin: self.instance,
                    session: Some(id),
                    rooms: vec![room.clone()],
                };
                let wait = deadline.saturating_duration_since(Instant::now());
                match request.ask(self.send(home, &prepare), wait).await {
                    Ok(outcome) => Ok(outcome),
                    // Gone: the directory names its next home.
                    Err(Unanswered::Unpublished(_)) => Ok(Outcome::NotHere),
                    Err(_) => Err(unavailable("the session's instance did not answer")),
                }
            };
            match prepared? {
                Outcome::Prepared => return Ok(()),
                _ if Instant::now() >= deadline => {
                    return Err(unavailable(
                        "the session is moving between instances; retry",
                    ));
                }
                _ => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    home = self
                        .directory
                        .get(id)
                        .await?
                        .ok_or(RegistryError::BadToken)?
                        .home;
                }
            }
        }
    }

    /// Reads `rooms`' channels for at least `hold` and, for a session `id` homed here, keeps it
    /// from migrating until its `enter` comes back; false when `id` is not homed here.
    pub(super) async fn prepare_here(
        &self,
        id: Option<SessionId>,
        rooms: Vec<RoomName>,
        hold: Duration,
    ) -> Result<bool, RegistryError> {
        if let Some(id) = id {
            let mut transit = self.migrations.lock();
            if !self.registry.homes(id) {
                return Ok(false);
            }
            transit.pin(id, rooms.clone(), hold);
        }
        self.subscriptions.ensure(&rooms, hold).await?;
        Ok(true)
    }

    /// Takes `peer`'s session out of `room`.
    ///
    /// # Errors
    /// `BadToken` when the session left; `NotAMember`, `Unavailable`.
    pub(crate) async fn leave_room(
        &self,
        peer: &Peer,
        room: RoomName,
    ) -> Result<(), RegistryError> {
        let mut entry = self
            .directory
            .get(peer.id)
            .await?
            .ok_or(RegistryError::BadToken)?;
        let Some(at) = entry.rooms.iter().position(|r| *r == room) else {
            return Err(RegistryError::NotAMember(room));
        };
        entry.rooms.remove(at);
        self.directory.rewrite(peer.id, &entry).await?;
        let members = self.directory.room_size(&room).await?;
        let exit = Message::Exit {
            peer: peer.clone(),
            room,
            members,
        };
        self.peers.apply(&exit);
        self.publish(&exit).await
    }

    /// `RoomLimit` when creating those of `rooms` that have no members would pass
    /// `--max-rooms` in the cluster.
    pub(super) async fn check_room_limit(&self, rooms: &[RoomName]) -> Result<(), RegistryError> {
        let limit = self.registry.settings().max_rooms;
        // A count of the rooms and one read of the counts asked for, not a read of every
        // room's count: that was a walk of the whole rooms hash for every join, which made
        // joining 100,000 sessions into 10,000 rooms take minutes.
        let created = self.directory.empty_rooms(rooms).await?;
        let existing = self.directory.room_count().await?;
        if existing + created.len() > limit {
            return Err(RegistryError::RoomLimit(limit));
        }
        Ok(())
    }

    /// Each of `rooms` with its member count in the cluster.
    pub(super) async fn sizes(&self, rooms: &[RoomName]) -> Result<Vec<usize>, RegistryError> {
        let mut sizes = Vec::with_capacity(rooms.len());
        for room in rooms {
            sizes.push(self.directory.room_size(room).await?);
        }
        Ok(sizes)
    }

    /// The rooms session `id`'s join token allows (`None` inside: no claim); `None` when the
    /// cluster does not know it.
    pub(crate) async fn room_claim(
        &self,
        id: SessionId,
    ) -> Result<Option<Option<Arc<RoomPatterns>>>, RegistryError> {
        if let Some(claim) = self.registry.room_claim(id) {
            return Ok(Some(claim));
        }
        let entry = self.directory.get(id).await?;
        Ok(entry.map(|entry| entry.claim().map(Arc::new)))
    }

    /// The rooms session `id` is in, sorted; `None` when the cluster does not know it.
    pub(crate) async fn rooms_of(
        &self,
        id: SessionId,
    ) -> Result<Option<Vec<RoomName>>, RegistryError> {
        if let Some(rooms) = self.registry.rooms_of(id) {
            return Ok(Some(rooms));
        }
        let entry = self.directory.get(id).await?;
        Ok(entry.map(|mut entry| {
            entry.rooms.sort();
            entry.rooms
        }))
    }

    /// Every member of `room` in the cluster: from the peer directory when its count agrees
    /// with the directory's, else (reloading it first, at most once a second) from the
    /// directory (see [`peers`](super::peers)).
    pub(crate) async fn room_members(&self, room: &RoomName) -> Result<Vec<Peer>, RegistryError> {
        let size = self.directory.room_size(room).await?;
        let known = self.peers.members_reloading(room, size, &self.directory);
        match known.await {
            Some(members) => Ok(members),
            None => self.directory.room_members(room).await,
        }
    }

    /// How many members `room` has in the cluster.
    pub(crate) async fn room_size(&self, room: &RoomName) -> Result<usize, RegistryError> {
        self.directory.room_size(room).await
    }

    /// How many rooms have members in the cluster (one `HLEN`).
    pub(crate) async fn room_count(&self) -> Result<usize, RegistryError> {
        self.directory.room_count().await
    }

    /// Every room of the cluster, with its member count.
    pub(crate) async fn rooms(&self) -> Result<Vec<(RoomName, usize)>, RegistryError> {
        self.directory.rooms().await
    }

    /// Sends `room_count` into the rooms above the presence limit whose count changed, here,
    /// with their counts in the cluster. Each instance tells the members it homes, counting
    /// each `room_count` as a direct event of its recipient first (see
    /// [`sequence`](super::sequence)): a member that left or moved away meanwhile does not get
    /// it (counted, not appended: its `lagged` after a crash may say one more), one that came
    /// meanwhile gets the next.
    pub(crate) async fn count_rooms(&self) {
        if !self.events.counts_due() {
            return;
        }
        let sizes: HashMap<RoomName, usize> = match self.directory.rooms().await {
            Ok(rooms) => rooms.into_iter().collect(),
            Err(err) => return tracing::warn!(error = %err, "could not read the room counts"),
        };
        let size = |room: &RoomName| sizes.get(room).copied().unwrap_or(0);
        let told: Vec<((RoomName, usize), HashSet<SessionId>)> = {
            let _bus = self.migrations.lock();
            let due = self.events.due_counts(&size).into_iter();
            due.map(|(room, members)| {
                let ids = self.registry.room_member_ids(&room);
                ((room, members), ids)
            })
            .collect()
        };
        let mut counts: HashMap<SessionId, i64> = HashMap::new();
        for id in told.iter().flat_map(|(_, ids)| ids) {
            *counts.entry(*id).or_default() += 1;
        }
        let counts: Vec<(SessionId, i64)> = counts.into_iter().collect();
        if let Err(err) = self.sequence.count_each(&counts).await {
            return tracing::warn!(error = %err, "could not count room counts; not sent");
        }
        // In the bus's order, like every other fan-out here.
        let _bus = self.migrations.lock();
        for ((room, members), ids) in &told {
            self.events.count_to((room, *members), ids);
        }
    }
}
