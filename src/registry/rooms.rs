//! Rooms here: which sessions of this registry are in which room.
//!
//! A room holds its members in the order they came and, like the registry's list of everyone,
//! a shared copy of them for fan-outs, rebuilt only after a join or a leave: a fan-out into a
//! room takes one reference under the registry lock and costs the room's size, never the
//! hub's, and a join costs the sizes of the rooms it joins. A room exists while it has a
//! member here. Each session keeps its own sorted list of rooms beside its mailbox, so that a
//! leave, a snapshot or "do these two share a room" reads one session, not every room.
//!
//! Membership changes under the registry lock, and never while a fan-out copies a list; the
//! order of fan-outs across rooms is still the one fan-out lock's (see the parent module), so
//! each mailbox keeps one order whatever rooms its events come from. Who hears of a join is
//! the hub's business, like everything about presence.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use indexmap::IndexMap;

use super::event::Peer;
use super::session::Session;
use super::{Registry, RegistryError, State};
use crate::identity::{RoomName, RoomPatterns, SessionId};

/// The members of one room here.
#[derive(Default)]
pub(super) struct Room {
    members: IndexMap<SessionId, Arc<Session>>,
    /// The members, for fan-outs; kept until the next join or leave (see the module doc).
    audience: Option<Arc<[Arc<Session>]>>,
}

/// Rooms by name.
pub(super) type Rooms = HashMap<RoomName, Room>;

/// A session that left this registry, and the rooms it was in (each hears `user_left`).
#[derive(Clone, Debug)]
pub struct Departure {
    pub peer: Peer,
    pub rooms: Vec<RoomName>,
}

impl Departure {
    /// Each of its rooms with its member count in `registry` now.
    pub(crate) fn sizes(&self, registry: &Registry) -> Vec<(RoomName, usize)> {
        self.rooms
            .iter()
            .map(|room| (room.clone(), registry.room_size(room)))
            .collect()
    }
}

/// What joining one room did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entered {
    pub room: RoomName,
    /// False when the session was in it already.
    pub new: bool,
    /// Members here now, the session included.
    pub members: usize,
}

impl State {
    /// The members of `room`, shared until its next join or leave; empty when nobody is in it.
    pub(super) fn room_audience(&mut self, room: &RoomName) -> Arc<[Arc<Session>]> {
        match self.rooms.get_mut(room) {
            Some(Room { members, audience }) => {
                Arc::clone(audience.get_or_insert_with(|| members.values().cloned().collect()))
            }
            None => Arc::from(Vec::new()),
        }
    }

    /// Puts `session` into `rooms` (those it is not in yet), with no limit checked: a session
    /// restored or arriving keeps the rooms it had.
    pub(super) fn enter(&mut self, session: &Arc<Session>, rooms: &[RoomName]) -> Vec<Entered> {
        let mut inner = session.lock();
        rooms
            .iter()
            .map(|room| {
                let new = match inner.rooms.binary_search(room) {
                    Ok(_) => false,
                    Err(at) => {
                        inner.rooms.insert(at, room.clone());
                        true
                    }
                };
                let entry = self.rooms.entry(room.clone()).or_default();
                if new {
                    entry.members.insert(session.peer.id, Arc::clone(session));
                    entry.audience = None;
                }
                Entered {
                    room: room.clone(),
                    new,
                    members: entry.members.len(),
                }
            })
            .collect()
    }

    /// Takes `session` out of `room`; the members left, or `None` when it was not in it.
    fn exit(&mut self, session: &Session, room: &RoomName) -> Option<usize> {
        let mut inner = session.lock();
        let at = inner.rooms.binary_search(room).ok()?;
        inner.rooms.remove(at);
        drop(inner);
        let entry = self.rooms.get_mut(room)?;
        entry.members.swap_remove(&session.peer.id);
        entry.audience = None;
        let left = entry.members.len();
        if left == 0 {
            self.rooms.remove(room);
        }
        Some(left)
    }

    /// Takes `session` out of every room it is in; returns them.
    pub(super) fn exit_all(&mut self, session: &Session) -> Vec<RoomName> {
        let rooms = session.lock().rooms.to_vec();
        for room in &rooms {
            self.exit(session, room);
        }
        rooms
    }
}

