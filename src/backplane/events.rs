//! The one interface through which a broker reports what reaches this instance's sessions:
//! joins, leaves, broadcasts, server messages to everyone, and direct messages. The hub
//! implements it (see [`Here`](super::Here)); the brokers call it, the local one at once, the
//! Redis one when a message comes back on the bus, in the bus's order.
//!
//! `only` narrows an event to one session: a session that migrated here replays what it
//! missed on the way, and nobody else hears it twice.

use serde_json::value::RawValue;

use crate::identity::SessionId;
use crate::registry::{Event, EventId, Peer, RegistryError, SendKey};

/// What a broker delivers into this instance.
pub(crate) trait BrokerEvents: Send + Sync + 'static {
    /// `peer` joined: the sessions here but `peer` hear of it (when presence is on).
    fn joined(&self, peer: &Peer, only: Option<SessionId>);

    /// `peer` left (deleted, expired, or its instance died); it is already gone from here.
    fn left(&self, peer: &Peer, only: Option<SessionId>);

    /// A broadcast from `from` to every session here but `from`; how many got it.
    fn broadcast(&self, from: &Peer, message: Box<RawValue>, only: Option<SessionId>) -> usize;

    /// A server message to every session here; how many got it.
    fn announced(&self, message: Box<RawValue>, only: Option<SessionId>) -> usize;

    /// An addressed event for session `to`, homed here: its id, and whether it was appended
    /// (false: a retry with the same `key`, answered with the first one's id).
    ///
    /// # Errors
    /// `UnknownRecipient`, `MailboxFull`, `KeyReused`.
    fn direct(
        &self,
        to: SessionId,
        event: Event,
        key: Option<SendKey>,
    ) -> Result<(EventId, bool), RegistryError>;
}
