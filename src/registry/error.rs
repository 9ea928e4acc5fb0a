//! What the registry refuses, in domain terms: [`RegistryError`]. The hub above it raises a
//! few of its own (rooms, the backplane); the HTTP edge picks the status codes.

use std::time::Duration;

use super::event::EventId;
use super::lifetime::Bound;
use crate::identity::{RoomName, SessionId};

/// What the registry refuses, in domain terms; the HTTP edge picks the status codes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("no session with id {0}")]
    UnknownSession(SessionId),
    #[error("no recipient with id {0}")]
    UnknownRecipient(SessionId),
    #[error("the token is not valid for this session")]
    BadToken,
    #[error("this session expired: {}", .0.reason())]
    SessionExpired(Bound),
    #[error("this session may not broadcast (its join token says so)")]
    BroadcastDenied,
    #[error("this session is not in the room {0}")]
    NotAMember(RoomName),
    #[error("this session may not be in the room {0} (its join token's `rooms`, or --allow-rooms)")]
    RoomForbidden(RoomName),
    #[error("the recipient shares no room with the sender (--direct-messages shared-room)")]
    NoSharedRoom,
    #[error("a session may be in at most {0} rooms (--max-rooms-per-session); leave one first")]
    SessionRoomLimit(usize),
    #[error("the server holds its maximum of {0} rooms (--max-rooms)")]
    RoomLimit(usize),
    #[error("the recipient's mailbox is full; retry later")]
    MailboxFull { retry_after: Duration },
    #[error("this Idempotency-Key was sent to this recipient with another message")]
    KeyReused,
    #[error("the server holds its maximum of {0} sessions")]
    SessionLimit(usize),
    #[error("resume point {asked} is after the newest event of this session, {newest}")]
    ResumePointAhead { asked: EventId, newest: EventId },
    #[error("the server holds its maximum of {0} streams")]
    StreamLimit(usize),
    /// Raised by the cluster hub, never by the registry itself.
    #[error("the cluster backplane is unavailable: {0}")]
    Unavailable(String),
    /// Raised by the cluster hub: the session may well exist, but cannot be reached until the
    /// cluster has recovered from a fault `message` names (its instance died and a survivor
    /// is about to adopt it; Redis lost its state and the instances re-register theirs).
    #[error("{message}")]
    Recovering {
        message: String,
        retry_after: Duration,
    },
}
