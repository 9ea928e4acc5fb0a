//! Attaching a stream to a session, and the stream's side of it: [`Subscription`].
//!
//! One stream per session: a new attach takes over, waking the old stream, which then finds it
//! is no longer the current attachment and ends. Dropping a subscription detaches the session
//! and starts its TTL.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::info;

use super::event::{self, Event, EventId, Peer, Roster};
#[cfg(test)]
use super::mailbox::Replay;
use super::mailbox::{ReplaySink, Replayed};
use super::session::{Attachment, Closed, Session};
use super::writer::Writer;
use super::{Registry, RegistryError};
use crate::identity::{RoomName, SessionId, Token};

/// What a stream gets when it reads its mailbox: what [`Subscription::pull_into`] handed its
/// sink, what its writer left to it, nothing new (it is parked now), or the end.
#[derive(Debug)]
pub enum Pull<T = Replayed> {
    Events(T),
    Unwritten(VecDeque<Bytes>),
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
    ready: Option<Event>,
}

impl Subscription {
    pub fn session_id(&self) -> SessionId {
        self.session.peer.id
    }

    /// Sets who else is in this session's rooms in `ready` (empty until the hub fills it:
    /// presence is its call).
    pub(crate) fn set_roster(&mut self, clients: Vec<Peer>, rooms: BTreeMap<RoomName, Roster>) {
        if let Some(Event::Ready(ready)) = &mut self.ready {
            ready.clients = clients;
            ready.rooms = rooms;
        }
    }

    /// The `ready` event, once: the first thing a stream sends.
    pub fn take_ready(&mut self) -> Option<Event> {
        self.ready.take()
    }

    /// [`Subscription::pull_into`] a list, for tests.
    #[cfg(test)]
    pub fn pull(&mut self, limit: usize) -> Pull<Replay> {
        let mut replay = Replay::default();
        match self.pull_into(limit, &mut replay) {
            Pull::Events(replayed) => {
                replay.through = replayed.through;
                Pull::Events(replay)
            }
            Pull::Unwritten(chunks) => Pull::Unwritten(chunks),
            Pull::Idle => Pull::Idle,
            Pull::Closed(reason) => Pull::Closed(reason),
        }
    }

    /// Reads up to `limit` events past this stream's cursor without waiting, handing them to
    /// `sink` under the session's lock; first, what its writer could not write. Once the server
    /// is stopping, a stream with nothing left to read gets `Closed(Shutdown)`; so does one
    /// whose session expired, with `Closed(Expired)`.
    ///
    /// The stream is unparked while it has something to write, and parked once it has nothing
    /// (`Idle`) if it has a writer, which then writes for it.
    pub fn pull_into(&mut self, limit: usize, sink: &mut impl ReplaySink) -> Pull {
        let mut inner = self.session.lock();
        let closed = inner.closed;
        if let Some(reason) = closed.filter(|&reason| reason != Closed::Expired) {
            return Pull::Closed(reason);
        }
        let inner = &mut *inner;
        let attachment = match &mut inner.attachment {
            Some(a) if a.generation == self.generation => a,
            _ => return Pull::Closed(Closed::TakenOver),
        };
        attachment.parked = false;
        if !attachment.unwritten.is_empty() {
            return Pull::Unwritten(std::mem::take(&mut attachment.unwritten));
        }
        let replayed = inner.mailbox.replay_into(attachment.cursor, limit, sink);
        attachment.cursor = replayed.through;
        if replayed.events > 0 || replayed.missed > 0 {
            Pull::Events(replayed)
        } else if let Some(reason) = closed {
            // Expired, and everything written: its `expired` was the last event.
            Pull::Closed(reason)
        } else if self.registry.is_stopping() {
            Pull::Closed(Closed::Shutdown)
        } else {
            attachment.parked = attachment.writer.is_some();
            Pull::Idle
        }
    }

    /// Lets `writer` write to this stream's client while the stream is parked.
    pub(crate) fn write_directly(&self, writer: Arc<dyn Writer>) {
        if let Some(a) = &mut self.session.lock().attachment
            && a.generation == self.generation
        {
            a.writer = Some(writer);
        }
    }

    /// Unparks the stream, so that it may write itself (a heartbeat); when its writer last
    /// wrote to it. The next `Idle` pull parks it again.
    pub(crate) fn unpark(&self) -> Option<Instant> {
        match &mut self.session.lock().attachment {
            Some(a) if a.generation == self.generation => {
                a.parked = false;
                a.wrote_at
            }
            _ => None,
        }
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
    /// Attaches a stream to session `id`, taking over any stream already attached.
    ///
    /// Replay starts after `last_event_id` when given; otherwise after the last event any stream
    /// of this session was handed, so events that waited while detached come first. The `ready`
    /// event's roster is empty; the hub fills it.
    ///
    /// # Errors
    /// `UnknownSession` when `id` is not registered (`SessionExpired` when it ended at its
    /// lifetime lately and the token is its own), `BadToken` when the token does not belong
    /// to it, `ResumePointAhead` when `last_event_id` is after the newest event of the session
    /// (a client cannot have seen it), `StreamLimit` when a new stream would pass `max_streams`.
    pub(crate) fn attach(
        &self,
        id: SessionId,
        token: &Token,
        last_event_id: Option<EventId>,
    ) -> Result<Subscription, RegistryError> {
        let max_streams = self.shared.settings.max_streams;
        let mut state = self.lock();
        let session = state
            .session(id)
            .map_err(|unknown| state.gone(id, token, unknown))?;
        if !session.token.matches(token) {
            return Err(RegistryError::BadToken);
        }
        let mut inner = session.lock();
        let newest = inner.mailbox.newest();
        if let Some(asked) = last_event_id.filter(|&asked| asked > newest) {
            return Err(RegistryError::ResumePointAhead { asked, newest });
        }
        let takeover = inner.attachment.is_some();
        if !takeover && state.attached >= max_streams {
            return Err(RegistryError::StreamLimit(max_streams));
        }
        let generation = inner.next_generation;
        inner.next_generation += 1;
        let wake = Arc::new(Notify::new());
        let cursor = last_event_id.unwrap_or_else(|| inner.mailbox.delivered());
        let attachment = Attachment::new(generation, Arc::clone(&wake), cursor);
        if let Some(old) = inner.attachment.replace(attachment) {
            old.wake.notify_one();
        }
        inner.detached_since = None;
        drop(inner);
        if !takeover {
            state.attached += 1;
            self.shared.metrics.streams.set(state.attached as i64);
        }
        drop(state);
        info!(session = %id, takeover, ?last_event_id, "attach");
        Ok(Subscription {
            registry: self.clone(),
            ready: Some(Event::Ready(event::Ready {
                id,
                name: session.peer.name.clone(),
                clients: Vec::new(),
                rooms: BTreeMap::new(),
            })),
            session,
            generation,
            wake,
        })
    }

    /// Ends attachment `generation` of `session`, unless a newer one took over or the session
    /// is gone; the session's TTL starts now.
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
}
