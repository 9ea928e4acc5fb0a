//! One registered client as the registry holds it: who it is, its mailbox, and which stream (if
//! any) is attached to it.
//!
//! A session's lock is the innermost of the registry's locks (see the lock order in the parent
//! module): a stream reading its own mailbox takes only this lock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use smallvec::SmallVec;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::event::{Envelope, EventId, Peer};
use super::join::Credential;
use super::lifetime::Lifetime;
use super::mailbox::{self, Mailbox};
use super::sent::{Seen, SendKey, Sent};
use super::writer::Writer;
use crate::identity::{RoomName, RoomPatterns};
use crate::limits::AddressGuard;
use crate::metrics::{Deliveries, Metrics};

/// What a session may do beyond messaging, as its join decided.
#[derive(Clone, Debug)]
pub(crate) struct Rights {
    pub(crate) may_broadcast: bool,
    /// The rooms its join token allows; `None` without a claim.
    pub(crate) may_join: Option<Arc<RoomPatterns>>,
}

/// One registered client.
pub(crate) struct Session {
    pub(crate) peer: Peer,
    /// False when its join token said `"broadcast": false`.
    pub(crate) may_broadcast: bool,
    /// The rooms its join token's `rooms` claim allows; `None`: no claim (the server's
    /// `--allow-rooms` alone decides).
    pub(crate) may_join: Option<Arc<RoomPatterns>>,
    pub(crate) token: Credential,
    /// Its place under the per-address session cap, given back when the session is dropped.
    /// `None` for sessions that came from another instance or from the state file.
    _place: Option<AddressGuard>,
    /// Mailbox and attachment. Taken after the registry lock when both are needed, and alone by
    /// a stream reading its mailbox; never held across an `.await`.
    inner: Mutex<SessionInner>,
}

pub(crate) struct SessionInner {
    pub(crate) mailbox: Mailbox,
    pub(crate) attachment: Option<Attachment>,
    /// Generation handed to the next attach; tells an old stream it was taken over.
    pub(crate) next_generation: u64,
    /// When the last stream left (or the session was created); `None` while attached. The
    /// reaper removes the session once this is older than the TTL.
    pub(crate) detached_since: Option<Instant>,
    /// Set once the session left this registry (removed, or moved to another instance).
    pub(crate) closed: Option<Closed>,
    /// The keyed direct messages it was sent lately.
    pub(crate) sent: Sent,
    /// The rooms it is in, sorted; changed under the registry lock too (see `rooms`). Most
    /// sessions are in one room: held inline, not in an allocation of its own.
    pub(crate) rooms: SmallVec<[RoomName; 1]>,
    /// When it ends whatever its streams do, if anything bounds it (see `lifetime`); changed
    /// under the registry lock too, beside its entry in the `lifetimes` queue.
    /// Boxed: most sessions have none (`open` mode without `--max-session-age`), and inline
    /// it cost each of them 48 bytes.
    pub(crate) lifetime: Option<Box<Lifetime>>,
}

/// Why a keyed push was refused.
pub(crate) enum Refused {
    Full,
    KeyReused,
}

/// What a fan-out does for a session once every mailbox holds its event.
pub(crate) enum Then {
    /// No stream is attached.
    Nothing,
    /// Wake the stream's task.
    Wake(Arc<Notify>),
    /// The stream is parked: write to its client (in the registry's
    /// [`Outbox`](super::writer::Outbox)).
    Write,
}

impl SessionInner {
    /// Appends to the mailbox, counting the unread events this cost the reader as evictions;
    /// the id, and what the caller should do for the attached stream.
    fn append(
        &mut self,
        envelope: &Arc<Envelope>,
        metrics: &Metrics,
    ) -> Result<(EventId, Then), mailbox::Full> {
        let (id, lost) = self.mailbox.push(Arc::clone(envelope))?;
        if lost > 0 {
            metrics.evictions.inc_by(lost);
        }
        let then = match &self.attachment {
            None => Then::Nothing,
            // Only a stream with a writer parks.
            Some(a) if a.parked => Then::Write,
            Some(a) => Then::Wake(Arc::clone(&a.wake)),
        };
        Ok((id, then))
    }
}

/// The stream currently attached to a session.
pub(crate) struct Attachment {
    pub(crate) generation: u64,
    /// Wakes that stream: a new event, a takeover, removal, or a write left to it.
    pub(crate) wake: Arc<Notify>,
    /// The newest event written (or handed to the stream to write): where its next read starts.
    pub(crate) cursor: EventId,
    /// Writes to the stream's client while it is parked (see [`writer`](super::writer)).
    pub(crate) writer: Option<Arc<dyn Writer>>,
    /// The stream's task sleeps with nothing to write; only the writer may write meanwhile.
    pub(crate) parked: bool,
    /// What the writer could not write: the task writes it before anything else.
    pub(crate) unwritten: VecDeque<Bytes>,
    /// When the writer last wrote, so that the task sends no heartbeat right after.
    pub(crate) wrote_at: Option<Instant>,
    /// In the registry's outbox, to be written (see [`writer`](super::writer)).
    pub(crate) queued: bool,
}

