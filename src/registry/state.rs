//! What the registry lock ([`Shared::state`](super::Shared::state)) guards: the session map, the
//! deadlines the reaper works through, the attached-stream count and the rooms. The fields are
//! the registry's to read and change under that lock; the operations on them live with their
//! concern (`rooms`, `fan_out`, `lifetime`, ...), which is why they are `pub(super)`.

use std::collections::BTreeSet;
use std::sync::Arc;

use indexmap::IndexMap;
use tokio::time::Instant;

use super::session::Session;
use super::{RegistryError, lifetime, rooms};
use crate::identity::SessionId;

#[derive(Default)]
pub(super) struct State {
    /// In the order they came (a leave moves the last one into its place), which is close to
    /// the order of their allocations and their sockets': fan-outs walk them in this order.
    pub(super) sessions: IndexMap<SessionId, Arc<Session>>,
    /// Every session, for fan-outs; kept until the next join or leave, so that a fan-out takes
    /// one reference here instead of one on each of 10,000 sessions under the registry lock.
    pub(super) audience: Option<Arc<[Arc<Session>]>>,
    /// Detached sessions by deadline. Entries go stale when a session re-attaches; the reaper
    /// checks each against the session before removing anything.
    pub(super) expirations: BTreeSet<(Instant, SessionId)>,
    /// Sessions with a lifetime by its next moment (a warning or the end); stale when a
    /// refresh moved it, which the reaper checks likewise (see [`lifetime`]).
    pub(super) lifetimes: BTreeSet<(Instant, SessionId)>,
    /// Sessions that ended at their lifetime lately, so their tokens are refused as expired.
    pub(super) ended: lifetime::Ended,
    /// Streams attached, counted against `max_streams`.
    pub(super) attached: usize,
    /// The rooms with members here (see [`rooms`]).
    pub(super) rooms: rooms::Rooms,
}

impl State {
    /// Session `id`, as a handle of its own, so that the caller can go on changing the state
    /// (its rooms, its deadlines) while it holds the session.
    ///
    /// # Errors
    /// `UnknownSession` when it does not live here.
    pub(super) fn session(&self, id: SessionId) -> Result<Arc<Session>, RegistryError> {
        self.sessions
            .get(&id)
            .cloned()
            .ok_or(RegistryError::UnknownSession(id))
    }
}
