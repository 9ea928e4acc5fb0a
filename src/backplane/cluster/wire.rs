//! The wire: every message instances send each other ([`Message`]), as JSON on the channels
//! (see [`keys`](super::keys)), and what a message says about whose stream it changes.
//!
//! The JSON is the contract between versions during a rolling deploy: a variant's tag and its
//! fields keep their names (`handover`, `handed_over`, `handoff` predate the words *migrate* and
//! *drain*), and a field an older instance does not know must be one it can ignore. Every
//! message says which protocol wrote it (`"v"`, first after a numbered message's `"seq"`;
//! absent: protocol 1, before room channels). A reader takes what it knows of a message from a
//! newer protocol and ignores the rest; a kind it does not know at all is ignored. Either is
//! logged once and counted ([`read`]), never an error that ends the subscription
//! ([`protocol`](super::protocol)).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::directory::Entry;
use super::protocol::PROTOCOL;
use super::sequence::Points;
use crate::identity::{RoomName, SessionId, TokenHash};
use crate::registry::lifetime::Bound;
use crate::registry::{Event, EventId, Peer, SendKey, Snapshot};

/// Everything instances send each other.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", content = "body", rename_all = "snake_case")]
pub(super) enum Message {
    /// A new session, in `rooms` (each of `sizes` members now).
    Join {
        peer: Peer,
        #[serde(default = "in_lobby")]
        rooms: Vec<RoomName>,
        #[serde(default)]
        sizes: Vec<usize>,
    },
    /// A session left the hub, and with it `rooms` (each of `sizes` members now).
    Leave {
        peer: Peer,
        #[serde(default = "in_lobby")]
        rooms: Vec<RoomName>,
        #[serde(default)]
        sizes: Vec<usize>,
    },
    /// `peer` joined `room`, of `members` now: its home appends `joined` with `roster` (absent
    /// for a room above the presence limit), the other members hear `new_user`.
    Enter {
        peer: Peer,
        room: RoomName,
        members: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        roster: Option<Vec<Peer>>,
    },
    /// `peer` left `room`, of `members` now: its home appends `left`, the other members hear
    /// `user_left`.
    Exit {
        peer: Peer,
        room: RoomName,
        members: usize,
    },
    Broadcast {
        from: Peer,
        #[serde(default = "RoomName::lobby")]
        room: RoomName,
        message: Box<RawValue>,
    },
    /// A message from the app's backend to every session, or every member of `room`
    /// (`server_message`).
    Announce {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<RoomName>,
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
    /// `origin` asks the session's home to let it migrate there; the home answers with
    /// `Migrated`.
    /// `rooms`: the room channels `origin` reads for the session (protocol 2); its home lets it
    /// go only when they cover the session's rooms, else answers `NotYet`.
    #[serde(rename = "handover")]
    Migrate {
        req: u64,
        origin: Uuid,
        session: SessionId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rooms: Option<Vec<RoomName>>,
        /// With rooms sharded: where `origin` started buffering each room line of the session
        /// (its last number applied there). The home lets the session go only once it has
        /// applied as far on each, else answers `NotYet` (see [`transit`](super::transit)).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        points: Option<Points>,
    },
    /// `origin` asks its receiver to read `rooms`' channels (answered `Reply` `Prepared` once
    /// it does): before a session joins one of them there (then `session` is that session, and
    /// its receiver keeps it from migrating until it reads the session's `Enter`, or answers
    /// `NotHere`), or before sessions in them are drained there. Protocol 2.
    Prepare {
        req: u64,
        origin: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<SessionId>,
        rooms: Vec<RoomName>,
    },
    /// The session itself, for `origin`: the answer to `Migrate` (`req` its request id), or a
    /// session drained to `origin` (`req` [`DRAINED`]).
    #[serde(rename = "handed_over")]
    Migrated {
        req: u64,
        origin: Uuid,
        session: SessionId,
        snapshot: Box<Snapshot>,
        /// With rooms sharded: the last number its old home applied on each room line of the
        /// session; its receiver applies what it buffered of each room after that.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        applied: Option<Points>,
    },
    /// The answer to `Migrate` from the instance the session is being drained to, before it
    /// arrived there: ask again.
    NotYet { req: u64, origin: Uuid },
    /// The answer to `Drain` for a session its sender no longer held (it had migrated or left
    /// just before): `origin` stops waiting for it.
    NotComing { origin: Uuid, session: SessionId },
    /// `from` is stopping and drains `sessions` (with their token hashes) to `to`; `from`
    /// sends each as `Migrated` once it reads this.
    #[serde(rename = "handoff")]
    Drain {
        from: Uuid,
        to: Uuid,
        sessions: Vec<(SessionId, TokenHash)>,
    },
    /// Written by a script ([`sequence`](super::sequence)): `home` took these sessions of a
    /// dead instance, at this point in the bus's order.
    Adopted { home: Uuid, sessions: Vec<Orphan> },
    /// Published by `/healthz` and answered by itself coming back.
    Probe { req: u64, origin: Uuid },
    /// Moves the end of `session`'s lifetime to `ends_ms` (Unix milliseconds), set by
    /// `bound`; sent to its home, which answers with `Reply` (`refreshed`).
    Refresh {
        req: u64,
        origin: Uuid,
        session: SessionId,
        ends_ms: u64,
        bound: Bound,
    },
}

/// What missing `rooms` mean: a message from before rooms, when everyone was in one.
fn in_lobby() -> Vec<RoomName> {
    vec![RoomName::lobby()]
}

/// Each room with its size; a size a message does not carry is 0.
pub(super) fn with_sizes(rooms: &[RoomName], sizes: &[usize]) -> Vec<(RoomName, usize)> {
    rooms
        .iter()
        .enumerate()
        .map(|(n, room)| (room.clone(), sizes.get(n).copied().unwrap_or(0)))
        .collect()
}

/// The request id in a `Migrated` that nobody asked for: a session drained to its receiver.
pub(super) const DRAINED: u64 = 0;

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
    /// The answer to `Prepare`: reading the rooms' channels.
    Prepared,
    /// The answer to `Prepare`: the session is not homed here (it moved).
    NotHere,
    /// The answer to `Refresh`: the session now ends then (Unix milliseconds).
    Refreshed(u64),
}

