//! Every unhappy path of the request itself (bodies, media types, sizes, limits, routes): the
//! status code and the JSON `error` code, with a message for humans. Missing, wrong and unknown
//! tokens and sessions are in `session_tokens`.

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::json;

use crate::support::*;

// POST /helo

#[tokio::test]
async fn helo_rejects_malformed_json_with_invalid_body() {
    let app = spawn_app(test_config()).await;

    for body in [
        r#"{"name": "ann""#,
        "not json",
        r#"{"name": 5}"#,
        "null",
        r#"["ann"]"#,
    ] {
        let response = app.post_raw("/helo", None, body).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_body").await;
    }
    let empty = send(
        app.client
            .post(app.url("/helo"))
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LENGTH, "0"),
    )
    .await;
    assert_error(empty, StatusCode::BAD_REQUEST, "invalid_body").await;
}

#[tokio::test]
async fn helo_rejects_a_missing_name_with_invalid_body() {
    let app = spawn_app(test_config()).await;

    let response = app.post_raw("/helo", None, r#"{"nom": "ann"}"#).await;

    assert_error(response, StatusCode::BAD_REQUEST, "invalid_body").await;
}

#[tokio::test]
async fn helo_rejects_empty_long_and_control_character_names_with_invalid_name() {
    let app = spawn_app(test_config()).await;
    let names = [
        String::new(),
        "a".repeat(65),
        "é".repeat(65),
        "bell\u{7}".to_owned(),
        "line\nbreak".to_owned(),
        "tab\there".to_owned(),
        "nul\u{0}".to_owned(),
        "del\u{7f}".to_owned(),
        "c1\u{85}".to_owned(),
    ];

    for name in &names {
        let response = app.helo_response(name).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_name").await;
    }
    assert!(app.client_ids().await.is_empty(), "nothing was registered");
}

#[tokio::test]
async fn helo_rejects_other_content_types_with_415() {
    let app = spawn_app(test_config()).await;

    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = app.client.post(app.url("/helo")).body(r#"{"name": "ann"}"#);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let response = send(request).await;
        assert_error(
            response,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    }
}

#[tokio::test]
async fn bodies_over_max_body_are_rejected_with_413_on_every_post() {
    let app = spawn_app(Config {
        max_body: 64,
        ..test_config()
    })
    .await;
    let ann = app.helo("ann").await;
    let padding = "x".repeat(64);

    let helo = app
        .post_raw(
            "/helo",
            None,
            &json!({"name": "bob", "pad": padding}).to_string(),
        )
        .await;
    assert_error(helo, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let response = app.post_response(&ann, &ann.id, json!(padding)).await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let broadcast = app.broadcast(&ann, json!(padding)).await;
    assert_error(
        broadcast,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
}

#[tokio::test]
async fn a_body_without_content_length_is_rejected_with_411() {
    let app = spawn_app(test_config()).await;
    let chunks: Vec<Result<&'static str, std::io::Error>> =
        vec![Ok(r#"{"name": "#), Ok(r#""ann"}"#)];

    // A streamed body goes out chunked, without Content-Length.
    let response = send(
        app.client
            .post(app.url("/helo"))
            .header(CONTENT_TYPE, "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            ))),
    )
    .await;

    assert_error(response, StatusCode::LENGTH_REQUIRED, "length_required").await;
}

#[tokio::test]
async fn helo_beyond_max_sessions_is_503_session_limit_until_one_leaves() {
    let app = spawn_app(Config {
        max_sessions: 1,
        ..test_config()
    })
    .await;
    let ann = app.helo("ann").await;

    let response = app.helo_response("bob").await;

    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "session_limit").await;
    assert_eq!(app.client_ids().await, [ann.id.clone()].into());
    assert_eq!(
        app.delete(&ann.token).await.status(),
        StatusCode::NO_CONTENT
    );
    app.helo("bob").await;
}

// GET /events/{id}

#[tokio::test]
async fn stream_with_a_last_event_id_that_is_not_an_event_id_is_400() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let url = app.url(&format!("/events/{}", ann.id));

    for value in ["abc", "-1", "1.5", "99999999999999999999999"] {
        let header = send(
            app.client
                .get(&url)
                .header(AUTHORIZATION, format!("Bearer {}", ann.token))
                .header("Last-Event-ID", value),
        )
        .await;
        assert_error(header, StatusCode::BAD_REQUEST, "invalid_last_event_id").await;
        let query = send(
            app.client
                .get(format!("{url}?token={}&last_event_id={value}", ann.token)),
        )
        .await;
        assert_error(query, StatusCode::BAD_REQUEST, "invalid_last_event_id").await;
    }
}

#[tokio::test]
async fn streams_beyond_max_streams_are_503_stream_limit_but_takeover_is_allowed() {
    let app = spawn_app(Config {
        max_streams: Some(1),
        ..test_config()
    })
    .await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let _ann_stream = app.attach_ready(&ann).await;

    let response = app.events_response(&bob.id, &bob.token, None).await;

    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "stream_limit").await;
    // Ann replacing her own stream does not need a second slot.
    let mut takeover = app.attach(&ann, None).await;
    takeover.ready().await;
    // Once ann leaves, her slot is free for bob.
    assert_eq!(
        app.delete(&ann.token).await.status(),
        StatusCode::NO_CONTENT
    );
    app.attach_ready(&bob).await;
}

// POST /response

#[tokio::test]
async fn response_with_a_bad_body_is_400_invalid_body() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let bodies = [
        "not json".to_owned(),
        json!({"recipient": bob.id}).to_string(),
        json!({"message": "hi"}).to_string(),
        json!({"recipient": "not-a-uuid", "message": "hi"}).to_string(),
        json!({"recipient": 7, "message": "hi"}).to_string(),
        format!(r#"{{"recipient": "{}", "message": }}"#, bob.id),
    ];

    for body in &bodies {
        let response = app.post_raw("/response", Some(&ann.token), body).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_body").await;
    }
    let text = send(
        app.client
            .post(app.url("/response"))
            .header(AUTHORIZATION, format!("Bearer {}", ann.token))
            .header(CONTENT_TYPE, "text/plain")
            .body(json!({"recipient": bob.id, "message": "hi"}).to_string()),
    )
    .await;
    assert_error(
        text,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

#[tokio::test]
async fn response_to_a_full_mailbox_is_429_with_retry_after_until_it_is_read() {
    let app = spawn_app(Config {
        mailbox_size: 2,
        ..test_config()
    })
    .await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    assert_eq!(app.respond(&ann, &bob, json!(1)).await, 1);
    assert_eq!(app.respond(&ann, &bob, json!(2)).await, 2);

    let response = app.post_response(&ann, &bob.id, json!(3)).await;

    retry_after_secs(response.headers());
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "mailbox_full").await;
    // Refused messages are not stored: bob reads exactly 1 and 2, and then there is room.
    let mut bob_stream = app.attach_ready(&bob).await;
    for n in 1..=2 {
        let event = bob_stream.next_named("client_response").await;
        assert_eq!((event.id, &event.data["message"]), (Some(n), &json!(n)));
    }
    assert_eq!(app.respond(&ann, &bob, json!(3)).await, 3);
    assert_eq!(
        bob_stream.next_named("client_response").await.data["message"],
        3
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("\nswitchboard_mailbox_full_total 1\n"),
        "{metrics}"
    );
}

// POST /broadcast

#[tokio::test]
async fn broadcast_with_a_bad_body_is_400_invalid_body() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;

    for body in ["not json", "{}", r#"{"mesage": 1}"#, r#"{"message": }"#] {
        let response = app.post_raw("/broadcast", Some(&ann.token), body).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_body").await;
    }
    let text = send(
        app.client
            .post(app.url("/broadcast"))
            .header(AUTHORIZATION, format!("Bearer {}", ann.token))
            .header(CONTENT_TYPE, "text/plain")
            .body(r#"{"message": 1}"#),
    )
    .await;
    assert_error(
        text,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

// Routing

#[tokio::test]
async fn unknown_routes_are_404_not_found() {
    let app = spawn_app(test_config()).await;

    for path in [
        "/nope",
        "/events",
        "/events/a/b",
        "/helo/extra",
        "/public/index.html",
    ] {
        let response = app.get(path).await;
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    // Other methods too: static files are served from every path, but only to GET.
    for (method, path) in [
        ("POST", "/nope"),
        ("DELETE", "/index.html"),
        ("PUT", "/a/b"),
    ] {
        let response = send(app.client.request(method.parse().unwrap(), app.url(path))).await;
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[tokio::test]
async fn known_routes_with_the_wrong_method_are_405_method_not_allowed() {
    let app = spawn_app(test_config()).await;
    let requests = [
        ("GET", "/helo"),
        ("PUT", "/helo"),
        ("GET", "/response"),
        ("GET", "/broadcast"),
        ("GET", "/session"),
        ("POST", "/session"),
        ("DELETE", "/clients"),
        ("POST", "/healthz"),
        ("POST", "/metrics"),
        ("DELETE", "/openapi.yaml"),
    ];

    for (method, path) in requests {
        let response = send(app.client.request(method.parse().unwrap(), app.url(path))).await;
        assert_error(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
    }
}
