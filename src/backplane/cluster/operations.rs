//! The broker operations the hub calls, in cluster mode: each is made of the registry here,
//! the directory, and messages on the channels.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::value::RawValue;
use tracing::warn;
use uuid::Uuid;

use super::instance::{ANSWER_TIMEOUT, Cluster, HOLD, PROBE_TIMEOUT};
use super::keys::unavailable;
use super::request::Unanswered;
use super::wire::{Message, Outcome};
use crate::identity::{RoomName, SessionId, Token};
use crate::limits::AddressGuard;
use crate::registry::{
    Departure, Event, EventId, Joining, Peer, RegistryError, SendKey, Subscription,
};

/// Which of the two a presence message says.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Presence {
    Join,
    Leave,
}

/// What an instance that is stopping answers to a new session or stream.
fn leaving() -> RegistryError {
    unavailable("this instance is stopping; retry, another instance will take the request")
}

impl Cluster {
    /// Registers a session here in `rooms`, writes it to the directory, and publishes its
    /// join.
    pub(crate) async fn register(
        &self,
        joining: Joining,
        rooms: Vec<RoomName>,
        place: AddressGuard,
    ) -> Result<(Peer, Token), RegistryError> {
        if self.liveness.is_leaving() {
            return Err(leaving());
        }
        let limit = self.registry.settings().max_sessions;
        if self.directory.count().await? >= limit {
            return Err(RegistryError::SessionLimit(limit));
        }
        self.check_room_limit(&rooms).await?;
        // Read before the join is published: the session misses nothing of its rooms.
        self.subscriptions.ensure(&rooms, HOLD).await?;
        let (peer, token, starts) = {
            // No message is applied meanwhile: the session gets exactly those after `starts`.
            let _bus = self.migrations.lock();
            let (peer, token) = self.registry.register(joining, place)?;
            if let Err(err) = self.registry.join_rooms(peer.id, &rooms) {
                self.registry.remove(peer.id);
                return Err(err);
            }
            (peer, token, self.sequence.starts(&rooms))
        };
        let written = match self.registry.homed_one(peer.id) {
            Some(homed) => {
                let in_rooms = self.sequence.start_in_rooms(peer.id, &starts.rooms).await;
                let counts = (self.keys.counts(peer.id), starts.counts);
                match in_rooms {
                    Ok(()) => self.directory.put_new(&homed, counts).await,
                    Err(err) => Err(err),
                }
            }
            None => Err(RegistryError::BadToken), // gone already (a DELETE with its token)
        };
        if let Err(err) = written {
            self.registry.remove(peer.id);
            return Err(err);
        }
        self.publish_presence(Presence::Join, peer.clone(), rooms, None)
            .await?;
        Ok((peer, token))
    }

    /// The session `token` proves, here or in the directory.
    pub(crate) async fn authenticate(&self, token: &Token) -> Result<Peer, RegistryError> {
        match self.registry.authenticate(token) {
            // Ended here at its lifetime: only this instance knows why.
            Ok(_) | Err(RegistryError::SessionExpired(_)) => {
                return self.registry.authenticate(token);
            }
            Err(_) => {}
        }
        let id = token.session();
        let Some(entry) = self.directory.get(id).await? else {
            return Err(self.gone(token, RegistryError::BadToken).await);
        };
        if !entry.proves(token) {
            return Err(RegistryError::BadToken);
        }
        // Its end passed: its home (or the survivor adopting it) is ending it now.
        if let Some(bound) = entry.ended() {
            return Err(RegistryError::SessionExpired(bound));
        }
        Ok(entry.peer(id))
    }

    /// Whether session `id`, wherever it is homed, may broadcast.
    ///
    /// # Errors
    /// `BadToken` when it has left; `Unavailable`.
    pub(crate) async fn may_broadcast(&self, id: SessionId) -> Result<bool, RegistryError> {
        if let Some(here) = self.registry.may_broadcast(id) {
            return Ok(here);
        }
        let entry = self.directory.get(id).await?;
        entry
            .map(|entry| entry.may_broadcast)
            .ok_or(RegistryError::BadToken)
    }

