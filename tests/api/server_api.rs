//! The server API (`--api-key-file`): the app's backend publishes `server_message` events to a
//! session, a user or everyone, disconnects sessions and users, and lists sessions a page at a
//! time; `GET /clients` is paged the same way and needs a credential.

use reqwest::StatusCode;
use reqwest::header::LINK;
use serde_json::{Value, json};

use crate::support::jwt::*;
use crate::support::*;

/// A request of the backend: `method path` with the test API key and a JSON body.
async fn backend(app: &Endpoint, path: &str, body: Value) -> reqwest::Response {
    send(
        app.client
            .post(app.url(path))
            .bearer_auth(TEST_API_KEY)
            .json(&body),
    )
    .await
}

/// `POST /api/publish`, which must be accepted; its `recipients` and `refused`.
async fn publish(app: &Endpoint, to: Value, message: Value) -> (u64, u64) {
    let response = backend(app, "/api/publish", json!({ "to": to, "message": message })).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body = body_json(response).await;
    (
        body["recipients"].as_u64().unwrap(),
        body["refused"].as_u64().unwrap(),
    )
}

/// The next `server_message`, past the presence events queued before it.
async fn next_server_message(stream: &mut SseReader) -> Value {
    loop {
        let event = stream.next().await;
        match event.event.as_str() {
            "server_message" => return event.data,
            "new_user" => {}
            other => panic!("unexpected {other}: {event:?}"),
        }
    }
}

