//! Dispatch: what each message does here when it comes back on the bus (the messages are in
//! [`wire`](super::wire)).
//!
//! Every message is applied by one task, in the order Redis wrote it to this instance's
//! connection, under the migration lock: a session on its way here sees each message exactly
//! once, either buffered before its mailbox arrives or applied after. Its effect on the
//! sessions homed here is reported to the hub through
//! [`BrokerEvents`](crate::backplane::events::BrokerEvents); the cluster's own traffic
//! (answers, migrations, drains, adoptions) is handled here.

use std::sync::Arc;

use tracing::{debug, error, warn};
use uuid::Uuid;

use super::drain::DRAIN_TIMEOUT;
use super::instance::{Cluster, HOLD};
use super::sequence::{Numbers, Points};
use super::transit::Pulled;
use super::wire::{DRAINED, Message, Outcome, with_sizes};
use crate::identity::{RoomName, SessionId};
use crate::registry::RegistryError;
use crate::registry::lifetime::instant_of_unix_ms;

impl Cluster {
    /// Applies one bus message, in bus order; `numbers` are its numbers if it is numbered (see
    /// [`sequence`](super::sequence)).
    pub(super) fn apply(self: &Arc<Self>, message: Message, numbers: Option<Numbers>) {
        // Held for the whole message, so an arrival completes atomically with respect to it.
        let mut transit = self.migrations.lock();
        if numbers
            .as_ref()
            .is_some_and(|numbers| !self.sequence.advance(numbers))
        {
            return;
        }
        transit.buffer(&message, numbers.as_ref());
        self.peers.apply(&message);
        let mine = |origin: &Uuid| *origin == self.instance;
        match message {
            Message::Reply {
                req,
                origin,
                outcome,
            } if mine(&origin) => {
                self.replies.answer(req, outcome);
            }
            Message::Probe { req, origin } if mine(&origin) => {
                self.probes.answer(req, ());
            }
            Message::Adopted { home, sessions } => {
                // A pull here waiting on the dead home (a pull that timed out keeps waiting
                // for a late answer) would refuse the session's attaches for seconds.
                for orphan in &sessions {
                    if let Some(req) = transit.orphaned(orphan.id) {
                        self.migrations.answer(req, Pulled::NotYet);
                    }
                }
                if mine(&home) {
                    self.adopted(&mut transit, sessions);
                }
            }
            Message::Migrate {
                req,
                origin,
                session,
                rooms,
                points,
            } => {
                if mine(&origin) {
                    transit.seen(session, req);
                } else if self.registry.homes(session)
                    && (transit.is_pinned(session)
                        || !self.reads_rooms_of(session, rooms)
                        || !self.applied_as_far(session, points.as_ref()))
                {
                    // Joining a room, its puller does not read all of its rooms, or (rooms
                    // sharded) this instance has not yet applied what its puller has on
                    // each of them: ask again.
                    self.publish_soon(Message::NotYet { req, origin });
                } else if let Some(snapshot) = self.migrate_away(session, origin) {
                    transit.sent(session, origin);
                    let applied = self.applied_on(&snapshot.rooms);
                    self.publish_soon(Message::Migrated {
                        req,
                        origin,
                        session,
                        snapshot: Box::new(snapshot),
                        applied,
                    });
                } else if transit.is_drained_here(session) {
                    self.publish_soon(Message::NotYet { req, origin });
                }
            }
            Message::Migrated {
                req,
                origin,
                session,
                snapshot,
                applied,
            } if mine(&origin) => {
                if transit.is_handed_here(session) {
                    self.arrive_when_read(&mut transit, *snapshot, applied);
                } else if self.registry.homes(session) {
                    // A retried publish whose first try had landed.
                    debug!(%session, "a session handed here arrived twice; the copy is ignored");
                } else if req == DRAINED {
                    error!(%session, "a session handed off here arrived too late; it is lost");
                } else if !self
                    .migrations
                    .answer(req, Pulled::Snapshot(snapshot, applied))
                {
                    error!(%session, "a session handed over arrived after its asker gave up; it is lost");
                }
            }
            Message::NotYet { req, origin } if mine(&origin) => {
                self.migrations.answer(req, Pulled::NotYet);
            }
            Message::NotComing { origin, session } if mine(&origin) => transit.not_coming(session),
            Message::Prepare {
                req,
                origin,
                session,
                rooms,
            } => self.prepare_for(req, origin, session, rooms),
            Message::Enter {
                ref peer, ref room, ..
            } => {
                transit.entered(peer.id, room);
                self.apply_to(&message, None);
            }
            Message::Drain { from, to, sessions } => {
                if mine(&to) {
                    self.receive_drain(&mut transit, sessions);
                } else if mine(&from) {
                    self.send_away(&mut transit, to, sessions);
                }
            }
            // Not ours, and not on its way here (the arrival's buffer has it): it moved.
            Message::Direct { to, .. } | Message::Refresh { session: to, .. }
                if !self.registry.homes(to) && transit.request(to).is_none() =>
            {
                self.redirect(transit.sent_to(to), message);
            }
            Message::Leave { ref peer, .. } => {
                // A session that leaves on its way here: its puller gets no snapshot.
                if let Some(req) = transit.left(peer.id) {
                    self.migrations.withdraw(req);
                }
                self.registry.remove(peer.id);
                self.apply_to(&message, None);
            }
            message => self.apply_to(&message, None),
        }
    }

    /// Whether an instance reading the channels of `rooms` (`None`: an instance of an older
    /// protocol, which reads room traffic on the bus) reads every room of `session`.
    fn reads_rooms_of(&self, session: SessionId, rooms: Option<Vec<RoomName>>) -> bool {
        let Some(read) = rooms else { return true };
        self.registry
            .rooms_of(session)
            .unwrap_or_default()
            .iter()
            .all(|room| room.is_lobby() || read.contains(room))
    }

