//! Moving sessions between registries: which sessions live here, and a session's mailbox as a
//! [`Snapshot`] that another instance continues with the same event ids.
//!
//! Only a cluster uses these; they check no token (the cluster has checked it already).

use std::sync::Arc;

use super::event::{Envelope, Event, EventId, Peer};
use super::identity::{SessionId, Token};
use super::mailbox::Mailbox;
use super::session::Closed;
use super::{Registry, RegistryError};

/// A session in transit between instances: who it is and its mailbox, ids included.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub peer: Peer,
    /// Id of the newest event ever pushed to the mailbox.
    pub last_id: EventId,
    /// Newest id a stream was handed.
    pub delivered: EventId,
    /// The kept events, oldest first.
    pub events: Vec<(EventId, Event)>,
}

impl Registry {
    /// Whether session `id` lives in this registry.
    pub(crate) fn homes(&self, id: SessionId) -> bool {
        self.lock().sessions.contains_key(&id)
    }

    /// Every session living here, with its token (to re-register them after a backplane outage).
    pub(crate) fn homed(&self) -> Vec<(Peer, Token)> {
        self.lock()
            .sessions
            .values()
            .map(|s| (s.peer.clone(), s.token.clone()))
            .collect()
    }

    /// Moves session `id` out of this registry: its stream here closes as taken over, and the
    /// returned snapshot lets another instance continue it with the same event ids. `None` when
    /// the session does not live here.
    pub(crate) fn export(&self, id: SessionId) -> Option<Snapshot> {
        let mut state = self.lock();
        let session = state.sessions.get(&id).cloned()?;
        let (last_id, delivered, entries) = session.lock().mailbox.export();
        self.remove_locked(&mut state, &session, Closed::TakenOver);
        Some(Snapshot {
            peer: session.peer.clone(),
            last_id,
            delivered,
            events: entries
                .into_iter()
                .map(|(id, envelope)| (id, envelope.event.clone()))
                .collect(),
        })
    }

    /// Continues a session exported elsewhere; `token` must be the session's own. It starts
    /// detached, like a new session.
    ///
    /// # Errors
    /// [`RegistryError::SessionLimit`] when `max_sessions` are registered here.
    pub(crate) fn import(&self, snapshot: Snapshot, token: Token) -> Result<(), RegistryError> {
        let mailbox = Mailbox::import(
            self.shared.settings.mailbox_size,
            self.shared.settings.mailbox_bytes,
            snapshot.last_id,
            snapshot.delivered,
            snapshot
                .events
                .into_iter()
                .map(|(id, event)| (id, Envelope::new(event)))
                .collect::<Vec<(EventId, Arc<Envelope>)>>(),
        );
        self.insert(snapshot.peer, token, mailbox)
    }
}
