//! `POST /broadcast`: one message to every other session, never waiting on a slow one.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn broadcast_reaches_every_other_session_but_not_the_sender() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let cat = app.helo("cat").await;
    let mut streams = Vec::new();
    for session in [&ann, &bob, &cat] {
        let mut stream = app.attach_ready(session).await;
        // Skip the new_user events of those who joined later.
        let joined_later = [&ann, &bob, &cat]
            .iter()
            .skip_while(|s| s.id != session.id)
            .count()
            - 1;
        for _ in 0..joined_later {
            stream.next_named("new_user").await;
        }
        streams.push(stream);
    }

    let response = app.broadcast(&ann, json!({"text": "hello all"})).await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_json_content_type(response.headers());
    assert_eq!(body_json(response).await, json!({"recipients": 2}));
    for stream in &mut streams[1..] {
        let event = stream.next_named("client_broadcast").await;
        assert_eq!(
            event.data,
            json!({"from": ann.id, "from_name": "ann", "room": "lobby", "message": {"text": "hello all"}})
        );
    }
    // The sender's next event is a later broadcast from someone else, not its own.
    app.broadcast_ok(&cat, json!("marker")).await;
    let next = streams[0].next_named("client_broadcast").await;
    assert_eq!(next.data["from"], cat.id);
    assert_eq!(next.data["message"], "marker");
}

#[tokio::test]
async fn broadcast_counts_and_queues_for_detached_sessions() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let cat = app.helo("cat").await;
    let _bob_stream = app.attach_ready(&bob).await;

    // Cat never attached; the broadcast still counts and waits for cat.
    assert_eq!(app.broadcast_ok(&ann, json!("queued")).await, 2);

    let mut cat_stream = app.attach_ready(&cat).await;
    let event = cat_stream.next_named("client_broadcast").await;
    assert_eq!(event.id, Some(1));
    assert_eq!(event.data["message"], "queued");
}

#[tokio::test]
async fn broadcast_with_nobody_else_has_zero_recipients() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;

    assert_eq!(app.broadcast_ok(&ann, json!("anyone?")).await, 0);
}

#[tokio::test]
async fn broadcast_sender_comes_from_the_token_never_from_the_body() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let mallory = app.helo("mallory").await;
    let mut ann_stream = app.attach_ready(&ann).await;
    ann_stream.next_named("new_user").await;
    let forged = json!({"from": ann.id, "from_name": "ann", "message": "hi"});

    let response = app
        .post_raw("/broadcast", Some(&mallory.token), &forged.to_string())
        .await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let event = ann_stream.next_named("client_broadcast").await;
    assert_eq!(
        event.data,
        json!({"from": mallory.id, "from_name": "mallory", "room": "lobby", "message": "hi"})
    );
}

#[tokio::test]
async fn broadcast_never_fails_for_a_full_mailbox() {
    let app = spawn_app(Config {
        mailbox_size: 2,
        ..test_config()
    })
    .await;
    let ann = app.helo("ann").await;
    let _bob = app.helo("bob").await;

    // Bob never reads; a direct message would get 429 after two, a broadcast never does.
    for n in 0..10 {
        assert_eq!(app.broadcast_ok(&ann, json!(n)).await, 1, "broadcast {n}");
    }
}
