//! The bus: what travels on the cluster's channels ([`Bus`]), and what each message does here
//! when it comes back. How it travels is [`channels`](super::channels).
//!
//! Every message is applied by one task, in the order Redis wrote it to this instance's
//! connection, under the hand-over lock: a session being moved here sees each message exactly
//! once, either buffered before its mailbox arrives or applied after.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::{debug, error};
use uuid::Uuid;

use super::Cluster;
use super::handover::{Handed, PUSHED};
use super::sequence::Orphan;
use crate::registry::event::{Broadcast, Scope, ServerMessage};
use crate::registry::{
    Event, EventId, Peer, RegistryError, SendKey, SessionId, Snapshot, TokenHash,
};

/// Everything that travels on the bus.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", content = "body", rename_all = "snake_case")]
pub(super) enum Bus {
    Join {
        peer: Peer,
    },
    Leave {
        peer: Peer,
    },
    Broadcast {
        from: Peer,
        message: Box<RawValue>,
    },
    /// A message from the app's backend to every session (`server_message`).
    Announce {
        message: Box<RawValue>,
    },
    /// An addressed event (a direct message, a server message to a session) for a session
    /// homed elsewhere; its home answers with `Reply`.
    Direct {
        req: u64,
        origin: Uuid,
        to: SessionId,
        event: Event,
        /// The sender's `Idempotency-Key`, if it gave one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<SendKey>,
    },
    Reply {
        req: u64,
        origin: Uuid,
        outcome: Outcome,
    },
    /// `origin` asks the session's home to hand it over; the home answers with `HandedOver`.
    Handover {
        req: u64,
        origin: Uuid,
        session: SessionId,
    },
    /// The answer to `Handover` (`req` its request id), or to `Handoff` (`req` 0).
    HandedOver {
        req: u64,
        origin: Uuid,
        session: SessionId,
        snapshot: Box<Snapshot>,
    },
    /// The answer to `Handover` from the instance the session is being handed off to, before
    /// it arrived there: ask again.
    NotYet {
        req: u64,
        origin: Uuid,
    },
    /// The answer to `Handoff` for a session its sender no longer held (it had moved or left
    /// just before): `origin` stops waiting for it.
    NotComing {
        origin: Uuid,
        session: SessionId,
    },
    /// `from` is stopping and hands `sessions` (with their token hashes) to `to`; `from`
    /// answers each with `HandedOver` once it reads this.
    Handoff {
        from: Uuid,
        to: Uuid,
        sessions: Vec<(SessionId, TokenHash)>,
    },
    /// Written by a script ([`sequence`](super::sequence)): `home` took these sessions of a
    /// dead instance, at this point in the bus's order.
    Adopted {
        home: Uuid,
        sessions: Vec<Orphan>,
    },
    /// Published by `/healthz` and answered by itself coming back.
    Probe {
        req: u64,
        origin: Uuid,
    },
}

/// What the home instance did with a direct message.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Outcome {
    Delivered(EventId),
    /// A retry with the same `Idempotency-Key`: the first one's id, nothing appended.
    Repeated(EventId),
    MailboxFull,
    /// Its `Idempotency-Key` came before with another message.
    KeyReused,
    UnknownRecipient,
}

/// Whose stream a message changes.
#[derive(Clone, Copy)]
enum Audience {
    All,
    AllBut(SessionId),
    Only(SessionId),
}

impl Audience {
    fn includes(self, session: SessionId) -> bool {
        match self {
            Audience::All => true,
            Audience::AllBut(id) => id != session,
            Audience::Only(id) => id == session,
        }
    }
}

impl Bus {
    /// Whose stream this message changes; `None` for the cluster's own traffic. Both applying
    /// a message and buffering it for a session on the move go by this one answer.
    fn audience(&self) -> Option<Audience> {
        match self {
            Bus::Join { peer } | Bus::Leave { peer } => Some(Audience::AllBut(peer.id)),
            Bus::Broadcast { from, .. } => Some(Audience::AllBut(from.id)),
            Bus::Announce { .. } => Some(Audience::All),
            Bus::Direct { to, .. } => Some(Audience::Only(*to)),
            _ => None,
        }
    }

    /// Whether this message changes what `session`'s stream receives.
    pub(super) fn concerns(&self, session: SessionId) -> bool {
        self.audience().is_some_and(|a| a.includes(session))
    }

