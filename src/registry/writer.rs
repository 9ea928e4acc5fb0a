//! Writing a parked stream's new events straight to its client, from whoever appended them.
//!
//! A stream's task sleeps while its mailbox holds nothing new for it: it is *parked*. Waking
//! 10,000 tasks per broadcast, each to read one event and write it, cost more user-space time
//! than anything else at one broadcast a second (the wakes, the polls and the mailbox reads, in
//! the profile of issue 12). So a stream hands its attachment a [`Writer`] for its socket, and
//! while it is parked, new events are written to the socket for it, with one send that never
//! waits: a direct message by its sender, a fan-out's events by the registry's [`Outbox`](super::outbox::Outbox), on
//! every worker at once. The task is woken only when there is something it must do: finish a
//! write the socket did not take ([`Written::unwritten`]), read a mailbox longer than one
//! write, end (takeover, removal, shutdown), or send a heartbeat.
//!
//! One side writes at a time, under the session's lock: the registry only while the stream is
//! parked, the task only once it has unparked itself. Every write starts at the attachment's
//! cursor, so no write repeats or overtakes another.

use std::collections::VecDeque;

use bytes::Bytes;

use super::event::EventId;
use super::mailbox::Mailbox;
use crate::metrics::Deliveries;

/// A parked stream's client, as the registry may write to it.
pub(crate) trait Writer: Send + Sync {
    /// Writes the events of `mailbox` after `cursor` (one batch at most) as far as the
    /// client's socket takes them now, without waiting; counts them in `tally`.
    fn write(&self, mailbox: &mut Mailbox, cursor: EventId, tally: &mut Deliveries) -> Written;
}

/// What a [`Writer`] did.
pub(crate) struct Written {
    /// The newest event it took from the mailbox: the stream's cursor from now on.
    pub(crate) through: EventId,
    /// The part the socket did not take, in order; the stream's task writes it first.
    pub(crate) unwritten: VecDeque<Bytes>,
}
