//! The hub: the seam the HTTP edge calls, over this instance's registry alone or a cluster.
//!
//! [`Hub`] decides who hears what; the registry below it only keeps sessions. Presence (who
//! hears `new_user` and `user_left`, who is listed in `ready`) lives in [`presence`] and is the
//! same for both modes. The hub reaches other sessions through a broker: the local one
//! ([`local`]: this process alone), or the Redis one ([`cluster`]: the registry holds the
//! sessions *homed* on this instance and Redis carries the rest). Either broker reports what
//! reaches the sessions here through [`BrokerEvents`], which [`Here`] implements. The
//! guarantees handlers rely on are the same with both:
//! - `register` returns only once the session can be messaged, then `new_user` reaches every
//!   other session;
//! - `deliver` returns the id the direct message got in the recipient's stream, or why not;
//! - `attach` resumes with the same event ids wherever the stream was before;
//! - a failure to reach the backplane is an error ([`RegistryError::Unavailable`]), never a
//!   silent drop.
//!
//! # Layout
//! - [`events`]: the handler interface a broker reports through (the lowest file here).
//! - [`local`], [`cluster`]: the two brokers; [`broker`]: the enum the hub holds.
//! - [`presence`]: who hears of joins and leaves.
//! - [`rooms`]: the hub's room operations: who may be where, joining and leaving, rosters.
//! - [`figures`]: the figures each instance reports once a second for the admin console.
//! - [`lifetime`]: moving the end of sessions' lifetimes (refreshes).
//! - this file: [`Hub`] (the edge's operations), and [`Here`], where a broker's events land.
//! - [`backend`]: the server API: its words (targets, pages) and the hub's operations for it.

mod backend;
mod broker;
pub(crate) mod cluster;
mod events;
mod figures;
mod lifetime;
mod local;
pub(crate) mod presence;
mod rooms;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::identity::{RoomName, RoomPatterns, SessionId, Token};
use crate::limits::AddressGuard;
use crate::metrics::Metrics;
pub use crate::registry::Stats;
use crate::registry::event::{Scope, ServerMessage};
use crate::registry::{
    Departure, Event, EventId, Joining, Peer, Reach, Registry, RegistryError, SendKey, Subscription,
};
pub use backend::{Page, PageQuery, Target};
use broker::Broker;
use cluster::Cluster;
use events::BrokerEvents;
pub use figures::Report;
use local::Local;
use presence::Presence;

/// Where sessions live, and who hears about them; clone freely.
///
/// One pointer: every connection's task holds a hub (through the edge's context) for its whole
/// life, and the two parts inline cost each idle stream about 250 bytes (measured with 19,000
/// idle streams: 5,363 against 5,112 bytes each).
#[derive(Clone)]
pub struct Hub(Arc<Parts>);

/// What a [`Hub`] points to.
pub struct Parts {
    here: Here,
    broker: Broker,
}

impl std::ops::Deref for Hub {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// This instance's sessions, who hears of what (where a broker's events land), its figures.
#[derive(Clone)]
pub(crate) struct Here {
    /// The sessions homed on this instance (all of them, without a cluster).
    registry: Registry,
    presence: Presence,
    settings: Arc<HubSettings>,
    figures: Arc<tokio::sync::watch::Sender<Report>>,
}

impl Here {
    fn new(registry: Registry, settings: HubSettings) -> Self {
        Here {
            registry,
            presence: Presence::new(settings.presence, settings.room_presence_limit),
            settings: Arc::new(settings),
            figures: Arc::default(),
        }
    }
}

impl BrokerEvents for Here {
    fn joined(&self, peer: &Peer, rooms: &[(RoomName, usize)], only: Option<SessionId>) {
        self.presence.joined(&self.registry, peer, rooms, only);
    }

    fn left(&self, peer: &Peer, rooms: &[(RoomName, usize)], only: Option<SessionId>) {
        self.presence.left(&self.registry, peer, rooms, only);
    }

    fn entered(
        &self,
        id: SessionId,
        (room, members): (&RoomName, usize),
        everyone: &dyn Fn() -> Vec<Peer>,
    ) {
        let roster = self.presence.roster(id, members, everyone);
        self.presence
            .entered(&self.registry, id, (room, members), roster);
    }

