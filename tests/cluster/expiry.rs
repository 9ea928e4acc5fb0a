//! Session lifetimes in a cluster: a refresh taken by another instance reaches the session's
//! home; the end travels with the session when its home drains it elsewhere, and survives its
//! home's crash (the directory entry carries it, so the survivor that adopts the session ends
//! it at the same moment); and every instance, not only the one that ended a session, refuses
//! its token as `session_expired`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::get_current_timestamp;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::crashes::resume_after_crash;
use crate::support::cluster::Cluster;
use crate::support::jwt::{SECRET, claims, hs256, join, secret_file, with};
use crate::support::*;

/// `POST /api/refresh` through `node` with `body`, which must be answered 200; the answer.
async fn api_refresh(node: &Endpoint, body: Value) -> Value {
    let response = send(
        node.client
            .post(node.url("/api/refresh"))
            .bearer_auth(TEST_API_KEY)
            .json(&body),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "POST /api/refresh");
    body_json(response).await
}

/// A join token for `name` (`sub` `user-<name>`) that expires at `exp` (Unix seconds).
fn join_token(name: &str, exp: u64) -> String {
    hs256(SECRET, &with(claims(name), json!({ "exp": exp })))
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// Reads `stream` (`lagged` and anything else a resumed stream may replay first) until
/// `expired`, which must follow a `refresh_required` and end the stream; its reason, and
/// when it arrived (Unix milliseconds). Each read waits up to `wait`.
async fn read_to_expiry(stream: &mut SseReader, wait: Duration) -> (String, u64) {
    let mut warned = false;
    loop {
        let event = stream.next_within(wait).await;
        match event.event.as_str() {
            "refresh_required" => warned = true,
            "expired" => {
                let arrived = now_ms();
                assert!(warned, "refresh_required came first");
                stream.expect_end().await;
                let reason = event.data["reason"].as_str().unwrap().to_owned();
                return (reason, arrived);
            }
            "lagged" => {}
            other => panic!("unexpected {other}: {event:?}"),
        }
    }
}

/// Asserts `node` refuses `session`'s token as expired, for a write and for a stream, and a
/// forged token for the same session as merely unauthorized.
async fn assert_refused_as_expired(node: &Endpoint, session: &Session) {
    let deleted = node.delete(&session.token).await;
    let body = assert_error(deleted, StatusCode::UNAUTHORIZED, "session_expired").await;
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{}: {body}",
        node.label
    );
    let stream = node
        .events_response(&session.id, &session.token, None)
        .await;
    assert_error(stream, StatusCode::UNAUTHORIZED, "session_expired").await;
    let forged = node.delete(&forged_token(session)).await;
    assert_error(forged, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn a_refresh_reaches_the_home_and_the_end_survives_a_drain() {
    let mut cluster = Cluster::start("expiry", &[&[], &[]]).await;
    let rae = cluster.nodes[0].helo("rae").await;
    cluster.settle().await;
    let sam = cluster.nodes[1].helo("sam").await;
    cluster.settle().await;
    let mut sam_on_b = cluster.nodes[1].attach_ready(&sam).await;

    // Asked of B; rae lives on A.
    let ends = get_current_timestamp() + 5;
    let body = json!({ "to": { "session": rae.id }, "expires_at": ends });
    assert_eq!(
        api_refresh(&cluster.nodes[1], body).await,
        json!({ "refreshed": 1 })
    );

    // A stops and drains rae to B, which ends it at the same moment.
    assert!(cluster.nodes[0].terminate().await.success(), "a clean exit");
    let mut rae_on_b = cluster.nodes[1].attach_ready(&rae).await;
    rae_on_b.expect_new_user(&sam).await;
    let warned = rae_on_b.next_named("refresh_required").await;
    assert!(warned.data["expires_in"].as_u64().unwrap() <= 5);
    let expired = rae_on_b.next_named("expired").await;
    assert_eq!(expired.data, json!({ "reason": "server" }));
    rae_on_b.expect_end().await;
    let left = sam_on_b.next_named("user_left").await;
    assert_eq!(left.data["id"], rae.id.as_str());
    let refused = cluster.nodes[1].delete(&rae.token).await;
    assert_error(
        refused,
        reqwest::StatusCode::UNAUTHORIZED,
        "session_expired",
    )
    .await;
}

/// Three sessions homed on A end at the same moment, each by another path to its end: ann at
/// her join token's `exp` (written with her entry at the join), bob by a join token brought to
/// B (which asks A, his home), cy by the backend through A itself. A dies; a survivor adopts
/// them, and each still ends at that moment.
#[tokio::test]
async fn a_session_adopted_after_its_instance_died_still_ends_at_its_end() {
    let secret = secret_file(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")));
    let flags = [
        "--auth",
        "jwt",
        "--jwt-secret-file",
        secret.to_str().unwrap(),
        "--jwt-leeway",
        "0s",
    ];
    let mut cluster = Cluster::start("adoptend", &[&flags, &flags, &flags]).await;
    let later = get_current_timestamp() + 300;
    let wen = join(&cluster.nodes[1], &join_token("wen", later)).await;
    cluster.settle().await;
    let mut wen_on_b = cluster.nodes[1].attach_ready(&wen).await;

    // Long enough for A to die and a survivor to adopt them before it, on a busy machine.
    let exp = get_current_timestamp() + 16;
    let a = &cluster.nodes[0];
    let ann = join(a, &join_token("ann", exp)).await;
    let bob = join(a, &join_token("bob", later)).await;
    let cy = join(a, &join_token("cy", later)).await;
    for who in [&ann, &bob, &cy] {
        let joined = wen_on_b.next_named("new_user").await;
        assert_eq!(joined.data["id"], who.id.as_str());
    }
    let b = &cluster.nodes[1];
    let body = json!({ "join_token": join_token("bob", exp) }).to_string();
    let refreshed = b
        .post_raw("/session/refresh", Some(&bob.token), &body)
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
    // (Whole seconds, rounded down from the instant it keeps.)
    let expires_at = body_json(refreshed).await["expires_at"].as_u64().unwrap();
    assert!((exp - 1..=exp).contains(&expires_at), "{expires_at}");
    let body = json!({ "to": { "session": cy.id }, "expires_at": exp });
    assert_eq!(api_refresh(a, body).await, json!({ "refreshed": 1 }));

    cluster.nodes[0].kill();
    let (b, c) = (&cluster.nodes[1], &cluster.nodes[2]);
    let mut streams = Vec::new();
    for who in [&ann, &bob, &cy] {
        streams.push(resume_after_crash(b, who, 0).await);
    }
    let ends_ms = exp * 1000;
    for (stream, reason) in streams
        .iter_mut()
        .zip(["join_token", "join_token", "server"])
    {
        let (ended_by, arrived) = read_to_expiry(stream, Duration::from_secs(20)).await;
        assert_eq!(ended_by, reason);
        // Not before its end (the clocks are one), and not long after.
        assert!(
            arrived + 100 >= ends_ms && arrived <= ends_ms + 4000,
            "expired at {arrived}, the end was {ends_ms}"
        );
    }
    let mut left = Vec::new();
    for _ in 0..3 {
        left.push(wen_on_b.next_named("user_left").await.data["id"].clone());
    }
    left.sort_by_key(|id| id.as_str().map(str::to_owned));
    let mut ids = vec![json!(ann.id), json!(bob.id), json!(cy.id)];
    ids.sort_by_key(|id| id.as_str().map(str::to_owned));
    assert_eq!(left, ids, "wen heard each leave once");
    for node in [b, c] {
        for who in [&ann, &bob, &cy] {
            assert_refused_as_expired(node, who).await;
        }
    }
    let listed = body_json(b.get_as_backend("/clients").await).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "only wen: {listed}");
    assert_eq!(listed[0]["id"], wen.id.as_str());
}

#[tokio::test]
async fn every_instance_refuses_an_ended_sessions_token_as_expired() {
    let cluster = Cluster::start("ended", &[&[], &[]]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let rae = a.helo("rae").await;
    cluster.settle().await;
    let mut rae_on_a = a.attach_ready(&rae).await;

    // Ended now, through B; rae lives on A, which ends it.
    let body = json!({ "to": { "session": rae.id }, "expires_at": get_current_timestamp() - 1 });
    assert_eq!(api_refresh(b, body).await, json!({ "refreshed": 1 }));
    let expired = rae_on_a.next_named("expired").await;
    assert_eq!(expired.data, json!({ "reason": "server" }));
    rae_on_a.expect_end().await;

    // B answers as A does: the session expired, and why.
    for node in [b, a] {
        assert_refused_as_expired(node, &rae).await;
    }
    cluster.settle().await;
    let ended = format!("{}:ended:{}", cluster.prefix, rae.id);
    if cluster.redis.is_running() {
        let ttl: i64 = cluster.redis.command(redis::cmd("TTL").arg(&ended)).await;
        assert!((1..=60).contains(&ttl), "{ended} lives a minute: {ttl}");
    }
}
