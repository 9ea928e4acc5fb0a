//! A session's bounded, ordered mailbox: the one buffer between senders and the stream.
//!
//! Bounded twice: by a count of events and by a byte budget (each event's [`Envelope::size`]),
//! so a session holds at most `max_bytes` of events however large each one is.
//!
//! Events stay here after a stream has read them, so a reconnect with `Last-Event-ID` can replay
//! them; `delivered` marks how far a stream has read. Only events past `delivered` count as
//! pending: a direct message is refused when the pending events already fill the mailbox, while
//! broadcasts and presence announcements never wait: they evict the oldest entry, and a reader
//! that had not yet seen it learns the count as `lagged`.

use std::collections::VecDeque;
use std::sync::Arc;

use super::event::{Envelope, EventId};

/// What to do when a push finds the mailbox full of unread events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Refuse the push (direct messages: the sender gets 429 and retries).
    Refuse,
    /// Drop the oldest entries until the new one fits (broadcasts and presence: never wait on a
    /// slow reader).
    EvictOldest,
}

/// The push was refused: unread events fill every slot, or with this one would pass the byte
/// budget.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// Events after a cursor, and how many of them are gone for good.
#[derive(Debug, Default)]
pub struct Replay {
    /// Events with ids after the cursor that were evicted before anyone read them.
    pub missed: u64,
    pub events: Vec<(EventId, Arc<Envelope>)>,
}

#[derive(Debug)]
pub struct Mailbox {
    entries: VecDeque<(EventId, Arc<Envelope>)>,
    capacity: usize,
    /// Byte budget: the sum of the entries' sizes stays at or below it (an event larger than
    /// the whole budget is kept alone, since refusing a broadcast is not an option).
    max_bytes: usize,
    /// Sum of the entries' sizes.
    bytes: usize,
    /// Id of the newest event ever pushed; 0 before the first.
    last_id: EventId,
    /// Newest id a stream has been handed.
    delivered: EventId,
}

