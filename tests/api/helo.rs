//! `POST /helo`: registration, and the `new_user` announcement to everyone else.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn helo_returns_201_with_a_uuid_v4_id_a_secret_token_and_the_name() {
    let app = spawn_app(test_config()).await;

    let response = app.helo_response("Ada Lovelace").await;

    assert_eq!(response.status(), StatusCode::CREATED);
    assert_json_content_type(response.headers());
    let body = body_json(response).await;
    assert_eq!(
        body.as_object().unwrap().len(),
        4,
        "id, token, name, rooms: {body}"
    );
    assert_eq!(body["rooms"], json!(["lobby"]));
    assert_eq!(body["name"], "Ada Lovelace");
    let id = uuid::Uuid::parse_str(body["id"].as_str().unwrap()).expect("id is a UUID");
    assert_eq!(id.get_version_num(), 4, "id is a v4 UUID");
    assert_eq!(body["id"], id.hyphenated().to_string(), "hyphenated form");
    // The contract: an opaque secret of 256 random bits, sent as a bearer token or in the
    // query. So: URL-safe characters only, and room for 256 bits (43 characters even in
    // base64); uniqueness is checked below.
    let token = body["token"].as_str().unwrap();
    assert!(token.len() >= 43, "too short for 256 bits: {token}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)),
        "not URL-safe: {token}"
    );
}

#[tokio::test]
async fn helo_gives_every_session_its_own_id_and_token() {
    let app = spawn_app(test_config()).await;

    let first = app.helo("same name").await;
    let second = app.helo("same name").await;

    assert_ne!(first.id, second.id);
    assert_ne!(first.token, second.token);
    assert_eq!(app.client_ids().await, [first.id, second.id].into());
    // Random, not derived from anything guessable: many tokens, no two alike, and no long
    // run shared at the same place by any two (a counter or a timestamp would be).
    let mut tokens = Vec::new();
    for n in 0..32 {
        tokens.push(app.helo(&format!("many {n}")).await.token);
    }
    let tails: Vec<&[u8]> = tokens
        .iter()
        .map(|t| &t.as_bytes()[t.len() - 16..])
        .collect();
    for (i, a) in tails.iter().enumerate() {
        for b in &tails[i + 1..] {
            // Random characters agree at about one place in 16; 12 is a counter's pattern
            // (the odds of it by chance, for any pair here, are below one in a billion).
            let same = a.iter().zip(b.iter()).filter(|(x, y)| x == y).count();
            assert!(same < 12, "tokens alike at {same} of 16 places: {tokens:?}");
        }
    }
}

#[tokio::test]
async fn helo_announces_new_user_to_others_only() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut ann_stream = app.attach_ready(&ann).await;
    // Bob registered after ann, so ann heard about him while detached.
    assert_eq!(
        ann_stream.next_named("new_user").await.data,
        bob.member("lobby")
    );
    let mut bob_stream = app.attach_ready(&bob).await;

    let cat = app.helo("cat").await;

    assert_eq!(
        ann_stream.next_named("new_user").await.data,
        cat.member("lobby")
    );
    assert_eq!(
        bob_stream.next_named("new_user").await.data,
        cat.member("lobby")
    );
    // Cat's own stream starts with ready; the first event after it is a broadcast sent later,
    // so no new_user about cat was queued for cat.
    let mut cat_stream = app.attach_ready(&cat).await;
    app.broadcast_ok(&ann, json!("after cat")).await;
    let next = cat_stream.next_named("client_broadcast").await;
    assert_eq!(next.data["message"], "after cat");
    // Nor did ann or bob hear about themselves.
    assert_eq!(
        bob_stream.next_named("client_broadcast").await.data["message"],
        "after cat"
    );
    app.broadcast_ok(&bob, json!("after cat 2")).await;
    assert_eq!(
        ann_stream.next_named("client_broadcast").await.data["message"],
        "after cat 2"
    );
}

#[tokio::test]
async fn helo_accepts_names_of_64_characters_counted_as_characters() {
    let app = spawn_app(test_config()).await;
    // 64 characters of two bytes each: 128 bytes, but within the limit.
    let name = "é".repeat(64);

    let session = app.helo(&name).await;

    assert_eq!(session.name, name);
    let emoji = app.helo("🦀 crab, with spaces & \"quotes\"").await;
    assert_eq!(emoji.name, "🦀 crab, with spaces & \"quotes\"");
}

#[tokio::test]
async fn helo_accepts_json_with_a_charset_parameter() {
    let app = spawn_app(test_config()).await;

    let response = send(
        app.client
            .post(app.url("/helo"))
            .header("content-type", "application/json; charset=utf-8")
            .body(r#"{"name": "ann"}"#),
    )
    .await;

    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn helo_accepts_a_body_of_exactly_max_body_bytes() {
    let max_body = 100;
    let app = spawn_app(Config {
        max_body,
        ..test_config()
    })
    .await;
    let prefix = r#"{"name": "ann", "pad": ""#;
    let body = format!(
        "{prefix}{}\"}}",
        "x".repeat(max_body as usize - prefix.len() - 2)
    );
    assert_eq!(body.len() as u64, max_body);

    let response = app.post_raw("/helo", None, &body).await;

    assert_eq!(response.status(), StatusCode::CREATED);
}
