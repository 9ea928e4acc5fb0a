//! The hub: every session, its mailbox, and who is attached. No HTTP in here.
//!
//! [`Registry`] is a cheap handle around shared state. Two levels of `std::sync::Mutex`, always
//! taken in this order and never held across an `.await`:
//! - the registry lock guards the session map, the expiry queue and the attached-stream count.
//!   It is held while one event is appended to many mailboxes (a broadcast), so a fan-out sees
//!   one consistent set of sessions. Appending is a pointer push per recipient.
//! - each session's lock guards its mailbox and attachment; a stream reading its own mailbox
//!   takes only this one, so readers never contend with each other on the registry lock.
//!
//! Writing to sockets happens in the `http` layer, after the locks are released. Waking a stream is a
//! per-attachment [`Notify`]; a takeover or removal wakes the old stream, which then finds it is
//! no longer the current attachment and ends.
//!
//! In cluster mode the registry holds the sessions *homed* on this instance; `backplane::redis`
//! drives it through the primitives at the end (`insert`, `deliver_all`, `push_direct`,
//! `export`, `import`), and presence announcements arrive through the backplane instead of
//! being made here (`Settings::announce_locally`).

pub mod event;
pub mod mailbox;
pub mod reaper;
pub mod session;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::info;

use crate::metrics::Metrics;
pub use event::{Envelope, Event, EventId, Peer};
use mailbox::{Mailbox, Overflow, Replay};
pub use session::{DisplayName, SessionId, Token};

/// What the registry refuses, in domain terms; the HTTP edge picks the status codes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("no session with id {0}")]
    UnknownSession(SessionId),
    #[error("no recipient with id {0}")]
    UnknownRecipient(SessionId),
    #[error("the token is not valid for this session")]
    BadToken,
    #[error("the recipient's mailbox is full; retry later")]
    MailboxFull { retry_after: Duration },
    #[error("the server holds its maximum of {0} sessions")]
    SessionLimit(usize),
    #[error("the server holds its maximum of {0} streams")]
    StreamLimit(usize),
    #[error("the cluster backplane is unavailable: {0}")]
    Unavailable(String),
}

/// Sizes and switches the registry needs; a slice of the server's `Config`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mailbox_size: usize,
    pub max_sessions: usize,
    pub max_streams: usize,
    pub session_ttl: Duration,
    /// Announce joins and leaves (`new_user`, `user_left`) and send the roster in `ready`.
    pub presence: bool,
    /// Whether this registry announces presence to its sessions itself (one instance), or a
    /// backplane carries the announcements to every instance, this one included.
    pub announce_locally: bool,
}

/// Handle to the hub; clone it freely.
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the reaper when a session detaches (a new, possibly earlier, deadline).
    reaper: Notify,
    settings: Settings,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<SessionId, Arc<Session>>,
    /// Detached sessions by deadline. Entries go stale when a session re-attaches; the reaper
    /// checks each against the session before removing anything.
    expirations: BTreeSet<(Instant, SessionId)>,
    attached: usize,
}

/// One registered client.
pub struct Session {
    peer: Peer,
    token: Token,
    inner: Mutex<SessionInner>,
}

struct SessionInner {
    mailbox: Mailbox,
    attachment: Option<Attachment>,
    /// Generation handed to the next attach; tells an old stream it was taken over.
    next_generation: u64,
    detached_since: Option<Instant>,
    /// Set once the session left this registry (removed, or moved to another instance).
    closed: Option<Closed>,
}

struct Attachment {
    generation: u64,
    wake: Arc<Notify>,
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, SessionInner> {
        self.inner.lock().expect("session lock poisoned")
    }

    /// Appends to the mailbox and wakes the attached stream, if any.
    fn push(
        &self,
        envelope: &Arc<Envelope>,
        overflow: Overflow,
        metrics: &Metrics,
    ) -> Result<EventId, mailbox::Full> {
        let mut inner = self.lock();
        let (id, evicted_unread) = inner.mailbox.push(Arc::clone(envelope), overflow)?;
        if evicted_unread {
            metrics.evictions.inc();
        }
        if let Some(attachment) = &inner.attachment {
            attachment.wake.notify_one();
        }
        Ok(id)
    }
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Another stream attached to the same session.
    TakenOver,
    /// The session was deleted or expired.
    Removed,
}

/// What a stream gets when it reads its mailbox.
#[derive(Debug)]
pub enum Pull {
    Events(Replay),
    Idle,
    Closed(Closed),
}

/// The registry's side of one attached stream. Dropping it detaches the session (starting its
/// TTL) unless a newer stream has taken over.
pub struct Subscription {
    registry: Registry,
    session: Arc<Session>,
    generation: u64,
    wake: Arc<Notify>,
    cursor: EventId,
    ready: Option<Event>,
}