    /// The one instance an answer is for (its asker); `None` for what every instance reads.
    pub(super) fn answers(&self) -> Option<Uuid> {
        match self {
            Bus::Reply { origin, .. }
            | Bus::HandedOver { origin, .. }
            | Bus::NotYet { origin, .. }
            | Bus::NotComing { origin, .. }
            | Bus::Probe { origin, .. } => Some(*origin),
            _ => None,
        }
    }
}

impl Cluster {
    /// Applies one bus message, in bus order; `seq` is its number if it is numbered (see
    /// [`sequence`](super::sequence)).
    pub(super) fn apply(self: &Arc<Self>, message: Bus, seq: Option<u64>) {
        // Held for the whole message, so a hand-over completes atomically with respect to it.
        let mut moving = self.handovers.lock();
        if seq.is_some_and(|seq| !self.advance(seq)) {
            return;
        }
        moving.buffer(&message);
        let mine = |origin: &Uuid| *origin == self.instance;
        match message {
            Bus::Reply {
                req,
                origin,
                outcome,
            } if mine(&origin) => {
                self.replies.answer(req, outcome);
            }
            Bus::Probe { req, origin } if mine(&origin) => {
                self.probes.answer(req, ());
            }
            Bus::Adopted { home, sessions } => {
                let ids: Vec<SessionId> = sessions.iter().map(Orphan::id).collect();
                if mine(&home) {
                    self.adopted(sessions);
                }
                // A move here waiting on the dead home (a pull that timed out keeps waiting
                // for a late answer) would refuse the session's attaches for seconds.
                for id in ids {
                    if let Some(req) = moving.orphaned(id) {
                        self.handovers.arrived(req, Handed::NotYet);
                    }
                }
            }
            Bus::Handover {
                req,
                origin,
                session,
            } => {
                if mine(&origin) {
                    moving.seen(session, req);
                } else if let Some(snapshot) = self.hand_over(session, origin) {
                    moving.moved(session, origin);
                    self.publish_soon(Bus::HandedOver {
                        req,
                        origin,
                        session,
                        snapshot: Box::new(snapshot),
                    });
                } else if moving.is_pushed(session) {
                    self.publish_soon(Bus::NotYet { req, origin });
                }
            }
            Bus::HandedOver {
                req,
                origin,
                session,
                snapshot,
            } if mine(&origin) => match moving.pushed(session) {
                Some((hash, buffer, asked)) => self.adopt(*snapshot, hash, buffer, asked),
                // A retried publish whose first try had landed.
                None if self.registry.homes(session) => {
                    debug!(%session, "a session handed here arrived twice; the copy is ignored");
                }
                None if req == PUSHED => {
                    error!(%session, "a session handed off here arrived too late; it is lost");
                }
                None if !self.handovers.arrived(req, Handed::Snapshot(snapshot)) => {
                    error!(%session, "a session handed over arrived after its asker gave up; it is lost");
                }
                None => {}
            },
            Bus::NotYet { req, origin } if mine(&origin) => {
                self.handovers.arrived(req, Handed::NotYet);
            }
            Bus::NotComing { origin, session } if mine(&origin) => moving.not_coming(session),
            Bus::Handoff { from, to, sessions } => {
                if mine(&to) {
                    self.expect(&mut moving, sessions);
                } else if mine(&from) {
                    self.hand_away(&mut moving, to, sessions);
                }
            }
            // Not ours, and not on its way here (the move's buffer has it): its home moved.
            Bus::Direct { to, .. } if !self.registry.homes(to) && moving.request(to).is_none() => {
                self.redirect(moving.moved_to(to), message);
            }
            Bus::Leave { ref peer } => {
                // A session that leaves while moving here: its mover gets no snapshot.
                if let Some(req) = moving.left(peer.id) {
                    self.handovers.withdraw(req);
                }
                self.registry.remove(peer.id);
                self.apply_to(&message, None);
            }
            message => self.apply_to(&message, None),
        }
    }

    /// Sends a direct message on to the instance its session was handed to, or answers that
    /// the recipient is unknown when it was handed to none.
    fn redirect(self: &Arc<Self>, to: Option<Uuid>, message: Bus) {
        let Bus::Direct { req, origin, .. } = message else {
            return;
        };
        match to {
            Some(home) => self.publish_soon_to(Some(home), message),
            None => self.publish_soon(Bus::Reply {
                req,
                origin,
                outcome: Outcome::UnknownRecipient,
            }),
        }
    }

