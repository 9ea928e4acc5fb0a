//! Moving sessions between registries: which sessions live here, and a session's mailbox as a
//! [`Snapshot`] that another instance (a cluster peer, or this server after a restart)
//! continues with the same event ids.
//!
//! A cluster hands sessions over one by one ([`Registry::export`], [`Registry::import`]); a
//! restart keeps them all ([`Registry::keep_all`], [`Registry::restore`]). Writing them
//! anywhere is the caller's business. None of these check a token.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::event::{Envelope, Event, EventId, Peer};
use super::identity::{Credential, SessionId, Token, TokenHash};
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

/// A session kept across a restart: its snapshot, the hash of its token (never the token) and
/// how much of its TTL was left.
#[derive(Debug, Clone)]
pub struct Kept {
    pub snapshot: Snapshot,
    pub token_hash: TokenHash,
    /// Time left before the reaper would remove it; a full TTL for an attached session.
    pub ttl_left: Duration,
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
            .filter_map(|s| Some((s.peer.clone(), s.token.token()?.clone())))
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
        self.insert(
            snapshot.peer,
            Credential::Token(token),
            mailbox,
            Instant::now(),
            None,
        )
    }

    /// Every session here as it stands, without removing any (the caller is about to exit).
    pub fn keep_all(&self) -> Vec<Kept> {
        let ttl = self.shared.settings.session_ttl;
        let now = Instant::now();
        let state = self.lock();
        state
            .sessions
            .values()
            .map(|session| {
                let inner = session.lock();
                let (last_id, delivered, entries) = inner.mailbox.export();
                let detached_for = inner
                    .detached_since
                    .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
                Kept {
                    snapshot: Snapshot {
                        peer: session.peer.clone(),
                        last_id,
                        delivered,
                        events: entries
                            .into_iter()
                            .map(|(id, envelope)| (id, envelope.event.clone()))
                            .collect(),
                    },
                    token_hash: session.token.hash(),
                    ttl_left: ttl.saturating_sub(detached_for),
                }
            })
            .collect()
    }

    /// Brings back a session [`Registry::keep_all`] kept: same id, name and event ids; tokens
    /// are checked against the hash. It starts detached with `ttl_left` to live.
    ///
    /// # Errors
    /// [`RegistryError::SessionLimit`] when `max_sessions` are registered here.
    pub fn restore(&self, kept: Kept) -> Result<(), RegistryError> {
        let settings = &self.shared.settings;
        let Kept {
            snapshot,
            token_hash,
            ttl_left,
        } = kept;
        let mailbox = Mailbox::import(
            settings.mailbox_size,
            settings.mailbox_bytes,
            snapshot.last_id,
            snapshot.delivered,
            snapshot
                .events
                .into_iter()
                .map(|(id, event)| (id, Envelope::new(event)))
                .collect(),
        );
        // Back-date the detachment so the reaper's "detached for one TTL" rule holds as is.
        let now = Instant::now();
        let spent = settings.session_ttl.saturating_sub(ttl_left);
        let detached_since = now.checked_sub(spent).unwrap_or(now);
        self.insert(
            snapshot.peer,
            Credential::Hash(token_hash),
            mailbox,
            detached_since,
            None,
        )
    }
}
