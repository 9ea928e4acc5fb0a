//! The SSE wire format, and only here: how a [`Subscription`] becomes a `text/event-stream`.
//!
//! A stream sends `retry:` and `ready` first, then the mailbox replay (`lagged` first when events
//! were evicted), then live events, with a `: ping` comment after each quiet heartbeat interval.
//! It ends on takeover, removal or shutdown; on shutdown each stream waits a random part of the
//! drain window first, so thousands of clients do not reconnect in the same millisecond.
//!
//! Each event's `event:`/`data:` lines are encoded once into the shared [`Envelope`]. A batch
//! is written into one buffer of the stream's own, straight from the mailbox under the
//! session's lock: each event's `id:` line, then its frame, copied when it is small
//! ([`COPY_UP_TO`]). A larger frame is yielded as that shared `Bytes` itself (a reference count,
//! not a copy), so a stream whose client reads nothing holds no private copy of the big events
//! it is waiting to write: 200 such streams behind 64 queued 60 KB broadcasts held ~3.7 MB each
//! when every batch was copied into one buffer (issue 9). Copying the small ones saves a shared
//! reference count touched from every core per delivery, and gives one chunk per batch.
//!
//! A parked stream (one that found nothing new) is not woken for new events when it has a
//! writer (`lean` gives each stream one for its socket): the fan-out encodes the same way,
//! into a buffer each thread keeps, and writes with one send that never waits ([`write_now`]).
//! The task writes only what that send left, and heartbeats (see `registry::writer`).
//!
//! Nothing here waits on the shutdown signal: the registry wakes every stream when the server
//! stops, and a stream with nothing left to write then ends (`Closed::Shutdown`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::pin::Pin;

use tokio::time::{Instant, Sleep, sleep};
use tracing::info;
use warp::http::HeaderValue;
use warp::reply::{Reply, Response};

use super::context::StreamSettings;

use crate::limits::AddressGuard;
use crate::metrics::{Deliveries, EventKind, Metrics};
use crate::registry::event::Lagged;
use crate::registry::mailbox::{Mailbox, ReplaySink};
use crate::registry::writer::{Writer, Written};
use crate::registry::{Closed, Envelope, Event, EventId, Pull, Subscription};

/// Most events written in one chunk; bounds the chunk size and keeps streams fair.
const BATCH: usize = 64;

/// Largest frame copied into a batch's buffer; larger ones are shared (see the module doc).
const COPY_UP_TO: usize = 1024;

const PING: &[u8] = b": ping\n\n";

/// `event: <name>` plus the JSON payload as `data:` lines, and the blank line that ends it.
///
/// A client's message is kept as it sent it, so it may hold line breaks; each line becomes its
/// own `data:` line, which EventSource joins back with `\n` (still the same JSON value).
pub(crate) fn encode(event: &Event) -> Bytes {
    let json = event.data_json();
    let mut out = BytesMut::with_capacity(json.len() + 32);
    out.put_slice(b"event: ");
    out.put_slice(event.name().as_bytes());
    out.put_u8(b'\n');
    for line in json.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// The metrics' name for an event's kind.
fn kind(event: &Event) -> EventKind {
    match event {
        Event::Ready(_) => EventKind::Ready,
        Event::NewUser(_) => EventKind::NewUser,
        Event::Direct(_) => EventKind::ClientResponse,
        Event::ClientBroadcast(_) => EventKind::ClientBroadcast,
        Event::UserLeft(_) => EventKind::UserLeft,
        Event::ServerMessage(_) => EventKind::ServerMessage,
        Event::Lagged(_) => EventKind::Lagged,
        Event::Joined(_) => EventKind::Joined,
        Event::Left(_) => EventKind::Left,
        Event::RoomCount(_) => EventKind::RoomCount,
        Event::RefreshRequired(_) => EventKind::RefreshRequired,
        Event::Expired(_) => EventKind::Expired,
    }
}

/// The headers of every stream's response, whichever path writes it.
pub(crate) const HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
];

/// One attached stream, the core both paths write from: `lean` takes its chunks batch by batch
/// ([`Stream::next`]) and writes them itself; hyper reads it as a response body
/// ([`Stream::into_response`]).
pub(crate) struct Stream {
    /// The stream's place under the per-address stream cap. Declared first so it is given back
    /// before the subscription ends: once the stream count drops, the place is free.
    _place: AddressGuard,
    subscription: Subscription,
    settings: StreamSettings,
    metrics: Arc<Metrics>,
    /// When a ping is due: a heartbeat after the last write. Moving it is a plain store; the
    /// timer below is re-armed only when it fires, not on every event (a timer-wheel update
    /// per delivery showed in the 10,000-stream fan-out profile).
    next_ping: Instant,
    timer: Pin<Box<Sleep>>,
    /// Chunks of the current batch not yet handed to the writer: the batch's buffer, split
    /// where a shared frame goes between.
    queued: VecDeque<Bytes>,
}

