//! What travels through a session's stream, as domain values.
//!
//! The wire format (event names, `id:` lines, JSON data) belongs to `http::sse`; this module only
//! says what each event carries. An [`Envelope`] is built once per event and shared by every
//! recipient, with a slot where the edge caches the encoded frame, so a broadcast to 10,000
//! streams is serialised once, not 10,000 times.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::lifetime::Bound;
use crate::identity::{DisplayName, RoomName, SessionId};

/// Per-session event number; strictly increasing within one session, starting at 1.
pub type EventId = u64;

/// A client as others see it: in the roster, in `new_user` and in `user_left`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Peer {
    pub id: SessionId,
    pub name: DisplayName,
    /// The app's user id (the join token's `sub`) on a server running `--auth jwt`; absent
    /// (and left out of the JSON) on an open one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Data of `new_user` and `user_left`: who joined or left, and which room. A session that
/// shares two rooms with them hears it once per room.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Member {
    #[serde(flatten)]
    pub peer: Peer,
    /// Events kept from before rooms existed (a state file, an older peer) were the lobby's.
    #[serde(default = "RoomName::lobby")]
    pub room: RoomName,
}

/// Who is in one room, as `ready` and `joined` tell it: the members, or only how many there
/// are when the room is above the presence limit.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Roster {
    /// The other members.
    Listed(Vec<Peer>),
    /// Every member, the session included.
    Counted { members: usize },
}

/// Data of `ready`: who you are, who else is in your rooms (each once, in `clients`), and
/// each of your rooms' roster (`rooms`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ready {
    pub id: SessionId,
    pub name: DisplayName,
    pub clients: Vec<Peer>,
    #[serde(default)]
    pub rooms: BTreeMap<RoomName, Roster>,
}

/// Data of `joined`: the session is now in `room`. `clients` lists the other members, left
/// out for a room above the presence limit; `members` counts them all, the session included.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Joined {
    pub room: RoomName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<Vec<Peer>>,
    pub members: usize,
}

/// Data of `left`: the session is no longer in `room`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Left {
    pub room: RoomName,
}

/// Data of `room_count`: how many members a room above the presence limit has now.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoomCount {
    pub room: RoomName,
    pub members: usize,
}

/// Data of `refresh_required`: the session ends in `expires_in` seconds unless refreshed
/// (`POST /session/refresh` with a new join token).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefreshRequired {
    pub expires_in: u64,
}

/// Data of `expired`: the session ended at the end of its lifetime, and why; the stream ends
/// after it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Expired {
    pub reason: Bound,
}

/// Data of a direct message (`client_response` on the wire).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Direct {
    pub from: SessionId,
    pub from_name: DisplayName,
    pub recipient: SessionId,
    pub message: Box<RawValue>,
}

/// Data of `client_broadcast`: a message to every member of a room but the sender.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Broadcast {
    pub from: SessionId,
    pub from_name: DisplayName,
    /// After `message` on the wire would need a buffer; before it keeps the raw JSON as is.
    #[serde(default = "RoomName::lobby")]
    pub room: RoomName,
    pub message: Box<RawValue>,
}

/// Who a `server_message` was addressed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// This session alone.
    Session,
    /// Every session of this session's user (the join token's `sub`).
    User,
    /// Every member of a room (named beside it).
    Room,
    /// Every session.
    Everyone,
}

/// Data of `server_message`: a message from the app's backend, through the server API.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerMessage {
    pub to: Scope,
    /// The room, when `to` is [`Scope::Room`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomName>,
    pub message: Box<RawValue>,
}

impl ServerMessage {
    /// Whether it was addressed to someone in particular: such a message is kept like a direct
    /// message (never evicted unread), one to everyone like a broadcast.
    pub fn is_addressed(&self) -> bool {
        matches!(self.to, Scope::Session | Scope::User)
    }
}

/// Data of `lagged`: `missed` events were lost (evicted from the bounded mailbox, or dropped on
/// arrival) before this stream read them, just before the next event it sends.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Lagged {
    pub missed: u64,
}

/// Every kind of event a stream can carry. `Ready` and `Lagged` are produced by the stream
/// itself and never stored in a mailbox; the others are.
///
/// Serialised with its name beside its data (`{"event": "new_user", "data": {...}}`) when it
/// travels between instances; a stream sends only the data, under the name.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum Event {
    Ready(Ready),
    NewUser(Member),
    /// A direct message from one session to another; on the wire `client_response`.
    #[serde(rename = "client_response")]
    Direct(Direct),
    ClientBroadcast(Broadcast),
    UserLeft(Member),
    ServerMessage(ServerMessage),
    Lagged(Lagged),
    Joined(Joined),
    Left(Left),
    RoomCount(RoomCount),
    RefreshRequired(RefreshRequired),
    Expired(Expired),
}