    /// The effect of a join, leave, broadcast or direct message on the sessions homed here, or
    /// only on `only` (replaying a hand-over's buffer).
    pub(super) fn apply_to(self: &Arc<Self>, message: &Bus, only: Option<SessionId>) {
        let Some(audience) = message.audience() else {
            return;
        };
        if only.is_some_and(|id| !audience.includes(id)) {
            return;
        }
        match message {
            Bus::Join { peer } => self.presence.joined(&self.registry, peer, only),
            Bus::Leave { peer } => self.presence.left(&self.registry, peer, only),
            Bus::Broadcast { from, message } => {
                let event = Event::ClientBroadcast(Broadcast {
                    from: from.id,
                    from_name: from.name.clone(),
                    message: message.clone(),
                });
                self.registry.fan_out(event, Some(from.id), only);
            }
            Bus::Announce { message } => {
                let event = Event::ServerMessage(ServerMessage {
                    to: Scope::Everyone,
                    message: message.clone(),
                });
                self.registry.fan_out(event, None, only);
            }
            Bus::Direct {
                req,
                origin,
                to,
                event,
                key,
            } if self.registry.homes(*to) => {
                let outcome = match self.registry.deliver_event(*to, event.clone(), key.clone()) {
                    Ok((id, true)) => Outcome::Delivered(id),
                    Ok((id, false)) => Outcome::Repeated(id),
                    Err(RegistryError::MailboxFull { .. }) => Outcome::MailboxFull,
                    Err(RegistryError::KeyReused) => Outcome::KeyReused,
                    Err(_) => Outcome::UnknownRecipient,
                };
                self.publish_soon(Bus::Reply {
                    req: *req,
                    origin: *origin,
                    outcome,
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::DisplayName;

    fn ann() -> Peer {
        Peer {
            id: SessionId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap(),
            name: DisplayName::parse("ann").unwrap(),
            user: Some("user-7".into()),
        }
    }

    #[test]
    fn bus_messages_round_trip_with_raw_json_inside() {
        let peer = ann();
        let message = Bus::Broadcast {
            from: peer.clone(),
            message: RawValue::from_string(r#"{"a": [1, 2]}"#.into()).unwrap(),
        };
        let json = serde_json::to_string(&message).unwrap();
        let Bus::Broadcast { from, message } = serde_json::from_str(&json).unwrap() else {
            panic!("wrong variant from {json}");
        };
        assert_eq!(from.id, peer.id);
        assert_eq!(message.get(), r#"{"a": [1, 2]}"#);

        let snapshot = Snapshot {
            peer: peer.clone(),
            may_broadcast: false,
            last_id: 3,
            delivered: 1,
            events: vec![(3, Event::UserLeft(peer))],
            sent: Default::default(),
        };
        let json = serde_json::to_string(&Bus::HandedOver {
            req: 1,
            origin: Uuid::nil(),
            session: snapshot.peer.id,
            snapshot: Box::new(snapshot),
        })
        .unwrap();
        let Bus::HandedOver { snapshot, .. } = serde_json::from_str(&json).unwrap() else {
            panic!("wrong variant from {json}");
        };
        assert_eq!(snapshot.events[0].0, 3);
        assert!(
            !snapshot.may_broadcast,
            "the permission travels with the session"
        );
        assert_eq!(snapshot.peer.user.as_deref(), Some("user-7"));
    }

    #[test]
    fn messages_concern_their_audience_only() {
        let ann = ann();
        let bob = SessionId::parse("0b7e5d2c-1d9e-4b8f-9a77-3f2a1c4e5d6f").unwrap();
        let join = Bus::Join { peer: ann.clone() };
        assert!(join.concerns(bob) && !join.concerns(ann.id));
        let direct = Bus::Direct {
            req: 1,
            origin: Uuid::nil(),
            to: bob,
            event: Event::direct(&ann, bob, RawValue::from_string("1".into()).unwrap()),
            key: None,
        };
        assert!(direct.concerns(bob) && !direct.concerns(ann.id));
        let announce = Bus::Announce {
            message: RawValue::from_string("1".into()).unwrap(),
        };
        assert!(announce.concerns(bob) && announce.concerns(ann.id));
        let probe = Bus::Probe {
            req: 1,
            origin: Uuid::nil(),
        };
        assert!(!probe.concerns(bob));
    }
}