impl Registry {
    /// Puts session `id` into each of `rooms`, all or none: within `--max-rooms-per-session`
    /// for the session and `--max-rooms` for the registry. Nobody is told (presence is the
    /// hub's), and a room it is in already is no change.
    ///
    /// # Errors
    /// `UnknownSession`, `SessionRoomLimit`, `RoomLimit`.
    pub(crate) fn join_rooms(
        &self,
        id: SessionId,
        rooms: &[RoomName],
    ) -> Result<Vec<Entered>, RegistryError> {
        let settings = &self.shared.settings;
        let mut state = self.lock();
        let session = state.session(id)?;
        let mut new: Vec<&RoomName> = {
            let inner = session.lock();
            rooms
                .iter()
                .filter(|room| inner.rooms.binary_search(room).is_err())
                .collect()
        };
        new.sort();
        new.dedup();
        if session.lock().rooms.len() + new.len() > settings.max_rooms_per_session {
            return Err(RegistryError::SessionRoomLimit(
                settings.max_rooms_per_session,
            ));
        }
        let created = new.iter().filter(|r| !state.rooms.contains_key(*r)).count();
        if state.rooms.len() + created > settings.max_rooms {
            return Err(RegistryError::RoomLimit(settings.max_rooms));
        }
        Ok(state.enter(&session, rooms))
    }

    /// Puts session `id` into `rooms` with no limit checked (they were checked where the
    /// change was decided: another instance of a cluster); `None` when it does not live here.
    pub(crate) fn enter_rooms(&self, id: SessionId, rooms: &[RoomName]) -> Option<Vec<Entered>> {
        let mut state = self.lock();
        let session = state.sessions.get(&id).cloned()?;
        Some(state.enter(&session, rooms))
    }

    /// Takes session `id` out of `room`; the members left there.
    ///
    /// # Errors
    /// `UnknownSession`; `NotAMember` when it is not in `room`.
    pub(crate) fn leave_room(
        &self,
        id: SessionId,
        room: &RoomName,
    ) -> Result<usize, RegistryError> {
        let mut state = self.lock();
        let session = state.session(id)?;
        state
            .exit(&session, room)
            .ok_or_else(|| RegistryError::NotAMember(room.clone()))
    }

    /// The rooms session `id` is in, sorted; `None` when it does not live here.
    pub(crate) fn rooms_of(&self, id: SessionId) -> Option<Vec<RoomName>> {
        let session = self.lock().sessions.get(&id).cloned()?;
        let rooms = session.lock().rooms.to_vec();
        Some(rooms)
    }

    /// The rooms session `id` may be in by its join token (`None`: no claim, the server's
    /// `--allow-rooms` alone decides); `None` outside when it does not live here.
    pub(crate) fn room_claim(&self, id: SessionId) -> Option<Option<Arc<RoomPatterns>>> {
        let session = self.lock().sessions.get(&id).cloned()?;
        Some(session.may_join.clone())
    }

    /// Every member of `room` here, in the order they came.
    pub(crate) fn room_members(&self, room: &RoomName) -> Vec<Peer> {
        let members = self.lock().room_audience(room);
        members.iter().map(|s| s.peer.clone()).collect()
    }

    /// The ids of the members of `room` here.
    pub(crate) fn room_member_ids(&self, room: &RoomName) -> HashSet<SessionId> {
        let members = self.lock().room_audience(room);
        members.iter().map(|s| s.peer.id).collect()
    }

    /// How many members `room` has here.
    pub(crate) fn room_size(&self, room: &RoomName) -> usize {
        self.lock().rooms.get(room).map_or(0, |r| r.members.len())
    }

    /// How many rooms have members here.
    pub(crate) fn room_count(&self) -> usize {
        self.lock().rooms.len()
    }

    /// Every room here with its member count, in no particular order.
    pub(crate) fn rooms(&self) -> Vec<(RoomName, usize)> {
        let state = self.lock();
        state
            .rooms
            .iter()
            .map(|(name, room)| (name.clone(), room.members.len()))
            .collect()
    }
}
