//! `switchboard-client` against a real server (`serve` on an ephemeral port): each call's
//! success value, the errors it turns answers into, and its event stream (parsing, ids,
//! resuming, the end). The API tests use the crate too, through `support`; these call it
//! directly, as its users do.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::json;
use switchboard_client::{Client, Error, EventStream, Frame, Peer};
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
