//! Rate limits and per-address shares: a refusal is 429 `rate_limited` naming the limit, with
//! `Retry-After`; one address flooding never locks out another; forwarding headers count only
//! from trusted proxies. Other addresses are other loopback addresses (127.0.0.2, ...).

use std::net::IpAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use switchboard::Config;

use crate::support::*;

fn other(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// The `Retry-After` seconds of a refusal, which must be there.
fn retry_after(response: &reqwest::Response) -> u64 {
    retry_after_secs(response.headers())
}

/// Asserts a 429 `rate_limited` refusal by `limit`; returns its `Retry-After`.
async fn assert_limited(response: reqwest::Response, limit: &str) -> u64 {
    let retry = retry_after(&response);
    assert!(retry >= 1, "Retry-After {retry}");
    let body = assert_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(limit), "names {limit}: {message}");
    assert!(message.contains("retry in"), "says when: {message}");
    retry
}

/// `switchboard_rate_limited_total{limit="..."}`, 0 when absent.
async fn refusals(app: &Endpoint, limit: &str) -> u64 {
    let series = format!("switchboard_rate_limited_total{{limit=\"{limit}\"}}");
    sample(&app.metrics().await, &series).map_or(0, |n| n as u64)
}

#[tokio::test]
async fn a_helo_flood_from_one_address_leaves_another_address_served() {
    let app = spawn_app(Config {
        helo_rate: 1,
        helo_burst: 5,
        ..test_config()
    })
    .await;
    let flooder = app.seen_from(other(2));

    for n in 0..5 {
        assert_eq!(
            flooder.helo_response(&format!("bot {n}")).await.status(),
            StatusCode::CREATED,
            "within the burst"
        );
    }
    let refused = flooder.helo_response("bot 5").await;
    let retry = assert_limited(refused, "helo_rate").await;
    assert!(
        retry <= 2,
        "one join per second comes back within a second or so: {retry}"
    );

    let user = app.helo("Ada").await;
    assert_eq!(user.name, "Ada", "127.0.0.1 has its own budget");
    assert_eq!(refusals(&app, "helo_rate").await, 1);
}

#[tokio::test]
async fn an_address_holds_at_most_its_share_of_sessions_until_one_leaves() {
    let app = spawn_app(Config {
        max_sessions_per_address: Some(2),
        ..test_config()
    })
    .await;
    let first = app.helo("one").await;
    app.helo("two").await;

    let refused = app.helo_response("three").await;
    let retry = assert_limited(refused, "sessions_per_address").await;
    assert_eq!(
        retry, 30,
        "an abandoned session frees its place within one TTL"
    );
    app.seen_from(other(3)).helo("elsewhere").await;

    assert_eq!(
        app.delete(&first.token).await.status(),
        StatusCode::NO_CONTENT
    );
    app.helo("three").await;
}

#[tokio::test]
async fn an_address_holds_at_most_its_share_of_streams() {
    let app = spawn_app(Config {
        max_streams_per_address: Some(1),
        ..test_config()
    })
    .await;
    let (ann, bob) = (app.helo("ann").await, app.helo("bob").await);
    let ann_stream = app.attach_ready(&ann).await;

    let refused = app.events_response(&bob.id, &bob.token, None).await;
    assert_limited(refused, "streams_per_address").await;
    let from_elsewhere = app.seen_from(other(4));
    drop(from_elsewhere.attach_ready(&bob).await);

    drop(ann_stream);
    // The place comes back with the stream: once the server counts no streams, it is free.
    app.wait_for_streams(0).await;
    let response = app.events_response(&bob.id, &bob.token, None).await;
    assert_eq!(response.status(), StatusCode::OK, "the place came back");
    assert!(refusals(&app, "streams_per_address").await >= 1);
}

#[tokio::test]
async fn a_session_sends_at_its_message_rate_and_others_are_not_slowed() {
    let app = spawn_app(Config {
        message_rate: 1,
        message_burst: 2,
        ..test_config()
    })
    .await;
    let (ann, bob) = (app.helo("ann").await, app.helo("bob").await);

    app.respond(&ann, &bob, "one").await;
    app.respond(&ann, &bob, "two").await;
    let refused = app.post_response(&ann, &bob.id, json!("three")).await;
    assert_limited(refused, "message_rate").await;
    let refused = app.broadcast(&ann, "to all").await;
    assert_limited(refused, "message_rate").await;

    app.respond(&bob, &ann, "bob has his own budget").await;
    assert_eq!(refusals(&app, "message_rate").await, 2);
}

#[tokio::test]
async fn a_session_sends_at_its_byte_rate() {
    let app = spawn_app(Config {
        byte_rate: 1024,
        byte_burst: 3 * 1024,
        ..test_config()
    })
    .await;
    let (ann, bob) = (app.helo("ann").await, app.helo("bob").await);
    let big = "x".repeat(2000);

    app.respond(&ann, &bob, &big).await;
    let refused = app.post_response(&ann, &bob.id, json!(big)).await;
    let retry = assert_limited(refused, "byte_rate").await;
    assert!(retry <= 2, "about 1 KiB is missing at 1 KiB/s: {retry}");
    app.respond(&ann, &bob, "small").await;
}

#[tokio::test]
async fn forwarding_headers_count_only_from_trusted_proxies() {
    let helo_from = |app: &TestApp, forwarded_for: &str| {
        let request = app
            .client
            .post(app.url("/helo"))
            .header("x-forwarded-for", forwarded_for.to_owned())
            .json(&json!({ "name": "behind a proxy" }));
        send(request)
    };
    let one_join = |trusted_proxies: Vec<ipnet::IpNet>| Config {
        helo_rate: 1,
        helo_burst: 1,
        trusted_proxies,
        ..test_config()
    };

    let untrusting = spawn_app(one_join(Vec::new())).await;
    let first = helo_from(&untrusting, "198.51.100.1").await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let spoofed = helo_from(&untrusting, "198.51.100.2").await;
    assert_limited(spoofed, "helo_rate").await;

    let behind_proxy = spawn_app(one_join(vec!["127.0.0.1/32".parse().unwrap()])).await;
    for client in ["198.51.100.1", "198.51.100.2", "203.0.113.9, 198.51.100.3"] {
        let response = helo_from(&behind_proxy, client).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{client}");
    }
    let again = helo_from(&behind_proxy, "198.51.100.1").await;
    assert_limited(again, "helo_rate").await;
}

#[tokio::test]
async fn a_full_house_says_when_to_come_back() {
    let app = spawn_app(Config {
        max_sessions: 1,
        session_ttl: Duration::from_secs(20),
        ..test_config()
    })
    .await;
    app.helo("the only one").await;

    let refused = app.helo_response("one too many").await;
    let retry = retry_after(&refused);
    assert!(retry <= 20, "a place frees within one TTL, not {retry} s");
    assert_error(refused, StatusCode::SERVICE_UNAVAILABLE, "session_limit").await;
}