    /// Attaches here, first migrating the session here if it is homed elsewhere.
    pub(crate) async fn attach(
        self: &Arc<Self>,
        id: SessionId,
        token: &Token,
        last_event_id: Option<EventId>,
    ) -> Result<Subscription, RegistryError> {
        if self.liveness.is_leaving() {
            return Err(leaving());
        }
        if !self.registry.homes(id) {
            let Some(entry) = self.directory.get(id).await? else {
                let missing = RegistryError::UnknownSession(id);
                return Err(if token.session() == id {
                    self.gone(token, missing).await
                } else {
                    self.unknown(missing).await
                });
            };
            if token.session() != id {
                return Err(RegistryError::BadToken);
            }
            self.authenticate(token).await?;
            self.reachable(id, entry.home).await?;
            self.migrate_here(id, token).await?;
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
            // Not between a lost subscription and the re-registration after it: a survivor
            // may have adopted the session meanwhile, and the copy here is about to go.
            if !self.subscribed.load(Ordering::Relaxed) {
                return Err(unavailable(
                    "this instance is reconnecting to Redis; retry, the session may live elsewhere now",
                ));
            }
            // Counted first: a crash between the two overcounts a message its sender saw fail.
            self.sequence.count_direct(to, 1).await?;
            let delivered = self.events.direct(to, event.clone(), key.clone());
            if !matches!(delivered, Ok((_, true))) {
                self.sequence.uncount(to).await;
            }
            match delivered {
                // It moved away while we counted: its new home takes it.
                Err(RegistryError::UnknownRecipient(_)) => {}
                delivered => return delivered.map(|(id, _)| id),
            }
        }
        let home = self.home_of(to).await?;
        let direct = |req| Message::Direct {
            req,
            origin: self.instance,
            to,
            event: event.clone(),
            key: key.clone(),
        };
        let answered = match self.deliver_at(home, to, &direct).await {
            // Nobody reads that home's channel: it stopped. One that stopped gracefully drained
            // its sessions and waited until the directory named their new homes.
            Err(Unanswered::Unpublished(err)) => match self.home_of(to).await? {
                moved if moved != home => self.deliver_at(moved, to, &direct).await,
                _ => return Err(err),
            },
            answered => answered,
        };
        // Counted when published; the home appended nothing. (Unanswered: it may have.)
        if matches!(&answered, Ok(outcome) if !matches!(outcome, Outcome::Delivered(_))) {
            self.sequence.uncount(to).await;
        }
        match answered {
            Ok(Outcome::Delivered(id) | Outcome::Repeated(id)) => Ok(id),
            Ok(Outcome::MailboxFull) => Err(RegistryError::MailboxFull {
                retry_after: Duration::from_secs(1),
            }),
            Ok(Outcome::KeyReused) => Err(RegistryError::KeyReused),
            Ok(Outcome::UnknownRecipient) => Err(RegistryError::UnknownRecipient(to)),
            // (`Refreshed` answers a refresh, `Prepared` and `NotHere` a prepare, never a
            // direct message.)
            Ok(Outcome::Refreshed(_) | Outcome::Prepared | Outcome::NotHere) => Err(unavailable(
                "the recipient's instance answered something else",
            )),
            Err(Unanswered::Unpublished(err)) => Err(err),
            Err(Unanswered::TimedOut | Unanswered::Withdrawn) => {
                Err(unavailable("the recipient's instance did not answer"))
            }
        }
    }

    /// The instance session `to` is homed on.
    async fn home_of(&self, to: SessionId) -> Result<Uuid, RegistryError> {
        match self.directory.get(to).await? {
            Some(entry) => Ok(entry.home),
            None => Err(self.unknown(RegistryError::UnknownRecipient(to)).await),
        }
    }

    /// Sends `home` the direct message for `to` that `direct` makes for a request id, and
    /// waits for its answer.
    async fn deliver_at(
        &self,
        home: Uuid,
        to: SessionId,
        direct: &impl Fn(u64) -> Message,
    ) -> Result<Outcome, Unanswered> {
        let request = self.replies.open();
        let message = direct(request.id());
        request
            .ask(self.send_counted(home, to, &message), ANSWER_TIMEOUT)
            .await
    }

    /// Publishes a broadcast into `room`; returns how many other members it has.
    pub(crate) async fn broadcast(
        &self,
        from: &Peer,
        room: RoomName,
        message: Box<RawValue>,
    ) -> Result<usize, RegistryError> {
        // With rooms sharded the room's own slot counts its members as it numbers the
        // broadcast: nothing is read in the deployment's slot.
        let known = if self.keys.starts(&room).is_some() {
            None
        } else {
            Some(self.directory.room_size(&room).await?)
        };
        let published = self
            .publish_counting(&Message::Broadcast {
                from: from.clone(),
                room,
                message,
            })
            .await?;
        let count = known.or(published).unwrap_or_default();
        Ok(count.saturating_sub(1))
    }

