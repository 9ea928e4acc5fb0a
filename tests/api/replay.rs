//! Reconnecting: `Last-Event-ID` (header or query) replays what came after it, and evictions
//! from the bounded mailbox are reported as `lagged` first. Nothing is lost silently.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

/// Ann and bob, bob attached and having read the five direct messages ann sent (ids 1..=5).
async fn bob_read_five(app: &TestApp) -> (Session, Session) {
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut bob_stream = app.attach_ready(&bob).await;
    for n in 1..=5 {
        assert_eq!(app.respond(&ann, &bob, json!({"n": n})).await, n);
    }
    for n in 1..=5 {
        assert_eq!(bob_stream.next_named("client_response").await.id, Some(n));
    }
    (ann, bob)
}

/// Reads `ready`, then the responses numbered `ns` (each with id == n), and checks that the
/// next event is a new one with the next id: nothing else was replayed.
async fn assert_replays(
    app: &TestApp,
    ann: &Session,
    bob: &Session,
    stream: &mut SseReader,
    ns: &[u64],
) {
    stream.ready().await;
    for &n in ns {
        let event = stream.next_named("client_response").await;
        assert_eq!(event.id, Some(n));
        assert_eq!(event.data["message"], json!({"n": n}));
        assert_eq!(event.data["from"], ann.id);
    }
    assert_eq!(app.respond(ann, bob, json!({"n": 6})).await, 6);
    let live = stream.next_named("client_response").await;
    assert_eq!(
        (live.id, &live.data["message"]),
        (Some(6), &json!({"n": 6}))
    );
}

#[tokio::test]
async fn reconnect_with_last_event_id_header_replays_later_events_in_order_with_the_same_ids() {
    let app = spawn_app(test_config()).await;
    let (ann, bob) = bob_read_five(&app).await;

    let mut stream = app.attach(&bob, Some(2)).await;

    assert_replays(&app, &ann, &bob, &mut stream, &[3, 4, 5]).await;
}

#[tokio::test]
async fn reconnect_with_last_event_id_query_replays_later_events_in_order_with_the_same_ids() {
    let app = spawn_app(test_config()).await;
    let (ann, bob) = bob_read_five(&app).await;

    let response = send(app.client.get(app.url(&format!(
        "/events/{}?token={}&last_event_id=3",
        bob.id, bob.token
    ))))
    .await;
    let mut stream = SseReader::new(response).await;

    assert_replays(&app, &ann, &bob, &mut stream, &[4, 5]).await;
}

#[tokio::test]
async fn last_event_id_zero_replays_everything_still_buffered() {
    let app = spawn_app(test_config()).await;
    let (ann, bob) = bob_read_five(&app).await;

    let mut stream = app.attach(&bob, Some(0)).await;

    assert_replays(&app, &ann, &bob, &mut stream, &[1, 2, 3, 4, 5]).await;
}

#[tokio::test]
async fn last_event_id_of_the_newest_event_replays_nothing() {
    let app = spawn_app(test_config()).await;
    let (ann, bob) = bob_read_five(&app).await;

    let mut stream = app.attach(&bob, Some(5)).await;

    assert_replays(&app, &ann, &bob, &mut stream, &[]).await;
}

#[tokio::test]
async fn a_resume_point_after_the_newest_event_is_refused_naming_the_newest() {
    let app = spawn_app(test_config()).await;
    let (_, bob) = bob_read_five(&app).await;

    for last in [6, u64::from(u32::MAX)] {
        let response = app.events_response(&bob.id, &bob.token, Some(last)).await;
        let body = assert_error(response, StatusCode::BAD_REQUEST, "invalid_last_event_id").await;
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&last.to_string())
                && message.contains("newest event of this session, 5"),
            "{body}"
        );
    }
    // The refusal changed nothing: the newest id itself still resumes.
    let mut stream = app.attach(&bob, Some(5)).await;
    stream.ready().await;
}

#[tokio::test]
async fn lagged_comes_first_when_the_mailbox_evicted_unread_events() {
    let app = spawn_app(Config {
        mailbox_size: 2,
        ..test_config()
    })
    .await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    for n in 1..=5 {
        assert_eq!(app.broadcast_ok(&ann, json!(n)).await, 1);
    }

    let mut stream = app.attach_ready(&bob).await;

    let lagged = stream.next_named("lagged").await;
    assert_eq!(lagged.data, json!({"missed": 3}));
    assert_eq!(lagged.id, None, "lagged carries no id of its own");
    for n in [4, 5] {
        let event = stream.next_named("client_broadcast").await;
        assert_eq!((event.id, &event.data["message"]), (Some(n), &json!(n)));
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("\nswitchboard_mailbox_evictions_total 3\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn lagged_on_reconnect_counts_only_the_events_after_last_event_id_that_are_gone() {
    let app = spawn_app(Config {
        mailbox_size: 3,
        ..test_config()
    })
    .await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut stream = app.attach_ready(&bob).await;
    for n in 1..=2 {
        app.broadcast_ok(&ann, json!(n)).await;
        assert_eq!(stream.next_named("client_broadcast").await.id, Some(n));
    }
    drop(stream);
    // Four more while away: 3..=6; the mailbox keeps 4, 5, 6, so 3 is gone unread.
    for n in 3..=6 {
        app.broadcast_ok(&ann, json!(n)).await;
    }

    let mut stream = app.attach(&bob, Some(2)).await;

    stream.ready().await;
    assert_eq!(stream.next_named("lagged").await.data, json!({"missed": 1}));
    for n in 4..=6 {
        let event = stream.next_named("client_broadcast").await;
        assert_eq!((event.id, &event.data["message"]), (Some(n), &json!(n)));
    }
}
