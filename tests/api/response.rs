//! `POST /response`: a direct message into exactly one recipient's stream.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn response_is_delivered_to_the_recipient_only_with_the_id_it_reports() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let cat = app.helo("cat").await;
    let mut ann_stream = app.attach(&ann, None).await;
    ann_stream.ready().await;
    let mut cat_stream = app.attach_ready(&cat).await;
    let mut bob_stream = app.attach_ready(&bob).await;
    // Ann heard bob and cat join (ids 1, 2); bob heard cat (id 1).
    ann_stream.next_named("new_user").await;
    ann_stream.next_named("new_user").await;
    bob_stream.next_named("new_user").await;

    let response = app.post_response(&ann, &bob.id, json!({"hi": "bob"})).await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_json_content_type(response.headers());
    assert_eq!(body_json(response).await, json!({"event_id": 2}));
    let event = bob_stream.next_named("client_response").await;
    assert_eq!(event.id, Some(2));
    assert_eq!(
        event.data,
        json!({"from": ann.id, "from_name": "ann", "recipient": bob.id, "message": {"hi": "bob"}})
    );
    // Neither the sender nor a bystander got it: the next thing each sees is a later marker.
    app.broadcast_ok(&bob, json!("marker")).await;
    assert_eq!(
        ann_stream.next_named("client_broadcast").await.data["message"],
        "marker"
    );
    assert_eq!(
        cat_stream.next_named("client_broadcast").await.data["message"],
        "marker"
    );
}

#[tokio::test]
async fn response_sender_comes_from_the_token_never_from_the_body() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mallory = app.helo("mallory").await;
    let mut bob_stream = app.attach_ready(&bob).await;
    bob_stream.next_named("new_user").await;
    let forged = json!({
        "recipient": bob.id,
        "from": ann.id,
        "from_name": "ann",
        "message": "trust me, I am ann",
    });

    let response = app
        .post_raw("/response", Some(&mallory.token), &forged.to_string())
        .await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let event = bob_stream.next_named("client_response").await;
    assert_eq!(event.data["from"], mallory.id);
    assert_eq!(event.data["from_name"], "mallory");
    assert_eq!(event.data["message"], "trust me, I am ann");
}

#[tokio::test]
async fn response_message_may_be_any_json_value() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut bob_stream = app.attach_ready(&bob).await;
    let messages = [
        json!("text"),
        json!(42),
        json!(-1.5e300),
        json!(true),
        json!(null),
        json!([1, "two", [3], {"four": 4}]),
        json!({"deep": {"deeper": {"unicode": "héllo 🦀", "escapes": "\"\\\t\u{0001}"}}}),
    ];

    for message in &messages {
        app.respond(&ann, &bob, message.clone()).await;
    }

    for (n, message) in messages.iter().enumerate() {
        let event = bob_stream.next_named("client_response").await;
        assert_eq!(event.id, Some(n as u64 + 1));
        assert_eq!(&event.data["message"], message);
    }
}

#[tokio::test]
async fn events_wait_in_the_mailbox_until_the_recipient_attaches() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;

    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(app.respond(&ann, &bob, json!({"n": n})).await);
    }
    assert_eq!(ids, [1, 2, 3]);

    let mut bob_stream = app.attach(&bob, None).await;
    assert_eq!(bob_stream.ready().await["clients"], json!([ann.peer()]));
    for (n, id) in ids.iter().enumerate() {
        let event = bob_stream.next_named("client_response").await;
        assert_eq!(event.id, Some(*id));
        assert_eq!(event.data["message"], json!({"n": n}));
    }
}

#[tokio::test]
async fn events_sent_while_detached_are_delivered_on_the_next_attach() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut bob_stream = app.attach_ready(&bob).await;
    app.respond(&ann, &bob, json!("live")).await;
    assert_eq!(bob_stream.next_named("client_response").await.id, Some(1));
    drop(bob_stream);
    app.wait_for_streams(0).await;

    app.respond(&ann, &bob, json!("while away 1")).await;
    app.broadcast_ok(&ann, json!("while away 2")).await;

    // No Last-Event-ID: the stream resumes after what the last stream was handed.
    let mut bob_stream = app.attach_ready(&bob).await;
    let first = bob_stream.next_named("client_response").await;
    assert_eq!(
        (first.id, &first.data["message"]),
        (Some(2), &json!("while away 1"))
    );
    let second = bob_stream.next_named("client_broadcast").await;
    assert_eq!(
        (second.id, &second.data["message"]),
        (Some(3), &json!("while away 2"))
    );
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_is_answered_with_the_first_id_and_not_delivered_again()
 {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut bob_stream = app.attach_ready(&bob).await;
    let keyed = |key: &str, message: serde_json::Value| {
        let body = json!({"recipient": bob.id, "message": message}).to_string();
        app.client
            .post(app.url("/response"))
            .bearer_auth(&ann.token)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body)
    };

    let first = body_json(send(keyed("k-1", json!({"n": 1}))).await).await;
    let again = send(keyed("k-1", json!({"n": 1}))).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(
        body_json(again).await,
        first,
        "the first attempt's event id"
    );
    let other = body_json(send(keyed("k-2", json!({"n": 1}))).await).await;
    assert!(other["event_id"].as_u64() > first["event_id"].as_u64());

    // The same key with another message is refused: it is not a retry.
    let reused = send(keyed("k-1", json!({"n": 2}))).await;
    assert_error(
        reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    let invalid = send(keyed("has space", json!({"n": 3}))).await;
    assert_error(invalid, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;

    // Bob got n=1 once per key, nothing else.
    for expected in [&first, &other] {
        let frame = bob_stream.next_named("client_response").await;
        assert_eq!(frame.id, expected["event_id"].as_u64());
        assert_eq!(frame.data["message"], json!({"n": 1}));
    }
    app.broadcast_ok(&ann, json!("marker")).await;
    assert_eq!(
        bob_stream.next_named("client_broadcast").await.data["message"],
        "marker"
    );
}
