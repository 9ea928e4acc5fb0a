//! The one interface through which a broker reports what reaches this instance's sessions:
//! joins and leaves (of the hub and of rooms), broadcasts, server messages, room counts, and
//! direct messages. The hub implements it (see [`Here`](super::Here)); the brokers call it,
//! the local one at once, the Redis one when a message comes back on the bus, in the bus's
//! order.
//!
//! `only` narrows an event to one session: a session that migrated here replays what it
//! missed on the way, and nobody else hears it twice.

use std::collections::HashSet;

use serde_json::value::RawValue;

use crate::identity::{RoomName, SessionId};
use crate::registry::{Event, EventId, Peer, RegistryError, SendKey};

/// What a broker delivers into this instance.
pub(crate) trait BrokerEvents: Send + Sync + 'static {
    /// `peer` joined `rooms` (the hub, or one room later), each with its member count now:
    /// the other members of each here hear of it (when presence is on).
    fn joined(&self, peer: &Peer, rooms: &[(RoomName, usize)], only: Option<SessionId>);

    /// `peer` left `rooms` (one room, or the hub: deleted, expired, or its instance died),
    /// each with its member count now; it is already out of them here.
    fn left(&self, peer: &Peer, rooms: &[(RoomName, usize)], only: Option<SessionId>);

    /// Session `id`, homed here, is now in `room` of `members`: its own stream gets `joined`
    /// with the room's roster, read from `everyone` (the room's members) only when presence
    /// lists it.
    fn entered(&self, id: SessionId, room: (&RoomName, usize), everyone: &dyn Fn() -> Vec<Peer>);

    /// Session `id`, homed here, left `room`: its own stream gets `left`.
    fn exited(&self, id: SessionId, room: &RoomName);

    /// A broadcast from `from` to every member of `room` here but `from`; how many got it.
    fn broadcast(
        &self,
        from: &Peer,
        room: &RoomName,
        message: Box<RawValue>,
        only: Option<SessionId>,
    ) -> usize;

    /// A server message to every session here, or to every member of `room`; how many got it.
    fn announced(
        &self,
        message: Box<RawValue>,
        room: Option<&RoomName>,
        only: Option<SessionId>,
    ) -> usize;

    /// Whether a room of `members` gets rosters (not only counts) in `ready` and `joined`.
    fn listed(&self, members: usize) -> bool;

    /// Whether a room above the presence limit changed its count since the last `counted`.
    fn counts_due(&self) -> bool;

    /// The rooms above the presence limit whose count changed, each with its count read from
    /// `size`; they are told by [`BrokerEvents::count_to`] (a cluster counts each
    /// `room_count` in Redis before it appends it).
    fn due_counts(&self, size: &dyn Fn(&RoomName) -> usize) -> Vec<(RoomName, usize)>;

    /// `room_count` of `members` to the members of `room` here that are among `to`.
    fn count_to(&self, room: (&RoomName, usize), to: &HashSet<SessionId>);

    /// An addressed event for session `to`, homed here: its id, and whether it was appended
    /// (false: a retry with the same `key`, answered with the first one's id).
    ///
    /// # Errors
    /// `UnknownRecipient`, `MailboxFull`, `KeyReused`.
    fn direct(
        &self,
        to: SessionId,
        event: Event,
        key: Option<SendKey>,
    ) -> Result<(EventId, bool), RegistryError>;
}
