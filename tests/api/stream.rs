//! `GET /events/{id}`: headers, the wire format, `ready`, ids, heartbeats, takeover, and the two
//! ways to present the token.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn stream_headers_announce_an_unbuffered_event_stream() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;

    let stream = app.attach(&ann, None).await;

    let header = |name: &str| {
        stream
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(header("x-accel-buffering").as_deref(), Some("no"));
}

#[tokio::test]
async fn stream_starts_with_a_retry_line_then_ready_without_an_id() {
    let app = spawn_app(Config {
        sse_retry: Duration::from_millis(1500),
        ..test_config()
    })
    .await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let response = app.events_response(&ann.id, &ann.token, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut raw = RawStream::new(response);

    // ready, then the new_user about bob that waited in the mailbox.
    let end = raw.read_until(0, "event: new_user\n").await;
    let end = raw.read_until(end, "\n\n").await;

    let bob_peer = format!(r#"{{"id":"{}","name":"bob"}}"#, bob.id);
    let bob_member = format!(r#"{{"id":"{}","name":"bob","room":"lobby"}}"#, bob.id);
    let expected = format!(
        "retry: 1500\n\n\
         event: ready\n\
         data: {{\"id\":\"{}\",\"name\":\"ann\",\"clients\":[{bob_peer}],\"rooms\":{{\"lobby\":[{bob_peer}]}}}}\n\n\
         id: 1\n\
         event: new_user\n\
         data: {bob_member}\n\n",
        ann.id
    );
    assert_eq!(raw.text[..end], expected);
}

#[tokio::test]
async fn ready_names_the_session_and_lists_only_the_others() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let cat = app.helo("cat").await;

    let ready = app.attach(&bob, None).await.ready().await;

    assert_eq!(ready["id"], bob.id);
    assert_eq!(ready["name"], "bob");
    let clients: BTreeSet<String> = ready["clients"]
        .as_array()
        .expect("clients is an array")
        .iter()
        .map(Value::to_string)
        .collect();
    assert_eq!(
        clients,
        [ann.peer().to_string(), cat.peer().to_string()].into()
    );
    assert_eq!(
        ready.as_object().unwrap().len(),
        4,
        "id, name, clients, rooms: {ready}"
    );
}

#[tokio::test]
async fn ready_is_sent_on_every_attach_with_the_current_roster() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let first = app.attach(&ann, None).await.ready().await;
    assert_eq!(first["clients"], json!([]));

    let bob = app.helo("bob").await;
    let mut second = app.attach(&ann, None).await;

    assert_eq!(second.ready().await["clients"], json!([bob.peer()]));
}

#[tokio::test]
async fn token_in_the_query_string_authenticates_the_stream() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;

    let response = send(
        app.client
            .get(app.url(&format!("/events/{}?token={}", ann.id, ann.token))),
    )
    .await;

    let mut stream = SseReader::new(response).await;
    assert_eq!(stream.ready().await["id"], ann.id);
}

#[tokio::test]
async fn quiet_streams_get_a_ping_comment_every_heartbeat() {
    let app = spawn_app(Config {
        heartbeat: Duration::from_millis(100),
        ..test_config()
    })
    .await;
    let ann = app.helo("ann").await;
    // The stream cannot start before it is asked for: the clock starts no later than its
    // heartbeat's.
    let started = tokio::time::Instant::now();
    let response = app.events_response(&ann.id, &ann.token, None).await;
    let mut raw = RawStream::new(response);
    let after_ready = raw.read_until(0, "event: ready\n").await;
    let after_ready = raw.read_until(after_ready, "\n\n").await;

    let first = raw.read_until(after_ready, ": ping\n\n").await;
    raw.read_until(first, ": ping\n\n").await;

    // Two heartbeats after ready: at least two intervals have passed, and nothing but pings
    // was written.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(&raw.text[after_ready..], ": ping\n\n: ping\n\n");
}

#[tokio::test]
async fn ping_comments_are_not_events() {
    let app = spawn_app(Config {
        heartbeat: Duration::from_millis(20),
        ..test_config()
    })
    .await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut stream = app.attach_ready(&ann).await;
    assert_eq!(
        stream.next_named("new_user").await.data,
        bob.member("lobby")
    );

    // Several heartbeats pass; the parser must see none of them as an event.
    stream
        .expect_no_event_within(Duration::from_millis(200))
        .await;
    app.broadcast_ok(&bob, json!("still here")).await;

    assert_eq!(stream.next_named("client_broadcast").await.id, Some(2));
}

#[tokio::test]
async fn event_ids_strictly_increase_across_every_kind_of_event() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut stream = app.attach_ready(&ann).await;
    let cat = app.helo("cat").await;
    let direct = app.respond(&bob, &ann, json!("direct")).await;
    app.broadcast_ok(&cat, json!("to all")).await;
    assert_eq!(
        app.delete(&cat.token).await.status(),
        StatusCode::NO_CONTENT
    );
    let direct_again = app.respond(&bob, &ann, json!("again")).await;

    let mut seen = Vec::new();
    for _ in 0..6 {
        let event = stream.next().await;
        seen.push((event.id.expect("every stored event has an id"), event.event));
    }

    let names: Vec<&str> = seen.iter().map(|(_, name)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "new_user",
            "new_user",
            "client_response",
            "client_broadcast",
            "user_left",
            "client_response"
        ]
    );
    let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // The ids POST /response reported are the ones the stream carries.
    assert_eq!(ids[2], direct);
    assert_eq!(ids[5], direct_again);
}

#[tokio::test]
async fn a_second_stream_takes_over_and_closes_the_first() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut first = app.attach(&ann, None).await;
    first.ready().await;
    assert_eq!(first.next_named("new_user").await.id, Some(1));

    let mut second = app.attach(&ann, None).await;

    second.ready().await;
    first.expect_end().await;
    // Events now reach the second stream, after the ones the first already read.
    let id = app.respond(&bob, &ann, json!("to the new stream")).await;
    let event = second.next_named("client_response").await;
    assert_eq!(event.id, Some(id));
    assert_eq!(id, 2);
    // The takeover neither counted as a second stream nor detached the session.
    let health = body_json(app.get("/healthz").await).await;
    assert_eq!(health["streams"], 1);
}

#[tokio::test]
async fn a_multi_line_json_message_arrives_intact() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut stream = app.attach_ready(&bob).await;
    // Pretty-printed with \n and \r\n between tokens, and escaped line breaks inside a string.
    let message = "{\n  \"text\": \"line one\\nline two\\r\\nline three\",\r\n  \"list\": [\n    1,\n    2\n  ],\n  \"nested\": {\"empty\": \"\"}\n}";
    let body = format!(
        "{{\"recipient\": \"{}\",\n \"message\": {message}}}",
        bob.id
    );

    let response = app.post_raw("/response", Some(&ann.token), &body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let response = app
        .post_raw(
            "/broadcast",
            Some(&ann.token),
            &format!("{{\"message\": {message}}}"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let expected: Value = serde_json::from_str(message).unwrap();
    let direct = stream.next_named("client_response").await;
    assert_eq!(direct.data["message"], expected);
    assert_eq!(
        direct.data["message"]["text"],
        "line one\nline two\r\nline three"
    );
    let broadcast = stream.next_named("client_broadcast").await;
    assert_eq!(broadcast.data["message"], expected);
}
