//! Where sessions live on this instance: each session, its mailbox, its stream, and its TTL.
//! Mechanics only: who hears about joins and leaves, and whether there is a cluster, is the
//! hub's business (`backplane`). No HTTP in here.
//!
//! # Layout
//! - [`join`]: [`Joining`] (who a new session is) and the credential that proves it later.
//!   Ids, tokens and names themselves are `crate::identity`'s.
//! - [`session`]: one session: mailbox, attachment, why its stream closed.
//! - [`subscription`]: attaching a stream, and the stream's side ([`Subscription`]).
//! - [`mailbox`]: the bounded, ordered buffer of one session.
//! - [`event`]: what a stream carries, and the [`Envelope`] shared by recipients.
//! - `error`: what the registry (and the hub above it) refuses, as [`RegistryError`].
//! - `fan_out`: one event to every session here or every member of a room (broadcasts,
//!   presence), in one order.
//! - `state`: what the registry lock guards (`State`): the session map, the deadlines, the
//!   stream count, the rooms.
//! - [`rooms`]: which sessions here are in which room.
//! - [`snapshot`]: a session as a value ([`Snapshot`]), to move it between instances or keep
//!   it across a restart.
//! - [`sent`]: the keys of idempotent sends a session got, so a retry is not delivered twice.
//! - [`writer`]: writing a parked stream's new events to its client without waking it.
//! - [`lifetime`]: how long a session may live whatever its streams do (a join token's `exp`,
//!   `--max-session-age`), and the sessions that ended so.
//! - [`reaper`]: the task that ends sessions at their TTL or lifetime.
//!
//! # Locks
//! [`Registry`] is a cheap handle around shared state. Three levels of `std::sync::Mutex`,
//! always taken in this order and never held across an `.await`:
//! 0. the fan-out lock ([`Shared::fan_out`]) puts fan-outs (announcements, broadcasts) in one
//!    order, so every mailbox sees them in the same order (never a `user_left` before its
//!    `new_user`), and keeps a session from being exported halfway through one. It is held
//!    while one event is appended to many mailboxes; only other fan-outs (and exports) wait
//!    on it, and the hub runs fan-outs off the runtime's workers, so that waiting blocks no
//!    request.
//! 1. the registry lock ([`Shared::state`]) guards the session map, the expiry queue and the
//!    attached-stream count. A fan-out holds it only to copy the list of recipients (a pointer
//!    each), so a flood of joins with presence on does not stall messages, attaches or logins.
//! 2. each session's lock guards its mailbox and attachment; a stream reading its own mailbox
//!    takes only this one, so readers never contend with each other on the registry lock.
//!
//! The outbox's queue lock ([`outbox::Outbox`]) is a leaf: taken after the fan-out is done with
//! the others, and nothing is taken while it is held.
//!
//! A caller that holds a lock of its own while calling in (the cluster's migration lock) takes
//! it before both. std mutexes rather than tokio's: every critical section is short and
//! synchronous, and a std mutex is cheaper when nothing waits across an `.await`.
//!
//! Sockets belong to the `http` layer. A stream's task writes to its own after the locks are
//! released; while it is parked, an appender writes to it through a [`writer::Writer`] under the
//! session's lock (a write that never waits). Waking a stream is a per-attachment [`Notify`].

mod error;
pub mod event;
mod fan_out;
pub mod join;
pub mod lifetime;
pub mod mailbox;
pub(crate) mod outbox;
pub mod reaper;
pub mod rooms;
pub mod sent;
pub mod session;
pub mod snapshot;
mod state;
pub mod subscription;
pub mod writer;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

#[cfg(test)]
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::info;

use crate::identity::{RoomName, SessionId, Token};
use crate::limits::AddressGuard;
use crate::metrics::Metrics;
pub use error::RegistryError;
pub use event::{Envelope, Event, EventId, Peer};
pub(crate) use fan_out::Reach;
use join::Credential;
pub use join::Joining;
use lifetime::Lifetime;
use mailbox::Mailbox;
pub use rooms::{Departure, Entered};
pub use sent::SendKey;
use sent::Sent;
pub use session::Closed;
use session::{Rights, Session};
pub use snapshot::{Homed, Kept, Snapshot};
use state::State;
pub use subscription::{Pull, Subscription};

