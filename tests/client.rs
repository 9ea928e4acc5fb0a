//! `switchboard-client` against a real server (`serve` on an ephemeral port): each call's
//! success value, the errors it turns answers into, its event stream (parsing, ids,
//! resuming, the end), and its room calls with the [`Rooms`] they keep current. The API tests use the crate too, through `support`; these call it
//! directly, as its users do.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::json;
use switchboard_client::{Client, Error, EventStream, Frame, Peer, Rooms};
use tokio::time::timeout;

use support::{Config, WAIT, spawn_app, test_config};

/// The next frame of `events`, within [`WAIT`]; fails on the end or a broken stream.
async fn next(events: &mut EventStream) -> Frame {
    timeout(WAIT, events.next())
        .await
        .expect("a frame within the wait")
        .expect("the stream goes on")
        .expect("a well-formed frame")
}

/// Bounds a client call by [`WAIT`].
async fn bounded<T>(call: impl Future<Output = T>) -> T {
    timeout(WAIT, call)
        .await
        .expect("an answer within the wait")
}

/// The status and error code of a failed call.
fn status_of(err: &Error) -> (StatusCode, Option<&str>) {
    match err {
        Error::Status { status, .. } => (*status, err.code()),
        other => panic!("expected an answer with an error status, got {other:?}"),
    }
}

