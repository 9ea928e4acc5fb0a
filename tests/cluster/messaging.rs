//! Presence and messages across instances: `new_user`, direct responses and broadcasts reach
//! sessions attached elsewhere, and `GET /clients` lists the whole cluster.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::cluster::{Cluster, bus_reads};
use crate::support::*;

#[tokio::test]
async fn helo_on_one_instance_announces_new_user_on_the_others_but_not_to_the_newcomer() {
    let cluster = Cluster::start("helo", &[&[], &[], &[]]).await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let bea = b.helo("bea").await;
    cluster.settle().await;
    let cid = c.helo("cid").await;
    cluster.settle().await;
    let (mut bea_stream, roster) = b.attach_roster(&bea, None).await;
    assert_eq!(roster, sessions(&[&cid]));
    let first = bea_stream.expect_new_user(&cid).await;
    let (mut cid_stream, roster) = c.attach_roster(&cid, None).await;
    assert_eq!(roster, sessions(&[&bea]));

    let ann = a.helo("ann").await;
    let on_b = bea_stream.expect_new_user(&ann).await;
    assert!(on_b > first, "ids increase within bea's stream");
    cid_stream.expect_new_user(&ann).await;

    let (mut ann_stream, roster) = a.attach_roster(&ann, None).await;
    assert_eq!(roster, sessions(&[&bea, &cid]));
    // Markers: what arrives next was sent after the helo, so nothing came in between: the
    // newcomer heard nothing about itself and the others heard about it once.
    let marker = json!("welcome");
    let id = b.respond(&bea, &ann, &marker).await;
    ann_stream.expect_response(id, &bea, &ann, &marker).await;
    let id = a.respond(&ann, &cid, &marker).await;
    cid_stream.expect_response(id, &ann, &cid, &marker).await;
    let id = c.respond(&cid, &bea, &marker).await;
    bea_stream.expect_response(id, &cid, &bea, &marker).await;
}

