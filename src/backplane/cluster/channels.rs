//! The channels: the one every instance reads in the same order ([`BUS`](super::keys::BUS)),
//! each room's ([`ROOM`](super::keys::ROOM)) and each instance's own ([`TO`](super::keys::TO));
//! publishing on them, and the task that reads them on one connection and applies what comes,
//! in order (see [`dispatch`](super::dispatch)). Every raw pub/sub call is in this file.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use super::counting::Counting;
use super::instance::Cluster;
use super::keys::unavailable;
use super::protocol::{ROOM_NUMBERS, Unknown, read, version_of};
use super::sequence::Numbers;
use super::transport::{Sink, Subscription};
use super::wire::{Message, all_of, seq_of};
use crate::identity::{RoomName, SessionId};
use crate::registry::RegistryError;

/// What a PUBLISH to one instance's channel that `readers` subscribers got means: none, and
/// that instance is gone.
fn reached(readers: u64) -> Result<(), RegistryError> {
    match readers {
        0 => Err(unavailable("the recipient's instance is not connected")),
        _ => Ok(()),
    }
}

impl Cluster {
    /// Publishes `message` where it belongs: an answer to its asker's channel, a room's
    /// traffic on the room's channel, everything else on the bus. (A direct message goes to
    /// its recipient's home: [`Cluster::send`].)
    pub(super) async fn publish(&self, message: &Message) -> Result<(), RegistryError> {
        self.publish_counting(message).await.map(drop)
    }

    /// [`Cluster::publish`]; the members of the message's room when the room's own slot
    /// counted them (rooms sharded, a numbered message).
    pub(super) async fn publish_counting(
        &self,
        message: &Message,
    ) -> Result<Option<usize>, RegistryError> {
        if let Some(asker) = message.answers() {
            return self
                .publish_on(self.keys.channel_of(asker), message)
                .await
                .map(|_| None);
        }
        let room = self.room_channel_for(message);
        let channel = room.map_or_else(|| self.keys.bus(), |room| self.keys.room(room));
        let listed = |size| self.events.listed(size);
        let counting = Counting::of(&self.keys, message, room, &listed);
        self.sequence
            .publish_counted(channel, room, message, counting)
            .await
    }