impl Mailbox {
    /// A mailbox of at most `capacity` events and `max_bytes` bytes of them.
    ///
    /// # Panics
    /// When `capacity` is 0: a mailbox must hold at least the event being pushed.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        assert!(capacity > 0, "mailbox capacity must be at least 1");
        Mailbox {
            entries: VecDeque::new(),
            capacity,
            max_bytes,
            bytes: 0,
            last_id: 0,
            delivered: 0,
        }
    }

    /// Appends an event and returns its id, plus whether an unread event was evicted for it.
    ///
    /// Events already read make room first, being the oldest; with [`Overflow::EvictOldest`]
    /// unread ones follow.
    ///
    /// # Errors
    /// [`Full`] with [`Overflow::Refuse`] when `capacity` unread events are waiting, or when
    /// the unread events and this one would pass `max_bytes`.
    pub fn push(
        &mut self,
        envelope: Arc<Envelope>,
        overflow: Overflow,
    ) -> Result<(EventId, bool), Full> {
        if overflow == Overflow::Refuse
            && (self.pending() >= self.capacity
                || self.pending_bytes() + envelope.size > self.max_bytes)
        {
            return Err(Full);
        }
        let mut evicted_unread = false;
        while self.entries.len() == self.capacity
            || !self.entries.is_empty() && self.bytes + envelope.size > self.max_bytes
        {
            let Some((oldest, evicted)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= evicted.size;
            evicted_unread |= oldest > self.delivered;
        }
        self.bytes += envelope.size;
        self.last_id += 1;
        self.entries.push_back((self.last_id, envelope));
        Ok((self.last_id, evicted_unread))
    }

    /// Events no stream has been handed yet.
    pub fn pending(&self) -> usize {
        // Bounded by `entries.len()`: evicted events are no longer pending, they are missed.
        usize::try_from(self.last_id - self.delivered)
            .unwrap_or(usize::MAX)
            .min(self.entries.len())
    }

    /// Id of the newest event this mailbox ever held (0 before the first).
    pub fn newest(&self) -> EventId {
        self.last_id
    }

    /// Bytes of the events no stream has been handed yet.
    fn pending_bytes(&self) -> usize {
        let pending = self.pending();
        self.entries
            .iter()
            .skip(self.entries.len() - pending)
            .map(|(_, envelope)| envelope.size)
            .sum()
    }

    /// Id of the newest event a stream was handed; where a fresh attach without
    /// `Last-Event-ID` resumes.
    pub fn delivered(&self) -> EventId {
        self.delivered
    }

    /// Everything needed to continue this mailbox elsewhere with the same ids.
    pub fn export(&self) -> (EventId, EventId, Vec<(EventId, Arc<Envelope>)>) {
        (
            self.last_id,
            self.delivered,
            self.entries.iter().cloned().collect(),
        )
    }

    /// The mailbox [`Mailbox::export`] described, within `capacity` and `max_bytes` (the
    /// newest kept).
    pub fn import(
        capacity: usize,
        max_bytes: usize,
        last_id: EventId,
        delivered: EventId,
        entries: Vec<(EventId, Arc<Envelope>)>,
    ) -> Self {
        let mut mailbox = Mailbox::new(capacity, max_bytes);
        for entry in entries.into_iter().rev().take(capacity) {
            if !mailbox.entries.is_empty() && mailbox.bytes + entry.1.size > max_bytes {
                break;
            }
            mailbox.bytes += entry.1.size;
            mailbox.entries.push_front(entry);
        }
        mailbox.last_id = last_id;
        mailbox.delivered = delivered.min(last_id);
        mailbox
    }

    /// Up to `limit` events with ids after `after`, oldest first, marking them delivered.
    ///
    /// A cursor beyond the newest id (a client inventing ids) is treated as "up to date".
    pub fn replay_after(&mut self, after: EventId, limit: usize) -> Replay {
        let after = after.min(self.last_id);
        let first_kept = self.last_id + 1 - self.entries.len() as u64;
        let missed = first_kept.saturating_sub(after + 1);
        let skip = usize::try_from(after.saturating_sub(first_kept - 1)).unwrap_or(usize::MAX);
        let events: Vec<_> = self
            .entries
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect();
        let newest = events.last().map_or(after, |(id, _)| *id);
        self.delivered = self.delivered.max(newest);
        Replay { missed, events }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::registry::event::{Broadcast, ENVELOPE_OVERHEAD, Event, Lagged};
    use crate::registry::{DisplayName, SessionId};

    fn envelope(missed: u64) -> Arc<Envelope> {
        Envelope::new(Event::Lagged(Lagged { missed }))
    }

    fn ids(replay: &Replay) -> Vec<EventId> {
        replay.events.iter().map(|(id, _)| *id).collect()
    }

    #[test]
    fn ids_start_at_one_and_replay_in_order() {
        let mut mailbox = Mailbox::new(4, usize::MAX);
        for n in 0..3 {
            assert_eq!(
                mailbox.push(envelope(n), Overflow::Refuse).unwrap().0,
                n + 1
            );
        }
        let replay = mailbox.replay_after(1, 10);
        assert_eq!(ids(&replay), [2, 3]);
        assert_eq!(replay.missed, 0);
    }

    #[test]
    fn direct_pushes_are_refused_only_when_unread_events_fill_it() {
        let mut mailbox = Mailbox::new(2, usize::MAX);
        mailbox.push(envelope(0), Overflow::Refuse).unwrap();
        mailbox.push(envelope(0), Overflow::Refuse).unwrap();
        assert_eq!(mailbox.push(envelope(0), Overflow::Refuse), Err(Full));
        mailbox.replay_after(0, 1);
        // One slot now holds a read event, which may be evicted without loss.
        assert_eq!(mailbox.push(envelope(0), Overflow::Refuse), Ok((3, false)));
    }

    #[test]
    fn eviction_of_unread_events_is_reported_as_missed() {
        let mut mailbox = Mailbox::new(2, usize::MAX);
        for _ in 0..5 {
            mailbox.push(envelope(0), Overflow::EvictOldest).unwrap();
        }
        let replay = mailbox.replay_after(0, 10);
        assert_eq!(replay.missed, 3);
        assert_eq!(ids(&replay), [4, 5]);
        // A reader that had already seen up to 3 missed nothing: 4 and 5 are kept.
        assert_eq!(mailbox.replay_after(3, 10).missed, 0);
    }

    #[test]
    fn batches_are_limited_and_say_more_follows() {
        let mut mailbox = Mailbox::new(8, usize::MAX);
        for _ in 0..5 {
            mailbox.push(envelope(0), Overflow::Refuse).unwrap();
        }
        let first = mailbox.replay_after(0, 2);
        assert_eq!(ids(&first), [1, 2]);
        assert_eq!(mailbox.delivered(), 2);
        assert_eq!(mailbox.pending(), 3);
    }

    fn sized(bytes: usize) -> Arc<Envelope> {
        let text = format!("\"{}\"", "x".repeat(bytes - 2));
        let id = SessionId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        Envelope::new(Event::ClientBroadcast(Broadcast {
            from: id,
            from_name: DisplayName::parse("ann").unwrap(),
            message: RawValue::from_string(text).unwrap(),
        }))
    }

    #[test]
    fn the_byte_budget_evicts_broadcasts_and_refuses_direct_messages() {
        let each = 1000 + ENVELOPE_OVERHEAD;
        let mut mailbox = Mailbox::new(100, 3 * each);
        for _ in 0..3 {
            mailbox.push(sized(1000), Overflow::Refuse).unwrap();
        }
        // A fourth unread event would pass the budget: refused, though slots are free.
        assert_eq!(mailbox.push(sized(1000), Overflow::Refuse), Err(Full));
        // A broadcast evicts the oldest to fit, and the reader learns it missed one.
        assert_eq!(
            mailbox.push(sized(1000), Overflow::EvictOldest),
            Ok((4, true))
        );
        let replay = mailbox.replay_after(0, 10);
        assert_eq!((replay.missed, ids(&replay)), (1, vec![2, 3, 4]));
        // Read events make room for a direct message without loss.
        assert_eq!(mailbox.push(sized(1000), Overflow::Refuse), Ok((5, false)));
        assert_eq!(mailbox.export().2.len(), 3);
    }

    #[test]
    fn a_cursor_from_the_future_replays_nothing() {
        let mut mailbox = Mailbox::new(2, usize::MAX);
        mailbox.push(envelope(0), Overflow::Refuse).unwrap();
        let replay = mailbox.replay_after(99, 10);
        assert!(replay.events.is_empty());
        assert_eq!(replay.missed, 0);
    }
}
