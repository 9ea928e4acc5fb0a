//! Streams without a secret in the URL: the session cookie `POST /helo` sets (resumes with
//! `Last-Event-ID`, like a browser's own reconnect), single-use tickets from
//! `POST /session/ticket`, `--url-tokens off`, and a cookie that opens nothing but a stream.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, SET_COOKIE};
use serde_json::json;
use switchboard::UrlTokens;

use crate::support::*;

/// `POST /helo` as a browser on this origin sees it: the session and its `Set-Cookie`.
async fn helo_with_cookie(app: &TestApp, name: &str) -> (Session, String) {
    let response = app.helo_response(name).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let set_cookie = response
        .headers()
        .get(SET_COOKIE)
        .expect("POST /helo sets the session cookie")
        .to_str()
        .unwrap()
        .to_owned();
    let session: Session = serde_json::from_value(body_json(response).await).unwrap();
    (session, set_cookie)
}

/// The `name=value` a browser sends back for a `Set-Cookie`.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

async fn stream_with_cookie(
    app: &TestApp,
    session: &Session,
    cookie: &str,
    last: Option<u64>,
) -> reqwest::Response {
    let mut request = app
        .client
        .get(app.url(&format!("/events/{}", session.id)))
        .header(COOKIE, cookie);
    if let Some(last) = last {
        request = request.header("Last-Event-ID", last.to_string());
    }
    send(request).await
}

