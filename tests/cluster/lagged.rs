//! `lagged` after a crash is exact in every room: a session adopted by a survivor is told it
//! missed exactly the events accepted for it that died with its mailbox, whichever rooms it is
//! in (`lobby`, others, several, none), however much the rooms it is not in said, and its ids
//! go on after every id it saw, `room_count` and its own `joined`/`left` included.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::crashes::resume_after_crash;
use crate::support::cluster::Cluster;
use crate::support::*;

/// `POST /broadcast` into `room` from `from` through `node`, which must be accepted.
async fn broadcast_in(node: &Endpoint, from: &Session, room: &str, message: Value) {
    let body = json!({ "room": room, "message": message }).to_string();
    let response = node.post_raw("/broadcast", Some(&from.token), &body).await;
    assert_eq!(
        response.status(),
        StatusCode::ACCEPTED,
        "{} broadcasts in {room}",
        from.name
    );
}

/// A server message to every session, through `node`'s server API.
async fn publish_to_everyone(node: &Endpoint, message: Value) {
    let body = json!({ "to": "everyone", "message": message });
    let request = node.client.post(node.url("/api/publish"));
    let response = send(request.bearer_auth(TEST_API_KEY).json(&body)).await;
    assert_eq!(
        response.status(),
        StatusCode::ACCEPTED,
        "publish to everyone"
    );
}

/// Sends `to` a direct message from `from` through `node` and reads `to`'s stream up to it:
/// everything before it was delivered. Its id: the last `to` saw.
async fn read_up_to_marker(
    node: &Endpoint,
    from: &Session,
    to: &Session,
    stream: &mut SseReader,
) -> u64 {
    let id = node.respond(from, to, &json!("marker")).await;
    loop {
        let event = stream.next().await;
        if event.id == Some(id) {
            assert_eq!(event.event, "client_response", "{event:?}");
            return id;
        }
    }
}

/// `session` resumes through `node` after `seen`, its instance killed: its stream must say
/// `lagged` with exactly `missed` (none when 0), and a direct message then gets the next id.
async fn resumes_with(
    node: &Instance,
    sender: &Session,
    session: &Session,
    seen: u64,
    missed: u64,
) {
    let mut stream = resume_after_crash(node, session, seen).await;
    let marker = json!(format!("after the crash, to {}", session.name));
    let id = node.respond(sender, session, &marker).await;
    assert_eq!(
        id,
        seen + missed + 1,
        "{}'s ids go on after the {missed} it missed",
        session.name
    );
    if missed > 0 {
        let lagged = stream.next().await;
        assert_eq!(
            (lagged.event.as_str(), &lagged.data),
            ("lagged", &json!({ "missed": missed })),
            "{}",
            session.name
        );
    }
    stream.expect_response(id, sender, session, &marker).await;
}