#[tokio::test]
async fn the_crate_examples_scenario_runs_against_a_real_server() {
    let app = spawn_app(test_config()).await;
    // A trailing slash is accepted.
    let hub = Client::new(format!("{}/", app.base_url));
    assert_eq!(hub.base_url(), app.base_url);

    let ann = bounded(hub.helo("ann")).await.unwrap();
    let bob = bounded(hub.helo("bob")).await.unwrap();
    assert_eq!((ann.name.as_str(), bob.name.as_str()), ("ann", "bob"));
    assert_ne!(ann.token, bob.token);

    let mut events = bounded(hub.attach(&bob, None)).await.unwrap();
    let ready = next(&mut events).await;
    assert_eq!((ready.event.as_str(), ready.id), ("ready", None));
    assert_eq!(ready.data["id"], bob.id);
    let id = bounded(hub.send(&ann, &bob.id, &json!({"text": "hi bob"})))
        .await
        .unwrap();
    let frame = next(&mut events).await;
    assert_eq!(
        (frame.event.as_str(), frame.id),
        ("client_response", Some(id))
    );
    assert_eq!(frame.data["message"], json!({"text": "hi bob"}));
    assert_eq!(frame.data["from"], ann.id);
    assert_eq!(events.last_event_id(), Some(id));

    // Resuming after the last event read replays what came after it, and only that.
    let resume_after = events.last_event_id();
    drop(events);
    assert_eq!(
        bounded(hub.broadcast(&ann, &"hello everyone"))
            .await
            .unwrap(),
        1
    );
    let mut events = bounded(hub.attach(&bob, resume_after)).await.unwrap();
    assert_eq!(next(&mut events).await.event, "ready");
    let replayed = next(&mut events).await;
    assert_eq!(replayed.event, "client_broadcast");
    assert_eq!(replayed.data["message"], "hello everyone");
    assert_eq!(replayed.id, Some(id + 1));

    let mut peers = bounded(hub.clients(&bob)).await.unwrap();
    peers.sort();
    let mut expected = vec![
        Peer {
            id: ann.id.clone(),
            name: "ann".into(),
        },
        Peer {
            id: bob.id.clone(),
            name: "bob".into(),
        },
    ];
    expected.sort();
    assert_eq!(peers, expected);

    bounded(hub.leave(&ann)).await.unwrap();
    let left = next(&mut events).await;
    assert_eq!(left.event, "user_left");
    assert_eq!(left.data["id"], ann.id);
    let again = bounded(hub.leave(&ann)).await.unwrap_err();
    assert_eq!(
        status_of(&again),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
}

#[tokio::test]
async fn a_stream_skips_comments_and_ends_when_the_session_leaves() {
    let app = spawn_app(Config {
        heartbeat: Duration::from_millis(50),
        ..test_config()
    })
    .await;
    let hub = Client::new(&app.base_url);
    let ann = bounded(hub.helo("ann")).await.unwrap();
    let bob = bounded(hub.helo("bob")).await.unwrap();
    let mut events = bounded(hub.attach(&ann, None)).await.unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    assert_eq!(next(&mut events).await.event, "ready");
    assert_eq!(next(&mut events).await.event, "new_user");
    // Pings are written every 50 ms; the metric shows some went out before the next event.
    let deadline = tokio::time::Instant::now() + WAIT;
    while support::sample(&app.metrics().await, "switchboard_heartbeats_total") < Some(2.0) {
        assert!(tokio::time::Instant::now() < deadline, "no heartbeats");
        tokio::time::sleep(support::POLL).await;
    }
    let id = bounded(hub.send(&bob, &ann.id, &1)).await.unwrap();
    let frame = next(&mut events).await;
    assert_eq!(
        (frame.event.as_str(), frame.id),
        ("client_response", Some(id))
    );

    bounded(hub.leave(&ann)).await.unwrap();
    let end = timeout(WAIT, events.next())
        .await
        .expect("ended within the wait");
    assert!(end.is_none(), "the stream ended: {end:?}");
}

#[tokio::test]
async fn answers_other_than_success_become_errors_with_code_and_retry_after() {
    let app = spawn_app(Config {
        mailbox_size: 1,
        ..test_config()
    })
    .await;
    let hub = Client::new(&app.base_url);

    let err = bounded(hub.helo("")).await.unwrap_err();
    assert_eq!(
        status_of(&err),
        (StatusCode::BAD_REQUEST, Some("invalid_name"))
    );
    assert!(!err.to_string().is_empty());

    let ann = bounded(hub.helo("ann")).await.unwrap();
    let bob = bounded(hub.helo("bob")).await.unwrap();
    let nobody = "00000000-0000-4000-8000-000000000000";
    let err = bounded(hub.send(&ann, nobody, &1)).await.unwrap_err();
    assert_eq!(
        status_of(&err),
        (StatusCode::NOT_FOUND, Some("unknown_recipient"))
    );

    // bob is detached: one direct message fills his mailbox, the next is refused with a
    // time to retry.
    bounded(hub.send(&ann, &bob.id, &1)).await.unwrap();
    let err = bounded(hub.send(&ann, &bob.id, &2)).await.unwrap_err();
    assert_eq!(
        status_of(&err),
        (StatusCode::TOO_MANY_REQUESTS, Some("mailbox_full"))
    );
    let Error::Status { retry_after, .. } = err else {
        unreachable!()
    };
    let retry_after = retry_after.expect("Retry-After");
    assert!(
        retry_after >= Duration::from_secs(1) && retry_after <= Duration::from_secs(3600),
        "{retry_after:?}"
    );

    let mut forged = bob.clone();
    forged.token = support::forged_token(&bob);
    let err = bounded(hub.attach(&forged, None)).await.err().unwrap();
    assert_eq!(status_of(&err).0, StatusCode::UNAUTHORIZED);

    // Nobody listens on a port just released: no answer at all.
    let port = support::free_port();
    let gone = Client::new(format!("http://127.0.0.1:{port}"));
    let err = bounded(gone.helo("ann")).await.unwrap_err();
    assert!(matches!(err, Error::Http(_)), "{err:?}");
    assert_eq!(err.code(), None);
}

#[tokio::test]
async fn send_once_delivers_a_resent_message_once() {
    let app = spawn_app(test_config()).await;
    let hub = Client::new(&app.base_url);
    let ann = bounded(hub.helo("ann")).await.unwrap();
    let bob = bounded(hub.helo("bob")).await.unwrap();
    let mut events = bounded(hub.attach(&bob, None)).await.unwrap();
    assert_eq!(next(&mut events).await.event, "ready");

    let first = bounded(hub.send_once(&ann, &bob.id, &"once", "key-1"))
        .await
        .unwrap();
    let again = bounded(hub.send_once(&ann, &bob.id, &"once", "key-1"))
        .await
        .unwrap();
    assert_eq!(first, again, "the resend gets the first attempt's id");
    let err = bounded(hub.send_once(&ann, &bob.id, &"other", "key-1"))
        .await
        .unwrap_err();
    assert_eq!(
        status_of(&err),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("idempotency_key_reused")
        )
    );
    // A later message proves what came before it: the resent one arrived once.
    let marker = bounded(hub.send(&ann, &bob.id, &"marker")).await.unwrap();
    let frame = next(&mut events).await;
    assert_eq!(
        (frame.id, &frame.data["message"]),
        (Some(first), &json!("once"))
    );
    let frame = next(&mut events).await;
    assert_eq!(
        (frame.id, &frame.data["message"]),
        (Some(marker), &json!("marker"))
    );
}

