//! Rooms, as the hub decides them: who may be in which room (`--allow-rooms`, narrowed by a
//! join token's `rooms` claim), joining and leaving through the broker, reading rooms and
//! their members wherever they live, the rosters a `ready` carries, and the checks of room
//! membership that broadcasts, listings and `--direct-messages shared-room` make. The same in
//! both modes: each is made of the broker's operations.

use std::collections::{BTreeMap, BTreeSet};

use super::{Hub, Page, PageQuery};
use crate::identity::{RoomName, RoomPatterns, SessionId};
use crate::registry::event::Roster;
use crate::registry::{Peer, RegistryError};

impl Hub {
    /// Whether a session whose join token allows `claim` may be in `room`.
    ///
    /// # Errors
    /// `RoomForbidden`.
    pub(super) fn admit(
        &self,
        room: &RoomName,
        claim: Option<&RoomPatterns>,
    ) -> Result<(), RegistryError> {
        let allowed = self.here.settings.allow_rooms.allows(room)
            && claim.is_none_or(|claim| claim.allows(room));
        if allowed {
            Ok(())
        } else {
            Err(RegistryError::RoomForbidden(room.clone()))
        }
    }

    /// `peer`'s session joins `room`, as far as the server and its join token allow: its own
    /// stream gets `joined`, the room's other members `new_user`. The room's member count;
    /// joining a room it is in already changes nothing.
    ///
    /// # Errors
    /// `RoomForbidden`, `SessionRoomLimit`, `RoomLimit`, `BadToken` when it left meanwhile,
    /// `Unavailable`.
    pub async fn join_room(&self, peer: &Peer, room: RoomName) -> Result<usize, RegistryError> {
        let claim = self.broker.room_claim(peer.id).await?;
        self.admit(&room, claim.as_deref())?;
        self.broker.join_room(peer, room).await
    }

    /// `peer`'s session joins `room` because the app's backend says so: neither
    /// `--allow-rooms` nor its join token are asked, the room limits are.
    ///
    /// # Errors
    /// As [`Hub::join_room`] but `RoomForbidden`.
    pub async fn put_in_room(&self, peer: &Peer, room: RoomName) -> Result<usize, RegistryError> {
        self.broker.join_room(peer, room).await
    }

    /// `peer`'s session leaves `room`: its own stream gets `left`, the room's other members
    /// `user_left`.
    ///
    /// # Errors
    /// `NotAMember`, `BadToken` when it left the hub meanwhile, `Unavailable`.
    pub async fn leave_room(&self, peer: &Peer, room: RoomName) -> Result<(), RegistryError> {
        self.broker.leave_room(peer, room).await
    }

    /// The rooms session `id` is in, sorted.
    ///
    /// # Errors
    /// `UnknownSession`, `Unavailable`.
    pub async fn rooms_of(&self, id: SessionId) -> Result<Vec<RoomName>, RegistryError> {
        self.broker
            .rooms_of(id)
            .await?
            .ok_or(RegistryError::UnknownSession(id))
    }

    /// Every member of `room`.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn room_members(&self, room: &RoomName) -> Result<Vec<Peer>, RegistryError> {
        self.broker.room_members(room).await
    }

    /// How many members `room` has.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn room_size(&self, room: &RoomName) -> Result<usize, RegistryError> {
        self.broker.room_size(room).await
    }

    /// Every room with members, and how many, in no particular order.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn rooms(&self) -> Result<Vec<(RoomName, usize)>, RegistryError> {
        self.broker.rooms().await
    }

    /// Sends `room_count` into the rooms above the presence limit whose count changed; called
    /// about once a second.
    pub(crate) async fn count_rooms(&self) {
        self.broker.count_rooms().await;
    }

    /// One page of the sessions `id` shares a room with, itself included: what a session may
    /// list of the hub.
    ///
    /// # Errors
    /// `UnknownSession`, `Unavailable`.
    pub async fn page_for(&self, id: SessionId, query: &PageQuery) -> Result<Page, RegistryError> {
        let mut seen = BTreeSet::from([id]);
        let mut peers = Vec::new();
        if let Some(me) = self.peer(id).await? {
            peers.push(me);
        }
        for room in self.rooms_of(id).await? {
            for peer in self.room_members(&room).await? {
                if seen.insert(peer.id) {
                    peers.push(peer);
                }
            }
        }
        Ok(query.select(peers))
    }

    /// Each room of session `id` with its roster (or count) as `ready` tells it.
    pub(super) async fn rosters(
        &self,
        id: SessionId,
    ) -> Result<BTreeMap<RoomName, Roster>, RegistryError> {
        let presence = &self.here.presence;
        let mut rosters = BTreeMap::new();
        for room in self.rooms_of(id).await? {
            let size = self.broker.room_size(&room).await?;
            let roster = if presence.counted(size) {
                Roster::Counted { members: size }
            } else {
                let members = self.room_members(&room).await?;
                presence.roster(id, size, || members)
            };
            rosters.insert(room, roster);
        }
        Ok(rosters)
    }

    /// `NotAMember` unless session `id` is in `room`; `BadToken` when it has left.
    pub(super) async fn check_member(
        &self,
        id: SessionId,
        room: &RoomName,
    ) -> Result<(), RegistryError> {
        let rooms = self.broker.rooms_of(id).await?;
        if rooms
            .ok_or(RegistryError::BadToken)?
            .binary_search(room)
            .is_err()
        {
            return Err(RegistryError::NotAMember(room.clone()));
        }
        Ok(())
    }

    /// `NoSharedRoom` unless sessions `from` and `to` share a room; `UnknownRecipient` when
    /// `to` does not exist.
    pub(super) async fn share_a_room(
        &self,
        from: SessionId,
        to: SessionId,
    ) -> Result<(), RegistryError> {
        let theirs = self
            .broker
            .rooms_of(to)
            .await?
            .ok_or(RegistryError::UnknownRecipient(to))?;
        let mine = self.rooms_of(from).await?;
        if theirs.iter().any(|room| mine.binary_search(room).is_ok()) {
            Ok(())
        } else {
            Err(RegistryError::NoSharedRoom)
        }
    }
}
