//! Writing a parked stream's new events straight to its client, from whoever appended them.
//!
//! A stream's task sleeps while its mailbox holds nothing new for it: it is *parked*. Waking
//! 10,000 tasks per broadcast, each to read one event and write it, cost more user-space time
//! than anything else at one broadcast a second (the wakes, the polls and the mailbox reads, in
//! the profile of issue 12). So a stream hands its attachment a [`Writer`] for its socket, and
//! while it is parked, new events are written to the socket for it, with one send that never
//! waits: a direct message by its sender, a fan-out's events by the registry's [`Outbox`], on
//! every worker at once. The task is woken only when there is something it must do: finish a
//! write the socket did not take ([`Written::unwritten`]), read a mailbox longer than one
//! write, end (takeover, removal, shutdown), or send a heartbeat.
//!
//! One side writes at a time, under the session's lock: the registry only while the stream is
//! parked, the task only once it has unparked itself. Every write starts at the attachment's
//! cursor, so no write repeats or overtakes another.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::time::Instant;

use super::event::EventId;
use super::mailbox::Mailbox;
use super::session::{Session, SessionInner};
use crate::metrics::{Deliveries, Metrics};

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

/// Fewest parked streams worth a second worker: below this, one task writes them all.
const SHARE: usize = 256;

/// Parked streams a worker takes at a time from a pass's list.
const CHUNK: usize = 64;

impl SessionInner {
    /// Writes the new events to the client if the stream is parked and has a writer;
    /// otherwise (or when the writer could not write everything) wakes the stream.
    pub(crate) fn write_or_wake(&mut self, now: Instant, tally: &mut Deliveries) {
        let SessionInner {
            mailbox,
            attachment,
            ..
        } = self;
        let Some(attachment) = attachment else {
            return;
        };
        attachment.queued = false;
        if let (true, Some(writer)) = (attachment.parked, &attachment.writer) {
            let written = writer.write(mailbox, attachment.cursor, tally);
            attachment.cursor = written.through;
            attachment.wrote_at = Some(now);
            if written.unwritten.is_empty() && written.through >= mailbox.newest() {
                return;
            }
            attachment.unwritten = written.unwritten;
            attachment.parked = false;
        }
        attachment.wake.notify_one();
    }

    /// Marks the attached stream as waiting in the outbox; false when it already was (one
    /// write will carry both events).
    pub(crate) fn queue(&mut self) -> bool {
        match &mut self.attachment {
            Some(attachment) => !std::mem::replace(&mut attachment.queued, true),
            None => false,
        }
    }
}

/// The parked streams that fan-outs gave events to, waiting to be written.
///
/// One pass at a time writes them, with every runtime worker when there are many (as the floor
/// does, one thread per core), each taking the next [`CHUNK`] until none is left: the floor
/// splits its sockets in fixed halves, and its slower thread (on the core the receivers load
/// more) sets its p99; taking chunks, the faster worker simply writes more. Fan-outs that
/// come during a pass queue their streams for the next one, so a stream that gets event after
/// event has them all in one send: written once per event instead, a saturated fan-out to
/// 10,000 streams fell from 907,000 to 172,000 deliveries/s.
#[derive(Clone)]
pub(crate) struct Outbox {
    inner: Arc<Mutex<Queue>>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Arc<Session>>,
    /// A pass is running; it takes `waiting` when it ends.
    writing: bool,
}

/// One pass's streams, and its workers still writing.
struct Pass {
    sessions: Vec<Arc<Session>>,
    next: AtomicUsize,
    workers: AtomicUsize,
}

/// One worker's part in a pass. However it ends (a panic included), the last worker out
/// starts the next pass or marks the outbox idle, so parked streams are never left unwritten.
struct Worker {
    outbox: Outbox,
    pass: Arc<Pass>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.pass.workers.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(next) = self.outbox.next_pass()
        {
            self.outbox.pass(next);
        }
    }
}

impl Outbox {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Outbox {
            inner: Arc::default(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.inner.lock().expect("outbox lock poisoned")
    }

    /// Writes (or wakes) each of `sessions`: now, unless a pass is running, which then takes
    /// them next.
    pub(crate) fn write(&self, sessions: Vec<Arc<Session>>) {
        if sessions.is_empty() {
            return;
        }
        let mut queue = self.lock();
        if queue.writing {
            queue.waiting.extend(sessions);
            return;
        }
        queue.writing = true;
        drop(queue);
        self.pass(sessions);
    }

    /// Runs a pass over `sessions`, and the passes queued meanwhile: in tasks, one per worker,
    /// when there are many (so that every worker can take one: the task spawned last stays on
    /// the spawning worker, the others can be stolen), else here.
    fn pass(&self, mut sessions: Vec<Arc<Session>>) {
        let workers = tokio::runtime::Handle::try_current()
            .map(|runtime| runtime.metrics().num_workers())
            .unwrap_or(1);
        loop {
            let tasks = workers.min(sessions.len() / SHARE);
            if tasks > 1 {
                break self.spawn_pass(sessions, tasks);
            }
            let mut tally = Deliveries::default();
            let now = Instant::now();
            for session in &sessions {
                session.lock().write_or_wake(now, &mut tally);
            }
            self.metrics.add_deliveries(&mut tally);
            match self.next_pass() {
                Some(next) => sessions = next,
                None => break,
            }
        }
    }

