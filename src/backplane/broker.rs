//! The broker seam: how the hub reaches sessions beyond what this process decides alone. Two
//! brokers, picked at startup: [`Local`] (this process alone) and the Redis one
//! ([`Cluster`]). Each offers the same operations; what reaches the sessions homed here comes
//! back through [`BrokerEvents`](super::events::BrokerEvents), which the hub implements.
//!
//! An enum rather than a trait object: two implementations, known at compile time, and no
//! allocation or indirect call per operation. The handler is called through one `dyn` per
//! event (a broadcast, a join), never per session it reaches.

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::time::Instant;

use super::cluster::Cluster;
use super::local::Local;
use crate::identity::{RoomName, RoomPatterns, SessionId, Token};
use crate::limits::AddressGuard;
use crate::registry::lifetime::Bound;
use crate::registry::{
    Departure, Event, EventId, Joining, Peer, RegistryError, SendKey, Subscription,
};

/// The hub's way to the rest of the world.
#[derive(Clone)]
pub(crate) enum Broker {
    Local(Local),
    Redis(Arc<Cluster>),
}

impl Broker {
    /// Registers a session in `rooms`; its join reaches their other members.
    pub(crate) async fn register(
        &self,
        joining: Joining,
        rooms: Vec<RoomName>,
        place: AddressGuard,
    ) -> Result<(Peer, Token), RegistryError> {
        match self {
            Broker::Local(local) => local.register(joining, rooms, place).await,
            // Announced when the join comes back on the bus, on every instance.
            Broker::Redis(cluster) => cluster.register(joining, rooms, place).await,
        }
    }

    /// Puts `peer`'s session into `room`; the room's member count.
    pub(crate) async fn join_room(
        &self,
        peer: &Peer,
        room: RoomName,
    ) -> Result<usize, RegistryError> {
        match self {
            Broker::Local(local) => local.join_room(peer, room).await,
            Broker::Redis(cluster) => cluster.join_room(peer, room).await,
        }
    }

    /// Takes `peer`'s session out of `room`.
    pub(crate) async fn leave_room(
        &self,
        peer: &Peer,
        room: RoomName,
    ) -> Result<(), RegistryError> {
        match self {
            Broker::Local(local) => local.leave_room(peer, room).await,
            Broker::Redis(cluster) => cluster.leave_room(peer, room).await,
        }
    }

    /// The rooms session `id`'s join token allows, if it had a claim; `BadToken` when the
    /// session is gone.
    pub(crate) async fn room_claim(
        &self,
        id: SessionId,
    ) -> Result<Option<Arc<RoomPatterns>>, RegistryError> {
        let claim = match self {
            Broker::Local(local) => local.registry().room_claim(id),
            Broker::Redis(cluster) => cluster.room_claim(id).await?,
        };
        claim.ok_or(RegistryError::BadToken)
    }

    /// The rooms session `id` is in, sorted; `None` when there is no such session.
    pub(crate) async fn rooms_of(
        &self,
        id: SessionId,
    ) -> Result<Option<Vec<RoomName>>, RegistryError> {
        match self {
            Broker::Local(local) => Ok(local.registry().rooms_of(id)),
            Broker::Redis(cluster) => cluster.rooms_of(id).await,
        }
    }

    /// Every member of `room`.
    pub(crate) async fn room_members(&self, room: &RoomName) -> Result<Vec<Peer>, RegistryError> {
        match self {
            Broker::Local(local) => Ok(local.registry().room_members(room)),
            Broker::Redis(cluster) => cluster.room_members(room).await,
        }
    }

    /// How many members `room` has.
    pub(crate) async fn room_size(&self, room: &RoomName) -> Result<usize, RegistryError> {
        match self {
            Broker::Local(local) => Ok(local.registry().room_size(room)),
            Broker::Redis(cluster) => cluster.room_size(room).await,
        }
    }

    /// This instance's id in its cluster; `None` alone.
    pub(crate) fn instance(&self) -> Option<uuid::Uuid> {
        match self {
            Broker::Local(_) => None,
            Broker::Redis(cluster) => Some(cluster.instance),
        }
    }

    /// How many rooms have members.
    pub(crate) async fn room_count(&self) -> Result<usize, RegistryError> {
        match self {
            Broker::Local(local) => Ok(local.registry().room_count()),
            Broker::Redis(cluster) => cluster.room_count().await,
        }
    }

    /// Every room with members, and how many.
    pub(crate) async fn rooms(&self) -> Result<Vec<(RoomName, usize)>, RegistryError> {
        match self {
            Broker::Local(local) => Ok(local.registry().rooms()),
            Broker::Redis(cluster) => cluster.rooms().await,
        }
    }

    /// Keeps this instance's newest figures (JSON) where the other instances read them.
    pub(crate) async fn report_figures(&self, figures: &str) -> Result<(), RegistryError> {
        match self {
            Broker::Local(_) => Ok(()),
            Broker::Redis(cluster) => cluster.report_figures(figures).await,
        }
    }

