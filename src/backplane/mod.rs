//! The hub: the seam the HTTP edge calls, over this instance's registry alone or a cluster.
//!
//! [`Hub`] decides who hears what; the registry below it only keeps sessions. Presence (who
//! hears `new_user` and `user_left`, who is listed in `ready`) lives in [`presence`] and is the
//! same for both modes. In cluster mode ([`cluster`]) the registry holds the sessions *homed* on
//! this instance and Redis carries the rest: a directory of every session, and one pub/sub
//! channel that every instance reads in the same order. The guarantees handlers rely on are the
//! same in both:
//! - `register` returns only once the session can be messaged, then `new_user` reaches every
//!   other session;
//! - `deliver` returns the id the direct message got in the recipient's stream, or why not;
//! - `attach` resumes with the same event ids wherever the stream was before;
//! - a failure to reach the backplane is an error ([`RegistryError::Unavailable`]), never a
//!   silent drop.

mod backend;
pub(crate) mod cluster;
pub(crate) mod presence;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::limits::AddressGuard;
use crate::metrics::Metrics;
pub use crate::registry::Stats;
use crate::registry::{
    Event, EventId, Joining, Peer, Registry, RegistryError, SendKey, SessionId, Subscription, Token,
};
pub use backend::{Page, PageQuery, Target};
use cluster::Cluster;
use presence::Presence;

/// Where sessions live, and who hears about them; clone freely.
#[derive(Clone)]
pub struct Hub {
    /// The sessions homed on this instance (all of them, without a cluster).
    registry: Registry,
    presence: Presence,
    /// `None`: this process alone.
    cluster: Option<Arc<Cluster>>,
    /// One local fan-out at a time (see [`Hub::fan_out`]).
    fan_outs: Arc<tokio::sync::Mutex<()>>,
}

impl Hub {
    /// A hub of this process alone; `presence` turns announcements and the roster on.
    pub fn local(registry: Registry, presence: bool) -> Self {
        Hub {
            registry,
            presence: Presence::new(presence),
            cluster: None,
            fan_outs: Arc::default(),
        }
    }

    /// A hub over Redis at `url`, keys under `prefix`; its tasks end when `shutdown` fires.
    ///
    /// # Errors
    /// When `url` is not a valid Redis URL.
    pub(crate) fn cluster(
        registry: Registry,
        presence: bool,
        url: &str,
        prefix: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, RegistryError> {
        let presence = Presence::new(presence);
        let cluster = Cluster::start(registry.clone(), presence, url, prefix, shutdown)?;
        Ok(Hub {
            registry,
            presence,
            cluster: Some(cluster),
            fan_outs: Arc::default(),
        })
    }

    /// The counters and gauges of this instance.
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.registry.metrics()
    }

    /// Sessions and streams on this instance, and its stream limit.
    pub fn stats(&self) -> Stats {
        self.registry.stats()
    }