    fn spawn_pass(&self, sessions: Vec<Arc<Session>>, tasks: usize) {
        let pass = Arc::new(Pass {
            sessions,
            next: AtomicUsize::new(0),
            workers: AtomicUsize::new(tasks),
        });
        for _ in 0..tasks {
            let worker = Worker {
                outbox: self.clone(),
                pass: Arc::clone(&pass),
            };
            tokio::spawn(async move { worker.outbox.write_part(&worker.pass).await });
        }
    }

    /// What queued up during a pass; `None` (and no pass running) when nothing did.
    fn next_pass(&self) -> Option<Vec<Arc<Session>>> {
        let mut queue = self.lock();
        if queue.waiting.is_empty() {
            queue.writing = false;
            None
        } else {
            Some(std::mem::take(&mut queue.waiting))
        }
    }

    /// Writes chunks of the pass until none is left, yielding to the runtime after each: a
    /// worker writing 5,000 sockets without a break held up every request on it for ~45 ms,
    /// the publishers' included, so that under load each pass found one new event per stream.
    async fn write_part(&self, pass: &Pass) {
        let mut tally = Deliveries::default();
        loop {
            let start = pass.next.fetch_add(CHUNK, Ordering::Relaxed);
            let Some(chunk) = pass.sessions.get(start..) else {
                break;
            };
            let now = Instant::now();
            for session in chunk.iter().take(CHUNK) {
                session.lock().write_or_wake(now, &mut tally);
            }
            tokio::task::yield_now().await;
        }
        self.metrics.add_deliveries(&mut tally);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use futures_util::FutureExt;
    use serde_json::value::RawValue;
    use tokio::sync::mpsc;

    use super::*;
    use crate::limits::AddressGuard;
    use crate::registry::mailbox::Replay;
    use crate::registry::{DisplayName, Peer, Pull, Registry, Settings, Subscription, Token};

    /// A client's socket with room for `room` more events; records the ids it took, and says
    /// so on `wrote` when given one.
    #[derive(Default)]
    struct Socket {
        room: Mutex<usize>,
        took: Mutex<Vec<EventId>>,
        sends: AtomicUsize,
        wrote: Option<mpsc::UnboundedSender<()>>,
    }

    impl Socket {
        fn with_room(room: usize) -> Arc<Self> {
            Arc::new(Socket {
                room: Mutex::new(room),
                ..Socket::default()
            })
        }

        fn took(&self) -> Vec<EventId> {
            self.took.lock().unwrap().clone()
        }
    }

    impl Writer for Socket {
        fn write(&self, mailbox: &mut Mailbox, cursor: EventId, _: &mut Deliveries) -> Written {
            self.sends.fetch_add(1, Ordering::Relaxed);
            let mut replay = Replay::default();
            let through = mailbox.replay_into(cursor, 64, &mut replay).through;
            let mut room = self.room.lock().unwrap();
            let mut unwritten = VecDeque::new();
            for (id, _) in replay.events {
                if *room > 0 {
                    *room -= 1;
                    self.took.lock().unwrap().push(id);
                } else {
                    unwritten.push_back(Bytes::from(id.to_string()));
                }
            }
            if let Some(wrote) = &self.wrote {
                let _ = wrote.send(());
            }
            Written { through, unwritten }
        }
    }

    fn registry(max_sessions: usize) -> Registry {
        let settings = Settings {
            max_sessions,
            max_streams: max_sessions,
            ..Settings::small()
        };
        Registry::new(settings, Arc::default())
    }

    fn join(registry: &Registry, name: &str) -> (Peer, Token) {
        let name = DisplayName::parse(name).unwrap();
        registry
            .register(name.into(), AddressGuard::unlimited())
            .unwrap()
    }

    fn message(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    /// The ids a pull hands the stream itself; panics unless it read events or nothing.
    fn pulled(stream: &mut Subscription) -> Vec<EventId> {
        match stream.pull(64) {
            Pull::Events(replay) => replay.events.iter().map(|(id, _)| *id).collect(),
            Pull::Idle => Vec::new(),
            other => panic!("expected events or nothing, got {other:?}"),
        }
    }

    fn woken(stream: &Subscription) -> bool {
        stream.changed().now_or_never().is_some()
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_stream_is_written_to_without_being_woken() {
        let registry = registry(10);
        let (ann, ann_token) = join(&registry, "ann");
        let (bob, _) = join(&registry, "bob");
        let mut stream = registry.attach(ann.id, &ann_token, None).unwrap();
        let socket = Socket::with_room(10);
        stream.write_directly(socket.clone());

        // Not parked yet (it has not found its mailbox empty): the stream is woken to read.
        registry.broadcast(&bob, message("1"));
        assert!(socket.took().is_empty());
        assert!(woken(&stream));
        assert_eq!(pulled(&mut stream), [1]);

        // Parked now: a broadcast and a direct message go straight to the socket.
        assert!(pulled(&mut stream).is_empty());
        registry.broadcast(&bob, message("2"));
        registry.deliver(&bob, ann.id, message("3")).unwrap();
        assert_eq!(socket.took(), [2, 3]);
        assert!(!woken(&stream), "nothing for the stream's task to do");
        assert!(
            pulled(&mut stream).is_empty(),
            "nothing is handed over twice"
        );

        // Unparked for a heartbeat: the stream writes itself again until it parks.
        stream.unpark();
        registry.broadcast(&bob, message("4"));
        assert!(woken(&stream));
        assert_eq!(pulled(&mut stream), [4]);
        assert_eq!(socket.took(), [2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn what_the_socket_does_not_take_is_left_to_the_stream_in_order() {
        let registry = registry(10);
        let (ann, ann_token) = join(&registry, "ann");
        let (bob, _) = join(&registry, "bob");
        let mut stream = registry.attach(ann.id, &ann_token, None).unwrap();
        let socket = Socket::with_room(1);
        stream.write_directly(socket.clone());
        assert!(pulled(&mut stream).is_empty());

        registry.broadcast(&bob, message("1"));
        registry.broadcast(&bob, message("2"));
        // The socket took 1 and was full for 2: the stream is unparked and woken to finish.
        assert_eq!(socket.took(), [1]);
        assert!(woken(&stream));
        // Once unparked, nothing more goes to the socket behind the stream's back.
        registry.broadcast(&bob, message("3"));
        *socket.room.lock().unwrap() = 10;
        registry.broadcast(&bob, message("4"));
        assert_eq!(socket.took(), [1]);

        let Pull::Unwritten(rest) = stream.pull(64) else {
            panic!("the unwritten part comes first");
        };
        assert_eq!(rest, [Bytes::from("2")]);
        assert_eq!(pulled(&mut stream), [3, 4]);
        assert!(pulled(&mut stream).is_empty());
        registry.broadcast(&bob, message("5"));
        assert_eq!(socket.took(), [1, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_taken_over_streams_socket_is_written_no_more() {
        let registry = registry(10);
        let (ann, ann_token) = join(&registry, "ann");
        let (bob, _) = join(&registry, "bob");
        let mut old = registry.attach(ann.id, &ann_token, None).unwrap();
        let socket = Socket::with_room(10);
        old.write_directly(socket.clone());
        assert!(pulled(&mut old).is_empty());

        let mut new = registry.attach(ann.id, &ann_token, None).unwrap();
        registry.broadcast(&bob, message("1"));
        assert!(socket.took().is_empty());
        // A late writer for the old stream changes nothing either.
        old.write_directly(Socket::with_room(10));
        assert_eq!(pulled(&mut new), [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn events_that_come_while_a_stream_waits_in_the_outbox_go_out_in_one_send() {
        let registry = registry(10);
        let (ann, ann_token) = join(&registry, "ann");
        let (bob, _) = join(&registry, "bob");
        let mut stream = registry.attach(ann.id, &ann_token, None).unwrap();
        let socket = Socket::with_room(10);
        stream.write_directly(socket.clone());
        assert!(pulled(&mut stream).is_empty());

        let outbox = &registry.shared.outbox;
        outbox.lock().writing = true; // as while a pass over many streams runs
        registry.broadcast(&bob, message("1"));
        registry.broadcast(&bob, message("2"));
        assert!(socket.took().is_empty());
        assert_eq!(outbox.lock().waiting.len(), 1, "queued once");

        let next = outbox.next_pass().expect("the queued stream");
        outbox.pass(next);
        assert_eq!(socket.took(), [1, 2]);
        assert_eq!(socket.sends.load(Ordering::Relaxed), 1);
        assert!(!woken(&stream));
        assert!(outbox.next_pass().is_none(), "and the outbox is idle again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_fan_out_is_written_in_shares_and_reaches_everyone() {
        let streams = 4 * SHARE;
        let registry = registry(streams + 1);
        let (bob, _) = join(&registry, "bob");
        let (wrote, mut writes) = mpsc::unbounded_channel();
        let mut sockets = Vec::new();
        let mut attached = Vec::new();
        for _ in 0..streams {
            let (peer, token) = join(&registry, "ann");
            let mut stream = registry.attach(peer.id, &token, None).unwrap();
            let socket = Arc::new(Socket {
                room: Mutex::new(1),
                wrote: Some(wrote.clone()),
                ..Socket::default()
            });
            stream.write_directly(socket.clone());
            assert!(pulled(&mut stream).is_empty());
            sockets.push(socket);
            attached.push(stream);
        }

        assert_eq!(registry.broadcast(&bob, message("1")), streams);
        let all = async {
            for _ in 0..streams {
                writes.recv().await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .expect("every parked stream is written to");
        assert!(sockets.iter().all(|socket| socket.took() == [1]));
    }
}