impl Event {
    /// A direct message from `from` to `to`.
    pub fn direct(from: &Peer, to: SessionId, message: Box<RawValue>) -> Self {
        Event::Direct(Direct {
            from: from.id,
            from_name: from.name.clone(),
            recipient: to,
            message,
        })
    }

    /// The event's data as JSON, without its name.
    pub fn data_json(&self) -> String {
        let json = match self {
            Event::Ready(data) => serde_json::to_string(data),
            Event::NewUser(data) | Event::UserLeft(data) => serde_json::to_string(data),
            Event::Direct(data) => serde_json::to_string(data),
            Event::ClientBroadcast(data) => serde_json::to_string(data),
            Event::ServerMessage(data) => serde_json::to_string(data),
            Event::Lagged(data) => serde_json::to_string(data),
            Event::Joined(data) => serde_json::to_string(data),
            Event::Left(data) => serde_json::to_string(data),
            Event::RoomCount(data) => serde_json::to_string(data),
            Event::RefreshRequired(data) => serde_json::to_string(data),
            Event::Expired(data) => serde_json::to_string(data),
        };
        json.expect("event data always serialises")
    }

    /// Every event name a stream can carry, in the order the docs list them.
    pub const NAMES: [&'static str; 12] = [
        "ready",
        "new_user",
        "client_response",
        "client_broadcast",
        "user_left",
        "server_message",
        "lagged",
        "joined",
        "left",
        "room_count",
        "refresh_required",
        "expired",
    ];

    /// Whether this event is addressed to its recipient in particular: a direct message, or a
    /// server message to a session or a user, or news of its own lifetime. Such events are
    /// refused when the recipient is full rather than dropped (see the mailbox).
    pub fn is_addressed(&self) -> bool {
        match self {
            Event::Direct(_) | Event::RefreshRequired(_) | Event::Expired(_) => true,
            Event::ServerMessage(server) => server.is_addressed(),
            _ => false,
        }
    }

    /// The snake_case name clients listen for; always one of [`Event::NAMES`].
    pub fn name(&self) -> &'static str {
        match self {
            Event::Ready(_) => "ready",
            Event::NewUser(_) => "new_user",
            Event::Direct(_) => "client_response",
            Event::ClientBroadcast(_) => "client_broadcast",
            Event::UserLeft(_) => "user_left",
            Event::ServerMessage(_) => "server_message",
            Event::Lagged(_) => "lagged",
            Event::Joined(_) => "joined",
            Event::Left(_) => "left",
            Event::RoomCount(_) => "room_count",
            Event::RefreshRequired(_) => "refresh_required",
            Event::Expired(_) => "expired",
        }
    }
}

/// One event shared by all its recipients' mailboxes.
#[derive(Debug)]
pub struct Envelope {
    pub event: Event,
    /// When this instance accepted the event; a stream's write measures delivery latency from it.
    pub accepted: Instant,
    /// Bytes this event is counted as in a mailbox's byte budget: the client's message plus
    /// [`ENVELOPE_OVERHEAD`] for ids, names and framing (an estimate that is never below the
    /// message itself, so the budget bounds what clients can make the server hold).
    pub size: usize,
    frame: OnceLock<Bytes>,
}

/// What an event costs beyond its message: ids, names, JSON keys and the SSE framing.
pub const ENVELOPE_OVERHEAD: usize = 256;

impl Envelope {
    pub(crate) fn new(event: Event) -> Arc<Self> {
        let message = match &event {
            Event::Direct(direct) => direct.message.get().len(),
            Event::ClientBroadcast(broadcast) => broadcast.message.get().len(),
            Event::ServerMessage(server) => server.message.get().len(),
            _ => 0,
        };
        Arc::new(Envelope {
            event,
            accepted: Instant::now(),
            size: message + ENVELOPE_OVERHEAD,
            frame: OnceLock::new(),
        })
    }

    /// The encoded form of this event, computed by `encode` on first use and then shared.
    pub fn frame(&self, encode: impl FnOnce(&Event) -> Bytes) -> &Bytes {
        self.frame.get_or_init(|| encode(&self.event))
    }
}
