//! A session's bounded, ordered mailbox: the one buffer between senders and the stream.
//!
//! Bounded twice, strictly: at most `capacity` events and at most `max_bytes` bytes of them
//! (each event's [`Envelope::size`]).
//!
//! Events stay here after a stream has read them, so a reconnect with `Last-Event-ID` can replay
//! them; `delivered` marks how far a stream has read. Who makes room, in this order:
//! 1. events already read (kept only for replay), oldest first;
//! 2. unread broadcasts and presence events (`client_broadcast`, `new_user`, `user_left`),
//!    oldest first.
//!
//! Unread direct messages never make room: the sender was told 202. So a direct message is
//! refused ([`Full`], 429 to its sender) when the unread direct messages and it would pass
//! either bound, and otherwise stored, evicting as above. A broadcast or presence event never
//! waits: it evicts as above, and when the unread direct messages leave it no room it is dropped
//! on arrival instead.
//!
//! An event evicted unread, or dropped on arrival, keeps its id, so ids stay strictly increasing
//! and a loss is a gap between them. A replay reports each gap as `missed` (a stream sends it as
//! `lagged`) just before the events that follow it: a reader learns how many events it lost, and
//! where.

use std::collections::{VecDeque, vec_deque};
use std::iter;
use std::sync::Arc;

use super::event::{Envelope, EventId};

type Entry = (EventId, Arc<Envelope>);

/// The push was refused: the unread direct messages with this one would pass the event count or
/// the byte budget.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// A run of consecutive events after a cursor, and how many events before it are gone for good:
/// [`Mailbox::replay_into`] collected, for tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Replay {
    /// Events with ids between the cursor and the first of `events` that were evicted or
    /// dropped before anyone read them.
    pub missed: u64,
    /// Consecutive ids: a replay stops at the next gap, which the next replay reports.
    pub events: Vec<Entry>,
    /// Where the next replay starts: the last of `events`, or the end of the gap when no event
    /// follows it.
    pub through: EventId,
}

/// Where [`Mailbox::replay_into`] hands a replay, in order, under the session's lock: a stream
/// encodes straight into its write buffer, with no list of entries in between.
pub trait ReplaySink {
    /// `count` events before the next one were lost: called first, and only when `count > 0`.
    fn missed(&mut self, count: u64);
    /// The next event, in id order.
    fn event(&mut self, id: EventId, envelope: &Arc<Envelope>);
}

/// What [`Mailbox::replay_into`] handed over: as [`Replay`], with the events counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub missed: u64,
    pub events: usize,
    pub through: EventId,
}

#[cfg(test)]
impl ReplaySink for Replay {
    fn missed(&mut self, count: u64) {
        self.missed = count;
    }

    fn event(&mut self, id: EventId, envelope: &Arc<Envelope>) {
        self.events.push((id, Arc::clone(envelope)));
    }
}

/// Entries oldest first, and the sum of their sizes.
#[derive(Debug, Default)]
struct Queue {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl Queue {
    fn push(&mut self, entry: Entry) {
        self.bytes += entry.1.size;
        self.entries.push_back(entry);
    }

    fn pop(&mut self) -> Option<Entry> {
        let entry = self.entries.pop_front()?;
        self.bytes -= entry.1.size;
        Some(entry)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn front_id(&self) -> Option<EventId> {
        self.entries.front().map(|(id, _)| *id)
    }

    /// The entries with ids after `after`, oldest first.
    fn after(&self, after: EventId) -> vec_deque::Iter<'_, Entry> {
        let start = self.entries.partition_point(|(id, _)| *id <= after);
        self.entries.range(start..)
    }
}

#[derive(Debug)]
pub struct Mailbox {
    /// Events a stream was handed (ids up to `delivered`), kept for replay.
    read: Queue,
    /// Unread direct messages: never evicted.
    direct: Queue,
    /// Unread broadcasts and presence events.
    fanned: Queue,
    capacity: usize,
    max_bytes: usize,
    /// Id of the newest event ever pushed, stored or not; 0 before the first.
    last_id: EventId,
    /// Newest id a stream has been handed (or told was lost).
    delivered: EventId,
}

fn is_direct(envelope: &Envelope) -> bool {
    envelope.event.is_addressed()
}

impl Mailbox {
    /// A mailbox of at most `capacity` events and `max_bytes` bytes of them.
    ///
    /// # Panics
    /// When `capacity` is 0: a mailbox must hold at least the event being pushed.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        assert!(capacity > 0, "mailbox capacity must be at least 1");
        Mailbox {
            read: Queue::default(),
            direct: Queue::default(),
            fanned: Queue::default(),
            capacity,
            max_bytes,
            last_id: 0,
            delivered: 0,
        }
    }

