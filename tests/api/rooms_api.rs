//! Rooms, as the server decides them: the JWT `rooms` claim and `--allow-rooms` (403
//! `room_forbidden`), the room limits (each refusal naming its flag), and the server API's
//! rooms (publishing to a room, moving sessions in and out in-band, the room list and a room's
//! members for the backend).

use reqwest::header::{LINK, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchboard::{RoomFlags, RoomPattern};

use crate::rooms::{ids, marker, sorted_ids};
use crate::support::jwt::*;
use crate::support::*;

/// `method path` as the backend, with the test API key and a JSON body.
async fn backend(app: &Endpoint, method: Method, path: &str, body: Value) -> reqwest::Response {
    let request = app.client.request(method, app.url(path));
    send(request.bearer_auth(TEST_API_KEY).json(&body)).await
}

#[tokio::test]
async fn a_join_tokens_rooms_claim_says_which_rooms_its_session_may_be_in() {
    let app = spawn_app(hs256_config()).await;
    // Without the claim: the lobby alone.
    let lobby_only = hs256(SECRET, &claims("Ada"));
    let ada = join(&app, &lobby_only).await;
    assert_eq!(app.join_room(&ada, "lobby").await, 1);
    let response = app.room_request(Method::PUT, &ada, "dev").await;
    let body = assert_error(response, StatusCode::FORBIDDEN, "room_forbidden").await;
    assert!(body["message"].as_str().unwrap().contains("dev"), "{body}");
    let response = helo_with(&app, &lobby_only, r#"{"rooms":["dev"]}"#).await;
    assert_error(response, StatusCode::FORBIDDEN, "room_forbidden").await;

    // With it: names and prefixes.
    let team = hs256(
        SECRET,
        &with(claims("Grace"), json!({"rooms": ["team-7:*", "lobby"]})),
    );
    let response = helo_with(&app, &team, r#"{"rooms":["team-7:dev","lobby"]}"#).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body = body_json(response).await;
    assert_eq!(body["rooms"], json!(["lobby", "team-7:dev"]));
    let grace: Session = serde_json::from_value(body).unwrap();
    assert_eq!(app.join_room(&grace, "team-7:ops").await, 1);
    let response = app.room_request(Method::PUT, &grace, "team-8:ops").await;
    assert_error(response, StatusCode::FORBIDDEN, "room_forbidden").await;
    let response = helo_with(&app, &team, r#"{"rooms":["team-8:dev"]}"#).await;
    assert_error(response, StatusCode::FORBIDDEN, "room_forbidden").await;

    // A claim that is not a list of patterns refuses the token.
    let bad = hs256(SECRET, &with(claims("Mal"), json!({"rooms": ["a b"]})));
    let response = helo_with(&app, &bad, "{}").await;
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn allow_rooms_bounds_the_rooms_of_an_open_server() {
    let app = spawn_app(Config {
        rooms: RoomFlags {
            allow_rooms: vec![
                RoomPattern::parse("lobby").unwrap(),
                RoomPattern::parse("public-*").unwrap(),
            ],
            ..RoomFlags::default()
        },
        ..test_config()
    })
    .await;
    let ann = app.helo("ann").await;
    assert_eq!(app.join_room(&ann, "public-1").await, 1);
    let response = app.room_request(Method::PUT, &ann, "secret").await;
    assert_error(response, StatusCode::FORBIDDEN, "room_forbidden").await;
    let response = app
        .helo_in_response("bob", json!(["public-2", "secret"]))
        .await;
    assert_error(response, StatusCode::FORBIDDEN, "room_forbidden").await;
    assert_eq!(
        app.client_ids().await.len(),
        1,
        "a refused join leaves nothing behind"
    );
}

#[tokio::test]
async fn room_limits_refuse_and_say_which_limit() {
    let app = spawn_app(Config {
        rooms: RoomFlags {
            max_rooms_per_session: 2,
            max_rooms: 3,
            ..RoomFlags::default()
        },
        ..test_config()
    })
    .await;
    let response = app.helo_in_response("ann", json!(["a", "b", "c"])).await;
    let body = assert_error(response, StatusCode::CONFLICT, "session_room_limit").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--max-rooms-per-session")
    );
    let ann = app.helo_in("ann", json!(["a", "b"])).await;
    let response = app.room_request(Method::PUT, &ann, "c").await;
    assert_error(response, StatusCode::CONFLICT, "session_room_limit").await;

    // lobby, a and b exist: a fourth room is one too many, joining an existing one is not.
    app.helo("cat").await;
    let bob = app.helo_in("bob", json!([])).await;
    let response = app.room_request(Method::PUT, &bob, "c").await;
    assert!(
        response.headers().contains_key(RETRY_AFTER),
        "says when to retry"
    );
    let body = assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "room_limit").await;
    assert!(body["message"].as_str().unwrap().contains("--max-rooms"));
    assert_eq!(app.join_room(&bob, "a").await, 2);
    let response = app.helo_in_response("dan", json!(["d"])).await;
    assert_error(response, StatusCode::SERVICE_UNAVAILABLE, "room_limit").await;

    // A room closes with its last member, and makes room for another.
    let response = app.room_request(Method::DELETE, &ann, "b").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.join_room(&bob, "c").await, 1);
}

#[tokio::test]
async fn the_backend_publishes_to_a_rooms_members() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo_in("ann", json!(["dev"])).await;
    let bob = app.helo_in("bob", json!(["dev"])).await;
    let cat = app.helo("cat").await;
    let mut ann_stream = app.attach_ready(&ann).await;
    ann_stream.next_named("new_user").await;
    let mut cat_stream = app.attach_ready(&cat).await;

    let publish = json!({"to": {"room": "dev"}, "message": {"text": "deploy"}});
    let response = backend(&app, Method::POST, "/api/publish", publish).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        body_json(response).await,
        json!({"recipients": 2, "refused": 0})
    );
    let heard = ann_stream.next_named("server_message").await.data;
    assert_eq!(
        heard,
        json!({"to": "room", "room": "dev", "message": {"text": "deploy"}})
    );
    marker(&app, &mut cat_stream, &bob, &cat).await;
    let bad = json!({"to": {"room": "no room"}, "message": 1});
    let response = backend(&app, Method::POST, "/api/publish", bad).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_backend_moves_sessions_in_and_out_of_rooms_in_band() {
    let app = spawn_app(hs256_config()).await;
    // Lobby-only tokens: the backend is not held to them.
    let ada = join(&app, &hs256(SECRET, &claims("Ada"))).await;
    let ada_again = join(&app, &hs256(SECRET, &claims("Ada"))).await;
    let bob = join(&app, &hs256(SECRET, &claims("Bob"))).await;
    let mut ada_stream = app.attach_ready(&ada).await;
    let mut again_stream = app.attach_ready(&ada_again).await;
    let mut bob_stream = app.attach_ready(&bob).await;
    ada_stream.next_named("new_user").await;
    ada_stream.next_named("new_user").await;
    again_stream.next_named("new_user").await;

    let path = "/api/rooms/support:42/members";
    let response = backend(&app, Method::PUT, path, json!({"session": bob.id})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        body_json(response).await,
        json!({"room": "support:42", "members": 1, "moved": 1})
    );
    let joined = bob_stream.next_named("joined").await.data;
    assert_eq!(
        joined,
        json!({"room": "support:42", "clients": [], "members": 1})
    );

    let response = backend(&app, Method::PUT, path, json!({"user": "user-Ada"})).await;
    assert_eq!(
        body_json(response).await,
        json!({"room": "support:42", "members": 3, "moved": 2})
    );
    for stream in [&mut ada_stream, &mut again_stream] {
        let joined = stream.next_named("joined").await;
        assert_eq!(joined.data["room"], "support:42");
    }
    for _ in [&ada, &ada_again] {
        let heard = bob_stream.next_named("new_user").await.data;
        assert_eq!(
            (&heard["user"], &heard["room"]),
            (&json!("user-Ada"), &json!("support:42"))
        );
    }
    let members = send(app.client.get(app.url(path)).bearer_auth(TEST_API_KEY)).await;
    assert_eq!(
        ids(&body_json(members).await),
        sorted_ids(&[&ada, &ada_again, &bob])
    );

    let response = backend(&app, Method::DELETE, path, json!({"session": bob.id})).await;
    assert_eq!(
        body_json(response).await,
        json!({"room": "support:42", "members": 2, "moved": 1})
    );
    assert_eq!(
        bob_stream.next_named("left").await.data,
        json!({"room": "support:42"})
    );
    let response = backend(&app, Method::DELETE, path, json!({"session": bob.id})).await;
    assert_error(response, StatusCode::NOT_FOUND, "not_a_member").await;
    let nobody = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let response = backend(&app, Method::PUT, path, json!({"session": nobody})).await;
    assert_error(response, StatusCode::NOT_FOUND, "unknown_session").await;
    let response = send(
        app.client
            .put(app.url(path))
            .json(&json!({"session": bob.id})),
    )
    .await;
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn the_backend_lists_rooms_with_their_counts_a_page_at_a_time() {
    let app = spawn_app(test_config()).await;
    app.helo_in("ann", json!(["a", "b"])).await;
    app.helo_in("bob", json!(["b", "c"])).await;
    app.helo("cat").await;

    let all = app.get_as_backend("/api/rooms").await;
    assert_eq!(all.status(), StatusCode::OK);
    assert_eq!(
        body_json(all).await,
        json!([
            {"room": "a", "members": 1},
            {"room": "b", "members": 2},
            {"room": "c", "members": 1},
            {"room": "lobby", "members": 1},
        ])
    );
    let first = app.get_as_backend("/api/rooms?limit=3").await;
    let link = first.headers()[LINK].to_str().unwrap().to_owned();
    assert_eq!(link, "</api/rooms?after=c&limit=3>; rel=\"next\"");
    assert_eq!(body_json(first).await.as_array().unwrap().len(), 3);
    let rest = app.get_as_backend("/api/rooms?after=c&limit=3").await;
    assert!(rest.headers().get(LINK).is_none());
    assert_eq!(
        body_json(rest).await,
        json!([{"room": "lobby", "members": 1}])
    );
    let bad = app.get_as_backend("/api/rooms?after=-x").await;
    assert_error(bad, StatusCode::BAD_REQUEST, "invalid_query").await;
    let response = app.get("/api/rooms").await;
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}