impl Subscription {
    pub fn session_id(&self) -> SessionId {
        self.session.peer.id
    }

    /// Replaces the roster in `ready` (a cluster knows sessions this registry does not).
    pub fn set_roster(&mut self, clients: Vec<Peer>) {
        if let Some(Event::Ready(ready)) = &mut self.ready {
            ready.clients = clients;
        }
    }

    /// The `ready` event, once: the first thing a stream sends.
    pub fn take_ready(&mut self) -> Option<Event> {
        self.ready.take()
    }

    /// Reads up to `limit` events past this stream's cursor without waiting.
    pub fn pull(&mut self, limit: usize) -> Pull {
        let mut inner = self.session.lock();
        if let Some(reason) = inner.closed {
            return Pull::Closed(reason);
        }
        match &inner.attachment {
            Some(a) if a.generation == self.generation => {}
            _ => return Pull::Closed(Closed::TakenOver),
        }
        let replay = inner.mailbox.replay_after(self.cursor, limit);
        drop(inner);
        if replay.events.is_empty() && replay.missed == 0 {
            return Pull::Idle;
        }
        if let Some((last, _)) = replay.events.last() {
            self.cursor = *last;
        }
        Pull::Events(replay)
    }

    /// Resolves when something may have changed: a new event, a takeover, or removal.
    pub async fn changed(&self) {
        self.wake.notified().await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.registry.detach(&self.session, self.generation);
    }
}