    /// Whether this instance applied as far as `points` on each room line of `session` here
    /// (the lines its puller keeps from; none: rooms not sharded).
    fn applied_as_far(&self, session: SessionId, points: Option<&Points>) -> bool {
        let Some(points) = points else { return true };
        let rooms = self.registry.rooms_of(session).unwrap_or_default();
        let its: Points = points
            .iter()
            .filter(|(room, _)| rooms.contains(room))
            .map(|(room, at)| (room.clone(), *at))
            .collect();
        self.sequence.covers(&its)
    }

    /// With rooms sharded, the last number applied here on each line of `rooms`: sent with a
    /// session handed to another instance.
    pub(super) fn applied_on(&self, rooms: &[RoomName]) -> Option<Points> {
        self.keys.is_sharded().then(|| self.sequence.points(rooms))
    }

    /// Answers `origin`'s `prepare` once this instance reads `rooms` (see
    /// [`rooms`](super::rooms)): for `session` joining one, or sessions drained here.
    fn prepare_for(
        self: &Arc<Self>,
        req: u64,
        origin: Uuid,
        session: Option<SessionId>,
        rooms: Vec<RoomName>,
    ) {
        let cluster = Arc::clone(self);
        // Not inline: preparing takes the migration lock, which this message holds.
        tokio::spawn(async move {
            let hold = if session.is_some() {
                HOLD
            } else {
                DRAIN_TIMEOUT
            };
            let outcome = match cluster.prepare_here(session, rooms, hold).await {
                Ok(true) => Outcome::Prepared,
                Ok(false) => Outcome::NotHere,
                Err(err) => {
                    warn!(error = %err, "could not read the channels of rooms asked for");
                    return;
                }
            };
            cluster.publish_soon(Message::Reply {
                req,
                origin,
                outcome,
            });
        });
    }

    /// Sends a direct message (or a refresh) on to the instance its session was sent to, or
    /// answers that the recipient is unknown when it was sent to none.
    fn redirect(self: &Arc<Self>, to: Option<Uuid>, message: Message) {
        let (Message::Direct { req, origin, .. } | Message::Refresh { req, origin, .. }) = message
        else {
            return;
        };
        match to {
            Some(home) => self.publish_soon_to(Some(home), message),
            None => self.publish_soon(Message::Reply {
                req,
                origin,
                outcome: Outcome::UnknownRecipient,
            }),
        }
    }

    /// The effect of a join, leave (of the hub or a room), broadcast or direct message on the
    /// sessions homed here, or only on `only` (replaying an arrival's buffer).
    pub(super) fn apply_to(self: &Arc<Self>, message: &Message, only: Option<SessionId>) {
        let Some(audience) = message.audience() else {
            return;
        };
        if only.is_some_and(|id| !audience.includes(id)) {
            return;
        }
        let events = &self.events;
        match message {
            Message::Join { peer, rooms, sizes } => {
                events.joined(peer, &with_sizes(rooms, sizes), only);
            }
            Message::Leave { peer, rooms, sizes } => {
                events.left(peer, &with_sizes(rooms, sizes), only);
            }
            Message::Enter {
                peer,
                room,
                members,
                roster,
            } => {
                // Its home (or the instance it is arriving at, replaying) puts it in the room.
                if only.is_none_or(|id| id == peer.id)
                    && let Some(entered) = self
                        .registry
                        .enter_rooms(peer.id, std::slice::from_ref(room))
                    && entered.iter().any(|e| e.new)
                {
                    let roster = || roster.clone().unwrap_or_default();
                    events.entered(peer.id, (room, *members), &roster);
                }
                events.joined(peer, &[(room.clone(), *members)], only);
            }
            Message::Exit {
                peer,
                room,
                members,
            } => {
                if only.is_none_or(|id| id == peer.id)
                    && self.registry.leave_room(peer.id, room).is_ok()
                {
                    events.exited(peer.id, room);
                }
                events.left(peer, &[(room.clone(), *members)], only);
            }
            Message::Broadcast {
                from,
                room,
                message,
            } => {
                events.broadcast(from, room, message.clone(), only);
            }
            Message::Announce { room, message } => {
                events.announced(message.clone(), room.as_ref(), only);
            }
            Message::Direct {
                req,
                origin,
                to,
                event,
                key,
            } if self.registry.homes(*to) => {
                let outcome = match events.direct(*to, event.clone(), key.clone()) {
                    Ok((id, true)) => Outcome::Delivered(id),
                    Ok((id, false)) => Outcome::Repeated(id),
                    Err(RegistryError::MailboxFull { .. }) => Outcome::MailboxFull,
                    Err(RegistryError::KeyReused) => Outcome::KeyReused,
                    Err(_) => Outcome::UnknownRecipient,
                };
                self.publish_soon(Message::Reply {
                    req: *req,
                    origin: *origin,
                    outcome,
                });
            }
            Message::Refresh {
                req,
                origin,
                session,
                ends_ms,
                bound,
            } if self.registry.homes(*session) => {
                let ends = instant_of_unix_ms(*ends_ms);
                match self.registry.refresh(*session, ends, *bound) {
                    // Answered once the directory holds the new end.
                    Ok(lifetime) => self.refreshed_for((*req, *origin), *session, lifetime),
                    Err(_) => self.publish_soon(Message::Reply {
                        req: *req,
                        origin: *origin,
                        outcome: Outcome::UnknownRecipient,
                    }),
                }
            }
            _ => {}
        }
    }
}
