//! `Idempotency-Key`s are scoped to their sender and recipient: other senders' keys can
//! neither flush a sender's key from the recipient's memory nor collide with it.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

/// `POST /response` from `from` to `to` with `key`.
async fn keyed(
    app: &Endpoint,
    from: &Session,
    to: &Session,
    key: &str,
    message: Value,
) -> reqwest::Response {
    let body = json!({"recipient": to.id, "message": message}).to_string();
    send(
        app.client
            .post(app.url("/response"))
            .bearer_auth(&from.token)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body),
    )
    .await
}

#[tokio::test]
async fn other_senders_keys_neither_flush_nor_collide_with_a_senders_key() {
    let app = spawn_app(Config {
        mailbox_size: 1024,
        message_rate: 0,
        ..test_config()
    })
    .await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let cat = app.helo("cat").await;
    let first = keyed(&app, &ann, &cat, "k", json!("from ann")).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first = body_json(first).await;

    // The same key from another sender is that sender's own: delivered, not refused.
    let bobs = keyed(&app, &bob, &cat, "k", json!("from bob")).await;
    assert_eq!(bobs.status(), StatusCode::ACCEPTED);
    // More keyed messages from another sender than the recipient remembers in all.
    for n in 0..299 {
        let sent = keyed(&app, &bob, &cat, &format!("b-{n}"), json!(n)).await;
        assert_eq!(sent.status(), StatusCode::ACCEPTED, "bob's message {n}");
    }

    // Ann's key is still hers: a retry is answered with the first id, another body refused.
    let again = keyed(&app, &ann, &cat, "k", json!("from ann")).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(body_json(again).await, first);
    let other = keyed(&app, &ann, &cat, "k", json!("another body")).await;
    assert_error(
        other,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
}
