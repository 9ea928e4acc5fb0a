//! Cluster mode: several instances act as one hub over Redis.
//!
//! Each session is *homed* on one instance, which holds its mailbox in its [`Registry`]: where it
//! said hello, then wherever its stream last attached. Redis holds what every instance must see:
//!
//! | key (`<prefix>` = `--redis-prefix`) | type | what |
//! |---|---|---|
//! | [`BUS`] `<prefix>:bus` | pub/sub channel | what every instance must see: joins, leaves, broadcasts, hand-over requests, JSON (`bus::Bus`) |
//! | [`TO`] `<prefix>:to:<uuid>` | pub/sub channel | what concerns one instance: direct messages to the sessions it homes, and the answers to its own requests |
//! | [`SESSIONS`] `<prefix>:sessions` | hash | session id → `{"name", "token" (SHA-256), "home"}` |
//! | [`INSTANCE`] `<prefix>:instance:<uuid>` | string, expiring | this instance is alive (`alive`), or alive and stopping (`leaving`) |
//! | [`SEQ`] `<prefix>:seq` | string (integer) | the number of the last message that put an event into every mailbox (see [`sequence`]) |
//! | [`COUNTS`] `<prefix>:counts:<session id>` | hash | `base`, `own`, `direct`: how many events the session was given (see [`sequence`]) |
//!
//! Why one channel for what everyone sees: Redis delivers a channel's messages to every subscriber
//! in the one order it executed the PUBLISHes, so every instance sees joins, broadcasts and
//! hand-overs in the same order. A broadcast is one PUBLISH; each instance appends one shared
//! envelope to the mailboxes it homes, and encodes it once for all of its streams.
//!
//! A direct message concerns two instances only, so it goes to its recipient's home on that
//! instance's own channel, and the answer to the sender's; the other instances never read it.
//! An instance reads both of its channels on one connection, and Redis writes to a connection
//! in the order it executed the PUBLISHes, so what one instance reads keeps the order of the
//! single channel: a hand-over sees the same messages before and after its request as before.
//! A direct message that reaches the old home of a session just handed over is forwarded to
//! the new one (which buffers it until the mailbox arrives).
//!
//! # Layout
//! - this file: the operations the hub calls (register, attach, deliver, ...).
//! - [`bus`]: the messages, and what each does when it comes back.
//! - [`channels`]: publishing on the channels, and the task that reads them.
//! - [`directory`]: the sessions hash.
//! - [`liveness`]: instance keys, and finding the sessions of dead instances.
//! - [`sequence`]: counting each session's events in Redis, and adopting a dead instance's
//!   sessions with an exact count of what they lost.
//! - [`handover`]: moving a session here with its event ids (and the table of moves).
//! - [`handoff`]: handing every session to the others when this instance stops.
//! - [`request`]: request/reply over the bus (direct messages, hand-overs, health probes).
//!
//! Direct messages to a session homed elsewhere are published to its home with a request id;
//! the home applies them (or refuses: full mailbox) and answers the sender with the event id.
//! A home that is not subscribed (gone) is known at once: the PUBLISH reached nobody.
//!
//! Faults: pub/sub does not queue for a disconnected subscriber, so while Redis is unreachable
//! writes fail with `Unavailable` (503) and `/healthz` says why; on reconnection the instance
//! re-subscribes and re-registers the sessions it homes. Events published while an instance was
//! cut off are not replayed to it.
//!
//! Locks, in order: the hand-over table ([`handover`]), then the registry's (see
//! [`crate::registry`]), then a request table ([`request`]), which is held only to insert or
//! remove one waiter.

mod bus;
mod channels;
mod directory;
mod handoff;
mod handover;
mod liveness;
mod request;
mod sequence;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use super::presence::Presence;
use crate::limits::AddressGuard;
use crate::registry::{
    Event, EventId, Joining, Peer, Registry, RegistryError, SendKey, SessionId, Subscription,
    Token, TokenHash,
};
use bus::{Bus, Outcome};
use directory::Directory;
use handover::Handovers;
use request::{Requests, Unanswered};

