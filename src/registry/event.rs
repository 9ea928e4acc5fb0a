//! What travels through a session's stream, as domain values.
//!
//! The wire format (event names, `id:` lines, JSON data) belongs to `http::sse`; this module only
//! says what each event carries. An [`Envelope`] is built once per event and shared by every
//! recipient, with a slot where the edge caches the encoded frame, so a broadcast to 10,000
//! streams is serialised once, not 10,000 times.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::identity::{DisplayName, SessionId};

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

/// Data of `ready`: who you are and who else is here.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ready {
    pub id: SessionId,
    pub name: DisplayName,
    pub clients: Vec<Peer>,
}

/// Data of a direct message (`client_response` on the wire).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Direct {
    pub from: SessionId,
    pub from_name: DisplayName,
    pub recipient: SessionId,
    pub message: Box<RawValue>,
}

/// Data of `client_broadcast`: a message to everyone but the sender.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Broadcast {
    pub from: SessionId,
    pub from_name: DisplayName,
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
    /// Every session.
    Everyone,
}

/// Data of `server_message`: a message from the app's backend, through the server API.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerMessage {
    pub to: Scope,
    pub message: Box<RawValue>,
}

impl ServerMessage {
    /// Whether it was addressed to someone in particular: such a message is kept like a direct
    /// message (never evicted unread), one to everyone like a broadcast.
    pub fn is_addressed(&self) -> bool {
        self.to != Scope::Everyone
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
    NewUser(Peer),
    /// A direct message from one session to another; on the wire `client_response`.
    #[serde(rename = "client_response")]
    Direct(Direct),
    ClientBroadcast(Broadcast),
    UserLeft(Peer),
    ServerMessage(ServerMessage),
    Lagged(Lagged),
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
        };
        json.expect("event data always serialises")
    }

    /// Every event name a stream can carry, in the order the docs list them.
    pub const NAMES: [&'static str; 7] = [
        "ready",
        "new_user",
        "client_response",
        "client_broadcast",
        "user_left",
        "server_message",
        "lagged",
    ];

    /// Whether this event is addressed to its recipient in particular: a direct message, or a
    /// server message to a session or a user. Such events are refused when the recipient is
    /// full rather than dropped (see the mailbox).
    pub fn is_addressed(&self) -> bool {
        match self {
            Event::Direct(_) => true,
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
