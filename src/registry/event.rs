//! What travels through a session's stream, as domain values.
//!
//! The wire format (event names, `id:` lines, JSON data) belongs to `http::sse`; this module only
//! says what each event carries. An [`Envelope`] is built once per event and shared by every
//! recipient, with a slot where the edge caches the encoded frame, so a broadcast to 10,000
//! streams is serialised once, not 10,000 times.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::session::{DisplayName, SessionId};

/// Per-session event number; strictly increasing within one session, starting at 1.
pub type EventId = u64;

/// A client as others see it: in the roster, in `new_user` and in `user_left`.
#[derive(Clone, Debug, Serialize)]
pub struct Peer {
    pub id: SessionId,
    pub name: DisplayName,
}

/// Every kind of event a stream can carry. `Ready` and `Lagged` are produced by the stream
/// itself and never stored in a mailbox; the others are.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Event {
    /// First event of every attach: who you are and who else is here.
    Ready {
        id: SessionId,
        name: DisplayName,
        clients: Vec<Peer>,
    },
    NewUser(Peer),
    ClientResponse {
        from: SessionId,
        from_name: DisplayName,
        recipient: SessionId,
        message: Box<RawValue>,
    },
    ClientBroadcast {
        from: SessionId,
        from_name: DisplayName,
        message: Box<RawValue>,
    },
    UserLeft(Peer),
    /// `missed` events were evicted from the bounded mailbox before this stream read them.
    Lagged {
        missed: u64,
    },
}

impl Event {
    /// Every event name a stream can carry, in the order the docs list them.
    pub const NAMES: [&'static str; 6] = [
        "ready",
        "new_user",
        "client_response",
        "client_broadcast",
        "user_left",
        "lagged",
    ];

    /// The snake_case name clients listen for; always one of [`Event::NAMES`].
    pub fn name(&self) -> &'static str {
        match self {
            Event::Ready { .. } => "ready",
            Event::NewUser(_) => "new_user",
            Event::ClientResponse { .. } => "client_response",
            Event::ClientBroadcast { .. } => "client_broadcast",
            Event::UserLeft(_) => "user_left",
            Event::Lagged { .. } => "lagged",
        }
    }
}

/// One event shared by all its recipients' mailboxes.
#[derive(Debug)]
pub struct Envelope {
    pub event: Event,
    frame: OnceLock<Bytes>,
}

impl Envelope {
    pub(crate) fn new(event: Event) -> Arc<Self> {
        Arc::new(Envelope {
            event,
            frame: OnceLock::new(),
        })
    }

    /// The encoded form of this event, computed by `encode` on first use and then shared.
    pub fn frame(&self, encode: impl FnOnce(&Event) -> Bytes) -> &Bytes {
        self.frame.get_or_init(|| encode(&self.event))
    }
}
