//! Session lifetimes: with `--auth jwt` a session ends at its join token's `exp` (plus the
//! leeway, 0 here) unless refreshed; `--max-session-age` bounds sessions in any mode; the
//! server API moves or ends them. The stream hears `refresh_required`, then `expired`, and
//! ends; the others hear `user_left`; the token is refused as `session_expired`. Tokens here
//! live 3 s, so each test waits for the events, never longer.

use std::time::Duration;

use jsonwebtoken::get_current_timestamp;
use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard::SessionFlags;

use crate::support::jwt::*;
use crate::support::*;

/// `--auth jwt` with no leeway: a session ends exactly at its token's `exp`.
fn jwt_config() -> Config {
    Config {
        jwt_leeway: Duration::ZERO,
        ..hs256_config()
    }
}

/// A join token for `name` (`sub` `user-<name>`) that expires `secs` from now.
fn token_for(name: &str, secs: i64) -> String {
    let exp = get_current_timestamp() as i64 + secs;
    hs256(SECRET, &with(claims(name), json!({ "exp": exp })))
}

/// `POST /session/refresh` as `session` with `join_token`; the raw response.
async fn refresh(app: &Endpoint, session: &Session, join_token: &str) -> reqwest::Response {
    let body = json!({ "join_token": join_token }).to_string();
    app.post_raw("/session/refresh", Some(&session.token), &body)
        .await
}

/// `POST /api/refresh` with `body`, as the backend; the raw response.
async fn api_refresh(app: &Endpoint, body: Value) -> reqwest::Response {
    send(
        app.client
            .post(app.url("/api/refresh"))
            .bearer_auth(TEST_API_KEY)
            .json(&body),
    )
    .await
}

/// Reads `refresh_required` then `expired` (each with an id, in order), then the end of the
/// stream; the `expires_in` and the reason.
async fn warned_then_expired(stream: &mut SseReader) -> (u64, String) {
    let warned = stream.next_named("refresh_required").await;
    let expired = stream.next_named("expired").await;
    assert!(
        warned.id.is_some() && expired.id > warned.id,
        "ids in order"
    );
    stream.expect_end().await;
    (
        warned.data["expires_in"].as_u64().unwrap(),
        expired.data["reason"].as_str().unwrap().to_owned(),
    )
}

/// Asserts the session's token is refused everywhere as expired.
async fn assert_token_expired(app: &Endpoint, session: &Session) {
    let deleted = app.delete(&session.token).await;
    let body = assert_error(deleted, StatusCode::UNAUTHORIZED, "session_expired").await;
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    let stream = app.events_response(&session.id, &session.token, None).await;
    assert_error(stream, StatusCode::UNAUTHORIZED, "session_expired").await;
}