#[tokio::test]
async fn sessions_in_any_rooms_are_told_exactly_what_they_missed_when_their_instance_died() {
    let mut cluster = Cluster::start("lagrooms", &[&[], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    // On A: kai in x only, lea in x and (later) y, nan in no room, ivy alone in q.
    let kai = a.helo_in("kai", json!(["x"])).await;
    let lea = a.helo_in("lea", json!(["x"])).await;
    let nan = a.helo_in("nan", json!([])).await;
    let ivy = a.helo_in("ivy", json!(["q"])).await;
    cluster.settle().await;
    // On B: wen in x, y and w; pat in lobby and z.
    let wen = b.helo_in("wen", json!(["x", "y", "w"])).await;
    let pat = b.helo_in("pat", json!(["lobby", "z"])).await;
    cluster.settle().await;
    let mut streams = Vec::new();
    for session in [&kai, &lea, &nan, &ivy] {
        streams.push(a.attach_ready(session).await);
    }
    // Room moves through B, for sessions homed on A: each is a `joined` or `left` of its own.
    b.join_room(&lea, "y").await;
    b.join_room(&kai, "w").await;
    let leave = b.room_request(reqwest::Method::DELETE, &kai, "w").await;
    assert_eq!(leave.status(), StatusCode::NO_CONTENT);

    // Much traffic where A's sessions are not, some where they are.
    for n in 0..5 {
        broadcast_in(b, &pat, "lobby", json!(n)).await;
        broadcast_in(b, &pat, "z", json!(n)).await;
        broadcast_in(b, &wen, "w", json!(n)).await;
    }
    broadcast_in(b, &wen, "x", json!("x before")).await;
    broadcast_in(b, &wen, "y", json!("y before")).await;
    publish_to_everyone(b, json!("everyone before")).await;
    cluster.settle().await;
    let mut seen = Vec::new();
    for (session, stream) in [&kai, &lea, &nan, &ivy].into_iter().zip(&mut streams) {
        seen.push(read_up_to_marker(b, &wen, session, stream).await);
    }

    cluster.nodes[0].kill();
    drop(streams);
    let b = &cluster.nodes[1];
    // Accepted while A's mailboxes are dead: x reaches kai and lea, y lea, everyone all four;
    // lobby, z and w (which kai left) none of them.
    broadcast_in(b, &wen, "x", json!("x after")).await;
    broadcast_in(b, &wen, "y", json!("y after")).await;
    broadcast_in(b, &wen, "w", json!("w after")).await;
    broadcast_in(b, &pat, "lobby", json!("lobby after")).await;
    broadcast_in(b, &pat, "z", json!("z after")).await;
    publish_to_everyone(b, json!("everyone after")).await;

    resumes_with(b, &wen, &kai, seen[0], 2).await;
    resumes_with(b, &wen, &lea, seen[1], 3).await;
    resumes_with(b, &wen, &nan, seen[2], 1).await;
    resumes_with(b, &wen, &ivy, seen[3], 1).await;
}

#[tokio::test]
async fn a_session_outside_lobby_that_missed_nothing_is_told_nothing_and_reuses_no_id() {
    let mut cluster = Cluster::start("lagquiet", &[&[], &[]]).await;
    let kai = cluster.nodes[0].helo_in("kai", json!(["x"])).await;
    cluster.settle().await;
    let wen = cluster.nodes[1].helo_in("wen", json!(["x", "lobby"])).await;
    let pat = cluster.nodes[1].helo("pat").await;
    cluster.settle().await;
    let mut kai_on_a = cluster.nodes[0].attach_ready(&kai).await;
    let b = &cluster.nodes[1];
    for n in 0..4 {
        broadcast_in(b, &pat, "lobby", json!(n)).await;
    }
    let seen = read_up_to_marker(b, &wen, &kai, &mut kai_on_a).await;

    cluster.nodes[0].kill();
    drop(kai_on_a);
    let b = &cluster.nodes[1];
    broadcast_in(b, &pat, "lobby", json!("after")).await;
    resumes_with(b, &wen, &kai, seen, 0).await;
}

#[tokio::test]
async fn room_counts_a_session_saw_are_counted_so_its_ids_go_on_after_a_crash() {
    let limit: &[&str] = &["--room-presence-limit", "1"];
    let mut cluster = Cluster::start("lagcount", &[limit, limit]).await;
    let kai = cluster.nodes[0].helo_in("kai", json!(["big"])).await;
    cluster.settle().await;
    let mut kai_on_a = cluster.nodes[0].attach_ready(&kai).await;
    let b = &cluster.nodes[1];
    let wen = b.helo_in("wen", json!(["big"])).await;
    let mut seen = 0;
    for members in [2, 3] {
        if members == 3 {
            b.helo_in("ann", json!(["big"])).await;
        }
        let counted = kai_on_a.next_named("room_count").await;
        assert_eq!(counted.data, json!({"room": "big", "members": members}));
        seen = counted.id.expect("room_count has an id");
    }

    cluster.nodes[0].kill();
    drop(kai_on_a);
    // Nothing was accepted for kai since: no `lagged`, and the next id follows the last seen.
    resumes_with(&cluster.nodes[1], &wen, &kai, seen, 0).await;
}