impl Stream {
    pub(crate) fn new(
        place: AddressGuard,
        subscription: Subscription,
        settings: StreamSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Stream {
            _place: place,
            next_ping: Instant::now() + settings.heartbeat,
            timer: Box::pin(sleep(settings.heartbeat)),
            subscription,
            settings,
            metrics,
            queued: VecDeque::new(),
        }
    }

    /// The next chunks to write, at least one, once there are any; `None` when the stream ends.
    pub(crate) async fn next(&mut self) -> Option<impl Iterator<Item = Bytes> + '_> {
        if self.queued.is_empty() {
            next_batch(self).await?;
        }
        Some(self.queued.drain(..))
    }

    /// Lets `writer` write to the client while the stream is parked (see
    /// [`writer`](crate::registry::writer)).
    pub(crate) fn write_directly(&self, writer: Arc<dyn Writer>) {
        self.subscription.write_directly(writer);
    }

    /// The full response, for hyper to write.
    pub(crate) fn into_response(self) -> Response {
        let body = futures_util::stream::unfold(self, |mut stream| async move {
            if stream.queued.is_empty() {
                next_batch(&mut stream).await?;
            }
            let chunk = stream.queued.pop_front()?;
            Some((Ok::<_, Infallible>(chunk), stream))
        });
        let mut response = warp::reply::stream(body).into_response();
        let headers = response.headers_mut();
        for (name, value) in HEADERS {
            headers.insert(name, HeaderValue::from_static(value));
        }
        response
    }
}

/// Encodes the next batch of the mailbox into `state.queued`. Apart from [`next_batch`], so
/// that its buffer, batch, tally and result (368 bytes) are not part of the future that an
/// idle stream holds while it waits.
fn pull(state: &mut Stream) -> Pull {
    let mut buf = BytesMut::new();
    let mut tally = Deliveries::default();
    let mut batch = Batch::new(&mut state.queued, &mut buf, &mut tally);
    let pulled = state.subscription.pull_into(BATCH, &mut batch);
    batch.flush();
    state.metrics.add_deliveries(&mut tally);
    pulled
}

/// Queues the next chunks to write (at least one), or returns `None` when the stream ends.
async fn next_batch(state: &mut Stream) -> Option<()> {
    if let Some(ready) = state.subscription.take_ready() {
        let mut out = BytesMut::new();
        let _ = write!(out, "retry: {}\n\n", state.settings.retry.as_millis());
        out.put_slice(&encode(&ready));
        state.metrics.delivered(EventKind::Ready, 1);
        state.queued.push_back(out.freeze());
        return Some(());
    }
    loop {
        match pull(state) {
            Pull::Events(_) => {
                state.next_ping = Instant::now() + state.settings.heartbeat;
                return Some(());
            }
            Pull::Unwritten(chunks) => {
                state.queued.extend(chunks);
                return Some(());
            }
            Pull::Closed(reason) => {
                let session = state.subscription.session_id();
                match reason {
                    Closed::TakenOver => info!(%session, "takeover: older stream closed"),
                    Closed::Removed => info!(%session, "stream closed: session removed"),
                    Closed::Expired => info!(%session, "stream closed: session expired"),
                    Closed::Shutdown => {
                        let window = state.settings.drain_window.as_millis() as u64;
                        let delay = if window == 0 {
                            0
                        } else {
                            rand::random_range(0..window)
                        };
                        sleep(Duration::from_millis(delay)).await;
                    }
                }
                return None;
            }
            Pull::Idle => {}
        }
        tokio::select! {
            biased;
            () = state.subscription.changed() => {}
            () = state.timer.as_mut() => {
                // Unparked first: from here on only this task writes, until it parks again.
                if let Some(wrote) = state.subscription.unpark() {
                    state.next_ping = state.next_ping.max(wrote + state.settings.heartbeat);
                }
                if Instant::now() < state.next_ping {
                    // Something was written since it was armed: wait out the rest.
                    let due = state.next_ping;
                    state.timer.as_mut().reset(due);
                    continue;
                }
                state.next_ping = Instant::now() + state.settings.heartbeat;
                let due = state.next_ping;
                state.timer.as_mut().reset(due);
                state.metrics.heartbeats.inc();
                state.queued.push_back(Bytes::from_static(PING));
                return Some(());
            }
        }
    }
}

