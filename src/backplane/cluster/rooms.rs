//! Rooms across the cluster: joining and leaving one, and reading who is in which.
//!
//! The directory holds each session's rooms and each room's member count
//! ([`directory`](super::directory)); a session's home holds its membership in its registry,
//! which is what fan-outs read. A change is decided by whichever instance took the request: it
//! checks the limits against the directory, rewrites the entry, and publishes `enter` or
//! `exit` on the bus; every instance applies it in bus order (the home puts the session in or
//! out and appends `joined` or `left` to its mailbox, every instance announces it to the
//! room's members it homes).
//!
//! Why one bus for every room rather than a channel per room: Redis orders what one connection
//! reads, so a channel per room (subscribed while an instance homes a member) would keep the
//! one order too, but an instance would have to subscribe before its first member arrives and
//! every message published meanwhile would race the subscription. On the one bus, room traffic
//! is tagged with its room, and an instance without members there reads it and appends it
//! nowhere (the room's list of recipients here is empty): one parse per message, no fan-out.
//! Every mailbox keeps the bus's single order, so `Last-Event-ID` and `lagged` stay exact across
//! rooms.

use std::collections::HashMap;
use std::sync::Arc;

use super::instance::Cluster;
use super::wire::Message;
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
        let existing: HashMap<RoomName, usize> =
            self.directory.rooms().await?.into_iter().collect();
        let mut created: Vec<&RoomName> = rooms
            .iter()
            .filter(|r| !existing.contains_key(*r))
            .collect();
        created.sort();
        created.dedup();
        if existing.len() + created.len() > limit {
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

    /// Every room of the cluster, with its member count.
    pub(crate) async fn rooms(&self) -> Result<Vec<(RoomName, usize)>, RegistryError> {
        self.directory.rooms().await
    }

    /// Sends `room_count` into the rooms above the presence limit whose count changed, here,
    /// with their counts in the cluster. Each instance tells the members it homes.
    pub(crate) async fn count_rooms(&self) {
        if !self.events.counts_due() {
            return;
        }
        match self.directory.rooms().await {
            Ok(rooms) => {
                let sizes: HashMap<RoomName, usize> = rooms.into_iter().collect();
                let size = |room: &RoomName| sizes.get(room).copied().unwrap_or(0);
                // In the bus's order, like every other fan-out here.
                let _bus = self.migrations.lock();
                self.events.counted(&size);
            }
            Err(err) => tracing::warn!(error = %err, "could not read the room counts"),
        }
    }
}
