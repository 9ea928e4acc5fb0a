//! Moving sessions between registries: which sessions live here, and a session's mailbox as a
//! [`Snapshot`] that another instance (a cluster peer, or this server after a restart)
//! continues with the same event ids.
//!
//! A cluster migrates or drains sessions one by one ([`Registry::export`],
//! [`Registry::import`]); a restart keeps them all ([`Registry::keep_all`],
//! [`Registry::restore`]). Writing them anywhere is the caller's business. None of these check
//! a token.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::event::{Envelope, Event, EventId, Peer};
use super::join::Credential;
use super::lifetime::Deadline;
use super::mailbox::Mailbox;
use super::sent::Sent;
use super::session::{Closed, Rights, Session, SessionInner};
use super::{Registry, RegistryError};
use crate::identity::{RoomName, RoomPatterns, SessionId, TokenHash};

/// A session in transit between instances: who it is and its mailbox, ids included.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub peer: Peer,
    /// Whether the session may broadcast; files and peers from before this field mean yes.
    #[serde(default = "allowed")]
    pub may_broadcast: bool,
    /// The rooms it is in; files and peers from before rooms had every session in `lobby`.
    #[serde(default = "in_lobby")]
    pub rooms: Vec<RoomName>,
    /// The rooms its join token allows, if it had a `rooms` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_join: Option<RoomPatterns>,
    /// Id of the newest event ever pushed to the mailbox.
    pub last_id: EventId,
    /// Newest id a stream was handed.
    pub delivered: EventId,
    /// The kept events, oldest first.
    pub events: Vec<(EventId, Event)>,
    /// The keyed direct messages it got lately, so a retry is not delivered twice after a move.
    #[serde(default, skip_serializing_if = "Sent::is_empty")]
    pub sent: Sent,
    /// When it ends whatever its streams do, if anything bounds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<Deadline>,
}

/// A session as the cluster's directory holds it: who it is, what it may do, its rooms, its
/// token's hash, and when it ends (so that a survivor adopting it after a crash ends it then).
#[derive(Debug, Clone)]
pub struct Homed {
    pub peer: Peer,
    pub may_broadcast: bool,
    pub may_join: Option<RoomPatterns>,
    pub rooms: Vec<RoomName>,
    pub token_hash: TokenHash,
    pub lifetime: Option<Deadline>,
}

impl Homed {
    fn of(session: &Session) -> Homed {
        let inner = session.lock();
        Homed {
            peer: session.peer.clone(),
            may_broadcast: session.may_broadcast,
            may_join: session.may_join.as_deref().cloned(),
            rooms: inner.rooms.to_vec(),
            token_hash: session.token.hash(),
            lifetime: inner.lifetime.as_deref().map(Deadline::of),
        }
    }
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

    /// The newest event id of session `id`, if it lives here.
    pub(crate) fn newest(&self, id: SessionId) -> Option<EventId> {
        let session = self.lock().sessions.get(&id).cloned()?;
        Some(session.lock().mailbox.newest())
    }

    /// Every session living here as a directory would write it (to re-register them after a
    /// backplane outage).
    pub(crate) fn homed(&self) -> Vec<Homed> {
        let sessions: Vec<Arc<Session>> = self.lock().sessions.values().cloned().collect();
        sessions.iter().map(|s| Homed::of(s)).collect()
    }

    /// Events meant for the sessions living here were lost on their way (a cluster instance
    /// cut off from its backplane for a while): each mailbox skips as many ids as `missed`
    /// says for the rooms its session is in, so each stream reports them as `lagged` (see
    /// [`Mailbox::skip`]).
    pub(crate) fn skip_missed(&self, missed: impl Fn(&[RoomName]) -> u64) {
        let sessions: Vec<Arc<Session>> = self.lock().sessions.values().cloned().collect();
        for session in sessions {
            let mut inner = session.lock();
            let count = missed(&inner.rooms);
            if count > 0 {
                inner.mailbox.skip(count);
                drop(inner);
                session.wake();
            }
        }
    }