/// Sizes the registry needs; a slice of the server's `Config`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Slots per session mailbox.
    pub mailbox_size: usize,
    /// Byte budget per session mailbox (see [`mailbox`]).
    pub mailbox_bytes: usize,
    pub max_sessions: usize,
    pub max_streams: usize,
    /// How long a session outlives its last stream.
    pub session_ttl: Duration,
    /// Most rooms one session may be in at once.
    pub max_rooms_per_session: usize,
    /// Most rooms with members at once.
    pub max_rooms: usize,
    /// How long a session may live after its join, streams or not (`--max-session-age`).
    pub max_session_age: Option<Duration>,
}

#[cfg(test)]
impl Settings {
    /// Small sizes for tests: 8-event mailboxes without a byte budget, 10 sessions and
    /// streams, a 30 s TTL; override what a test is about.
    pub(crate) fn small() -> Self {
        Settings {
            mailbox_size: 8,
            mailbox_bytes: usize::MAX,
            max_sessions: 10,
            max_streams: 10,
            session_ttl: Duration::from_secs(30),
            max_rooms_per_session: 4,
            max_rooms: 10,
            max_session_age: None,
        }
    }
}

/// What an operator asks first: how many sessions and streams, and the stream limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Sessions registered here.
    pub sessions: usize,
    /// Streams attached here.
    pub streams: usize,
    /// Most streams this registry accepts.
    pub stream_limit: usize,
}

/// Handle to the sessions of this instance; clone it freely.
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
}

struct Shared {
    /// Taken before the registry lock by fan-outs and exports (see the module doc).
    fan_out: Mutex<()>,
    /// The registry lock (see the module doc).
    state: Mutex<State>,
    /// Wakes the reaper when a session detaches (a new, possibly earlier, deadline).
    reaper: Notify,
    /// Set by [`Registry::close_streams`]; read by every stream that runs out of events, which
    /// is why it is a flag and not a shared token each stream waits on: polling one shared
    /// waiter list per delivery cost two contended locks.
    stopping: AtomicBool,
    settings: Settings,
    metrics: Arc<Metrics>,
    /// Parked streams waiting for a fan-out's write.
    outbox: outbox::Outbox,
}

impl Registry {
    pub fn new(settings: Settings, metrics: Arc<Metrics>) -> Self {
        metrics.stream_limit.set(settings.max_streams as i64);
        Registry {
            shared: Arc::new(Shared {
                fan_out: Mutex::new(()),
                state: Mutex::new(State::default()),
                reaper: Notify::new(),
                stopping: AtomicBool::new(false),
                settings,
                outbox: outbox::Outbox::new(Arc::clone(&metrics)),
                metrics,
            }),
        }
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Ends every stream once it has written what it holds (`Closed::Shutdown`), and every
    /// stream attached later; sessions and their mailboxes stay, for a state file or a reconnect.
    pub(crate) fn close_streams(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        let sessions: Vec<Arc<Session>> = self.lock().sessions.values().cloned().collect();
        for session in sessions {
            session.wake();
        }
    }

    fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().expect("registry lock poisoned")
    }

