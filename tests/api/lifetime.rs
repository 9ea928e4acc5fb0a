//! How sessions end: the TTL for detached sessions, and `DELETE /session`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::time::Instant;

use crate::support::*;

const TTL: Duration = Duration::from_millis(300);

fn short_ttl() -> Config {
    Config {
        session_ttl: TTL,
        ..test_config()
    }
}

#[tokio::test]
async fn a_session_that_never_attaches_expires_after_the_ttl_and_others_hear_user_left() {
    let app = spawn_app(short_ttl()).await;
    let ann = app.helo("ann").await;
    let mut ann_stream = app.attach_ready(&ann).await;

    let registered = Instant::now();
    let bob = app.helo("bob").await;
    assert_eq!(
        ann_stream.next_named("new_user").await.data,
        bob.member("lobby")
    );

    let left = ann_stream.next_named("user_left").await;
    assert!(
        registered.elapsed() >= TTL,
        "left after {:?}",
        registered.elapsed()
    );
    assert_eq!(left.data, bob.member("lobby"));
    assert_eq!(left.id, Some(2));
    assert_eq!(app.client_ids().await, [ann.id.clone()].into());
    // The expired session is gone for every route.
    assert_error(
        app.events_response(&bob.id, &bob.token, None).await,
        StatusCode::NOT_FOUND,
        "unknown_session",
    )
    .await;
    assert_error(
        app.broadcast(&bob, json!("ghost")).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert_error(
        app.post_response(&ann, &bob.id, json!("hello?")).await,
        StatusCode::NOT_FOUND,
        "unknown_recipient",
    )
    .await;
}

#[tokio::test]
async fn an_attached_session_does_not_expire_and_its_ttl_starts_when_it_detaches() {
    let app = spawn_app(short_ttl()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut ann_stream = app.attach_ready(&ann).await;
    ann_stream.next_named("new_user").await;
    let bob_stream = app.attach_ready(&bob).await;

    // Several TTLs pass with both attached: nobody leaves. Each round a newcomer who never
    // attaches expires: its `user_left`, the next event after its `new_user`, proves a TTL
    // passed and the expiry ran, and nothing about bob came before it.
    for round in 0..3 {
        let passer = app.helo(&format!("passer {round}")).await;
        ann_stream.expect_new_user(&passer).await;
        let left = ann_stream.next_named("user_left").await;
        assert_eq!(left.data, passer.member("lobby"));
    }
    assert_eq!(app.client_ids().await.len(), 2);

    let detached = Instant::now();
    drop(bob_stream);

    let left = ann_stream.next_named("user_left").await;
    assert!(
        detached.elapsed() >= TTL,
        "left after {:?}",
        detached.elapsed()
    );
    assert_eq!(left.data, bob.member("lobby"));
}

#[tokio::test]
async fn reattaching_within_the_ttl_keeps_the_session() {
    let app = spawn_app(Config {
        session_ttl: Duration::from_secs(1),
        ..test_config()
    })
    .await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut ann_stream = app.attach_ready(&ann).await;
    ann_stream.next_named("new_user").await;
    drop(app.attach_ready(&bob).await);
    app.wait_for_streams(1).await;

    // Back well within the TTL; then stay past the original deadline: a newcomer who joins
    // now and never attaches expires after it, and its `user_left` is the next event.
    let _bob_stream = app.attach_ready(&bob).await;
    let passer = app.helo("passer").await;
    ann_stream.expect_new_user(&passer).await;
    let left = ann_stream.next_named("user_left").await;
    assert_eq!(left.data, passer.member("lobby"));

    assert_eq!(app.client_ids().await.len(), 2);
}

#[tokio::test]
async fn delete_session_answers_204_closes_its_stream_and_announces_user_left() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut ann_stream = app.attach_ready(&ann).await;
    ann_stream.next_named("new_user").await;
    let mut bob_stream = app.attach_ready(&bob).await;

    let response = app.delete(&bob.token).await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(body_text(response).await, "");
    bob_stream.expect_end().await;
    let left = ann_stream.next_named("user_left").await;
    assert_eq!((left.id, left.data), (Some(2), bob.member("lobby")));
    assert_eq!(app.client_ids().await, [ann.id.clone()].into());
    assert_eq!(app.health().await["streams"], 1);
    // The token is dead now.
    assert_error(
        app.delete(&bob.token).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    assert_error(
        app.events_response(&bob.id, &bob.token, None).await,
        StatusCode::NOT_FOUND,
        "unknown_session",
    )
    .await;
}

#[tokio::test]
async fn delete_works_for_a_session_that_never_attached() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut ann_stream = app.attach_ready(&ann).await;
    ann_stream.next_named("new_user").await;

    assert_eq!(
        app.delete(&bob.token).await.status(),
        StatusCode::NO_CONTENT
    );

    assert_eq!(
        ann_stream.next_named("user_left").await.data,
        bob.member("lobby")
    );
    assert_eq!(app.health().await["sessions"], 1);
}