    /// Publishes a server message to every session, or every member of `room`; returns how
    /// many there are.
    pub(crate) async fn announce(
        &self,
        message: Box<RawValue>,
        room: Option<RoomName>,
    ) -> Result<usize, RegistryError> {
        let count = match &room {
            Some(room) => self.directory.room_size(room).await?,
            None => self.directory.count().await?,
        };
        self.publish(&Message::Announce { room, message }).await?;
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
        let left = self.sequence.rooms_left(peer.id).await?;
        if let Some((rooms, home)) = self
            .directory
            .delete(peer.id, self.keys.counts(peer.id))
            .await?
        {
            self.forget_starts(peer.id, &rooms, left).await;
            self.publish_presence(Presence::Leave, peer.clone(), rooms, home)
                .await?;
        }
        // Applied here too when our own Leave comes back; removing now ends the stream at once.
        self.registry.remove(peer.id);
        Ok(())
    }

    /// With rooms sharded, removes session `id`, gone from the directory, from the hashes of
    /// the rooms it was `in` and those it `left`.
    async fn forget_starts(&self, id: SessionId, rooms: &[RoomName], mut left: Vec<RoomName>) {
        left.extend(rooms.iter().cloned());
        self.sequence.forget(id, &left).await;
    }

    /// Publishes that `peer` joined or left the hub, in `rooms`: one message per room, on its
    /// channel, so that only the instances with members there read it. A leave also goes to
    /// the session's `home`, which must let it go even if it reads none of those channels
    /// (the directory may have missed a room change, see [`directory`](super::directory)),
    /// or on the bus when it was in no room. While the cluster is mixed, one message on the
    /// bus names every room, as older instances expect.
    async fn publish_presence(
        &self,
        presence: Presence,
        peer: Peer,
        rooms: Vec<RoomName>,
        home: Option<Uuid>,
    ) -> Result<(), RegistryError> {
        let sizes = self.sizes(&rooms).await?;
        let message = |rooms, sizes| match presence {
            Presence::Join => Message::Join {
                peer: peer.clone(),
                rooms,
                sizes,
            },
            Presence::Leave => Message::Leave {
                peer: peer.clone(),
                rooms,
                sizes,
            },
        };
        // Known here at once: a join's own `ready` follows, perhaps before it comes back.
        self.peers.apply(&message(rooms.clone(), sizes.clone()));
        if self.mixed() || (rooms.is_empty() && presence == Presence::Leave) {
            return self.publish(&message(rooms, sizes)).await;
        }
        for (room, size) in rooms.into_iter().zip(sizes) {
            self.publish(&message(vec![room], vec![size])).await?;
        }
        if presence == Presence::Leave
            && let Some(home) = home.filter(|home| *home != self.instance)
        {
            // Not there (gone): nobody holds the session any more.
            let _ = self.send(home, &message(Vec::new(), Vec::new())).await;
        }
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
        if let Some(disagreement) = self.liveness.disagreement() {
            return Err(disagreement);
        }
        let request = self.probes.open();
        let probe = Message::Probe {
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
    pub(crate) fn expired(self: &Arc<Self>, departed: Vec<Departure>) {
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            for Departure { peer, rooms } in departed {
                // Remembered before the entry goes, so that no instance finds neither.
                if let Some((hash, bound)) = cluster.registry.ended(peer.id)
                    && let Err(err) = cluster.ended.record(peer.id, &hash, bound).await
                {
                    warn!(error = %err, "could not tell the other instances of an expiry");
                }
                let left = match cluster.sequence.rooms_left(peer.id).await {
                    Ok(left) => left,
                    Err(err) => {
                        warn!(error = %err, "could not remove an expired session");
                        continue;
                    }
                };
                match cluster
                    .directory
                    .delete(peer.id, cluster.keys.counts(peer.id))
                    .await
                {
                    Ok(Some((in_rooms, _))) => {
                        cluster.forget_starts(peer.id, &in_rooms, left).await;
                        let leave = cluster.publish_presence(Presence::Leave, peer, rooms, None);
                        if let Err(err) = leave.await {
                            warn!(error = %err, "could not announce an expiry");
                        }
                    }
                    Ok(None) => {}
                    Err(err) => warn!(error = %err, "could not remove an expired session"),
                }
            }
        });
    }
}
