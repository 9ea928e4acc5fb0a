//! The writer and the outbox against a fake socket, under tokio's paused clock (and one
//! multi-threaded test for passes in several tasks).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::*;
use crate::identity::{DisplayName, RoomName, Token};
use crate::limits::AddressGuard;
use crate::registry::event::EventId;
use crate::registry::mailbox::Mailbox;
use crate::registry::mailbox::Replay;
use crate::registry::writer::{Writer, Written};
use crate::registry::{Peer, Pull, Registry, Settings, Subscription};

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

/// ann's stream with a socket that has room for `room` events (not parked yet), and bob.
struct Scene {
    registry: Registry,
    ann: Peer,
    ann_token: Token,
    bob: Peer,
    stream: Subscription,
    socket: Arc<Socket>,
}

fn scene(room: usize) -> Scene {
    let registry = registry(10);
    let (ann, ann_token) = join(&registry, "ann");
    let (bob, _) = join(&registry, "bob");
    let stream = registry.attach(ann.id, &ann_token, None).unwrap();
    let socket = Socket::with_room(room);
    stream.write_directly(socket.clone());
    Scene {
        registry,
        ann,
        ann_token,
        bob,
        stream,
        socket,
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

/// A new session in the lobby.
fn join(registry: &Registry, name: &str) -> (Peer, Token) {
    let name = DisplayName::parse(name).unwrap();
    let (peer, token) = registry
        .register(name.into(), AddressGuard::unlimited())
        .unwrap();
    registry.join_rooms(peer.id, &[RoomName::lobby()]).unwrap();
    (peer, token)
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
    let Scene {
        registry,
        ann,
        bob,
        mut stream,
        socket,
        ..
    } = scene(10);

    // Not parked yet (it has not found its mailbox empty): the stream is woken to read.
    registry.broadcast(&bob, &RoomName::lobby(), message("1"), None);
    assert!(socket.took().is_empty());
    assert!(woken(&stream));
    assert_eq!(pulled(&mut stream), [1]);

    // Parked now: a broadcast and a direct message go straight to the socket.
    assert!(pulled(&mut stream).is_empty());
    registry.broadcast(&bob, &RoomName::lobby(), message("2"), None);
    registry.deliver(&bob, ann.id, message("3")).unwrap();
    assert_eq!(socket.took(), [2, 3]);
    assert!(!woken(&stream), "nothing for the stream's task to do");
    assert!(
        pulled(&mut stream).is_empty(),
        "nothing is handed over twice"
    );

    // Unparked for a heartbeat: the stream writes itself again until it parks.
    stream.unpark();
    registry.broadcast(&bob, &RoomName::lobby(), message("4"), None);
    assert!(woken(&stream));
    assert_eq!(pulled(&mut stream), [4]);
    assert_eq!(socket.took(), [2, 3]);
}

#[tokio::test(start_paused = true)]
async fn what_the_socket_does_not_take_is_left_to_the_stream_in_order() {
    let Scene {
        registry,
        bob,
        mut stream,
        socket,
        ..
    } = scene(1);
    assert!(pulled(&mut stream).is_empty());

    registry.broadcast(&bob, &RoomName::lobby(), message("1"), None);
    registry.broadcast(&bob, &RoomName::lobby(), message("2"), None);
    // The socket took 1 and was full for 2: the stream is unparked and woken to finish.
    assert_eq!(socket.took(), [1]);
    assert!(woken(&stream));
    // Once unparked, nothing more goes to the socket behind the stream's back.
    registry.broadcast(&bob, &RoomName::lobby(), message("3"), None);
    *socket.room.lock().unwrap() = 10;
    registry.broadcast(&bob, &RoomName::lobby(), message("4"), None);
    assert_eq!(socket.took(), [1]);

    let Pull::Unwritten(rest) = stream.pull(64) else {
        panic!("the unwritten part comes first");
    };
    assert_eq!(rest, [Bytes::from("2")]);
    assert_eq!(pulled(&mut stream), [3, 4]);
    assert!(pulled(&mut stream).is_empty());
    registry.broadcast(&bob, &RoomName::lobby(), message("5"), None);
    assert_eq!(socket.took(), [1, 5]);
}

#[tokio::test(start_paused = true)]
async fn a_taken_over_streams_socket_is_written_no_more() {
    let Scene {
        registry,
        ann,
        ann_token,
        bob,
        stream: mut old,
        socket,
    } = scene(10);
    assert!(pulled(&mut old).is_empty());

    let mut new = registry.attach(ann.id, &ann_token, None).unwrap();
    registry.broadcast(&bob, &RoomName::lobby(), message("1"), None);
    assert!(socket.took().is_empty());
    // A late writer for the old stream changes nothing either.
    old.write_directly(Socket::with_room(10));
    assert_eq!(pulled(&mut new), [1]);
}

#[tokio::test(start_paused = true)]
async fn events_that_come_while_a_stream_waits_in_the_outbox_go_out_in_one_send() {
    let Scene {
        registry,
        bob,
        mut stream,
        socket,
        ..
    } = scene(10);
    assert!(pulled(&mut stream).is_empty());

    let outbox = &registry.shared.outbox;
    outbox.lock().writing = true; // as while a pass over many streams runs
    registry.broadcast(&bob, &RoomName::lobby(), message("1"), None);
    registry.broadcast(&bob, &RoomName::lobby(), message("2"), None);
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

    assert_eq!(
        registry.broadcast(&bob, &RoomName::lobby(), message("1"), None),
        streams
    );
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
