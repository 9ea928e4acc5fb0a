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

use super::cluster::Cluster;
use super::local::Local;
use crate::identity::{SessionId, Token};
use crate::limits::AddressGuard;
use crate::registry::{Event, EventId, Joining, Peer, RegistryError, SendKey, Subscription};

/// The hub's way to the rest of the world.
#[derive(Clone)]
pub(crate) enum Broker {
    Local(Local),
    Redis(Arc<Cluster>),
}

impl Broker {
    /// Registers a session; its join reaches every other session.
    pub(crate) async fn register(
        &self,
        joining: Joining,
        place: AddressGuard,
    ) -> Result<(Peer, Token), RegistryError> {
        match self {
            Broker::Local(local) => local.register(joining, place).await,
            // Announced when the join comes back on the bus, on every instance.
            Broker::Redis(cluster) => cluster.register(joining, place).await,
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

    /// A broadcast from `from`; how many other sessions there are.
    pub(crate) async fn broadcast(
        &self,
        from: &Peer,
        message: Box<RawValue>,
    ) -> Result<usize, RegistryError> {
        match self {
            Broker::Local(local) => Ok(local.broadcast(from, message).await),
            Broker::Redis(cluster) => cluster.broadcast(from, message).await,
        }
    }

    /// A server message to every session; how many there are.
    pub(crate) async fn announce(&self, message: Box<RawValue>) -> Result<usize, RegistryError> {
        match self {
            Broker::Local(local) => Ok(local.announce(message).await),
            Broker::Redis(cluster) => cluster.announce(message).await,
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

    /// Sessions the reaper removed here: their leave reaches the others.
    pub(crate) fn expired(&self, peers: Vec<Peer>) {
        match self {
            Broker::Local(local) => local.expired(peers),
            Broker::Redis(cluster) => cluster.expired(peers),
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
