//! Rooms, as a session sees them: the room rule, `helo` into rooms, joining and leaving later
//! (with `joined`/`left` replayed across a reconnect), `ready`'s rosters, leaving the hub, room
//! broadcasts, `--direct-messages shared-room`, the listings, and `room_count` above
//! `--room-presence-limit`. Who may join what, the limits and the server API are in
//! `rooms_api.rs`.
//!
//! "Nothing else came" is proven without sleeping: a direct message sent afterwards must be
//! the next event ([`marker`]).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, LINK};
use serde_json::{Value, json};
use switchboard::{DirectMessages, RoomFlags};

use crate::support::*;

/// Sends `to` a direct message from `from` and reads it as the next event of `stream`: so
/// nothing else reached `stream` before it.
pub async fn marker(app: &Endpoint, stream: &mut SseReader, from: &Session, to: &Session) {
    let id = app.respond(from, to, json!("marker")).await;
    stream.expect_response(id, from, to, &json!("marker")).await;
}

/// GETs `path` with `credential`.
pub async fn get_with(app: &Endpoint, path: &str, credential: &str) -> reqwest::Response {
    let request = app.client.get(app.url(path));
    send(request.header(AUTHORIZATION, format!("Bearer {credential}"))).await
}

/// The ids of a JSON list of peers, in its order.
pub fn ids(list: &Value) -> Vec<String> {
    let list = list.as_array().expect("a list");
    list.iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The ids of `sessions`, sorted as a page lists them.
pub fn sorted_ids(sessions: &[&Session]) -> Vec<String> {
    let mut ids: Vec<String> = sessions.iter().map(|s| s.id.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn room_names_follow_the_rule_and_others_are_invalid_room() {
    let app = spawn_app(test_config()).await;
    let long = "r".repeat(65);
    for bad in [json!(["a b"]), json!(["-dash"]), json!([""]), json!([long])] {
        let response = app.helo_in_response("ann", bad.clone()).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_room").await;
    }
    let rooms = json!(["Team-7:dev", "doc.42@acme", "r".repeat(64)]);
    let ann = app.helo_in("ann", rooms).await;
    for bad in ["-dash", "a%20b", "x*"] {
        let response = app.room_request(reqwest::Method::PUT, &ann, bad).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_room").await;
    }
    // Case-sensitive: `Dev` is another room than `dev`.
    assert_eq!(app.join_room(&ann, "Dev").await, 1);
    let bob = app.helo_in("bob", json!(["dev"])).await;
    assert_eq!(app.join_room(&bob, "dev").await, 1);
}

#[tokio::test]
async fn helo_joins_its_rooms_and_the_joiner_is_announced_once_per_shared_room() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo_in("ann", json!(["dev", "ops"])).await;
    let bob = app.helo_in("bob", json!(["dev"])).await;
    let cat = app.helo("cat").await; // lobby
    let mut ann_stream = app.attach_ready(&ann).await;
    ann_stream.next_named("new_user").await; // bob, in dev
    let mut bob_stream = app.attach_ready(&bob).await;
    let mut cat_stream = app.attach_ready(&cat).await;

    let response = app
        .helo_in_response("eve", json!(["ops", "dev", "ops"]))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body = body_json(response).await;
    assert_eq!(body["rooms"], json!(["dev", "ops"]), "each once, by name");
    let eve: Session = serde_json::from_value(body).unwrap();

    let first = ann_stream.next_named("new_user").await.data;
    let second = ann_stream.next_named("new_user").await.data;
    assert_eq!([first, second], [eve.member("dev"), eve.member("ops")]);
    assert_eq!(
        bob_stream.next_named("new_user").await.data,
        eve.member("dev")
    );
    marker(&app, &mut cat_stream, &ann, &cat).await;
}

#[tokio::test]
async fn helo_without_rooms_is_in_the_lobby_and_with_none_hears_of_nobody() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    let mut ann_stream = app.attach_ready(&ann).await;
    let response = app.helo_in_response("ghost", json!([])).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body = body_json(response).await;
    assert_eq!(body["rooms"], json!([]));
    let ghost: Session = serde_json::from_value(body).unwrap();

    // Nobody heard of the ghost, and it hears of nobody; direct messages still reach it.
    let mut ghost_stream = app.attach(&ghost, None).await;
    let ready = ghost_stream.ready().await;
    assert_eq!(
        (&ready["clients"], &ready["rooms"]),
        (&json!([]), &json!({}))
    );
    marker(&app, &mut ann_stream, &ghost, &ann).await;
    marker(&app, &mut ghost_stream, &ann, &ghost).await;
    let response = app.broadcast(&ghost, json!("anyone?")).await;
    assert_error(response, StatusCode::FORBIDDEN, "not_a_member").await;
}

#[tokio::test]
async fn joining_and_leaving_later_tells_the_session_and_the_rooms_other_members() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo_in("ann", json!(["dev"])).await;
    let bob = app.helo_in("bob", json!([])).await;
    let mut ann_stream = app.attach_ready(&ann).await;
    let mut bob_stream = app.attach_ready(&bob).await;

    assert_eq!(app.join_room(&bob, "dev").await, 2, "bob counted");
    let joined = bob_stream.next_named("joined").await;
    assert!(joined.id.is_some(), "joined has an id");
    assert_eq!(
        joined.data,
        json!({"room": "dev", "clients": [ann.peer()], "members": 2})
    );
    assert_eq!(
        ann_stream.next_named("new_user").await.data,
        bob.member("dev")
    );

    // Joining again: 200 again, and nobody hears anything.
    assert_eq!(app.join_room(&bob, "dev").await, 2);
    marker(&app, &mut bob_stream, &ann, &bob).await;
    marker(&app, &mut ann_stream, &bob, &ann).await;

    let response = app.room_request(reqwest::Method::DELETE, &bob, "dev").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let left = bob_stream.next_named("left").await;
    assert!(left.id.is_some(), "left has an id");
    assert_eq!(left.data, json!({"room": "dev"}));
    assert_eq!(
        ann_stream.next_named("user_left").await.data,
        bob.member("dev")
    );
    let response = app.room_request(reqwest::Method::DELETE, &bob, "dev").await;
    assert_error(response, StatusCode::NOT_FOUND, "not_a_member").await;
}