/// A session of a dead instance, as `adopted` carries it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Orphan {
    pub(super) id: SessionId,
    /// How many events it was given, -1 when its counts were missing.
    pub(super) total: i64,
    pub(super) entry: Entry,
    /// With rooms sharded: the rooms it left, whose hashes keep what they gave it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) left: Vec<RoomName>,
}

/// Whose stream a message changes.
#[derive(Clone, Copy)]
pub(super) enum Audience {
    All,
    AllBut(SessionId),
    Only(SessionId),
}

impl Audience {
    pub(super) fn includes(self, session: SessionId) -> bool {
        match self {
            Audience::All => true,
            Audience::AllBut(id) => id != session,
            Audience::Only(id) => id == session,
        }
    }
}

impl Message {
    /// Whose stream this message changes; `None` for the cluster's own traffic. Both applying
    /// a message and buffering it for a session on its way here go by this one answer.
    pub(super) fn audience(&self) -> Option<Audience> {
        match self {
            Message::Join { peer, .. } | Message::Leave { peer, .. } => {
                Some(Audience::AllBut(peer.id))
            }
            // The session itself hears `joined` or `left`, the others of the room of it.
            Message::Enter { .. } | Message::Exit { .. } => Some(Audience::All),
            Message::Broadcast { from, .. } => Some(Audience::AllBut(from.id)),
            Message::Announce { .. } => Some(Audience::All),
            Message::Direct { to, .. } => Some(Audience::Only(*to)),
            // Its own stream hears of it later (`refresh_required`, `expired`), from its home.
            Message::Refresh { session, .. } => Some(Audience::Only(*session)),
            _ => None,
        }
    }

    /// Whether this message changes what `session`'s stream receives.
    pub(super) fn concerns(&self, session: SessionId) -> bool {
        self.audience().is_some_and(|a| a.includes(session))
    }

    /// The one room this message is the traffic of, if it is: it travels on that room's
    /// channel. A join or leave is one room's when it names one room only (they are published
    /// a room at a time, but while the cluster is mixed).
    pub(super) fn room(&self) -> Option<&RoomName> {
        match self {
            Message::Join { rooms, .. } | Message::Leave { rooms, .. } if rooms.len() == 1 => {
                rooms.first()
            }
            Message::Enter { room, .. }
            | Message::Exit { room, .. }
            | Message::Broadcast { room, .. } => Some(room),
            Message::Announce { room, .. } => room.as_ref(),
            _ => None,
        }
    }

    /// The one instance an answer is for (its asker); `None` for what every instance reads.
    pub(super) fn answers(&self) -> Option<Uuid> {
        match self {
            Message::Reply { origin, .. }
            | Message::Migrated { origin, .. }
            | Message::NotYet { origin, .. }
            | Message::NotComing { origin, .. }
            | Message::Probe { origin, .. } => Some(*origin),
            _ => None,
        }
    }