impl Attachment {
    pub(crate) fn new(generation: u64, wake: Arc<Notify>, cursor: EventId) -> Self {
        Attachment {
            generation,
            wake,
            cursor,
            writer: None,
            parked: false,
            unwritten: VecDeque::new(),
            wrote_at: None,
            queued: false,
        }
    }
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Another stream attached to the same session.
    TakenOver,
    /// The session was deleted, or expired after its TTL.
    Removed,
    /// The session reached the end of its lifetime (see `lifetime`): its stream writes what
    /// it holds, `expired` last, then ends.
    Expired,
    /// The server is stopping ([`Registry::close_streams`](super::Registry::close_streams)).
    Shutdown,
}

impl Session {
    /// A detached session (its TTL runs from `now`) with `mailbox`, and the record of the keyed
    /// messages it got.
    pub(crate) fn new(
        peer: Peer,
        rights: Rights,
        token: Credential,
        (mailbox, sent): (Mailbox, Sent),
        (now, lifetime): (Instant, Option<Lifetime>),
        place: Option<AddressGuard>,
    ) -> Self {
        Session {
            peer,
            may_broadcast: rights.may_broadcast,
            may_join: rights.may_join,
            token,
            _place: place,
            inner: Mutex::new(SessionInner {
                mailbox,
                attachment: None,
                next_generation: 0,
                detached_since: Some(now),
                closed: None,
                sent,
                rooms: SmallVec::new(),
                lifetime: lifetime.map(Box::new),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SessionInner> {
        self.inner.lock().expect("session lock poisoned")
    }

    /// Appends a direct message to the mailbox and writes it to the attached stream's client
    /// (or wakes the stream), if any; counts the unread events this cost the reader as
    /// evictions. Once per `key`: a retry of one already pushed gets its id again and pushes
    /// nothing (the `false` beside the id).
    pub(crate) fn push_keyed(
        &self,
        envelope: &Arc<Envelope>,
        metrics: &Metrics,
        key: Option<SendKey>,
    ) -> Result<(EventId, bool), Refused> {
        let mut inner = self.lock();
        if let Some(key) = &key {
            match inner.sent.check(key) {
                Seen::New => {}
                Seen::Again(id) => return Ok((id, false)),
                Seen::Reused => return Err(Refused::KeyReused),
            }
        }
        let (id, then) = inner
            .append(envelope, metrics)
            .map_err(|mailbox::Full| Refused::Full)?;
        if let Some(key) = key {
            inner.sent.record(key, id);
        }
        match then {
            Then::Nothing => {}
            Then::Wake(wake) => {
                drop(inner);
                wake.notify_one();
            }
            Then::Write => {
                let mut tally = Deliveries::default();
                inner.write_or_wake(Instant::now(), &mut tally);
                drop(inner);
                metrics.add_deliveries(&mut tally);
            }
        }
        Ok((id, true))
    }

    /// Appends a fan-out's event, handing back what to do for the attached stream instead of
    /// doing it: a fan-out wakes or writes once all mailboxes hold the event. `Write` only
    /// once while the stream waits in the outbox: one write will carry every event since.
    pub(crate) fn push_unwoken(
        &self,
        envelope: &Arc<Envelope>,
        metrics: &Metrics,
    ) -> Result<(EventId, Then), mailbox::Full> {
        let mut inner = self.lock();
        match inner.append(envelope, metrics)? {
            (id, Then::Write) if !inner.queue() => Ok((id, Then::Nothing)),
            appended => Ok(appended),
        }
    }

    /// Wakes the attached stream, if any, to look again (see [`Closed::Shutdown`]).
    pub(crate) fn wake(&self) {
        if let Some(attachment) = &self.lock().attachment {
            attachment.wake.notify_one();
        }
    }

    /// Marks the session as gone from this registry and wakes its stream, which then ends with
    /// `reason`. True when a stream was attached.
    pub(crate) fn close(&self, reason: Closed) -> bool {
        let mut inner = self.lock();
        inner.closed = Some(reason);
        let wake = match reason {
            // Its stream still reads what its mailbox holds, through its attachment.
            Closed::Expired => inner.attachment.as_ref().map(|a| Arc::clone(&a.wake)),
            _ => inner.attachment.take().map(|a| a.wake),
        };
        match wake {
            Some(wake) => {
                wake.notify_one();
                true
            }
            None => false,
        }
    }
}