    /// Before a shutdown: in a cluster, hands every session homed here to the other instances
    /// and waits (bounded) until they have them; this instance takes no new ones meanwhile.
    /// Alone, nothing to do: the sessions stay for the state file.
    pub(crate) async fn hand_off(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.hand_off().await;
        }
    }

    /// Ends this instance's streams for a shutdown, each after writing what it holds; the
    /// sessions stay (see `Registry::close_streams`).
    pub(crate) fn close_streams(&self) {
        self.registry.close_streams();
    }

    /// Registers a session and announces it to the others.
    ///
    /// # Errors
    /// `SessionLimit`, or `Unavailable` when the backplane cannot be reached.
    pub async fn register(
        &self,
        joining: Joining,
        place: AddressGuard,
    ) -> Result<(Peer, Token), RegistryError> {
        match &self.cluster {
            None => {
                // Registered first: whoever hears `new_user` can already message it.
                let (peer, token) = self.registry.register(joining, place)?;
                let joined = peer.clone();
                self.fan_out(move |registry, presence| presence.joined(registry, &joined, None))
                    .await;
                Ok((peer, token))
            }
            // Announced when the join comes back on the bus, on every instance.
            Some(cluster) => cluster.register(joining, place).await,
        }
    }

    /// The session a token proves.
    ///
    /// # Errors
    /// `BadToken`, or `Unavailable`.
    pub async fn authenticate(&self, token: &Token) -> Result<Peer, RegistryError> {
        match &self.cluster {
            None => self.registry.authenticate(token),
            Some(cluster) => cluster.authenticate(token).await,
        }
    }

    /// Attaches a stream to session `id`, moving the session here if it lives elsewhere; its
    /// `ready` lists the others when presence is on.
    ///
    /// # Errors
    /// `UnknownSession`, `BadToken`, `StreamLimit`, or `Unavailable`.
    pub async fn attach(
        &self,
        id: SessionId,
        token: &Token,
        last_event_id: Option<EventId>,
    ) -> Result<Subscription, RegistryError> {
        let mut subscription = match &self.cluster {
            None => self.registry.attach(id, token, last_event_id)?,
            Some(cluster) => cluster.attach(id, token, last_event_id).await?,
        };
        self.presence
            .fill_roster(&mut subscription, self.list())
            .await?;
        Ok(subscription)
    }

    /// A direct message from `from` to `to`; the id it got in `to`'s stream. With `key`, a
    /// retry of a message `to` already got answers that message's id and delivers nothing.
    ///
    /// # Errors
    /// `UnknownRecipient`, `MailboxFull`, `KeyReused`, or `Unavailable`.
    pub async fn deliver(
        &self,
        from: &Peer,
        to: SessionId,
        message: Box<RawValue>,
        key: Option<SendKey>,
    ) -> Result<EventId, RegistryError> {
        self.deliver_keyed(to, Event::direct(from, to, message), key)
            .await
    }

    /// An addressed event (see [`Event::is_addressed`]) into `to`'s stream, wherever it lives.
    async fn deliver_event(&self, to: SessionId, event: Event) -> Result<EventId, RegistryError> {
        self.deliver_keyed(to, event, None).await
    }

    async fn deliver_keyed(
        &self,
        to: SessionId,
        event: Event,
        key: Option<SendKey>,
    ) -> Result<EventId, RegistryError> {
        match &self.cluster {
            None => self
                .registry
                .deliver_event(to, event, key)
                .map(|(id, _)| id),
            Some(cluster) => cluster.deliver(to, event, key).await,
        }
    }

    /// A message from `from` to every other session; how many there are.
    ///
    /// # Errors
    /// `BroadcastDenied` when `from`'s join token said `"broadcast": false`; `BadToken` when
    /// `from` has left meanwhile; `Unavailable`.
    pub async fn broadcast(
        &self,
        from: &Peer,
        message: Box<RawValue>,
    ) -> Result<usize, RegistryError> {
        let may_broadcast = match (self.registry.may_broadcast(from.id), &self.cluster) {
            (Some(here), _) => here,
            (None, None) => return Err(RegistryError::BadToken),
            (None, Some(cluster)) => cluster.may_broadcast(from.id).await?,
        };
        if !may_broadcast {
            return Err(RegistryError::BroadcastDenied);
        }
        match &self.cluster {
            None => {
                let from = from.clone();
                Ok(self
                    .fan_out(move |registry, _| registry.broadcast(&from, message))
                    .await)
            }
            Some(cluster) => cluster.broadcast(from, message).await,
        }
    }

    /// Removes `peer`'s session; its stream ends and the others hear `user_left`.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn remove(&self, peer: &Peer) -> Result<(), RegistryError> {
        match &self.cluster {
            None => {
                if let Some(left) = self.registry.remove(peer.id) {
                    self.fan_out(move |registry, presence| presence.left(registry, &left, None))
                        .await;
                }
                Ok(())
            }
            Some(cluster) => cluster.remove(peer).await,
        }
    }

    /// Every registered session.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn list(&self) -> Result<Vec<Peer>, RegistryError> {
        match &self.cluster {
            None => Ok(self.registry.list()),
            Some(cluster) => cluster.list().await,
        }
    }

    /// `Ok` when this instance can serve; otherwise why not.
    ///
    /// # Errors
    /// The reason, for `/healthz`.
    pub async fn health(&self) -> Result<(), String> {
        match &self.cluster {
            None => Ok(()),
            Some(cluster) => cluster.health().await,
        }
    }

    /// Tells the others about sessions the reaper removed here.
    pub(crate) fn expired(&self, peers: Vec<Peer>) {
        match &self.cluster {
            // Not awaited: the reaper goes on; the announcement runs in its turn.
            None => drop(self.spawn_fan_out(move |registry, presence| {
                for peer in &peers {
                    presence.left(registry, peer, None);
                }
            })),
            Some(cluster) => cluster.expired(peers),
        }
    }

    /// Runs `job`, a fan-out into every mailbox here (O(sessions): 20 ms at 30,000 sessions),
    /// when no other fan-out of this hub is running, and waits for it.
    ///
    /// Fan-outs wait for their turn without holding a thread, then run on a runtime worker.
    /// Waiting on the registry's fan-out lock instead, a flood of joins held every worker and
    /// stalled every other request (`/response` p99 from 1 ms to 0.85 s at 30,000 sessions);
    /// now at most one worker is busy fanning out. Not on the blocking pool: woken from
    /// outside the runtime, each of thousands of streams is scheduled remotely, which cut
    /// saturated fanout to a fifth. Spawned, so that a join whose client went away is still
    /// announced.
    async fn fan_out<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Registry, Presence) -> T + Send + 'static,
    ) -> T {
        self.spawn_fan_out(job)
            .await
            .expect("a fan-out panicked (reported above)")
    }

    /// Starts `job` in its turn (see [`Hub::fan_out`]) without waiting for it.
    fn spawn_fan_out<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Registry, Presence) -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let (registry, presence) = (self.registry.clone(), self.presence);
        let turn = Arc::clone(&self.fan_outs).lock_owned();
        tokio::spawn(async move {
            let _turn = turn.await;
            job(&registry, presence)
        })
    }
}