#[tokio::test]
async fn room_calls_join_leave_list_and_broadcast_and_rooms_follow_the_stream() {
    let app = spawn_app(test_config()).await;
    let hub = Client::new(&app.base_url);
    let ann = bounded(hub.helo_in("ann", &["dev"])).await.unwrap();
    assert_eq!(ann.rooms, ["dev"]);
    let cat = bounded(hub.helo_in("cat", &["dev", "ops"])).await.unwrap();
    let bob = bounded(hub.helo("bob")).await.unwrap();
    assert_eq!(bob.rooms, ["lobby"], "no rooms named: the server's default");
    let none = bounded(hub.helo_in("dee", &[])).await.unwrap();
    assert!(none.rooms.is_empty());
    let err = bounded(hub.helo_in("eve", &["-x"])).await.unwrap_err();
    assert_eq!(
        status_of(&err),
        (StatusCode::BAD_REQUEST, Some("invalid_room"))
    );

    // ann's rooms: dev, with cat in it (from `ready`; cat's replayed `new_user` adds nothing).
    let mut rooms = Rooms::default();
    let mut events = bounded(hub.attach(&ann, None)).await.unwrap();
    assert!(rooms.apply(&next(&mut events).await));
    let replayed = next(&mut events).await;
    assert_eq!(
        (replayed.event.as_str(), replayed.room()),
        ("new_user", Some("dev"))
    );
    rooms.apply(&replayed);
    assert_eq!(rooms.names().collect::<Vec<_>>(), ["dev"]);
    let dev = rooms.get("dev").unwrap();
    assert_eq!(dev.members, 2);
    assert_eq!(dev.roster.as_ref().unwrap()[&cat.id].name, "cat");

    // bob joins dev: ann hears it there.
    assert_eq!(bounded(hub.join_room(&bob, "dev")).await.unwrap(), 3);
    let joined = next(&mut events).await;
    assert_eq!(
        (joined.event.as_str(), joined.room()),
        ("new_user", Some("dev"))
    );
    assert!(rooms.apply(&joined));
    assert_eq!(rooms.get("dev").unwrap().members, 3);

    // A broadcast to dev reaches its two other members, with the room; bob is not in ops.
    assert_eq!(
        bounded(hub.broadcast_to(&bob, "dev", &"hi, dev"))
            .await
            .unwrap(),
        2
    );
    let said = next(&mut events).await;
    assert_eq!(
        (said.event.as_str(), said.room()),
        ("client_broadcast", Some("dev"))
    );
    assert_eq!(said.data["message"], "hi, dev");
    let err = bounded(hub.broadcast_to(&bob, "ops", &"hi"))
        .await
        .unwrap_err();
    assert_eq!(
        status_of(&err),
        (StatusCode::FORBIDDEN, Some("not_a_member"))
    );

    // The listing of a room for a member, and for one who is not.
    let mut members = bounded(hub.room_members(&ann, "dev")).await.unwrap();
    members.sort();
    let mut expected: Vec<String> = [&ann, &bob, &cat].iter().map(|s| s.id.clone()).collect();
    expected.sort();
    assert_eq!(
        members.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        expected
    );
    let err = bounded(hub.room_members(&ann, "ops")).await.unwrap_err();
    assert_eq!(
        status_of(&err),
        (StatusCode::FORBIDDEN, Some("not_a_member"))
    );

    // ann joins ops (`joined`, with its roster) and leaves it (`left`).
    assert_eq!(bounded(hub.join_room(&ann, "ops")).await.unwrap(), 2);
    let frame = next(&mut events).await;
    assert_eq!(
        (frame.event.as_str(), frame.room()),
        ("joined", Some("ops"))
    );
    assert!(frame.id.is_some(), "joined has an id, so a replay shows it");
    assert!(rooms.apply(&frame));
    let ops = rooms.get("ops").unwrap();
    assert_eq!((ops.members, ops.roster.as_ref().unwrap().len()), (2, 1));
    bounded(hub.leave_room(&ann, "ops")).await.unwrap();
    let frame = next(&mut events).await;
    assert_eq!((frame.event.as_str(), frame.room()), ("left", Some("ops")));
    assert!(rooms.apply(&frame));
    assert_eq!(rooms.names().collect::<Vec<_>>(), ["dev"]);
    let err = bounded(hub.leave_room(&ann, "ops")).await.unwrap_err();
    assert_eq!(
        status_of(&err),
        (StatusCode::NOT_FOUND, Some("not_a_member"))
    );
    // A name that breaks the rule stays one path segment, refused as a room.
    let err = bounded(hub.join_room(&ann, "a b/c")).await.unwrap_err();
    assert_eq!(
        status_of(&err),
        (StatusCode::BAD_REQUEST, Some("invalid_room"))
    );

    // bob leaves the hub: ann hears it in dev, and dev is smaller.
    bounded(hub.leave(&bob)).await.unwrap();
    let frame = next(&mut events).await;
    assert_eq!(
        (frame.event.as_str(), frame.room()),
        ("user_left", Some("dev"))
    );
    assert!(rooms.apply(&frame));
    assert_eq!(rooms.get("dev").unwrap().members, 2);
}