#[tokio::test]
async fn a_join_token_ends_its_session_at_exp_after_a_warning() {
    let app = spawn_app(jwt_config()).await;
    let bob = join(&app, &token_for("Bob", 300)).await;
    let mut bobs = app.attach_ready(&bob).await;
    let ada = join(&app, &token_for("Ada", 3)).await;
    bobs.next_named("new_user").await;
    let mut adas = app.attach_ready(&ada).await;

    let (expires_in, reason) = warned_then_expired(&mut adas).await;
    assert!((1..=3).contains(&expires_in), "warned {expires_in} s ahead");
    assert_eq!(reason, "join_token");
    let left = bobs.next_named("user_left").await;
    assert_eq!(left.data["id"], ada.id.to_string());
    assert_eq!(left.data["room"], "lobby");
    assert_token_expired(&app, &ada).await;
    let listed = body_json(app.get_as_backend("/clients").await).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "only bob: {listed}");
    let metrics = app.metrics().await;
    assert_eq!(
        sample(&metrics, "switchboard_sessions_expired_total"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_refresh_before_exp_keeps_the_session_past_the_old_exp() {
    let app = spawn_app(jwt_config()).await;
    let ada = join(&app, &token_for("Ada", 3)).await;
    let mut adas = app.attach_ready(&ada).await;
    adas.next_named("refresh_required").await;

    let refreshed = app.hub.refresh(&ada, &token_for("Ada", 300)).await.unwrap();
    let now = get_current_timestamp();
    assert!(
        (now + 290..=now + 300).contains(&refreshed.expires_at),
        "{refreshed:?}"
    );
    assert!(refreshed.expires_in > 290, "{refreshed:?}");
    // The old end (3 s after the join) passes in silence.
    adas.expect_no_event_within(Duration::from_secs(3)).await;
    join(&app, &token_for("Bob", 300)).await;
    adas.next_named("new_user").await;
    assert_eq!(app.broadcast(&ada, json!("still here")).await.status(), 202);
    assert_eq!(
        sample(&app.metrics().await, "switchboard_session_refreshes_total"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_refresh_needs_a_valid_token_of_the_same_user_and_comes_too_late_after_exp() {
    let app = spawn_app(jwt_config()).await;
    let ada = join(&app, &token_for("Ada", 3)).await;
    let mut adas = app.attach_ready(&ada).await;

    let other = refresh(&app, &ada, &token_for("Bob", 300)).await;
    assert_error(other, StatusCode::FORBIDDEN, "wrong_user").await;
    let stale = refresh(&app, &ada, &token_for("Ada", -10)).await;
    let body = assert_error(stale, StatusCode::UNAUTHORIZED, "invalid_join_token").await;
    assert!(body["message"].as_str().unwrap().starts_with("expired: "));
    let forged = hs256(
        b"another-secret-of-at-least-thirty-two-bytes",
        &claims("Ada"),
    );
    let forged = refresh(&app, &ada, &forged).await;
    let body = assert_error(forged, StatusCode::UNAUTHORIZED, "invalid_join_token").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("bad_signature: ")
    );
    let shapeless = app
        .post_raw("/session/refresh", Some(&ada.token), r#"{"token":"x"}"#)
        .await;
    assert_error(shapeless, StatusCode::BAD_REQUEST, "invalid_body").await;

    // None of those moved the end.
    warned_then_expired(&mut adas).await;
    let late = refresh(&app, &ada, &token_for("Ada", 300)).await;
    assert_error(late, StatusCode::UNAUTHORIZED, "session_expired").await;
}

#[tokio::test]
async fn the_server_api_moves_and_ends_a_users_sessions() {
    let app = spawn_app(jwt_config()).await;
    let bob = join(&app, &token_for("Bob", 300)).await;
    let mut bobs = app.attach_ready(&bob).await;
    let ada = join(&app, &token_for("Ada", 300)).await;
    let ada_too = join(&app, &token_for("Ada", 300)).await;
    bobs.next_named("new_user").await;
    bobs.next_named("new_user").await;
    let mut adas = app.attach_ready(&ada).await;
    adas.next_named("new_user").await; // ada's other session

    let soon = get_current_timestamp() + 3;
    let moved = api_refresh(
        &app,
        json!({ "to": { "user": "user-Ada" }, "expires_at": soon }),
    )
    .await;
    assert_eq!(moved.status(), StatusCode::OK);
    assert_eq!(body_json(moved).await, json!({ "refreshed": 2 }));
    let warned = adas.next_named("refresh_required").await;
    assert!(warned.data["expires_in"].as_u64().unwrap() <= 3);

    let ended = api_refresh(
        &app,
        json!({ "to": { "user": "user-Ada" }, "expires_at": 1 }),
    )
    .await;
    assert_eq!(body_json(ended).await, json!({ "refreshed": 2 }));
    let expired = adas.next_named("expired").await;
    assert_eq!(expired.data, json!({ "reason": "server" }));
    adas.expect_end().await;
    let mut gone = vec![
        bobs.next_named("user_left").await.data["id"].clone(),
        bobs.next_named("user_left").await.data["id"].clone(),
    ];
    gone.sort_by_key(|id| id.to_string());
    let mut expected = vec![json!(ada.id), json!(ada_too.id)];
    expected.sort_by_key(|id| id.to_string());
    assert_eq!(gone, expected);
    assert_token_expired(&app, &ada_too).await;

    let unknown = api_refresh(
        &app,
        json!({ "to": { "session": ada.id }, "expires_at": soon }),
    )
    .await;
    assert_error(unknown, StatusCode::NOT_FOUND, "unknown_session").await;
    let shapeless = api_refresh(&app, json!({ "to": "everyone" })).await;
    assert_error(shapeless, StatusCode::BAD_REQUEST, "invalid_body").await;
}

#[tokio::test]
async fn max_session_age_bounds_open_sessions_which_cannot_refresh_themselves() {
    let app = spawn_app(Config {
        sessions: SessionFlags {
            max_session_age: Some(Duration::from_secs(3)),
        },
        ..test_config()
    })
    .await;
    let ada = app.helo("Ada").await;
    let mut adas = app.attach_ready(&ada).await;
    let open = refresh(&app, &ada, &token_for("Ada", 300)).await;
    let body = assert_error(open, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(body["message"].as_str().unwrap().contains("--auth open"));

    let (expires_in, reason) = warned_then_expired(&mut adas).await;
    assert!((1..=3).contains(&expires_in));
    assert_eq!(reason, "max_session_age");
    assert_token_expired(&app, &ada).await;
}

#[tokio::test]
async fn max_session_age_caps_what_a_join_token_grants() {
    let app = spawn_app(Config {
        sessions: SessionFlags {
            max_session_age: Some(Duration::from_secs(3)),
        },
        ..jwt_config()
    })
    .await;
    let ada = join(&app, &token_for("Ada", 300)).await;
    let mut adas = app.attach_ready(&ada).await;
    let response = refresh(&app, &ada, &token_for("Ada", 600)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(body_json(response).await["expires_in"].as_u64().unwrap() <= 3);
    let (_, reason) = warned_then_expired(&mut adas).await;
    assert_eq!(reason, "max_session_age");
}