    /// Appends an event and returns its id, plus how many unread events the reader lost to it:
    /// those evicted for it, or the event itself when it was dropped on arrival (see the module
    /// doc for who makes room).
    ///
    /// # Errors
    /// [`Full`] for a direct message when the unread direct messages and it would pass
    /// `capacity` or `max_bytes`.
    pub fn push(&mut self, envelope: Arc<Envelope>) -> Result<(EventId, u64), Full> {
        let direct = is_direct(&envelope);
        let room = self.direct.len() < self.capacity
            && self.direct.bytes + envelope.size <= self.max_bytes;
        if !room {
            if direct {
                return Err(Full);
            }
            // Dropped on arrival: its id becomes a gap the reader is told about.
            self.last_id += 1;
            return Ok((self.last_id, 1));
        }
        let lost = self.make_room(1, envelope.size);
        self.last_id += 1;
        let queue = if direct {
            &mut self.direct
        } else {
            &mut self.fanned
        };
        queue.push((self.last_id, envelope));
        Ok((self.last_id, lost))
    }

    /// Evicts until `count` more events of `bytes` fit; returns how many unread events went.
    ///
    /// Read events go first, then unread broadcasts and presence events. Unread direct messages
    /// go only when they alone pass the bounds, which a push never lets happen (an import into
    /// a smaller mailbox may).
    fn make_room(&mut self, count: usize, bytes: usize) -> u64 {
        let mut lost = 0;
        while self.len() + count > self.capacity || self.bytes() + bytes > self.max_bytes {
            if self.read.pop().is_some() {
                continue;
            }
            if self.fanned.pop().or_else(|| self.direct.pop()).is_none() {
                break;
            }
            lost += 1;
        }
        lost
    }

    fn len(&self) -> usize {
        self.read.len() + self.direct.len() + self.fanned.len()
    }

    fn bytes(&self) -> usize {
        self.read.bytes + self.direct.bytes + self.fanned.bytes
    }