/// Suffix of the pub/sub channel every instance subscribes to.
pub const BUS: &str = "bus";
/// Suffix (then `:<instance uuid>`) of each instance's own pub/sub channel.
pub const TO: &str = "to";
/// Suffix of the directory hash: session id → entry JSON.
pub const SESSIONS: &str = "sessions";
/// Suffix (then `:<instance uuid>`) of each instance's liveness key.
pub const INSTANCE: &str = "instance";
/// Suffix of the counter that numbers the messages putting an event into every mailbox.
pub const SEQ: &str = "seq";
/// Suffix (then `:<session id>`) of a session's counts: `base`, `own`, `direct`.
pub const COUNTS: &str = "counts";
/// How long an instance's liveness key outlives its last refresh.
pub const LIVENESS: Duration = Duration::from_secs(3);
/// Longest wait for another instance's answer (a direct message, a hand-over).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for a health probe to come back.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// This instance's side of the cluster.
pub(crate) struct Cluster {
    /// The sessions homed here.
    registry: Registry,
    presence: Presence,
    instance: Uuid,
    prefix: String,
    /// Opens the pub/sub connection (a dedicated one, reopened after each loss).
    client: redis::Client,
    /// Commands and PUBLISH; reconnects by itself.
    conn: ConnectionManager,
    directory: Directory,
    /// Direct messages awaiting their home's reply.
    replies: Requests<Outcome>,
    /// Health probes awaiting their own return.
    probes: Requests<()>,
    handovers: Handovers,
    /// Subscribed to the bus and re-registered: healthy.
    subscribed: AtomicBool,
    /// Stopping: its sessions are being handed to the others, and it takes no new ones.
    leaving: AtomicBool,
    /// The number of the last numbered bus message applied here; written under the hand-over
    /// lock (see [`sequence`]).
    applied: AtomicU64,
}

fn unavailable(err: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(err.to_string())
}

/// What an instance that is stopping answers to a new session or stream.
fn leaving() -> RegistryError {
    unavailable("this instance is stopping; retry, another instance will take the request")
}

impl Cluster {
    /// Connects lazily (an unreachable Redis at start is reported, not fatal) and starts the
    /// subscriber and liveness tasks, which end when `shutdown` fires.
    ///
    /// # Errors
    /// When `url` is not a valid Redis URL.
    pub(crate) fn start(
        registry: Registry,
        presence: Presence,
        url: &str,
        prefix: &str,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, RegistryError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)?;
        let instance = Uuid::new_v4();
        let directory = Directory::new(conn.clone(), format!("{prefix}:{SESSIONS}"), instance);
        let cluster = Arc::new(Cluster {
            registry,
            presence,
            instance,
            prefix: prefix.to_owned(),
            client,
            conn,
            directory,
            replies: Requests::default(),
            probes: Requests::default(),
            handovers: Handovers::default(),
            subscribed: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            applied: AtomicU64::new(0),
        });
        info!(instance = %cluster.instance, prefix, "cluster mode");
        tokio::spawn(Arc::clone(&cluster).subscribe(shutdown.clone()));
        tokio::spawn(Arc::clone(&cluster).keep_alive(shutdown));
        Ok(cluster)
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    /// Registers a session here, writes it to the directory, and publishes its join.
    pub(crate) async fn register(
        &self,
        joining: Joining,
        place: AddressGuard,
    ) -> Result<(Peer, Token), RegistryError> {
        if self.leaving.load(Ordering::Relaxed) {
            return Err(leaving());
        }
        let limit = self.registry.settings().max_sessions;
        if self.directory.count().await? >= limit {
            return Err(RegistryError::SessionLimit(limit));
        }
        let may_broadcast = joining.may_broadcast;
        let (peer, token, base) = {
            // No bus message is applied meanwhile: the session gets exactly those after `base`.
            let _bus = self.handovers.lock();
            let (peer, token) = self.registry.register(joining, place)?;
            (peer, token, self.applied())
        };
        let hash = TokenHash::of(&token);
        let counts = (self.counts_key(peer.id), base);
        if let Err(err) = self
            .directory
            .put_new(&peer, may_broadcast, &hash, counts)
            .await
        {
            self.registry.remove(peer.id);
            return Err(err);
        }
        self.publish(&Bus::Join { peer: peer.clone() }).await?;
        Ok((peer, token))
    }