async fn ticket(app: &TestApp, session: &Session) -> String {
    let response = send(
        app.client
            .post(app.url("/session/ticket"))
            .header(AUTHORIZATION, format!("Bearer {}", session.token)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body = body_json(response).await;
    assert!(body["expires_in"].as_u64().is_some(), "{body}");
    body["ticket"].as_str().expect("a ticket").to_owned()
}

#[tokio::test]
async fn the_session_cookie_is_scoped_to_the_stream_and_hidden_from_scripts() {
    let app = spawn_app(test_config()).await;
    let (ann, set_cookie) = helo_with_cookie(&app, "ann").await;

    let attributes: Vec<&str> = set_cookie.split("; ").collect();
    assert_eq!(attributes[0], format!("switchboard_session={}", ann.token));
    let path = format!("Path=/events/{}", ann.id);
    for wanted in [path.as_str(), "HttpOnly", "SameSite=Strict"] {
        assert!(attributes.contains(&wanted), "{wanted} in {set_cookie}");
    }
    assert!(
        !attributes.contains(&"Secure"),
        "plain HTTP, no trusted proxy: {set_cookie}"
    );
}

#[tokio::test]
async fn a_cookie_stream_reads_and_resumes_after_last_event_id() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let (bob, set_cookie) = helo_with_cookie(&app, "bob").await;
    let cookie = cookie_pair(&set_cookie);

    let response = stream_with_cookie(&app, &bob, &cookie, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = SseReader::new(response).await;
    stream.ready().await;
    let first = app.respond(&ann, &bob, json!("one")).await;
    stream
        .expect_response(first, &ann, &bob, &json!("one"))
        .await;
    drop(stream);
    app.wait_for_streams(0).await;

    // What the browser's own reconnect sends: the cookie and Last-Event-ID.
    let second = app.respond(&ann, &bob, json!("two")).await;
    let response = stream_with_cookie(&app, &bob, &cookie, Some(first)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = SseReader::new(response).await;
    stream.ready().await;
    stream
        .expect_response(second, &ann, &bob, &json!("two"))
        .await;
}

#[tokio::test]
async fn a_ticket_opens_one_stream_and_a_second_use_is_401_saying_used() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let ticket = ticket(&app, &ann).await;
    let url = app.url(&format!("/events/{}?ticket={ticket}", ann.id));

    let head = send(app.client.head(&url)).await;
    assert_eq!(head.status(), StatusCode::OK, "a HEAD spends no ticket");
    let mut stream = SseReader::new(send(app.client.get(&url)).await).await;
    stream.ready().await;
    drop(stream);
    app.wait_for_streams(0).await;

    let again = send(app.client.get(&url)).await;
    let body = assert_error(again, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(
        body["message"].as_str().unwrap().contains("already used"),
        "{body}"
    );
    let unknown = send(
        app.client
            .get(app.url(&format!("/events/{}?ticket=nope", ann.id))),
    )
    .await;
    let body = assert_error(unknown, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(
        body["message"].as_str().unwrap().contains("unknown ticket"),
        "{body}"
    );
}

#[tokio::test]
async fn an_expired_ticket_is_401_saying_expired() {
    let mut config = test_config();
    config.streams.ticket_ttl = Duration::ZERO;
    let app = spawn_app(config).await;
    let ann = app.helo("ann").await;
    let ticket = ticket(&app, &ann).await;

    let response = send(
        app.client
            .get(app.url(&format!("/events/{}?ticket={ticket}", ann.id))),
    )
    .await;

    let body = assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
}

#[tokio::test]
async fn a_ticket_for_one_session_opens_no_other() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let ticket = ticket(&app, &ann).await;

    let response = send(
        app.client
            .get(app.url(&format!("/events/{}?ticket={ticket}", bob.id))),
    )
    .await;

    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn url_tokens_off_refuses_token_in_the_query_but_not_the_cookie_or_a_ticket() {
    let mut config = test_config();
    config.streams.url_tokens = UrlTokens::Off;
    let app = spawn_app(config).await;
    let (ann, set_cookie) = helo_with_cookie(&app, "ann").await;

    let query = send(
        app.client
            .get(app.url(&format!("/events/{}?token={}", ann.id, ann.token))),
    )
    .await;
    let body = assert_error(query, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--url-tokens off"),
        "{body}"
    );

    let mut stream =
        SseReader::new(stream_with_cookie(&app, &ann, &cookie_pair(&set_cookie), None).await).await;
    stream.ready().await;
    drop(stream);
    app.wait_for_streams(0).await;
    let ticket = ticket(&app, &ann).await;
    let mut stream = SseReader::new(
        send(
            app.client
                .get(app.url(&format!("/events/{}?ticket={ticket}", ann.id))),
        )
        .await,
    )
    .await;
    stream.ready().await;
}

#[tokio::test]
async fn the_cookie_alone_authorises_no_write() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let (bob, set_cookie) = helo_with_cookie(&app, "bob").await;
    let cookie = cookie_pair(&set_cookie);

    // What a page on another site could make a browser send, had it the cookie.
    let writes = [
        app.client
            .post(app.url("/response"))
            .header(CONTENT_TYPE, "application/json")
            .body(json!({"recipient": ann.id, "message": "hi"}).to_string()),
        app.client
            .post(app.url("/broadcast"))
            .header(CONTENT_TYPE, "application/json")
            .body(json!({"message": "hi"}).to_string()),
        app.client.post(app.url("/session/ticket")),
        app.client.delete(app.url("/session")),
    ];
    for write in writes {
        let response = send(write.header(COOKIE, &cookie)).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    assert!(
        app.client_ids().await.contains(&bob.id),
        "bob is still there"
    );
}

#[tokio::test]
async fn delete_session_clears_the_cookie() {
    let app = spawn_app(test_config()).await;
    let (ann, _) = helo_with_cookie(&app, "ann").await;

    let response = app.delete(&ann.token).await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let cleared = response
        .headers()
        .get(SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(cleared.starts_with("switchboard_session=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert!(
        cleared.contains(&format!("Path=/events/{}", ann.id)),
        "{cleared}"
    );
}

#[tokio::test]
async fn the_cookie_is_secure_behind_a_trusted_proxy_that_says_https() {
    let mut config = test_config();
    config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let app = spawn_app(config).await;

    let response = send(
        app.client
            .post(app.url("/helo"))
            .header(CONTENT_TYPE, "application/json")
            .header("x-forwarded-proto", "https")
            .body(json!({"name": "ann"}).to_string()),
    )
    .await;

    let set_cookie = response
        .headers()
        .get(SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(set_cookie.ends_with("; Secure"), "{set_cookie}");
}

#[tokio::test]
async fn over_tls_the_cookie_is_secure_and_opens_the_stream_over_http2() {
    let ca = crate::support::tls::TestCa::new();
    let mut config = test_config();
    config.tls_cert = Some(ca.cert.clone());
    config.tls_key = Some(ca.key.clone());
    // About the TLS listener, not the backplane: the Redis rerun's health wait speaks plain HTTP.
    config.redis_url = None;
    let app = spawn_app(config).await;
    let client = ca.client(&["h2"]);
    let base = format!("https://{}", app.authority());

    let response = send(
        client
            .post(format!("{base}/helo"))
            .header(CONTENT_TYPE, "application/json")
            .body(json!({"name": "ann"}).to_string()),
    )
    .await;
    let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set_cookie.ends_with("; Secure"), "{set_cookie}");
    let ann: Session = serde_json::from_value(body_json(response).await).unwrap();

    let stream = send(
        client
            .get(format!("{base}/events/{}", ann.id))
            .header(COOKIE, cookie_pair(&set_cookie)),
    )
    .await;
    assert_eq!(stream.version(), reqwest::Version::HTTP_2);
    SseReader::new(stream).await.ready().await;
}