#[tokio::test]
async fn joined_and_left_are_replayed_across_a_reconnect() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo_in("ann", json!(["dev"])).await;
    let bob = app.helo_in("bob", json!([])).await;
    let mut bob_stream = app.attach_ready(&bob).await;
    let hello = app.respond(&ann, &bob, json!("hello")).await;
    bob_stream.next_named("client_response").await;
    app.join_room(&bob, "dev").await;
    let joined = bob_stream.next_named("joined").await;
    let response = app.room_request(reqwest::Method::DELETE, &bob, "dev").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let left = bob_stream.next_named("left").await;
    drop(bob_stream);

    // A new stream resuming after the direct message gets both again, with the same ids.
    let mut again = app.attach(&bob, Some(hello)).await;
    let ready = again.ready().await;
    assert_eq!(ready["rooms"], json!({}), "ready says where bob is now");
    let replayed = again.next_named("joined").await;
    assert_eq!((replayed.id, &replayed.data), (joined.id, &joined.data));
    let replayed = again.next_named("left").await;
    assert_eq!((replayed.id, &replayed.data), (left.id, &left.data));
}

#[tokio::test]
async fn ready_lists_each_rooms_roster_and_every_other_member_once() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo_in("ann", json!(["dev", "ops"])).await;
    let bob = app.helo_in("bob", json!(["dev", "ops"])).await;
    let cat = app.helo_in("cat", json!(["ops"])).await;
    app.helo("dan").await; // lobby: shares nothing with ann

    let (_stream, roster) = app.attach_roster(&ann, None).await;
    assert_eq!(roster, sessions(&[&bob, &cat]), "each once");
    let mut stream = app.attach(&ann, None).await;
    let ready = stream.ready().await;
    assert_eq!(ready["rooms"]["dev"], json!([bob.peer()]));
    let ops = peer_set(ready["rooms"]["ops"].as_array().unwrap());
    assert_eq!(ops, sessions(&[&bob, &cat]));
    assert_eq!(ready["rooms"].as_object().unwrap().len(), 2);
}