impl Registry {
    pub fn new(settings: Settings, metrics: Arc<Metrics>) -> Self {
        metrics.stream_limit.set(settings.max_streams as i64);
        Registry {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                reaper: Notify::new(),
                settings,
                metrics,
            }),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().expect("registry lock poisoned")
    }

    /// Registers a new session, then announces it with `new_user` to every other session.
    ///
    /// The new session starts detached, so it expires after the TTL unless a stream attaches.
    ///
    /// # Errors
    /// [`RegistryError::SessionLimit`] when `max_sessions` are registered.
    pub fn register(&self, name: DisplayName) -> Result<(Peer, Token), RegistryError> {
        let id = SessionId::random();
        let peer = Peer { id, name };
        let token = Token::issue(id);
        // Insert before announcing: anyone who hears `new_user` can already message the newcomer.
        self.insert(peer.clone(), token.clone())?;
        if self.announces() {
            self.deliver_all(Event::NewUser(peer.clone()), Some(id), None);
        }
        info!(session = %id, name = peer.name.as_str(), "helo");
        Ok((peer, token))
    }

    /// Checks a token and returns the session it proves.
    ///
    /// # Errors
    /// [`RegistryError::BadToken`] when the session does not exist or the secret is wrong.
    pub fn authenticate(&self, token: &Token) -> Result<Peer, RegistryError> {
        self.session_for(token).map(|s| s.peer.clone())
    }

    fn session_for(&self, token: &Token) -> Result<Arc<Session>, RegistryError> {
        let state = self.lock();
        match state.sessions.get(&token.session()) {
            Some(session) if session.token.matches(token) => Ok(Arc::clone(session)),
            _ => Err(RegistryError::BadToken),
        }
    }

    /// Attaches a stream to session `id`, taking over any stream already attached.
    ///
    /// Replay starts after `last_event_id` when given; otherwise after the last event any stream
    /// of this session was handed, so events that waited while detached come first.
    ///
    /// # Errors
    /// `UnknownSession` when `id` is not registered, `BadToken` when the token does not belong
    /// to it, `StreamLimit` when a new stream would pass `max_streams`.
    pub fn attach(
        &self,
        id: SessionId,
        token: &Token,
        last_event_id: Option<EventId>,
    ) -> Result<Subscription, RegistryError> {
        let settings = &self.shared.settings;
        let mut state = self.lock();
        let session = state
            .sessions
            .get(&id)
            .cloned()
            .ok_or(RegistryError::UnknownSession(id))?;
        if !session.token.matches(token) {
            return Err(RegistryError::BadToken);
        }
        let mut inner = session.lock();
        let takeover = inner.attachment.is_some();
        if !takeover && state.attached >= settings.max_streams {
            return Err(RegistryError::StreamLimit(settings.max_streams));
        }
        let generation = inner.next_generation;
        inner.next_generation += 1;
        let wake = Arc::new(Notify::new());
        if let Some(old) = inner.attachment.replace(Attachment {
            generation,
            wake: Arc::clone(&wake),
        }) {
            old.wake.notify_one();
        }
        inner.detached_since = None;
        let cursor = last_event_id.unwrap_or_else(|| inner.mailbox.delivered());
        drop(inner);
        if !takeover {
            state.attached += 1;
            self.shared.metrics.streams.set(state.attached as i64);
        }
        let clients = if settings.presence {
            state
                .sessions
                .values()
                .filter(|s| s.peer.id != id)
                .map(|s| s.peer.clone())
                .collect()
        } else {
            Vec::new()
        };
        drop(state);
        info!(session = %id, takeover, ?last_event_id, "attach");
        Ok(Subscription {
            registry: self.clone(),
            ready: Some(Event::Ready(event::Ready {
                id,
                name: session.peer.name.clone(),
                clients,
            })),
            session,
            generation,
            wake,
            cursor,
        })
    }

    fn detach(&self, session: &Arc<Session>, generation: u64) {
        let mut state = self.lock();
        let mut inner = session.lock();
        let current = matches!(&inner.attachment, Some(a) if a.generation == generation);
        if !current || inner.closed.is_some() {
            return;
        }
        inner.attachment = None;
        let now = Instant::now();
        inner.detached_since = Some(now);
        drop(inner);
        state.attached -= 1;
        self.shared.metrics.streams.set(state.attached as i64);
        let id = session.peer.id;
        state
            .expirations
            .insert((now + self.shared.settings.session_ttl, id));
        drop(state);
        self.shared.reaper.notify_one();
        info!(session = %id, "detach");
    }

    /// Sends a `client_broadcast` from `from` to every other session here and returns how many
    /// received it. Never waits: a full mailbox evicts its oldest event.
    pub fn broadcast(&self, from: &Peer, message: Box<RawValue>) -> usize {
        let event = Event::ClientBroadcast(event::Broadcast {
            from: from.id,
            from_name: from.name.clone(),
            message,
        });
        self.deliver_all(event, Some(from.id), None)
    }

    fn announces(&self) -> bool {
        let settings = &self.shared.settings;
        settings.presence && settings.announce_locally
    }

    /// Appends `event` to every mailbox but `except`'s (or only to `only`'s), evicting where
    /// full; returns the count. One envelope is shared by all of them.
    fn fan_out(
        &self,
        state: &State,
        event: Event,
        except: Option<SessionId>,
        only: Option<SessionId>,
    ) -> usize {
        let envelope = Envelope::new(event);
        let metrics = &self.shared.metrics;
        let mut recipients = 0;
        let targets: Box<dyn Iterator<Item = &Arc<Session>>> = match only {
            Some(id) => Box::new(state.sessions.get(&id).into_iter()),
            None => Box::new(state.sessions.values()),
        };
        for session in targets {
            if Some(session.peer.id) != except {
                // Eviction never refuses, so the result is always Ok.
                let _ = session.push(&envelope, Overflow::EvictOldest, metrics);
                recipients += 1;
            }
        }
        recipients
    }

    /// Takes `session` out of this registry and ends its stream; announces `user_left` to the
    /// others when this registry announces presence itself. False when it was already gone.
    fn remove_locked(&self, state: &mut State, session: &Arc<Session>, reason: Closed) -> bool {
        let id = session.peer.id;
        if state.sessions.remove(&id).is_none() {
            return false; // already gone: a concurrent DELETE or expiry won the race
        }
        let mut inner = session.lock();
        inner.closed = Some(reason);
        if let Some(attachment) = inner.attachment.take() {
            attachment.wake.notify_one();
            state.attached -= 1;
        }
        drop(inner);
        if reason == Closed::Removed && self.announces() {
            self.fan_out(state, Event::UserLeft(session.peer.clone()), None, None);
        }
        let metrics = &self.shared.metrics;
        metrics.sessions.set(state.sessions.len() as i64);
        metrics.streams.set(state.attached as i64);
        true
    }

    /// Removes sessions detached for longer than the TTL; returns them and the next deadline.
    pub(crate) fn expire(&self, now: Instant) -> (Vec<Peer>, Option<Instant>) {
        let ttl = self.shared.settings.session_ttl;
        let mut state = self.lock();
        let mut expired = Vec::new();
        while let Some(&(deadline, id)) = state.expirations.first() {
            if deadline > now {
                return (expired, Some(deadline));
            }
            state.expirations.pop_first();
            let Some(session) = state.sessions.get(&id).cloned() else {
                continue;
            };
            let detached_since = session.lock().detached_since;
            // Stale entry: the session re-attached, or detached again later.
            if detached_since.is_some_and(|since| since + ttl <= now)
                && self.remove_locked(&mut state, &session, Closed::Removed)
            {
                info!(session = %id, "expire");
                expired.push(session.peer.clone());
            }
        }
        (expired, None)
    }

    /// Every registered session, in no particular order.
    pub fn list(&self) -> Vec<Peer> {
        self.lock()
            .sessions
            .values()
            .map(|s| s.peer.clone())
            .collect()
    }

    /// (registered sessions, attached streams).
    pub fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.sessions.len(), state.attached)
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    // ----- Primitives for a backplane: no authentication. -----

    /// Adds a session that lives here (detached; its TTL runs until a stream attaches).
    ///
    /// # Errors
    /// [`RegistryError::SessionLimit`] when `max_sessions` are registered here.
    pub fn insert(&self, peer: Peer, token: Token) -> Result<(), RegistryError> {
        self.insert_with(peer, token, None)
    }

    fn insert_with(
        &self,
        peer: Peer,
        token: Token,
        mailbox: Option<Mailbox>,
    ) -> Result<(), RegistryError> {
        let settings = &self.shared.settings;
        let now = Instant::now();
        let id = peer.id;
        let session = Arc::new(Session {
            peer,
            token,
            inner: Mutex::new(SessionInner {
                mailbox: mailbox.unwrap_or_else(|| Mailbox::new(settings.mailbox_size)),
                attachment: None,
                next_generation: 0,
                detached_since: Some(now),
                closed: None,
            }),
        });
        let mut state = self.lock();
        if state.sessions.len() >= settings.max_sessions {
            return Err(RegistryError::SessionLimit(settings.max_sessions));
        }
        state.sessions.insert(id, session);
        state.expirations.insert((now + settings.session_ttl, id));
        self.shared
            .metrics
            .sessions
            .set(state.sessions.len() as i64);
        drop(state);
        self.shared.reaper.notify_one();
        Ok(())
    }

    /// Whether session `id` lives in this registry.
    pub fn homes(&self, id: SessionId) -> bool {
        self.lock().sessions.contains_key(&id)
    }

    /// Every session living here, with its token (to re-register them after a backplane outage).
    pub fn homed(&self) -> Vec<(Peer, Token)> {
        self.lock()
            .sessions
            .values()
            .map(|s| (s.peer.clone(), s.token.clone()))
            .collect()
    }

    /// Removes session `id` and ends its stream; returns it if it was here. The others hear
    /// `user_left` when this registry announces presence itself.
    pub fn remove_id(&self, id: SessionId) -> Option<Peer> {
        let mut state = self.lock();
        let session = state.sessions.get(&id).cloned()?;
        let removed = self.remove_locked(&mut state, &session, Closed::Removed);
        drop(state);
        removed.then(|| {
            info!(session = %id, "leave");
            session.peer.clone()
        })
    }

    /// [`Registry::fan_out`] for a backplane: every session here but `except`, or only `only`.
    pub fn deliver_all(
        &self,
        event: Event,
        except: Option<SessionId>,
        only: Option<SessionId>,
    ) -> usize {
        let state = self.lock();
        self.fan_out(&state, event, except, only)
    }

    /// Writes a `client_response` from `from` into `to`'s mailbox.
    ///
    /// # Errors
    /// `UnknownRecipient`, or `MailboxFull` when `to` has `mailbox_size` unread events.
    pub fn push_direct(
        &self,
        from: &Peer,
        to: SessionId,
        message: Box<RawValue>,
    ) -> Result<EventId, RegistryError> {
        let recipient = self
            .lock()
            .sessions
            .get(&to)
            .cloned()
            .ok_or(RegistryError::UnknownRecipient(to))?;
        let envelope = Envelope::new(Event::ClientResponse(event::Direct {
            from: from.id,
            from_name: from.name.clone(),
            recipient: to,
            message,
        }));
        let metrics = &self.shared.metrics;
        recipient
            .push(&envelope, Overflow::Refuse, metrics)
            .map_err(|mailbox::Full| {
                metrics.mailbox_full.inc();
                RegistryError::MailboxFull {
                    retry_after: Duration::from_secs(1),
                }
            })
    }

    /// Moves session `id` out of this registry: its stream here closes as taken over, and the
    /// returned snapshot lets another instance continue it with the same event ids.
    pub fn export(&self, id: SessionId) -> Option<Snapshot> {
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

    /// Continues a session exported elsewhere; `token` must be the session's own.
    ///
    /// # Errors
    /// [`RegistryError::SessionLimit`] when `max_sessions` are registered here.
    pub fn import(&self, snapshot: Snapshot, token: Token) -> Result<(), RegistryError> {
        let mailbox = Mailbox::import(
            self.shared.settings.mailbox_size,
            snapshot.last_id,
            snapshot.delivered,
            snapshot
                .events
                .into_iter()
                .map(|(id, event)| (id, Envelope::new(event)))
                .collect(),
        );
        self.insert_with(snapshot.peer, token, Some(mailbox))
    }
}

/// A session in transit between instances: who it is and its mailbox, ids included.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub peer: Peer,
    pub last_id: EventId,
    pub delivered: EventId,
    pub events: Vec<(EventId, Event)>,
}
