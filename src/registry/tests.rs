//! The registry's mechanics, without a socket and under tokio's paused clock: time moves only
//! when a test advances it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::time::{Instant, advance};

use super::*;
use crate::identity::{DisplayName, RoomName};
use event::Member;

const TTL: Duration = Duration::from_secs(30);

fn registry(mailbox_size: usize, max_sessions: usize, max_streams: usize) -> Registry {
    Registry::new(
        Settings {
            mailbox_size,
            max_sessions,
            max_streams,
            session_ttl: TTL,
            ..Settings::small()
        },
        Arc::new(Metrics::default()),
    )
}

/// A new session in the lobby.
fn join(registry: &Registry, name: &str) -> (Peer, Token) {
    let (peer, token) = registry
        .register(
            DisplayName::parse(name).unwrap().into(),
            AddressGuard::unlimited(),
        )
        .expect("room for one more");
    registry.join_rooms(peer.id, &[RoomName::lobby()]).unwrap();
    (peer, token)
}

fn member(peer: &Peer) -> Member {
    Member {
        peer: peer.clone(),
        room: RoomName::lobby(),
    }
}

fn json(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap()
}

/// Every event pulled now, as (id, wire name); panics on a closed stream.
fn drain(subscription: &mut Subscription) -> (u64, Vec<(EventId, &'static str)>) {
    match subscription.pull(100) {
        Pull::Events(replay) => (
            replay.missed,
            replay
                .events
                .iter()
                .map(|(id, envelope)| (*id, envelope.event.name()))
                .collect(),
        ),
        Pull::Idle => (0, Vec::new()),
        Pull::Unwritten(_) => panic!("no writer here, so nothing is left unwritten"),
        Pull::Closed(reason) => panic!("stream closed: {reason:?}"),
    }
}

fn counts(registry: &Registry) -> (usize, usize) {
    let stats = registry.stats();
    (stats.sessions, stats.streams)
}

#[tokio::test(start_paused = true)]
async fn register_announces_nothing_and_attach_says_ready_with_an_empty_roster() {
    let registry = registry(8, 10, 10);
    let (ann, ann_token) = join(&registry, "ann");
    let mut stream = registry.attach(ann.id, &ann_token, None).unwrap();
    join(&registry, "bob");

    // Presence is the hub's call: the registry itself tells nobody about bob.
    assert_eq!(drain(&mut stream), (0, vec![]));
    let Some(Event::Ready(ready)) = stream.take_ready() else {
        panic!("a stream starts with ready");
    };
    assert_eq!((ready.id, ready.name.as_str()), (ann.id, "ann"));
    assert!(ready.clients.is_empty());
    assert!(stream.take_ready().is_none(), "ready comes once");
    assert_eq!(registry.list().len(), 2);
    assert_eq!(counts(&registry), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn the_session_limit_refuses_one_more() {
    let registry = registry(8, 1, 10);
    join(&registry, "ann");
    let refused = registry.register(
        DisplayName::parse("bob").unwrap().into(),
        AddressGuard::unlimited(),
    );
    assert_eq!(refused.unwrap_err(), RegistryError::SessionLimit(1));
}

#[tokio::test(start_paused = true)]
async fn attach_checks_the_session_and_its_token() {
    let registry = registry(8, 10, 10);
    let (ann, ann_token) = join(&registry, "ann");
    let (_, bob_token) = join(&registry, "bob");
    let nobody = SessionId::random();
    assert_eq!(
        registry.attach(nobody, &ann_token, None).err(),
        Some(RegistryError::UnknownSession(nobody))
    );
    assert_eq!(
        registry.attach(ann.id, &bob_token, None).err(),
        Some(RegistryError::BadToken)
    );
    assert_eq!(registry.authenticate(&ann_token).unwrap().id, ann.id);
    assert_eq!(
        registry.authenticate(&Token::issue(ann.id)).unwrap_err(),
        RegistryError::BadToken
    );
}

#[tokio::test(start_paused = true)]
async fn the_stream_limit_counts_streams_not_takeovers() {
    let registry = registry(8, 10, 1);
    let (ann, ann_token) = join(&registry, "ann");
    let (bob, bob_token) = join(&registry, "bob");
    let _first = registry.attach(ann.id, &ann_token, None).unwrap();
    assert_eq!(
        registry.attach(bob.id, &bob_token, None).err(),
        Some(RegistryError::StreamLimit(1))
    );
    let _second = registry.attach(ann.id, &ann_token, None).unwrap();
    assert_eq!(counts(&registry), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_takeover_closes_the_old_stream_and_the_new_one_resumes_after_it() {
    let registry = registry(8, 10, 10);
    let (ann, ann_token) = join(&registry, "ann");
    let (bob, _) = join(&registry, "bob");
    let mut old = registry.attach(ann.id, &ann_token, None).unwrap();
    registry.deliver(&bob, ann.id, json("1")).unwrap();
    assert_eq!(drain(&mut old).1, [(1, "client_response")]);
    registry.deliver(&bob, ann.id, json("2")).unwrap();

    let mut new = registry.attach(ann.id, &ann_token, None).unwrap();
    assert!(matches!(old.pull(10), Pull::Closed(Closed::TakenOver)));
    // The old stream's end does not detach the session the new one holds.
    drop(old);
    assert_eq!(counts(&registry), (2, 1));
    // Without Last-Event-ID, the new stream starts after what the old one was handed.
    assert_eq!(drain(&mut new).1, [(2, "client_response")]);

    // With Last-Event-ID, it replays from there.
    let mut again = registry.attach(ann.id, &ann_token, Some(0)).unwrap();
    assert_eq!(
        drain(&mut again).1,
        [(1, "client_response"), (2, "client_response")]
    );
}

#[tokio::test(start_paused = true)]
async fn a_pushed_event_wakes_the_attached_stream() {
    let registry = registry(8, 10, 10);
    let (ann, ann_token) = join(&registry, "ann");
    let (bob, _) = join(&registry, "bob");
    let stream = registry.attach(ann.id, &ann_token, None).unwrap();
    let woken = stream.changed();
    registry.deliver(&bob, ann.id, json("1")).unwrap();
    tokio::time::timeout(Duration::from_secs(1), woken)
        .await
        .expect("deliver wakes the stream");
}

#[tokio::test(start_paused = true)]
async fn a_detached_session_expires_after_the_ttl_and_not_before() {
    let registry = registry(8, 10, 10);
    let (ann, ann_token) = join(&registry, "ann");
    let stream = registry.attach(ann.id, &ann_token, None).unwrap();
    advance(TTL * 2).await;
    assert_eq!(registry.expire(Instant::now()).0.len(), 0, "attached");

    drop(stream);
    assert_eq!(counts(&registry), (1, 0));
    advance(TTL - Duration::from_secs(1)).await;
    let (expired, next) = registry.expire(Instant::now());
    assert!(expired.is_empty());
    assert_eq!(next, Some(Instant::now() + Duration::from_secs(1)));

    advance(Duration::from_secs(1)).await;
    let (expired, next) = registry.expire(Instant::now());
    assert_eq!(
        expired.iter().map(|d| d.peer.id).collect::<Vec<_>>(),
        [ann.id]
    );
    assert_eq!(next, None);
    assert_eq!(counts(&registry), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn reattaching_within_the_ttl_keeps_the_session() {
    let registry = registry(8, 10, 10);
    let (ann, ann_token) = join(&registry, "ann");
    advance(TTL - Duration::from_secs(1)).await;
    let stream = registry.attach(ann.id, &ann_token, None).unwrap();
    advance(Duration::from_secs(2)).await;
    // The deadline from registration is stale now: nothing expires.
    assert!(registry.expire(Instant::now()).0.is_empty());
    drop(stream);
    advance(TTL - Duration::from_secs(1)).await;
    assert!(registry.expire(Instant::now()).0.is_empty());
    advance(Duration::from_secs(1)).await;
    assert_eq!(registry.expire(Instant::now()).0.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn removing_ends_the_stream_and_returns_the_peer_once() {
    let registry = registry(8, 10, 10);
    let (ann, ann_token) = join(&registry, "ann");
    let mut stream = registry.attach(ann.id, &ann_token, None).unwrap();
    let removed = registry.remove(ann.id).map(|d| (d.peer.id, d.rooms));
    assert_eq!(removed, Some((ann.id, vec![RoomName::lobby()])));
    assert!(registry.remove(ann.id).is_none());
    assert!(matches!(stream.pull(10), Pull::Closed(Closed::Removed)));
    drop(stream);
    assert_eq!(counts(&registry), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn fan_out_evicts_the_oldest_and_the_reader_learns_how_many_it_missed() {
    let registry = registry(2, 10, 10);
    let (ann, ann_token) = join(&registry, "ann");
    let (bob, _) = join(&registry, "bob");
    let mut stream = registry.attach(ann.id, &ann_token, None).unwrap();
    for n in 0..5 {
        assert_eq!(
            registry.broadcast(&bob, &RoomName::lobby(), json(&n.to_string()), None),
            1
        );
    }
    assert_eq!(
        drain(&mut stream),
        (3, vec![(4, "client_broadcast"), (5, "client_broadcast")])
    );
    assert_eq!(registry.metrics().evictions.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn presence_and_broadcasts_never_evict_an_accepted_direct_message() {
    let registry = registry(4, 200, 10);
    let (ann, ann_token) = join(&registry, "ann");
    let (bob, _) = join(&registry, "bob");
    for n in 1..=2 {
        assert_eq!(registry.deliver(&bob, ann.id, json(&n.to_string())), Ok(n));
    }
    // 100 joins announced to ann alone (3..=102), then a broadcast (103).
    for n in 0..100 {
        let (peer, _) = join(&registry, &format!("peer {n}"));
        let id = peer.id;
        assert_eq!(
            registry.fan_out(
                Event::NewUser(member(&peer)),
                Reach::Everyone,
                Some(id),
                Some(ann.id)
            ),
            1
        );
    }
    registry.broadcast(&bob, &RoomName::lobby(), json("\"all\""), None);
    // Direct messages take the broadcasts' slots (104, 105) until they fill the mailbox.
    assert_eq!(registry.deliver(&bob, ann.id, json("3")), Ok(104));
    assert_eq!(registry.deliver(&bob, ann.id, json("4")), Ok(105));
    assert!(matches!(
        registry.deliver(&bob, ann.id, json("5")),
        Err(RegistryError::MailboxFull { .. })
    ));

    let mut stream = registry.attach(ann.id, &ann_token, None).unwrap();
    assert_eq!(
        drain(&mut stream),
        (0, vec![(1, "client_response"), (2, "client_response")])
    );
    // Every event after 2 but the last two direct messages is gone, and said so.
    assert_eq!(
        drain(&mut stream),
        (
            101,
            vec![(104, "client_response"), (105, "client_response")]
        )
    );
    assert_eq!(drain(&mut stream), (0, vec![]));
    assert_eq!(registry.metrics().evictions.get(), 101);
}

#[tokio::test(start_paused = true)]
async fn fan_out_reaches_all_but_one_or_only_one() {
    let registry = registry(8, 10, 10);
    let (ann, _) = join(&registry, "ann");
    let (bob, _) = join(&registry, "bob");
    join(&registry, "cy");
    let event = || Event::UserLeft(member(&ann));
    assert_eq!(
        registry.fan_out(event(), Reach::Everyone, Some(ann.id), None),
        2
    );
    assert_eq!(registry.fan_out(event(), Reach::Everyone, None, None), 3);
    assert_eq!(
        registry.fan_out(event(), Reach::Everyone, Some(ann.id), Some(bob.id)),
        1
    );
    assert_eq!(
        registry.fan_out(event(), Reach::Everyone, Some(ann.id), Some(ann.id)),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn a_direct_message_is_refused_when_unread_events_fill_the_mailbox() {
    let registry = registry(2, 10, 10);
    let (ann, ann_token) = join(&registry, "ann");
    let (bob, _) = join(&registry, "bob");
    assert_eq!(registry.deliver(&bob, ann.id, json("1")), Ok(1));
    assert_eq!(registry.deliver(&bob, ann.id, json("2")), Ok(2));
    assert_eq!(
        registry.deliver(&bob, ann.id, json("3")),
        Err(RegistryError::MailboxFull {
            retry_after: Duration::from_secs(1)
        })
    );
    assert_eq!(registry.metrics().mailbox_full.get(), 1);
    // Once read, a slot may be reused.
    let mut stream = registry.attach(ann.id, &ann_token, None).unwrap();
    assert_eq!(drain(&mut stream).1.len(), 2);
    assert_eq!(registry.deliver(&bob, ann.id, json("3")), Ok(3));

    let nobody = SessionId::random();
    assert_eq!(
        registry.deliver(&bob, nobody, json("4")),
        Err(RegistryError::UnknownRecipient(nobody))
    );
}

#[tokio::test(start_paused = true)]
async fn export_then_import_keeps_the_ids_and_what_was_read() {
    let here = registry(8, 10, 10);
    let there = registry(8, 10, 10);
    let (ann, ann_token) = join(&here, "ann");
    let (bob, _) = join(&here, "bob");
    let mut stream = here.attach(ann.id, &ann_token, None).unwrap();
    here.deliver(&bob, ann.id, json("1")).unwrap();
    drain(&mut stream);
    here.deliver(&bob, ann.id, json("2")).unwrap();

    assert!(there.homed().is_empty());
    let snapshot = here
        .export(ann.id, Closed::TakenOver)
        .expect("ann lives here");
    assert!(matches!(stream.pull(10), Pull::Closed(Closed::TakenOver)));
    assert!(!here.homes(ann.id));
    // A snapshot travels as JSON between instances.
    let snapshot: Snapshot = serde_json::from_str(&serde_json::to_string(&snapshot).unwrap())
        .expect("snapshots round-trip");
    there.import(snapshot, ann_token.clone()).unwrap();

    assert!(there.homes(ann.id));
    assert_eq!(there.homed()[0].peer.id, ann.id);
    assert_eq!(there.rooms_of(ann.id), Some(vec![RoomName::lobby()]));
    let mut moved = there.attach(ann.id, &ann_token, None).unwrap();
    assert_eq!(drain(&mut moved).1, [(2, "client_response")]);
    assert_eq!(there.deliver(&bob, ann.id, json("3")), Ok(3));
    assert!(here.export(ann.id, Closed::TakenOver).is_none());
}

#[tokio::test(start_paused = true)]
async fn an_imported_session_starts_detached_and_expires() {
    let here = registry(8, 10, 10);
    let there = registry(8, 10, 10);
    let (ann, ann_token) = join(&here, "ann");
    there
        .import(here.export(ann.id, Closed::TakenOver).unwrap(), ann_token)
        .unwrap();
    advance(TTL).await;
    assert_eq!(there.expire(Instant::now()).0.len(), 1);
}