    fn exited(&self, id: SessionId, room: &RoomName) {
        self.presence.exited(&self.registry, id, room);
    }

    fn broadcast(
        &self,
        from: &Peer,
        room: &RoomName,
        message: Box<RawValue>,
        only: Option<SessionId>,
    ) -> usize {
        self.registry.broadcast(from, room, message, only)
    }

    fn announced(
        &self,
        message: Box<RawValue>,
        room: Option<&RoomName>,
        only: Option<SessionId>,
    ) -> usize {
        let (to, reach) = match room {
            Some(room) => (Scope::Room, Reach::Room(room)),
            None => (Scope::Everyone, Reach::Everyone),
        };
        let event = Event::ServerMessage(ServerMessage {
            to,
            room: room.cloned(),
            message,
        });
        self.registry.fan_out(event, reach, None, only)
    }

    fn listed(&self, members: usize) -> bool {
        !self.presence.counted(members)
    }

    fn counts_due(&self) -> bool {
        self.presence.counts_due()
    }

    fn due_counts(&self, size: &dyn Fn(&RoomName) -> usize) -> Vec<(RoomName, usize)> {
        self.presence.due(size)
    }

    fn count_to(&self, room: (&RoomName, usize), to: &HashSet<SessionId>) {
        self.presence.count_to(&self.registry, room, to);
    }

    fn direct(
        &self,
        to: SessionId,
        event: Event,
        key: Option<SendKey>,
    ) -> Result<(EventId, bool), RegistryError> {
        self.registry.deliver_event(to, event, key)
    }
}

/// What the hub decides beyond the registry's sizes: presence, and who may be in which room
/// and message whom.
#[derive(Clone, Debug)]
pub struct HubSettings {
    /// Announce joins and leaves, and list rosters (`--presence`).
    pub presence: bool,
    /// Rooms with more members are counted, not announced (`--room-presence-limit`; 0: none).
    pub room_presence_limit: usize,
    /// The rooms any session may be in (`--allow-rooms`); a join token's claim narrows it.
    pub allow_rooms: RoomPatterns,
    /// Direct messages only between sessions sharing a room (`--direct-messages shared-room`).
    pub shared_room_only: bool,
}

impl Default for HubSettings {
    /// Today's hub: presence on, rooms of up to 1,000 listed, any room, any recipient.
    fn default() -> Self {
        HubSettings {
            presence: true,
            room_presence_limit: 1000,
            allow_rooms: RoomPatterns::any(),
            shared_room_only: false,
        }
    }
}

impl Hub {
    /// A hub of this process alone.
    pub fn local(registry: Registry, settings: HubSettings) -> Self {
        // This process is the whole backplane: up for as long as it runs.
        registry.metrics().backplane_up.set(1);
        let here = Here::new(registry.clone(), settings);
        let broker = Broker::Local(Local::new(registry, Arc::new(here.clone())));
        Hub(Arc::new(Parts { here, broker }))
    }

    /// A hub over Redis at `url`, keys under `prefix` (on a Redis Cluster, each room in a slot
    /// of its own with `shard_rooms`); its tasks end when `shutdown` fires.
    ///
    /// # Errors
    /// When `url` is not a valid Redis URL.
    pub(crate) fn cluster(
        registry: Registry,
        settings: HubSettings,
        url: &str,
        prefix: &str,
        shard_rooms: bool,
        shutdown: CancellationToken,
    ) -> Result<Self, RegistryError> {
        let here = Here::new(registry.clone(), settings);
        let events = Arc::new(here.clone());
        let cluster = Cluster::start(registry, events, url, (prefix, shard_rooms), shutdown)?;
        Ok(Hub(Arc::new(Parts {
            here,
            broker: Broker::Redis(cluster),
        })))
    }

    /// The counters and gauges of this instance.
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.here.registry.metrics()
    }

    /// This instance's id in its cluster (as its logs and Redis keys name it); `None` alone.
    pub fn instance(&self) -> Option<uuid::Uuid> {
        self.broker.instance()
    }

    /// Sessions and streams on this instance, and its stream limit.
    pub fn stats(&self) -> Stats {
        self.here.registry.stats()
    }

    /// Before a shutdown: in a cluster, drains every session homed here to the other
    /// instances and waits (bounded) until they have them; this instance takes no new ones
    /// meanwhile. Alone, nothing to do: the sessions stay for the state file.
    pub(crate) async fn drain(&self) {
        self.broker.drain().await;
    }