    /// Events no stream has been handed yet.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.direct.len() + self.fanned.len()
    }

    /// `count` events meant for this mailbox never reached it (a cluster's backplane lost
    /// them): their ids become a gap, which the reader is told about as for an eviction.
    pub fn skip(&mut self, count: u64) {
        self.last_id += count;
    }

    /// Id of the newest event this mailbox ever held (0 before the first).
    pub fn newest(&self) -> EventId {
        self.last_id
    }

    /// Id of the newest event a stream was handed; where a fresh attach without
    /// `Last-Event-ID` resumes.
    pub fn delivered(&self) -> EventId {
        self.delivered
    }

    /// The entries with ids after `after`, oldest first.
    fn held_after(&self, after: EventId) -> impl Iterator<Item = &Entry> {
        // The usual cursor is `delivered`: no read entry follows it and every unread one does,
        // so the three searches below are skipped (they were 4% of a saturated fan-out).
        let unread_only = after == self.delivered;
        let (read, direct, fanned) = if unread_only {
            let empty = self.read.entries.range(self.read.len()..);
            (
                empty,
                self.direct.entries.iter(),
                self.fanned.entries.iter(),
            )
        } else {
            (
                self.read.after(after),
                self.direct.after(after),
                self.fanned.after(after),
            )
        };
        let mut direct = direct.peekable();
        let mut fanned = fanned.peekable();
        let unread = iter::from_fn(move || match (direct.peek(), fanned.peek()) {
            (Some((d, _)), Some((f, _))) if f < d => fanned.next(),
            (Some(_), _) => direct.next(),
            (None, _) => fanned.next(),
        });
        // Every read id is below every unread one.
        read.chain(unread)
    }

    /// Marks everything up to `id` as handed to a stream: unread entries up to it become read.
    fn mark_delivered(&mut self, id: EventId) {
        self.delivered = self.delivered.max(id);
        loop {
            let direct = self.direct.front_id().filter(|&d| d <= self.delivered);
            let fanned = self.fanned.front_id().filter(|&f| f <= self.delivered);
            let queue = match (direct, fanned) {
                (Some(d), Some(f)) if f < d => &mut self.fanned,
                (Some(_), _) => &mut self.direct,
                (None, Some(_)) => &mut self.fanned,
                (None, None) => return,
            };
            let entry = queue.pop().expect("the front was just seen");
            self.read.push(entry);
        }
    }

    /// Everything needed to continue this mailbox elsewhere with the same ids: the newest id,
    /// the delivered one, and the entries oldest first.
    pub fn export(&self) -> (EventId, EventId, Vec<Entry>) {
        (
            self.last_id,
            self.delivered,
            self.held_after(0).cloned().collect(),
        )
    }

    /// The mailbox [`Mailbox::export`] described, within `capacity` and `max_bytes`: should
    /// those be smaller than where it came from, room is made as for a push, and only then do
    /// the oldest unread direct messages go. Entries out of order or after `last_id` are
    /// ignored.
    pub fn import(
        capacity: usize,
        max_bytes: usize,
        last_id: EventId,
        delivered: EventId,
        entries: Vec<Entry>,
    ) -> Self {
        let mut mailbox = Mailbox::new(capacity, max_bytes);
        mailbox.last_id = last_id;
        mailbox.delivered = delivered.min(last_id);
        let mut previous = 0;
        for (id, envelope) in entries {
            if id <= previous || id > last_id {
                continue;
            }
            previous = id;
            let queue = if id <= mailbox.delivered {
                &mut mailbox.read
            } else if is_direct(&envelope) {
                &mut mailbox.direct
            } else {
                &mut mailbox.fanned
            };
            queue.push((id, envelope));
        }
        mailbox.make_room(0, 0);
        mailbox
    }

    /// [`Mailbox::replay_into`] a list.
    #[cfg(test)]
    pub fn replay_after(&mut self, after: EventId, limit: usize) -> Replay {
        let mut replay = Replay::default();
        replay.through = self.replay_into(after, limit, &mut replay).through;
        replay
    }

    /// The events after `after` up to the next gap (at most `limit`), oldest first, handed to
    /// `sink` and marked delivered; `missed` counts the gap before them.
    ///
    /// A cursor beyond the newest id (a client inventing ids) is treated as "up to date".
    pub fn replay_into(
        &mut self,
        after: EventId,
        limit: usize,
        sink: &mut impl ReplaySink,
    ) -> Replayed {
        let after = after.min(self.last_id);
        let mut held = self.held_after(after).peekable();
        let first = held.peek().map_or(self.last_id + 1, |(id, _)| *id);
        let missed = first - after - 1;
        if missed > 0 {
            sink.missed(missed);
        }
        let mut events = 0;
        let mut through = after + missed;
        for ((id, envelope), expected) in held.zip(first..).take(limit) {
            if *id != expected {
                break;
            }
            sink.event(*id, envelope);
            events += 1;
            through = *id;
        }
        self.mark_delivered(through);
        Replayed {
            missed,
            events,
            through,
        }
    }
}

#[cfg(test)]
mod tests;