    /// The JSON that travels, its protocol first.
    pub(super) fn to_json(&self) -> String {
        let json = serde_json::to_string(self).expect("bus messages serialise");
        format!(r#"{{"v":{PROTOCOL},{}"#, &json[1..])
    }
}

/// The number of a numbered message (its first key, `"seq"`), if it is one (see
/// [`sequence`](super::sequence)).
pub(super) fn seq_of(payload: &[u8]) -> Option<u64> {
    number(payload.strip_prefix(br#"{"seq":"#)?)
}

/// The number of a server message to everyone on the everyone line (`"all"`, right after a
/// numbered message's `"v"`), if it has one (see [`sequence`](super::sequence)).
pub(super) fn all_of(payload: &[u8]) -> Option<u64> {
    let after = |rest: &[u8]| rest.iter().position(|b| *b == b',').map(|end| end + 1);
    let rest = payload.strip_prefix(br#"{"seq":"#)?;
    let rest = rest[after(rest)?..].strip_prefix(br#""v":"#)?;
    number(rest[after(rest)?..].strip_prefix(br#""all":"#)?)
}

/// The number `text` starts with, ended by a non-digit.
fn number(text: &[u8]) -> Option<u64> {
    let end = text.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&text[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DisplayName;

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
        let message = Message::Broadcast {
            from: peer.clone(),
            room: RoomName::parse("dev").unwrap(),
            message: RawValue::from_string(r#"{"a": [1, 2]}"#.into()).unwrap(),
        };
        let json = message.to_json();
        let Message::Broadcast {
            from,
            room,
            message,
        } = serde_json::from_str(&json).unwrap()
        else {
            panic!("wrong variant from {json}");
        };
        assert_eq!((from.id, room.as_str()), (peer.id, "dev"));
        assert_eq!(message.get(), r#"{"a": [1, 2]}"#);

        let snapshot = Snapshot {
            peer: peer.clone(),
            may_broadcast: false,
            rooms: vec![RoomName::lobby()],
            may_join: None,
            last_id: 3,
            delivered: 1,
            events: vec![(
                3,
                Event::UserLeft(crate::registry::event::Member {
                    peer,
                    room: RoomName::lobby(),
                }),
            )],
            sent: Default::default(),
            lifetime: None,
        };
        let json = Message::Migrated {
            req: 1,
            origin: Uuid::nil(),
            session: snapshot.peer.id,
            snapshot: Box::new(snapshot),
            applied: None,
        }
        .to_json();
        assert!(
            json.starts_with(r#"{"v":3,"type":"handed_over","#),
            "{json}"
        );
        let Message::Migrated { snapshot, .. } = serde_json::from_str(&json).unwrap() else {
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
        let join = Message::Join {
            peer: ann.clone(),
            rooms: vec![RoomName::lobby()],
            sizes: vec![2],
        };
        assert!(join.concerns(bob) && !join.concerns(ann.id));
        let direct = Message::Direct {
            req: 1,
            origin: Uuid::nil(),
            to: bob,
            event: Event::direct(&ann, bob, RawValue::from_string("1".into()).unwrap()),
            key: None,
        };
        assert!(direct.concerns(bob) && !direct.concerns(ann.id));
        let announce = Message::Announce {
            room: None,
            message: RawValue::from_string("1".into()).unwrap(),
        };
        assert!(announce.concerns(bob) && announce.concerns(ann.id));
        let probe = Message::Probe {
            req: 1,
            origin: Uuid::nil(),
        };
        assert!(!probe.concerns(bob));
    }

    #[test]
    fn a_numbered_message_is_a_bus_message_with_its_number_first() {
        let numbered = br#"{"seq":42,"type":"announce","body":{"message":[1]}}"#;
        assert_eq!(seq_of(numbered), Some(42));
        let Ok(Message::Announce {
            message,
            room: None,
        }) = serde_json::from_slice::<Message>(numbered)
        else {
            panic!("an instance that does not know the number still reads the message");
        };
        assert_eq!(message.get(), "[1]");
        assert_eq!(seq_of(br#"{"type":"probe","body":{}}"#), None);
        assert_eq!(seq_of(br#"{"seq":x}"#), None);
        assert_eq!(seq_of(b""), None);
        let everyone = br#"{"seq":7,"v":3,"all":3,"type":"announce","body":{"message":1}}"#;
        assert_eq!((seq_of(everyone), all_of(everyone)), (Some(7), Some(3)));
        assert_eq!(all_of(numbered), None);
        assert_eq!(all_of(br#"{"seq":7,"v":3,"type":"x"}"#), None);
    }

    #[test]
    fn the_renamed_messages_keep_their_wire_tags() {
        let id = SessionId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        let migrate = Message::Migrate {
            req: 1,
            origin: Uuid::nil(),
            session: id,
            rooms: None,
            points: None,
        };
        assert!(
            migrate
                .to_json()
                .starts_with(r#"{"v":3,"type":"handover","#)
        );
        let drain = Message::Drain {
            from: Uuid::nil(),
            to: Uuid::nil(),
            sessions: Vec::new(),
        };
        assert!(drain.to_json().starts_with(r#"{"v":3,"type":"handoff","#));
    }
}