    /// Ends this instance's streams for a shutdown, each after writing what it holds; the
    /// sessions stay (see `Registry::close_streams`).
    pub(crate) fn close_streams(&self) {
        self.here.registry.close_streams();
    }

    /// Registers a session in `rooms` and announces it to their other members.
    ///
    /// # Errors
    /// `RoomForbidden` for a room the server or the join token does not allow;
    /// `SessionRoomLimit`, `RoomLimit`, `SessionLimit`, or `Unavailable` when the backplane
    /// cannot be reached.
    pub async fn register(
        &self,
        joining: Joining,
        rooms: Vec<RoomName>,
        place: AddressGuard,
    ) -> Result<(Peer, Token), RegistryError> {
        for room in &rooms {
            self.admit(room, joining.may_join.as_ref())?;
        }
        self.broker.register(joining, rooms, place).await
    }

    /// The session a token proves.
    ///
    /// # Errors
    /// `BadToken`, or `Unavailable`.
    pub async fn authenticate(&self, token: &Token) -> Result<Peer, RegistryError> {
        self.broker.authenticate(token).await
    }

    /// Attaches a stream to session `id`, migrating the session here if it lives elsewhere;
    /// its `ready` lists the others when presence is on.
    ///
    /// # Errors
    /// `UnknownSession`, `BadToken`, `StreamLimit`, or `Unavailable`.
    pub async fn attach(
        &self,
        id: SessionId,
        token: &Token,
        last_event_id: Option<EventId>,
    ) -> Result<Subscription, RegistryError> {
        let mut subscription = self.broker.attach(id, token, last_event_id).await?;
        let rosters = self.rosters(id).await?;
        self.here.presence.fill_roster(&mut subscription, rosters);
        Ok(subscription)
    }

    /// A direct message from `from` to `to`; the id it got in `to`'s stream. With `key`, a
    /// retry of a message `to` already got answers that message's id and delivers nothing.
    ///
    /// # Errors
    /// `UnknownRecipient`; `NoSharedRoom` with `--direct-messages shared-room` when the two
    /// share no room; `MailboxFull`, `KeyReused`, or `Unavailable`.
    pub async fn deliver(
        &self,
        from: &Peer,
        to: SessionId,
        message: Box<RawValue>,
        key: Option<SendKey>,
    ) -> Result<EventId, RegistryError> {
        if self.here.settings.shared_room_only {
            self.share_a_room(from.id, to).await?;
        }
        self.broker
            .deliver(to, Event::direct(from, to, message), key)
            .await
    }

    /// An addressed event (see [`Event::is_addressed`]) into `to`'s stream, wherever it lives.
    async fn deliver_event(&self, to: SessionId, event: Event) -> Result<EventId, RegistryError> {
        self.broker.deliver(to, event, None).await
    }

    /// A message from `from` to every other member of `room`; how many there are.
    ///
    /// # Errors
    /// `BroadcastDenied` when `from`'s join token said `"broadcast": false`; `NotAMember` when
    /// `from` is not in `room`; `BadToken` when `from` has left meanwhile; `Unavailable`.
    pub async fn broadcast(
        &self,
        from: &Peer,
        room: RoomName,
        message: Box<RawValue>,
    ) -> Result<usize, RegistryError> {
        if !self.broker.may_broadcast(from.id).await? {
            return Err(RegistryError::BroadcastDenied);
        }
        self.check_member(from.id, &room).await?;
        self.broker.broadcast(from, room, message).await
    }

    /// Removes `peer`'s session; its stream ends and the members of its rooms hear
    /// `user_left`.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn remove(&self, peer: &Peer) -> Result<(), RegistryError> {
        self.broker.remove(peer).await
    }

    /// Every registered session.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn list(&self) -> Result<Vec<Peer>, RegistryError> {
        self.broker.list().await
    }

    /// `Ok` when this instance can serve; otherwise why not.
    ///
    /// # Errors
    /// The reason, for `/healthz`.
    pub async fn health(&self) -> Result<(), String> {
        self.broker.health().await
    }

    /// Tells the others about sessions the reaper removed here.
    pub(crate) fn expired(&self, departed: Vec<Departure>) {
        self.broker.expired(departed);
    }
}