    /// The room whose channel carries what every instance may need to read: the room's, for
    /// the traffic of one room but `lobby`, while every instance alive reads room channels;
    /// else none: the bus (see the [module doc](super) on mixed versions).
    fn room_channel_for<'m>(&self, message: &'m Message) -> Option<&'m RoomName> {
        match message.room() {
            Some(room) if !room.is_lobby() && !self.liveness.mixed() => Some(room),
            _ => None,
        }
    }

    /// Whether room traffic rides the bus, as an older instance alive reads it there: never
    /// with rooms sharded (a message on the bus could not be numbered on a room's counter in
    /// another slot; releases before protocol 2 speak to no Redis Cluster).
    pub(super) fn mixed(&self) -> bool {
        !self.keys.is_sharded() && self.liveness.mixed()
    }

    /// Publishes `message` to `instance` alone.
    ///
    /// # Errors
    /// `Unavailable` when Redis cannot be reached, or nobody reads that instance's channel (it
    /// is gone).
    pub(super) async fn send(
        &self,
        instance: Uuid,
        message: &Message,
    ) -> Result<(), RegistryError> {
        reached(
            self.publish_on(self.keys.channel_of(instance), message)
                .await?,
        )
    }

    /// Publishes direct message `message` for `to` on `home`'s channel, counting it for `to`
    /// when `home` reads it (see [`sequence`](super::sequence)).
    ///
    /// # Errors
    /// `Unavailable` when Redis cannot be reached, or nobody reads that channel.
    pub(super) async fn send_counted(
        &self,
        home: Uuid,
        to: SessionId,
        message: &Message,
    ) -> Result<(), RegistryError> {
        let channel = self.keys.channel_of(home);
        reached(self.sequence.send_counted(channel, to, message).await?)
    }

    /// Publishes on `channel`; returns how many subscribers got it.
    ///
    /// With [`listen`] and [`unlisten`], one of the three raw pub/sub calls.
    async fn publish_on(&self, channel: String, message: &Message) -> Result<u64, RegistryError> {
        self.conn
            .publish(channel, message.to_json())
            .await
            .map_err(unavailable)
    }

    /// Publishes from synchronous code (the bus loop); a failure is logged: the asker times out.
    pub(super) fn publish_soon(self: &Arc<Self>, message: Message) {
        self.publish_soon_to(None, message);
    }

    /// [`Cluster::publish_soon`], to `instance` alone when given. A `Migrated` is tried
    /// three times: it carries a session that nobody else holds any more (a second copy is
    /// refused and logged by its receiver). Anything else once: sent twice, a direct message
    /// would be delivered twice.
    pub(super) fn publish_soon_to(self: &Arc<Self>, instance: Option<Uuid>, message: Message) {
        let cluster = Arc::clone(self);
        let attempts = if matches!(message, Message::Migrated { .. }) {
            3
        } else {
            1
        };
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(100);
            for attempt in 1..=attempts {
                let sent = match instance {
                    Some(instance) => cluster.send(instance, &message).await,
                    None => cluster.publish(&message).await,
                };
                match sent {
                    Ok(()) => return,
                    Err(err) if attempt == attempts => {
                        error!(error = %err, "could not publish an answer");
                        return;
                    }
                    Err(err) => {
                        warn!(error = %err, attempt, "could not publish an answer; retrying")
                    }
                }
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        });
    }

    /// Reads the bus, this instance's channel and its rooms' until shutdown, reconnecting with
    /// backoff; after each (re)connection it re-registers the sessions homed here (Redis may
    /// have restarted empty), and reports to each what it may have missed meanwhile: every
    /// numbered message published while this instance was not subscribed (a lost connection;
    /// on a Redis Cluster, also a resharding that moved the slot, or a failover), as `lagged`.
    pub(super) async fn subscribe(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let channel = self.keys.bus();
        let own = self.keys.channel_of(self.instance);
        let mut was_subscribed = false;
        loop {
            let connected = async {
                // One connection for all: Redis writes to it in PUBLISH order (module doc).
                let (sink, subscription) =
                    Subscription::open(&self.target, &[channel.as_str(), own.as_str()]).await?;
                let rooms = self.registry.rooms().into_iter().map(|(room, _)| room);
                self.subscriptions.connected(sink, rooms.collect()).await?;
                Ok::<_, redis::RedisError>(subscription)
            };
            let connected = tokio::select! {
                () = shutdown.cancelled() => return,
                c = tokio::time::timeout(Duration::from_secs(2), connected) => c,
            };
            match connected {
                Ok(Ok(mut subscription)) => {
                    backoff = Duration::from_millis(100);
                    info!(channel, "subscribed to the Redis bus");
                    // Healthy only once re-registered: the command connection may still be
                    // reconnecting, so retry until it works (bus messages wait meanwhile).
                    let missed = loop {
                        match self.reregister().await {
                            Ok(missed) => break missed,
                            Err(err) => {
                                warn!(error = %err, "could not re-register homed sessions; retrying")
                            }
                        }
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                    };
                    // The numbered messages published while cut off (re-registering read
                    // where each line stands) never came: each mailbox reports those of its
                    // lines as missed.
                    if was_subscribed {
                        warn!(?missed, "numbered messages lost while cut off from the bus");
                        self.registry.skip_missed(|rooms| missed.of(rooms));
                    }
                    was_subscribed = true;
                    // Before any message is applied: what was published meanwhile is not replayed.
                    self.peers.reload(&self.directory).await;
                    self.subscribed.store(true, Ordering::Relaxed);
                    self.registry.metrics().backplane_up.set(1);
                    loop {
                        let message = tokio::select! {
                            () = shutdown.cancelled() => return,
                            m = subscription.next() => m,
                        };
                        let Some((name, payload)) = message else {
                            break;
                        };
                        let room = self
                            .keys
                            .room_of(&name)
                            .and_then(|r| RoomName::parse(r).ok());
                        let kind = match (&room, name == own) {
                            (_, true) => "instance",
                            (Some(_), _) => "room",
                            (None, _) => "bus",
                        };
                        self.registry.metrics().bus_received(kind);
                        let payload = payload.as_slice();
                        let numbers = numbers_of(payload, room, name == own);
                        let (message, unknown) = read(payload);
                        if let Some(unknown) = unknown {
                            self.not_understood(unknown);
                        }
                        // Inline, fan-outs included: this one task holds at most one worker,
                        // and the others keep serving requests meanwhile.
                        if let Some(message) = message {
                            self.apply(message, numbers);
                        }
                    }
                    self.subscriptions.disconnected().await;
                    self.subscribed.store(false, Ordering::Relaxed);
                    self.peers.lost();
                    self.registry.metrics().backplane_up.set(0);
                    error!("lost the Redis bus subscription; reconnecting");
                }
                Ok(Err(err)) => {
                    error!(error = %err, retry_in = ?backoff, "cannot subscribe to Redis")
                }
                Err(_) => error!(retry_in = ?backoff, "cannot subscribe to Redis: timed out"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Counts a message (or part of one) this build did not understand, and logs each kind of
    /// it once: a newer instance may send it for as long as a deploy lasts.
    fn not_understood(&self, unknown: Unknown) {
        self.registry.metrics().bus_ignored(unknown.reason());
        let what = match &unknown {
            Unknown::Kind(kind) => kind.clone(),
            Unknown::Fields(fields) => fields.join(","),
            Unknown::Malformed(_) => String::new(),
        };
        let first = self
            .not_understood
            .lock()
            .expect("not_understood lock poisoned")
            .insert((unknown.reason(), what));
        if first {
            match unknown {
                Unknown::Kind(kind) => warn!(
                    kind,
                    "ignoring cluster messages of a kind this version does not know (a newer \
                     instance's?); logged once"
                ),
                Unknown::Fields(fields) => warn!(
                    ?fields,
                    "applying cluster messages without fields this version does not know; \
                     logged once"
                ),
                Unknown::Malformed(err) => {
                    warn!(error = %err, "ignoring a malformed cluster message; logged once")
                }
            }
        }
    }
}

/// The numbers of `payload`, read on `room`'s channel (or the bus, or this instance's own,
/// which carries none); a room's number from an instance older than protocol
/// [`ROOM_NUMBERS`] is the bus's, not compared with the room's.
fn numbers_of(payload: &[u8], room: Option<RoomName>, own: bool) -> Option<Numbers> {
    if own || (room.is_some() && version_of(payload) < ROOM_NUMBERS) {
        return None;
    }
    Some(Numbers {
        seq: seq_of(payload)?,
        all: all_of(payload),
        room,
    })
}

/// Subscribes `sink`'s connection to `channels`; returns once Redis confirmed it.
pub(super) async fn listen(sink: &mut Sink, channels: &[String]) -> redis::RedisResult<()> {
    sink.listen(channels).await
}

/// Unsubscribes `sink`'s connection from `channels`.
pub(super) async fn unlisten(sink: &mut Sink, channels: &[String]) -> redis::RedisResult<()> {
    sink.unlisten(channels).await
}
