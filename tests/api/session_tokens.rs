//! Who is asking, and about whom: a missing, wrong, forged or unknown session token is 401 on
//! the stream and on every write (checked before the body), and an unknown session or recipient
//! is 404. Same error format as `errors`.

use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use serde_json::json;

use crate::support::*;

/// A token in the right shape for a session that does not exist.
const UNKNOWN_ID: &str = "0b6f1f3e-3c55-4b8f-9f0e-6c2b9a7d1e42";

fn unknown_token() -> String {
    format!("{}.{}", UNKNOWN_ID.replace('-', ""), "ab".repeat(32))
}

// GET /events/{id}

#[tokio::test]
async fn stream_without_a_token_is_401() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;

    let response = app.get(&format!("/events/{}", ann.id)).await;

    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn stream_with_a_wrong_or_malformed_token_is_401() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let url = app.url(&format!("/events/{}", ann.id));

    let bad = [
        forged_token(&ann),
        "nonsense".to_owned(),
        ann.id.clone(),
        format!("{}0", ann.token),
        ann.token[..ann.token.len() - 1].to_owned(),
    ];
    for token in &bad {
        let header = send(
            app.client
                .get(&url)
                .header(AUTHORIZATION, format!("Bearer {token}")),
        )
        .await;
        assert_error(header, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let query = send(app.client.get(format!("{url}?token={token}"))).await;
        assert_error(query, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let basic = send(
        app.client
            .get(&url)
            .header(AUTHORIZATION, format!("Basic {}", ann.token)),
    )
    .await;
    assert_error(basic, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(app.health().await["streams"], 0, "no stream was attached");
}

#[tokio::test]
async fn stream_with_another_sessions_token_is_401() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;

    let response = app.events_response(&ann.id, &bob.token, None).await;

    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn stream_for_an_unknown_session_is_404() {
    let app = spawn_app(test_config()).await;

    let unknown = app
        .events_response(UNKNOWN_ID, &unknown_token(), None)
        .await;
    assert_error(unknown, StatusCode::NOT_FOUND, "unknown_session").await;
    let not_a_uuid = app
        .events_response("not-a-uuid", &unknown_token(), None)
        .await;
    assert_error(not_a_uuid, StatusCode::NOT_FOUND, "unknown_session").await;
}

// POST /response, POST /broadcast, DELETE /session: authentication

#[tokio::test]
async fn writes_without_a_bearer_token_are_401() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let response_body = json!({"recipient": ann.id, "message": "hi"}).to_string();
    let broadcast_body = json!({"message": "hi"}).to_string();

    let response = app.post_raw("/response", None, &response_body).await;
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let broadcast = app.post_raw("/broadcast", None, &broadcast_body).await;
    assert_error(broadcast, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let delete = send(app.client.delete(app.url("/session"))).await;
    assert_error(delete, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // Not the Bearer scheme.
    let basic = send(
        app.client
            .delete(app.url("/session"))
            .header(AUTHORIZATION, format!("Basic {}", ann.token)),
    )
    .await;
    assert_error(basic, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(app.client_ids().await.len(), 1, "ann is still registered");
}

#[tokio::test]
async fn writes_with_a_wrong_or_unknown_token_are_401() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let response_body = json!({"recipient": ann.id, "message": "hi"}).to_string();
    let broadcast_body = json!({"message": "hi"}).to_string();

    for token in [forged_token(&ann), unknown_token(), "nonsense".to_owned()] {
        let response = app
            .post_raw("/response", Some(&token), &response_body)
            .await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let broadcast = app
            .post_raw("/broadcast", Some(&token), &broadcast_body)
            .await;
        assert_error(broadcast, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let delete = app.delete(&token).await;
        assert_error(delete, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    assert_eq!(app.client_ids().await.len(), 1, "ann is still registered");
}

#[tokio::test]
async fn authentication_is_checked_before_the_body() {
    let app = spawn_app(test_config()).await;

    let response = app
        .post_raw("/response", Some(&unknown_token()), "not json")
        .await;

    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

// POST /response

#[tokio::test]
async fn response_to_an_unknown_recipient_is_404() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;

    let response = app.post_response(&ann, UNKNOWN_ID, json!("hi")).await;

    assert_error(response, StatusCode::NOT_FOUND, "unknown_recipient").await;
}