#[tokio::test]
async fn leaving_the_hub_tells_each_of_its_rooms() {
    let app = spawn_app(Config {
        session_ttl: Duration::from_secs(2),
        ..test_config()
    })
    .await;
    let dev = app.helo_in("dev-watcher", json!(["dev"])).await;
    let ops = app.helo_in("ops-watcher", json!(["ops"])).await;
    let mut dev_stream = app.attach_ready(&dev).await;
    let mut ops_stream = app.attach_ready(&ops).await;

    // One leaves with DELETE, one by the TTL (it never attaches), one disconnected by the
    // backend.
    let deleted = app.helo_in("deleted", json!(["dev", "ops"])).await;
    let mut deleted_stream = app.attach_ready(&deleted).await;
    let ended = app.helo_in("ended", json!(["dev", "ops"])).await;
    let mut ended_stream = app.attach_ready(&ended).await;
    let expired = app.helo_in("expired", json!(["dev", "ops"])).await;
    for who in [&deleted, &ended, &expired] {
        assert_eq!(
            dev_stream.next_named("new_user").await.data,
            who.member("dev")
        );
        assert_eq!(
            ops_stream.next_named("new_user").await.data,
            who.member("ops")
        );
    }
    assert_eq!(app.delete(&deleted.token).await.status(), 204);
    deleted_stream.until_end().await;
    let response = send(
        app.client
            .post(app.url("/api/disconnect"))
            .bearer_auth(TEST_API_KEY)
            .json(&json!({"to": {"session": ended.id}})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    ended_stream.until_end().await;

    for (stream, room) in [(&mut dev_stream, "dev"), (&mut ops_stream, "ops")] {
        let mut left = Vec::new();
        for _ in 0..3 {
            left.push(stream.next_named("user_left").await.data.to_string());
        }
        left.sort();
        let mut expected: Vec<String> = [&deleted, &ended, &expired]
            .iter()
            .map(|who| who.member(room).to_string())
            .collect();
        expected.sort();
        assert_eq!(left, expected, "in {room}");
    }
}

#[tokio::test]
async fn a_broadcast_reaches_only_the_members_of_its_room() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo_in("ann", json!(["dev"])).await;
    let bob = app.helo_in("bob", json!(["dev"])).await;
    let dan = app.helo("dan").await;
    let cat = app.helo_in("cat", json!(["ops", "lobby"])).await;
    let mut bob_stream = app.attach_ready(&bob).await;
    let mut cat_stream = app.attach_ready(&cat).await;
    let mut dan_stream = app.attach_ready(&dan).await;
    dan_stream.next_named("new_user").await; // cat, in the lobby

    let body = json!({"room": "dev", "message": "dev only"}).to_string();
    let response = app.post_raw("/broadcast", Some(&ann.token), &body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(body_json(response).await, json!({"recipients": 1}));
    let heard = bob_stream.next_named("client_broadcast").await.data;
    assert_eq!(
        heard,
        json!({"from": ann.id, "from_name": "ann", "room": "dev", "message": "dev only"})
    );
    marker(&app, &mut cat_stream, &ann, &cat).await;

    // Without a room it is the lobby's, which ann is not in.
    let response = app.broadcast(&ann, json!("lobby?")).await;
    assert_error(response, StatusCode::FORBIDDEN, "not_a_member").await;
    let body = json!({"room": "ops", "message": "x"}).to_string();
    let response = app.post_raw("/broadcast", Some(&ann.token), &body).await;
    assert_error(response, StatusCode::FORBIDDEN, "not_a_member").await;

    assert_eq!(app.broadcast_ok(&cat, json!("to the lobby")).await, 1);
    let heard = dan_stream.next_named("client_broadcast").await.data;
    assert_eq!(heard["room"], "lobby");
    marker(&app, &mut bob_stream, &cat, &bob).await;
}

#[tokio::test]
async fn shared_room_direct_messages_need_a_room_in_common() {
    let app = spawn_app(Config {
        rooms: RoomFlags {
            direct_messages: DirectMessages::SharedRoom,
            ..RoomFlags::default()
        },
        ..test_config()
    })
    .await;
    let ann = app.helo_in("ann", json!(["acme:dev"])).await;
    let bob = app.helo_in("bob", json!(["acme:dev", "acme:ops"])).await;
    let eve = app.helo_in("eve", json!(["globex:dev"])).await;
    app.respond(&ann, &bob, json!("same tenant")).await;
    let response = app
        .post_response(&ann, &eve.id, json!("other tenant"))
        .await;
    assert_error(response, StatusCode::FORBIDDEN, "no_shared_room").await;
    let response = app
        .post_response(&eve, &bob.id, json!("other tenant"))
        .await;
    assert_error(response, StatusCode::FORBIDDEN, "no_shared_room").await;

    // By default, anyone may message anyone.
    let open = spawn_app(test_config()).await;
    let ann = open.helo_in("ann", json!(["acme:dev"])).await;
    let eve = open.helo_in("eve", json!(["globex:dev"])).await;
    open.respond(&ann, &eve, json!("any")).await;
}

#[tokio::test]
async fn members_and_clients_list_what_the_caller_shares() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo_in("ann", json!(["dev"])).await;
    let bob = app.helo_in("bob", json!(["dev", "ops"])).await;
    let cat = app.helo_in("cat", json!(["ops"])).await;
    let dan = app.helo("dan").await;

    let members = get_with(&app, "/rooms/dev/members", &ann.token).await;
    assert_eq!(members.status(), StatusCode::OK);
    assert_eq!(ids(&body_json(members).await), sorted_ids(&[&ann, &bob]));
    let response = get_with(&app, "/rooms/dev/members", &cat.token).await;
    assert_error(response, StatusCode::FORBIDDEN, "not_a_member").await;
    let response = app.get("/rooms/dev/members").await;
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let backend = get_with(&app, "/rooms/ops/members", TEST_API_KEY).await;
    assert_eq!(ids(&body_json(backend).await), sorted_ids(&[&bob, &cat]));

    // Paged like /clients.
    let first = get_with(&app, "/rooms/dev/members?limit=1", &ann.token).await;
    let link = first.headers()[LINK].to_str().unwrap().to_owned();
    let page = ids(&body_json(first).await);
    assert_eq!(page, sorted_ids(&[&ann, &bob])[..1]);
    let next = link.split(['<', '>']).nth(1).expect("a next page");
    assert!(next.starts_with("/rooms/dev/members?after="), "{link}");
    let rest = get_with(&app, next, &ann.token).await;
    assert_eq!(ids(&body_json(rest).await), sorted_ids(&[&ann, &bob])[1..]);

    // /clients: the sessions sharing a room with the caller, the caller included.
    let clients = get_with(&app, "/clients", &ann.token).await;
    assert_eq!(ids(&body_json(clients).await), sorted_ids(&[&ann, &bob]));
    let clients = get_with(&app, "/clients", &bob.token).await;
    assert_eq!(
        ids(&body_json(clients).await),
        sorted_ids(&[&ann, &bob, &cat])
    );
    let clients = get_with(&app, "/clients", &dan.token).await;
    assert_eq!(ids(&body_json(clients).await), sorted_ids(&[&dan]));
    let all = get_with(&app, "/clients", TEST_API_KEY).await;
    assert_eq!(
        ids(&body_json(all).await),
        sorted_ids(&[&ann, &bob, &cat, &dan])
    );
}

#[tokio::test]
async fn a_room_above_the_presence_limit_is_counted_not_announced() {
    let app = spawn_app(Config {
        rooms: RoomFlags {
            room_presence_limit: 2,
            ..RoomFlags::default()
        },
        ..test_config()
    })
    .await;
    let ann = app.helo_in("ann", json!(["big"])).await;
    let mut ann_stream = app.attach_ready(&ann).await;
    let bob = app.helo_in("bob", json!(["big"])).await;
    assert_eq!(
        ann_stream.next_named("new_user").await.data,
        bob.member("big")
    );

    // Three more in quick succession: above 2, counted at most once a second.
    let start = Instant::now();
    let cat = app.helo_in("cat", json!(["big"])).await;
    let dan = app.helo_in("dan", json!([])).await;
    assert_eq!(app.join_room(&dan, "big").await, 4);
    app.helo_in("eve", json!(["big"])).await;
    let mut counts = Vec::new();
    while counts.last() != Some(&5) {
        let event = ann_stream.next_named("room_count").await;
        assert_eq!(event.data["room"], "big");
        counts.push(event.data["members"].as_u64().unwrap());
        assert!(event.id.is_some(), "room_count has an id");
    }
    assert!(counts.len() <= 2, "at most one a second: {counts:?}");
    if counts.len() == 2 {
        assert!(start.elapsed() >= Duration::from_millis(900), "{counts:?}");
    }

    // Rosters give way to counts for that room.
    let mut cat_stream = app.attach(&cat, None).await;
    let ready = cat_stream.ready().await;
    assert_eq!(ready["rooms"]["big"], json!({"members": 5}));
    assert_eq!(ready["clients"], json!([]));
    let mut dan_stream = app.attach_ready(&dan).await;
    let joined = dan_stream.next_named("joined").await;
    assert_eq!(joined.data, json!({"room": "big", "members": 4}));

    // A leave is counted too, and nobody hears user_left.
    assert_eq!(app.delete(&cat.token).await.status(), 204);
    let event = ann_stream.next_named("room_count").await;
    assert_eq!(event.data, json!({"room": "big", "members": 4}));
    marker(&app, &mut ann_stream, &bob, &ann).await;
}