    /// The session `token` proves, here or in the directory.
    pub(crate) async fn authenticate(&self, token: &Token) -> Result<Peer, RegistryError> {
        if let Ok(peer) = self.registry.authenticate(token) {
            return Ok(peer);
        }
        let id = token.session();
        let entry = self
            .directory
            .get(id)
            .await?
            .ok_or(RegistryError::BadToken)?;
        if entry.proves(token) {
            Ok(entry.peer(id))
        } else {
            Err(RegistryError::BadToken)
        }
    }

    /// Whether session `id`, homed on another instance, may broadcast.
    ///
    /// # Errors
    /// `BadToken` when it has left; `Unavailable`.
    pub(crate) async fn may_broadcast(&self, id: SessionId) -> Result<bool, RegistryError> {
        let entry = self.directory.get(id).await?;
        entry
            .map(|entry| entry.may_broadcast)
            .ok_or(RegistryError::BadToken)
    }

    /// Attaches here, first moving the session here if it is homed elsewhere.
    pub(crate) async fn attach(
        self: &Arc<Self>,
        id: SessionId,
        token: &Token,
        last_event_id: Option<EventId>,
    ) -> Result<Subscription, RegistryError> {
        if self.leaving.load(Ordering::Relaxed) {
            return Err(leaving());
        }
        if !self.registry.homes(id) {
            if self.directory.get(id).await?.is_none() {
                return Err(RegistryError::UnknownSession(id));
            }
            if token.session() != id {
                return Err(RegistryError::BadToken);
            }
            self.authenticate(token).await?;
            self.move_here(id, token).await?;
        }
        self.registry.attach(id, token, last_event_id)
    }

    /// Delivers an addressed event here, or asks `to`'s home to.
    pub(crate) async fn deliver(
        &self,
        to: SessionId,
        event: Event,
        key: Option<SendKey>,
    ) -> Result<EventId, RegistryError> {
        if self.registry.homes(to) {
            // Counted first: a crash between the two overcounts a message its sender saw fail.
            self.count_direct(to, 1).await?;
            let delivered = self.registry.deliver_event(to, event.clone(), key.clone());
            if !matches!(delivered, Ok((_, true))) {
                self.uncount(to).await;
            }
            match delivered {
                // It moved away while we counted: its new home takes it.
                Err(RegistryError::UnknownRecipient(_)) => {}
                delivered => return delivered.map(|(id, _)| id),
            }
        }
        let home = self.home_of(to).await?;
        let direct = |req| Bus::Direct {
            req,
            origin: self.instance,
            to,
            event: event.clone(),
            key: key.clone(),
        };
        let answered = match self.deliver_at(home, to, &direct).await {
            // Nobody reads that home's channel: it stopped. One that stopped gracefully handed
            // its sessions off and waited until the directory named their new homes.
            Err(Unanswered::Unpublished(err)) => match self.home_of(to).await? {
                moved if moved != home => self.deliver_at(moved, to, &direct).await,
                _ => return Err(err),
            },
            answered => answered,
        };
        // Counted when published; the home appended nothing. (Unanswered: it may have.)
        if matches!(&answered, Ok(outcome) if !matches!(outcome, Outcome::Delivered(_))) {
            self.uncount(to).await;
        }
        match answered {
            Ok(Outcome::Delivered(id) | Outcome::Repeated(id)) => Ok(id),
            Ok(Outcome::MailboxFull) => Err(RegistryError::MailboxFull {
                retry_after: Duration::from_secs(1),
            }),
            Ok(Outcome::KeyReused) => Err(RegistryError::KeyReused),
            Ok(Outcome::UnknownRecipient) => Err(RegistryError::UnknownRecipient(to)),
            Err(Unanswered::Unpublished(err)) => Err(err),
            Err(Unanswered::TimedOut | Unanswered::Withdrawn) => {
                Err(unavailable("the recipient's instance did not answer"))
            }
        }
    }