#[tokio::test]
async fn response_through_one_instance_reaches_a_recipient_attached_to_another_with_the_same_id() {
    let cluster = Cluster::start("response", &[&[], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let sam = a.helo("sam").await;
    cluster.settle().await;
    let rae = b.helo("rae").await;
    cluster.settle().await;
    let (mut rae_stream, roster) = b.attach_roster(&rae, None).await;
    assert_eq!(roster, sessions(&[&sam]));

    let message = json!({"text": "hi from A", "n": [1, 2, 3], "nested": {"ok": true}});
    let first = a.respond(&sam, &rae, &message).await;
    rae_stream
        .expect_response(first, &sam, &rae, &message)
        .await;

    let again = json!("again");
    let second = a.respond(&sam, &rae, &again).await;
    assert!(second > first, "event ids increase: {first} then {second}");
    rae_stream.expect_response(second, &sam, &rae, &again).await;
}

#[tokio::test]
async fn broadcast_through_one_instance_reaches_the_others_with_a_single_redis_publish() {
    let cluster = Cluster::start_own("broadcast", &[&[], &[], &[]]).await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let sam = a.helo("sam").await;
    cluster.settle().await;
    let bea = b.helo("bea").await;
    cluster.settle().await;
    let cid = c.helo("cid").await;
    cluster.settle().await;
    let cyd = c.helo("cyd").await;
    cluster.settle().await;

    let (mut sam_stream, _) = a.attach_roster(&sam, None).await;
    for newer in [&bea, &cid, &cyd] {
        sam_stream.expect_new_user(newer).await;
    }
    let (mut bea_stream, _) = b.attach_roster(&bea, None).await;
    for newer in [&cid, &cyd] {
        bea_stream.expect_new_user(newer).await;
    }
    let (mut cid_stream, _) = c.attach_roster(&cid, None).await;
    cid_stream.expect_new_user(&cyd).await;
    let (mut cyd_stream, _) = c.attach_roster(&cyd, None).await;
    // From here on nothing publishes on its own: the instances only refresh their liveness.
    cluster.settle().await;

    let before = cluster.redis.publish_calls().await;
    let message = json!({"text": "to everyone", "list": [1, 2]});
    assert_eq!(a.broadcast_ok(&sam, &message).await, 3);
    let expected =
        json!({"from": sam.id, "from_name": sam.name, "room": "lobby", "message": message});
    for stream in [&mut bea_stream, &mut cid_stream, &mut cyd_stream] {
        let frame = stream.next().await;
        assert_eq!(frame.event, "client_broadcast", "{}", stream.label);
        assert!(frame.id.is_some());
        assert_eq!(frame.data, expected, "{}", stream.label);
    }
    let after = cluster.redis.publish_calls().await;
    assert_eq!(
        after - before,
        1,
        "one PUBLISH for a broadcast to 3 sessions on 2 other instances"
    );

    // The sender did not hear its own broadcast; the others heard it once.
    let marker = json!("marker");
    let id = b.respond(&bea, &sam, &marker).await;
    sam_stream.expect_response(id, &bea, &sam, &marker).await;
    for (stream, who) in [
        (&mut bea_stream, &bea),
        (&mut cid_stream, &cid),
        (&mut cyd_stream, &cyd),
    ] {
        let id = a.respond(&sam, who, &marker).await;
        stream.expect_response(id, &sam, who, &marker).await;
    }
}

#[tokio::test]
async fn clients_on_any_instance_lists_every_session_of_the_cluster() {
    let cluster = Cluster::start("clients", &[&[], &[], &[]]).await;
    let mut everyone = Vec::new();
    for (n, node) in cluster.nodes.iter().enumerate() {
        for k in 0..2 {
            everyone.push(node.helo(&format!("user-{n}-{k}")).await);
        }
    }
    let expected = sessions(&everyone.iter().collect::<Vec<_>>());
    assert_eq!(expected.len(), 6);
    for node in &cluster.nodes {
        assert_eq!(node.clients().await, expected, "/clients on {}", node.label);
    }
}

#[tokio::test]
async fn a_direct_message_concerns_only_the_senders_instance_and_the_recipients_home() {
    let cluster = Cluster::start("channels", &[&[], &[], &[]]).await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let sam = a.helo("sam").await;
    let rae = b.helo("rae").await;
    cluster.settle().await;
    let (mut rae_stream, _) = b.attach_roster(&rae, None).await;
    // A probe of B's own comes back on B's channel: B's stream is attached and B is caught up.
    cluster.settle().await;
    let before = (bus_reads(c, "bus").await, bus_reads(c, "instance").await);
    let on_b = bus_reads(b, "instance").await;
    let on_a = bus_reads(a, "instance").await;

    const MESSAGES: u64 = 20;
    for n in 0..MESSAGES {
        let message = json!({ "n": n });
        let id = a.respond(&sam, &rae, &message).await;
        rae_stream.expect_response(id, &sam, &rae, &message).await;
    }
    let after = (bus_reads(c, "bus").await, bus_reads(c, "instance").await);
    assert_eq!(
        after, before,
        "the third instance read none of it (bus, instance)"
    );
    assert_eq!(
        bus_reads(b, "instance").await,
        on_b + MESSAGES,
        "B read each message"
    );
    assert_eq!(
        bus_reads(a, "instance").await,
        on_a + MESSAGES,
        "A read each answer"
    );
}

/// `POST /response` from `from` to `to` through `node` with `Idempotency-Key: key`; the
/// event id it answered.
async fn send_keyed(node: &Endpoint, from: &Session, to: &Session, key: &str) -> u64 {
    let body = json!({"recipient": to.id, "message": "once"}).to_string();
    let response = send(
        node.client
            .post(node.url("/response"))
            .bearer_auth(&from.token)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body),
    )
    .await;
    assert_eq!(
        response.status(),
        StatusCode::ACCEPTED,
        "through {}",
        node.label
    );
    body_json(response).await["event_id"].as_u64().unwrap()
}

#[tokio::test]
async fn a_keyed_retry_through_any_instance_is_delivered_once_even_after_a_move() {
    let cluster = Cluster::start("keyed", &[&[], &[], &[]]).await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let ann = a.helo("ann").await;
    cluster.settle().await;
    let bob = c.helo("bob").await;
    cluster.settle().await;

    let first = send_keyed(a, &ann, &bob, "retry-me").await;
    assert_eq!(send_keyed(b, &ann, &bob, "retry-me").await, first);
    // bob's stream attaches through B: the session moves there, with what it was sent.
    let (mut stream, _) = b.attach_roster(&bob, None).await;
    assert_eq!(send_keyed(a, &ann, &bob, "retry-me").await, first);
    let frame = stream.next_named("client_response").await;
    assert_eq!(
        (frame.id, &frame.data["message"]),
        (Some(first), &json!("once"))
    );
    let marker = json!("marker");
    let id = c.respond(&ann, &bob, &marker).await;
    stream.expect_response(id, &ann, &bob, &marker).await;
}