#[tokio::test]
async fn without_a_key_file_the_api_does_not_exist() {
    let app = spawn_app(Config {
        api_key_file: None,
        ..test_config()
    })
    .await;
    let publish = backend(
        &app,
        "/api/publish",
        json!({"to": "everyone", "message": 1}),
    )
    .await;
    assert_error(publish, StatusCode::NOT_FOUND, "not_found").await;
    assert_error(
        app.get_as_backend("/api/sessions").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn the_api_refuses_a_missing_or_wrong_key_and_a_session_token() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let body = json!({"to": "everyone", "message": 1});
    for credential in [
        None,
        Some("not-the-key-but-long-enough"),
        Some(ann.token.as_str()),
    ] {
        let mut request = app.client.post(app.url("/api/publish")).json(&body);
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        let body = assert_error(
            send(request).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
        assert!(
            body["message"].as_str().unwrap().contains("API key"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_message_to_a_session_arrives_as_server_message_with_an_id() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let mut stream = app.attach_ready(&ann).await;

    let sent = publish(&app, json!({ "session": ann.id }), json!({"text": "hi"})).await;

    assert_eq!(sent, (1, 0));
    let event = stream.next_named("server_message").await;
    assert_eq!(
        event.data,
        json!({"to": "session", "message": {"text": "hi"}})
    );
    assert!(event.id.is_some(), "a server message can be resumed from");
}

#[tokio::test]
async fn a_message_to_everyone_reaches_every_session() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut streams = [app.attach_ready(&ann).await, app.attach_ready(&bob).await];

    assert_eq!(
        publish(&app, json!("everyone"), json!("maintenance")).await,
        (2, 0)
    );

    for stream in &mut streams {
        let data = next_server_message(stream).await;
        assert_eq!(data, json!({"to": "everyone", "message": "maintenance"}));
    }
}

#[tokio::test]
async fn a_message_to_a_user_reaches_each_of_their_sessions_only() {
    let app = spawn_app(hs256_config()).await;
    let phone = join(&app, &hs256(SECRET, &claims("ann"))).await;
    let laptop = join(&app, &hs256(SECRET, &claims("ann"))).await;
    let bob = join(&app, &hs256(SECRET, &claims("bob"))).await;
    let mut bob_stream = app.attach_ready(&bob).await;

    assert_eq!(
        publish(&app, json!({"user": "user-ann"}), json!("for ann")).await,
        (2, 0)
    );
    assert_eq!(
        publish(&app, json!({"user": "user-bob"}), json!("for bob")).await,
        (1, 0)
    );
    assert_eq!(
        publish(&app, json!({"user": "nobody"}), json!("lost")).await,
        (0, 0)
    );

    for session in [&phone, &laptop] {
        let mut stream = app.attach_ready(session).await;
        let data = next_server_message(&mut stream).await;
        assert_eq!(data, json!({"to": "user", "message": "for ann"}));
    }
    // Bob's first server message is his own: ann's never reached him.
    let event = bob_stream.next_named("server_message").await;
    assert_eq!(event.data["message"], "for bob");
}

#[tokio::test]
async fn addressed_messages_fill_a_mailbox_and_are_then_refused() {
    let app = spawn_app(Config {
        mailbox_size: 2,
        ..test_config()
    })
    .await;
    let ann = app.helo("ann").await;
    for n in 0..2 {
        assert_eq!(
            publish(&app, json!({ "session": ann.id }), json!(n)).await,
            (1, 0)
        );
    }
    let full = backend(
        &app,
        "/api/publish",
        json!({"to": {"session": ann.id}, "message": 2}),
    )
    .await;
    retry_after_secs(full.headers());
    assert_error(full, StatusCode::TOO_MANY_REQUESTS, "mailbox_full").await;
    // A broadcast evicts none of them: both arrive, then the broadcast is counted as lost.
    let bob = app.helo("bob").await;
    app.broadcast_ok(&bob, json!("noise")).await;
    let mut stream = app.attach(&ann, None).await;
    stream.ready().await;
    for n in 0..2 {
        assert_eq!(stream.next_named("server_message").await.data["message"], n);
    }
}

#[tokio::test]
async fn bad_targets_are_refused() {
    let app = spawn_app(test_config()).await;
    let nobody = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let unknown = backend(
        &app,
        "/api/publish",
        json!({"to": {"session": nobody}, "message": 1}),
    )
    .await;
    assert_error(unknown, StatusCode::NOT_FOUND, "unknown_session").await;
    for body in [
        json!({"message": 1}),
        json!({"to": {}, "message": 1}),
        json!({"to": "everybody", "message": 1}),
        json!({"to": {"session": "not-an-id"}, "message": 1}),
        json!({"to": "everyone"}),
    ] {
        let response = backend(&app, "/api/publish", body.clone()).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_body").await;
    }
    let unknown = backend(&app, "/api/disconnect", json!({"to": {"session": nobody}})).await;
    assert_error(unknown, StatusCode::NOT_FOUND, "unknown_session").await;
}

#[tokio::test]
async fn a_disconnect_ends_the_session_and_the_others_hear_user_left() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut ann_stream = app.attach_ready(&ann).await;
    ann_stream.expect_new_user(&bob).await;
    let mut bob_stream = app.attach_ready(&bob).await;

    let response = backend(&app, "/api/disconnect", json!({"to": {"session": ann.id}})).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_json(response).await, json!({"disconnected": 1}));
    let left = bob_stream.next_named("user_left").await;
    assert_eq!(left.data["id"], ann.id);
    ann_stream.expect_end().await;
    assert_eq!(app.client_ids().await, [bob.id.clone()].into());
    let response = app.broadcast(&ann, json!("still here?")).await;
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn a_disconnect_of_a_user_ends_all_of_their_sessions() {
    let app = spawn_app(hs256_config()).await;
    join(&app, &hs256(SECRET, &claims("ann"))).await;
    join(&app, &hs256(SECRET, &claims("ann"))).await;
    let bob = join(&app, &hs256(SECRET, &claims("bob"))).await;

    let response = backend(&app, "/api/disconnect", json!({"to": {"user": "user-ann"}})).await;

    assert_eq!(body_json(response).await, json!({"disconnected": 2}));
    let left = body_json(app.get_as_backend("/api/sessions").await).await;
    assert_eq!(
        left,
        json!([{"id": bob.id, "name": "bob", "user": "user-bob"}])
    );
}

/// Follows `path`'s `Link: rel="next"` headers to the end; every id, page by page.
async fn walk(app: &Endpoint, credential: &str, path: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(path.to_owned());
    while let Some(path) = next.take() {
        let response = send(app.client.get(app.url(&path)).bearer_auth(credential)).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        next = response.headers().get(LINK).map(|link| {
            let link = link.to_str().unwrap();
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            link[1..link.find('>').unwrap()].to_owned()
        });
        let page: Vec<Value> = serde_json::from_value(body_json(response).await).unwrap();
        pages.push(
            page.iter()
                .map(|p| p["id"].as_str().unwrap().to_owned())
                .collect(),
        );
        assert!(pages.len() <= 10, "the links must end");
    }
    pages
}

#[tokio::test]
async fn session_lists_are_paged_in_id_order() {
    let app = spawn_app(test_config()).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(app.helo(&format!("user-{n}")).await.id);
    }
    ids.sort();
    let ann = app.helo("ann").await;
    ids.push(ann.id.clone());
    ids.sort();

    let pages = walk(&app, TEST_API_KEY, "/api/sessions?limit=2").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2]);
    assert_eq!(pages.concat(), ids);
    // A session may list too, on /clients, with the same pages.
    assert_eq!(
        walk(&app, &ann.token, "/clients?limit=4").await.concat(),
        ids
    );
}

#[tokio::test]
async fn clients_needs_a_credential_and_a_valid_query() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    assert_error(
        app.get("/clients").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let forged = send(
        app.client
            .get(app.url("/clients"))
            .bearer_auth(forged_token(&ann)),
    )
    .await;
    assert_error(forged, StatusCode::UNAUTHORIZED, "unauthorized").await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "after=nope",
        "colour=blue",
    ] {
        let response = app.get_as_backend(&format!("/clients?{query}")).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
}

#[tokio::test]
async fn sessions_of_one_user_are_listed_with_their_user() {
    let app = spawn_app(hs256_config()).await;
    let ann = join(&app, &hs256(SECRET, &claims("ann"))).await;
    join(&app, &hs256(SECRET, &claims("bob"))).await;
    let response = app.get_as_backend("/api/sessions?user=user-ann").await;
    assert_eq!(
        body_json(response).await,
        json!([{"id": ann.id, "name": "ann", "user": "user-ann"}])
    );
}