    fn fan_out_lock(&self) -> MutexGuard<'_, ()> {
        self.shared.fan_out.lock().expect("fan-out lock poisoned")
    }

    /// Holds the fan-out lock as a long fan-out would, for tests of who waits on it.
    #[cfg(test)]
    pub(crate) fn hold_fan_outs(&self) -> MutexGuard<'_, ()> {
        self.fan_out_lock()
    }

    /// Registers a new session with a fresh id and token. Nobody is told: announcing it is the
    /// hub's call, made after this returns, so whoever hears of it can already message it.
    ///
    /// The new session starts detached, so it expires after the TTL unless a stream attaches.
    ///
    /// `place` is the session's share of its address's cap, held for as long as the session
    /// lives.
    ///
    /// # Errors
    /// [`RegistryError::SessionLimit`] when `max_sessions` are registered.
    pub(crate) fn register(
        &self,
        joining: Joining,
        place: AddressGuard,
    ) -> Result<(Peer, Token), RegistryError> {
        let id = SessionId::random();
        let peer = Peer {
            id,
            name: joining.name,
            user: joining.user,
        };
        let token = Token::issue(id);
        let settings = &self.shared.settings;
        let mailbox = Mailbox::new(settings.mailbox_size, settings.mailbox_bytes);
        let now = Instant::now();
        let cap = settings.max_session_age.map(|age| now + age);
        let lifetime = Lifetime::at_join(joining.expires, cap, now);
        let rights = Rights {
            may_broadcast: joining.may_broadcast,
            may_join: joining.may_join.map(Arc::new),
        };
        self.insert(
            peer.clone(),
            rights,
            Credential::Token(token.clone()),
            (mailbox, Sent::default()),
            (now, lifetime),
            (Some(place), &[]),
        )?;
        info!(session = %id, name = peer.name.as_str(), "helo");
        Ok((peer, token))
    }

    /// Adds a session with `mailbox`, detached since `detached_since`: it is removed one TTL
    /// after that unless a stream attaches, and at the end of its `lifetime` in any case. It
    /// is put into `rooms` at once (a session restored or arriving from another instance),
    /// with no room limit checked.
    fn insert(
        &self,
        peer: Peer,
        rights: Rights,
        token: Credential,
        (mailbox, sent): (Mailbox, Sent),
        (detached_since, lifetime): (Instant, Option<Lifetime>),
        (place, rooms): (Option<AddressGuard>, &[RoomName]),
    ) -> Result<(), RegistryError> {
        let settings = &self.shared.settings;
        let id = peer.id;
        let session = Arc::new(Session::new(
            peer,
            rights,
            token,
            (mailbox, sent),
            (detached_since, lifetime),
            place,
        ));
        let mut state = self.lock();
        if state.sessions.len() >= settings.max_sessions {
            return Err(RegistryError::SessionLimit(settings.max_sessions));
        }
        state.enter(&session, rooms);
        state.sessions.insert(id, session);
        state.audience = None;
        state
            .expirations
            .insert((detached_since + settings.session_ttl, id));
        if let Some(lifetime) = lifetime {
            state.lifetimes.insert((lifetime.next(), id));
        }
        self.shared
            .metrics
            .sessions
            .set(state.sessions.len() as i64);
        drop(state);
        self.shared.reaper.notify_one();
        Ok(())
    }

    /// Checks a token and returns the session it proves.
    ///
    /// # Errors
    /// [`RegistryError::BadToken`] when the session does not exist or the secret is wrong;
    /// [`RegistryError::SessionExpired`] when it ended at its lifetime lately.
    pub(crate) fn authenticate(&self, token: &Token) -> Result<Peer, RegistryError> {
        let state = self.lock();
        match state.sessions.get(&token.session()) {
            Some(session) if session.token.matches(token) => Ok(session.peer.clone()),
            Some(_) => Err(RegistryError::BadToken),
            None => Err(state.gone(token.session(), token, RegistryError::BadToken)),
        }
    }

    /// Whether session `id` may broadcast; `None` when it does not live here.
    pub(crate) fn may_broadcast(&self, id: SessionId) -> Option<bool> {
        self.lock().sessions.get(&id).map(|s| s.may_broadcast)
    }

    /// Writes a direct message (`client_response`) from `from` into `to`'s mailbox; see
    /// [`Registry::deliver_event`].
    ///
    /// # Errors
    /// As [`Registry::deliver_event`].
    #[cfg(test)]
    pub(crate) fn deliver(
        &self,
        from: &Peer,
        to: SessionId,
        message: Box<RawValue>,
    ) -> Result<EventId, RegistryError> {
        let delivered = self.deliver_event(to, Event::direct(from, to, message), None);
        delivered.map(|(id, _)| id)
    }

    /// Writes an addressed event (a direct message, or a server message to a session or a
    /// user) into `to`'s mailbox; returns its id, and whether it was appended now (`false`: a
    /// retry with the same `key`, answered with the first one's id).
    ///
    /// Once accepted, it stays in the mailbox until read: broadcasts and presence never evict
    /// it (see [`mailbox`]).
    ///
    /// # Errors
    /// `UnknownRecipient`, or `MailboxFull` when `to` has `mailbox_size` unread addressed
    /// events, or its unread addressed events and this one would pass `mailbox_bytes`.
    pub(crate) fn deliver_event(
        &self,
        to: SessionId,
        event: Event,
        key: Option<SendKey>,
    ) -> Result<(EventId, bool), RegistryError> {
        debug_assert!(event.is_addressed(), "fan-out events go through fan_out");
        let recipient = self
            .lock()
            .sessions
            .get(&to)
            .cloned()
            .ok_or(RegistryError::UnknownRecipient(to))?;
        let envelope = Envelope::new(event);
        let metrics = &self.shared.metrics;
        recipient
            .push_keyed(&envelope, metrics, key)
            .map_err(|refused| match refused {
                session::Refused::Full => {
                    metrics.mailbox_full.inc();
                    RegistryError::MailboxFull {
                        retry_after: Duration::from_secs(1),
                    }
                }
                session::Refused::KeyReused => RegistryError::KeyReused,
            })
    }

    /// Removes session `id` and ends its stream; returns it and its rooms if it was here (and
    /// nobody else removed it first).
    pub(crate) fn remove(&self, id: SessionId) -> Option<Departure> {
        let mut state = self.lock();
        let session = state.sessions.get(&id).cloned()?;
        let rooms = self.remove_locked(&mut state, &session, Closed::Removed)?;
        drop(state);
        info!(session = %id, "leave");
        Some(Departure {
            peer: session.peer.clone(),
            rooms,
        })
    }

    /// Takes `session` out of this registry and its rooms, and ends its stream with `reason`;
    /// the rooms it was in. `None` when it was already gone.
    fn remove_locked(
        &self,
        state: &mut State,
        session: &Arc<Session>,
        reason: Closed,
    ) -> Option<Vec<RoomName>> {
        // Already gone: a concurrent DELETE or expiry won the race.
        state.sessions.swap_remove(&session.peer.id)?;
        state.audience = None;
        let rooms = state.exit_all(session);
        if session.close(reason) {
            state.attached -= 1;
        }
        let metrics = &self.shared.metrics;
        metrics.sessions.set(state.sessions.len() as i64);
        metrics.streams.set(state.attached as i64);
        Some(rooms)
    }

    /// Removes sessions detached for longer than the TTL, and warns or ends those whose
    /// lifetime reached a moment (see [`lifetime`]); returns the removed and the next deadline.
    pub(crate) fn expire(&self, now: Instant) -> (Vec<Departure>, Option<Instant>) {
        let mut state = self.lock();
        let mut expired = Vec::new();
        let lifetimes = self.run_lifetimes(&mut state, now, &mut expired);
        let ttl = self.run_ttl(&mut state, now, &mut expired);
        let next = match (lifetimes, ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        (expired, next)
    }

    /// Removes sessions detached for longer than the TTL into `expired`; the next deadline.
    fn run_ttl(
        &self,
        state: &mut State,
        now: Instant,
        expired: &mut Vec<Departure>,
    ) -> Option<Instant> {
        let ttl = self.shared.settings.session_ttl;
        while let Some(&(deadline, id)) = state.expirations.first() {
            if deadline > now {
                return Some(deadline);
            }
            state.expirations.pop_first();
            let Some(session) = state.sessions.get(&id).cloned() else {
                continue;
            };
            let detached_since = session.lock().detached_since;
            // Stale entry: the session re-attached, or detached again later.
            if detached_since.is_some_and(|since| since + ttl <= now)
                && let Some(rooms) = self.remove_locked(state, &session, Closed::Removed)
            {
                info!(session = %id, "expire");
                expired.push(Departure {
                    peer: session.peer.clone(),
                    rooms,
                });
            }
        }
        None
    }

    /// Session `id` as others see it, when it lives here.
    pub(crate) fn peer(&self, id: SessionId) -> Option<Peer> {
        let session = self.lock().sessions.get(&id).cloned()?;
        Some(session.peer.clone())
    }

    /// Every session registered here, in no particular order.
    pub(crate) fn list(&self) -> Vec<Peer> {
        // Copy pointers under the lock, names after it: a roster of thousands costs the other
        // requests one pointer copy per session.
        let sessions: Vec<Arc<Session>> = self.lock().sessions.values().cloned().collect();
        sessions.iter().map(|s| s.peer.clone()).collect()
    }

    /// Sessions and streams here, and the stream limit.
    pub(crate) fn stats(&self) -> Stats {
        let state = self.lock();
        Stats {
            sessions: state.sessions.len(),
            streams: state.attached,
            stream_limit: self.shared.settings.max_streams,
        }
    }
}