    /// The instance session `to` is homed on.
    async fn home_of(&self, to: SessionId) -> Result<Uuid, RegistryError> {
        let entry = self.directory.get(to).await?;
        entry
            .map(|entry| entry.home)
            .ok_or(RegistryError::UnknownRecipient(to))
    }

    /// Sends `home` the direct message for `to` that `direct` makes for a request id, and
    /// waits for its answer.
    async fn deliver_at(
        &self,
        home: Uuid,
        to: SessionId,
        direct: &impl Fn(u64) -> Bus,
    ) -> Result<Outcome, Unanswered> {
        let request = self.replies.open();
        let message = direct(request.id());
        request
            .ask(self.send_counted(home, to, &message), ANSWER_TIMEOUT)
            .await
    }

    /// Publishes a broadcast; returns how many other sessions the cluster holds.
    pub(crate) async fn broadcast(
        &self,
        from: &Peer,
        message: Box<RawValue>,
    ) -> Result<usize, RegistryError> {
        let count = self.directory.count().await?;
        self.publish(&Bus::Broadcast {
            from: from.clone(),
            message,
        })
        .await?;
        Ok(count.saturating_sub(1))
    }

    /// Publishes a server message to every session; returns how many the cluster holds.
    pub(crate) async fn announce(&self, message: Box<RawValue>) -> Result<usize, RegistryError> {
        let count = self.directory.count().await?;
        self.publish(&Bus::Announce { message }).await?;
        Ok(count)
    }

    /// Session `id` as others see it, wherever it is homed.
    pub(crate) async fn peer(&self, id: SessionId) -> Result<Option<Peer>, RegistryError> {
        if let Some(peer) = self.registry.peer(id) {
            return Ok(Some(peer));
        }
        Ok(self.directory.get(id).await?.map(|entry| entry.peer(id)))
    }

    /// Removes `peer` from the directory and publishes its leave (once, by whoever removed it).
    pub(crate) async fn remove(&self, peer: &Peer) -> Result<(), RegistryError> {
        if self
            .directory
            .delete(peer.id, self.counts_key(peer.id))
            .await?
        {
            self.publish(&Bus::Leave { peer: peer.clone() }).await?;
        }
        // Applied here too when our own Leave comes back; removing now ends the stream at once.
        self.registry.remove(peer.id);
        Ok(())
    }

    /// Every session of the cluster.
    pub(crate) async fn list(&self) -> Result<Vec<Peer>, RegistryError> {
        self.directory.peers().await
    }

    /// Proves the whole path: a probe published through Redis must come back to us.
    pub(crate) async fn health(&self) -> Result<(), String> {
        if !self.subscribed.load(Ordering::Relaxed) {
            return Err("not subscribed to the Redis bus (Redis unreachable?)".to_owned());
        }
        let request = self.probes.open();
        let probe = Bus::Probe {
            req: request.id(),
            origin: self.instance,
        };
        match request.ask(self.publish(&probe), PROBE_TIMEOUT).await {
            Ok(()) => Ok(()),
            Err(Unanswered::Unpublished(err)) => Err(err.to_string()),
            Err(Unanswered::TimedOut) => {
                Err("a probe published through Redis did not come back".to_owned())
            }
            Err(Unanswered::Withdrawn) => Err("probe dropped".to_owned()),
        }
    }

    /// Publishes the leave of sessions the reaper removed here.
    pub(crate) fn expired(self: &Arc<Self>, peers: Vec<Peer>) {
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            for peer in peers {
                match cluster
                    .directory
                    .delete(peer.id, cluster.counts_key(peer.id))
                    .await
                {
                    Ok(true) => {
                        if let Err(err) = cluster.publish(&Bus::Leave { peer }).await {
                            warn!(error = %err, "could not announce an expiry");
                        }
                    }
                    Ok(false) => {}
                    Err(err) => warn!(error = %err, "could not remove an expired session"),
                }
            }
        });
    }
}