/// Encodes the events of `mailbox` after `cursor` (one batch at most) and writes them with
/// `write` (one vectored write that never waits) as far as it takes them: a parked stream's
/// [`Writer`](crate::registry::writer::Writer), for its socket. Encoded into a buffer each
/// thread keeps, so a write that goes out whole allocates nothing.
pub(crate) fn write_now(
    mailbox: &mut Mailbox,
    cursor: EventId,
    tally: &mut Deliveries,
    write: impl FnOnce(&[IoSlice<'_>]) -> io::Result<usize>,
) -> Written {
    thread_local! {
        static SCRATCH: RefCell<(BytesMut, VecDeque<Bytes>)> = RefCell::default();
    }
    SCRATCH.with_borrow_mut(|(buf, queued)| {
        let mut batch = Batch::new(queued, buf, tally);
        let through = mailbox.replay_into(cursor, BATCH, &mut batch).through;
        let mut unwritten = VecDeque::new();
        let written = if queued.is_empty() {
            // The usual case: only small frames, all in the buffer.
            if buf.is_empty() {
                return Written { through, unwritten };
            }
            write(&[IoSlice::new(buf)]).unwrap_or(0)
        } else {
            batch_flush(queued, buf);
            let slices: Vec<IoSlice<'_>> = queued.iter().map(|c| IoSlice::new(c)).collect();
            write(&slices).unwrap_or(0)
        };
        // What did not go out (a failed write is left whole to the task, which sees it fail).
        let mut skip = written;
        if queued.is_empty() {
            if skip < buf.len() {
                unwritten.push_back(Bytes::copy_from_slice(&buf[skip..]));
            }
        } else {
            for mut chunk in queued.drain(..) {
                if skip >= chunk.len() {
                    skip -= chunk.len();
                    continue;
                }
                chunk.advance(skip);
                skip = 0;
                unwritten.push_back(chunk);
            }
        }
        buf.clear();
        Written { through, unwritten }
    })
}

/// Moves what `buf` holds (once it holds something) to the end of `queued`.
fn batch_flush(queued: &mut VecDeque<Bytes>, buf: &mut BytesMut) {
    if !buf.is_empty() {
        queued.push_back(buf.split().freeze());
    }
}

/// One pull's worth of chunks, encoded under the session's lock. Events and their latencies
/// (against one reading of the clock) are counted in a [`Deliveries`] that the caller adds to
/// the metrics after the lock.
struct Batch<'a> {
    queued: &'a mut VecDeque<Bytes>,
    buf: &'a mut BytesMut,
    tally: &'a mut Deliveries,
    now: std::time::Instant,
}

impl<'a> Batch<'a> {
    fn new(
        queued: &'a mut VecDeque<Bytes>,
        buf: &'a mut BytesMut,
        tally: &'a mut Deliveries,
    ) -> Self {
        Batch {
            queued,
            buf,
            tally,
            now: std::time::Instant::now(),
        }
    }

    /// Queues what the buffer holds (once it holds something).
    fn flush(&mut self) {
        batch_flush(self.queued, self.buf);
    }
}

impl ReplaySink for Batch<'_> {
    fn missed(&mut self, count: u64) {
        self.buf
            .put_slice(&encode(&Event::Lagged(Lagged { missed: count })));
        self.tally.count(EventKind::Lagged);
    }

    fn event(&mut self, id: EventId, envelope: &Arc<Envelope>) {
        let frame = envelope.frame(encode);
        if self.buf.capacity() == 0 {
            self.buf.reserve(1024);
        }
        self.buf.put_slice(b"id: ");
        self.buf
            .put_slice(itoa::Buffer::new().format(id).as_bytes());
        self.buf.put_u8(b'\n');
        if frame.len() <= COPY_UP_TO {
            self.buf.put_slice(frame);
        } else {
            self.flush();
            self.queued.push_back(frame.clone());
        }
        let latency = self.now.saturating_duration_since(envelope.accepted);
        self.tally.record(kind(&envelope.event), latency);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::identity::{DisplayName, SessionId};
    use crate::registry::event::Broadcast;

    #[test]
    fn metrics_label_events_by_their_wire_names() {
        let names: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.name()).collect();
        assert_eq!(names, Event::NAMES);
        let ready = Event::Lagged(Lagged { missed: 1 });
        assert_eq!(kind(&ready).name(), ready.name());
    }

    #[test]
    fn multi_line_messages_become_several_data_lines() {
        let id = SessionId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        let event = Event::ClientBroadcast(Broadcast {
            room: crate::identity::RoomName::lobby(),
            from: id,
            from_name: DisplayName::parse("ann").unwrap(),
            message: RawValue::from_string("{\r\n\"a\": 1\n}".into()).unwrap(),
        });
        let frame = encode(&event);
        assert_eq!(
            std::str::from_utf8(&frame).unwrap(),
            "event: client_broadcast\n\
             data: {\"from\":\"67e55044-10b1-426f-9247-bb680e5fe0c8\",\"from_name\":\"ann\",\"room\":\"lobby\",\"message\":{\n\
             data: \"a\": 1\n\
             data: }}\n\n"
        );
    }
}
