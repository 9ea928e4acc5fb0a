//! The seam between the HTTP edge and where sessions live: one instance, or a cluster.
//!
//! [`Hub`] is what handlers call. `Local` is the registry itself. `Cluster` ([`redis`]) keeps
//! the same registry for the sessions *homed* on this instance and uses Redis for the rest:
//! a directory of every session, and one pub/sub channel that every instance reads in the same
//! order. The guarantees handlers rely on are the same in both:
//! - `register` returns only once the session can be messaged, then `new_user` reaches every
//!   other session;
//! - `deliver` returns the id the event got in the recipient's stream, or why it did not;
//! - `attach` resumes with the same event ids wherever the stream was before;
//! - a failure to reach the backplane is an error ([`RegistryError::Unavailable`]), never a
//!   silent drop.

pub mod redis;

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::registry::{
    DisplayName, EventId, Peer, Registry, RegistryError, SessionId, Subscription, Token,
};

/// Where sessions live; clone freely.
#[derive(Clone)]
pub enum Hub {
    /// Everything in this process (the default).
    Local(Registry),
    /// Several instances over Redis.
    Cluster(Arc<redis::Cluster>),
}

impl Hub {
    /// The registry of sessions homed on this instance.
    pub fn registry(&self) -> &Registry {
        match self {
            Hub::Local(registry) => registry,
            Hub::Cluster(cluster) => cluster.registry(),
        }
    }

    /// Registers a session and announces it to the others.
    ///
    /// # Errors
    /// `SessionLimit`, or `Unavailable` when the backplane cannot be reached.
    pub async fn register(&self, name: DisplayName) -> Result<(Peer, Token), RegistryError> {
        match self {
            Hub::Local(registry) => registry.register(name),
            Hub::Cluster(cluster) => cluster.register(name).await,
        }
    }

    /// The session a token proves.
    ///
    /// # Errors
    /// `BadToken`, or `Unavailable`.
    pub async fn authenticate(&self, token: &Token) -> Result<Peer, RegistryError> {
        match self {
            Hub::Local(registry) => registry.authenticate(token),
            Hub::Cluster(cluster) => cluster.authenticate(token).await,
        }
    }

    /// Attaches a stream to session `id`, moving the session here if it lives elsewhere.
    ///
    /// # Errors
    /// `UnknownSession`, `BadToken`, `StreamLimit`, or `Unavailable`.
    pub async fn attach(
        &self,
        id: SessionId,
        token: &Token,
        last_event_id: Option<EventId>,
    ) -> Result<Subscription, RegistryError> {
        match self {
            Hub::Local(registry) => registry.attach(id, token, last_event_id),
            Hub::Cluster(cluster) => cluster.attach(id, token, last_event_id).await,
        }
    }

    /// A direct message from `from` to `to`; the id it got in `to`'s stream.
    ///
    /// # Errors
    /// `UnknownRecipient`, `MailboxFull`, or `Unavailable`.
    pub async fn deliver(
        &self,
        from: &Peer,
        to: SessionId,
        message: Box<RawValue>,
    ) -> Result<EventId, RegistryError> {
        match self {
            Hub::Local(registry) => registry.push_direct(from, to, message),
            Hub::Cluster(cluster) => cluster.deliver(from, to, message).await,
        }
    }

    /// A message from `from` to every other session; how many there are.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn broadcast(
        &self,
        from: &Peer,
        message: Box<RawValue>,
    ) -> Result<usize, RegistryError> {
        match self {
            Hub::Local(registry) => Ok(registry.broadcast(from, message)),
            Hub::Cluster(cluster) => cluster.broadcast(from, message).await,
        }
    }

    /// Removes `peer`'s session; its stream ends and the others hear `user_left`.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn remove(&self, peer: &Peer) -> Result<(), RegistryError> {
        match self {
            Hub::Local(registry) => {
                registry.remove_id(peer.id);
                Ok(())
            }
            Hub::Cluster(cluster) => cluster.remove(peer).await,
        }
    }

    /// Every registered session.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn list(&self) -> Result<Vec<Peer>, RegistryError> {
        match self {
            Hub::Local(registry) => Ok(registry.list()),
            Hub::Cluster(cluster) => cluster.list().await,
        }
    }

    /// `Ok` when this instance can serve; otherwise why not.
    ///
    /// # Errors
    /// The reason, for `/healthz`.
    pub async fn health(&self) -> Result<(), String> {
        match self {
            Hub::Local(_) => Ok(()),
            Hub::Cluster(cluster) => cluster.health().await,
        }
    }

    /// Tells the others about sessions the reaper removed here.
    pub fn expired(&self, peers: Vec<Peer>) {
        match self {
            // The registry announced them itself.
            Hub::Local(_) => {}
            Hub::Cluster(cluster) => cluster.expired(peers),
        }
    }
}