    /// Session `id` as a directory would write it, if it lives here.
    pub(crate) fn homed_one(&self, id: SessionId) -> Option<Homed> {
        let session = self.lock().sessions.get(&id).cloned()?;
        Some(Homed::of(&session))
    }

    /// Moves session `id` out of this registry: its stream here closes for `reason` (taken over
    /// when the session's client attached elsewhere, shutdown when this instance drains it),
    /// and the returned snapshot lets another instance continue it with the same event ids.
    /// `None` when the session does not live here.
    pub(crate) fn export(&self, id: SessionId, reason: Closed) -> Option<Snapshot> {
        // No fan-out is halfway through this session: each is in the snapshot or not at all.
        let _order = self.fan_out_lock();
        let mut state = self.lock();
        let session = state.sessions.get(&id).cloned()?;
        let snapshot = {
            let inner = session.lock();
            Snapshot::of(&session, &inner)
        };
        self.remove_locked(&mut state, &session, reason);
        Some(snapshot)
    }

    /// Continues a session exported elsewhere; `credential` is the session's token (from its
    /// client) or the token's hash (from its old home). It starts detached, like a new session.
    ///
    /// # Errors
    /// [`RegistryError::SessionLimit`] when `max_sessions` are registered here.
    pub(crate) fn import(
        &self,
        snapshot: Snapshot,
        credential: impl Into<Credential>,
    ) -> Result<(), RegistryError> {
        self.resume(snapshot, credential.into(), Instant::now())
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
                let detached_for = inner
                    .detached_since
                    .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
                Kept {
                    snapshot: Snapshot::of(session, &inner),
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
        let Kept {
            snapshot,
            token_hash,
            ttl_left,
        } = kept;
        // Back-date the detachment so the reaper's "detached for one TTL" rule holds as is.
        let now = Instant::now();
        let spent = self.shared.settings.session_ttl.saturating_sub(ttl_left);
        let detached_since = now.checked_sub(spent).unwrap_or(now);
        self.resume(snapshot, Credential::Hash(token_hash), detached_since)
    }

    /// Inserts the session `snapshot` describes, its mailbox rebuilt within this registry's
    /// limits (the newest events kept), detached since `detached_since`.
    fn resume(
        &self,
        snapshot: Snapshot,
        credential: Credential,
        detached_since: Instant,
    ) -> Result<(), RegistryError> {
        let settings = &self.shared.settings;
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
        let rights = Rights {
            may_broadcast: snapshot.may_broadcast,
            may_join: snapshot.may_join.map(Arc::new),
        };
        self.insert(
            snapshot.peer,
            rights,
            credential,
            (mailbox, snapshot.sent),
            (detached_since, snapshot.lifetime.map(|d| d.lifetime())),
            (None, &snapshot.rooms),
        )
    }
}

impl Snapshot {
    /// `session` as it stands (`inner` is its own state, locked by the caller), mailbox ids
    /// included; the mailbox is left as it is.
    fn of(session: &Session, inner: &SessionInner) -> Snapshot {
        let (last_id, delivered, entries) = inner.mailbox.export();
        let sent = &inner.sent;
        Snapshot {
            peer: session.peer.clone(),
            may_broadcast: session.may_broadcast,
            rooms: inner.rooms.to_vec(),
            may_join: session.may_join.as_deref().cloned(),
            last_id,
            delivered,
            events: entries
                .into_iter()
                .map(|(id, envelope)| (id, envelope.event.clone()))
                .collect(),
            sent: sent.clone(),
            lifetime: inner.lifetime.as_deref().map(Deadline::of),
        }
    }
}

/// What a missing `may_broadcast` means: data from before the field existed, when every
/// session could broadcast.
fn allowed() -> bool {
    true
}

/// What missing `rooms` mean: data from before rooms, when everyone was in one room.
fn in_lobby() -> Vec<RoomName> {
    vec![RoomName::lobby()]
}