    /// The newest figures of every other instance alive, by instance id; none alone.
    pub(crate) async fn figures_elsewhere(&self) -> Result<Vec<Arc<str>>, RegistryError> {
        match self {
            Broker::Local(_) => Ok(Vec::new()),
            Broker::Redis(cluster) => cluster.figures_elsewhere().await,
        }
    }

    /// Sends `room_count` into the rooms above the presence limit whose count changed.
    pub(crate) async fn count_rooms(&self) {
        match self {
            Broker::Local(local) => local.count_rooms().await,
            Broker::Redis(cluster) => cluster.count_rooms().await,
        }
    }

    pub(crate) async fn authenticate(&self, token: &Token) -> Result<Peer, RegistryError> {
        match self {
            Broker::Local(local) => local.authenticate(token),
            Broker::Redis(cluster) => cluster.authenticate(token).await,
        }
    }

    pub(crate) async fn may_broadcast(&self, id: SessionId) -> Result<bool, RegistryError> {
        match self {
            Broker::Local(local) => local.may_broadcast(id),
            Broker::Redis(cluster) => cluster.may_broadcast(id).await,
        }
    }

    /// Attaches a stream here (a session homed elsewhere migrates here first).
    pub(crate) async fn attach(
        &self,
        id: SessionId,
        token: &Token,
        last_event_id: Option<EventId>,
    ) -> Result<Subscription, RegistryError> {
        match self {
            Broker::Local(local) => local.attach(id, token, last_event_id),
            Broker::Redis(cluster) => cluster.attach(id, token, last_event_id).await,
        }
    }

    pub(crate) async fn deliver(
        &self,
        to: SessionId,
        event: Event,
        key: Option<SendKey>,
    ) -> Result<EventId, RegistryError> {
        match self {
            Broker::Local(local) => local.deliver(to, event, key),
            Broker::Redis(cluster) => cluster.deliver(to, event, key).await,
        }
    }

    /// A broadcast from `from` into `room`; how many other members there are.
    pub(crate) async fn broadcast(
        &self,
        from: &Peer,
        room: RoomName,
        message: Box<RawValue>,
    ) -> Result<usize, RegistryError> {
        match self {
            Broker::Local(local) => Ok(local.broadcast(from, room, message).await),
            Broker::Redis(cluster) => cluster.broadcast(from, room, message).await,
        }
    }

    /// A server message to every session, or every member of `room`; how many there are.
    pub(crate) async fn announce(
        &self,
        message: Box<RawValue>,
        room: Option<RoomName>,
    ) -> Result<usize, RegistryError> {
        match self {
            Broker::Local(local) => Ok(local.announce(message, room).await),
            Broker::Redis(cluster) => cluster.announce(message, room).await,
        }
    }

    pub(crate) async fn peer(&self, id: SessionId) -> Result<Option<Peer>, RegistryError> {
        match self {
            Broker::Local(local) => Ok(local.peer(id)),
            Broker::Redis(cluster) => cluster.peer(id).await,
        }
    }

    pub(crate) async fn remove(&self, peer: &Peer) -> Result<(), RegistryError> {
        match self {
            Broker::Local(local) => {
                local.remove(peer).await;
                Ok(())
            }
            Broker::Redis(cluster) => cluster.remove(peer).await,
        }
    }

    pub(crate) async fn list(&self) -> Result<Vec<Peer>, RegistryError> {
        match self {
            Broker::Local(local) => Ok(local.list()),
            Broker::Redis(cluster) => cluster.list().await,
        }
    }

    pub(crate) async fn health(&self) -> Result<(), String> {
        match self {
            Broker::Local(_) => Ok(()),
            Broker::Redis(cluster) => cluster.health().await,
        }
    }

    /// Moves the end of session `id`'s lifetime, wherever it lives; its end now.
    pub(crate) async fn refresh(
        &self,
        id: SessionId,
        ends: Instant,
        bound: Bound,
    ) -> Result<Instant, RegistryError> {
        match self {
            Broker::Local(local) => local
                .registry()
                .refresh(id, ends, bound)
                .map(|lifetime| lifetime.ends),
            Broker::Redis(cluster) => cluster.refresh(id, ends, bound).await,
        }
    }

    /// Sessions the reaper removed here: their leave reaches their rooms.
    pub(crate) fn expired(&self, departed: Vec<Departure>) {
        match self {
            Broker::Local(local) => local.expired(departed),
            Broker::Redis(cluster) => cluster.expired(departed),
        }
    }

    /// Before a shutdown: sends every session homed here to the other instances and waits
    /// (bounded) until they have them. Alone, nothing to do: the sessions stay for the state
    /// file.
    pub(crate) async fn drain(&self) {
        match self {
            Broker::Local(_) => {}
            Broker::Redis(cluster) => cluster.drain().await,
        }
    }
}
