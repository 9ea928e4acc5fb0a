//! Resuming through another instance: `Last-Event-ID` picks up with the same event ids, and
//! `lagged` comes first after evictions.

use serde_json::{Value, json};

use crate::support::cluster::Cluster;
use crate::support::*;

#[tokio::test]
async fn reattaching_through_another_instance_resumes_after_last_event_id_with_the_same_ids() {
    let cluster = Cluster::start("handover", &[&[], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let rae = a.helo("rae").await;
    cluster.settle().await;
    let sam = b.helo("sam").await;
    cluster.settle().await;
    let (mut on_a, roster) = a.attach_roster(&rae, None).await;
    assert_eq!(roster, sessions(&[&sam]));
    let joined = on_a.expect_new_user(&sam).await;

    let messages: Vec<Value> = (1..=5).map(|n| json!({"n": n})).collect();
    let mut ids = Vec::new();
    for message in &messages {
        ids.push(b.respond(&sam, &rae, message).await);
    }
    assert!(
        ids[0] > joined && ids.windows(2).all(|w| w[0] < w[1]),
        "{ids:?}"
    );
    // The client reads two of them on A, then its connection moves to B.
    on_a.expect_response(ids[0], &sam, &rae, &messages[0]).await;
    on_a.expect_response(ids[1], &sam, &rae, &messages[1]).await;

    let (mut on_b, roster) = b.attach_roster(&rae, Some(ids[1])).await;
    assert_eq!(roster, sessions(&[&sam]));
    for (id, message) in ids.iter().zip(&messages).skip(2) {
        on_b.expect_response(*id, &sam, &rae, message).await;
    }

    // The stream on A ends; what it still had in flight is a prefix of the same events.
    let rest: Vec<Option<u64>> = on_a.until_end().await.iter().map(|f| f.id).collect();
    let sent: Vec<Option<u64>> = ids[2..].iter().copied().map(Some).collect();
    assert!(sent.starts_with(&rest), "A's stream ended after {rest:?}");

    // The session now lives on B: a message through A follows it, next in line.
    let later = json!("after the move");
    let id = a.respond(&sam, &rae, &later).await;
    assert!(id > ids[4], "ids keep increasing after the move: {id}");
    on_b.expect_response(id, &sam, &rae, &later).await;
}

#[tokio::test]
async fn reattaching_through_another_instance_after_evictions_reports_lagged_first() {
    let small = ["--mailbox-size", "4"];
    let cluster = Cluster::start("lagged", &[&small, &small]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let sam = a.helo("sam").await;
    cluster.settle().await;
    let rae = a.helo("rae").await;
    cluster.settle().await;
    let (mut on_a, _) = a.attach_roster(&rae, None).await;
    let hello = json!("read this one");
    let seen = a.respond(&sam, &rae, &hello).await;
    on_a.expect_response(seen, &sam, &rae, &hello).await;
    drop(on_a);

    // Ten broadcasts while detached: the mailbox keeps the newest 4, so 6 are gone.
    for n in 1..=10 {
        assert_eq!(a.broadcast_ok(&sam, &json!({"n": n})).await, 1);
    }
    let (mut on_b, _) = b.attach_roster(&rae, Some(seen)).await;
    let lagged = on_b.next().await;
    assert_eq!(lagged.event, "lagged");
    assert_eq!(lagged.id, None, "lagged carries no id");
    assert_eq!(lagged.data, json!({"missed": 6}));
    for n in 7..=10 {
        let frame = on_b.next().await;
        assert_eq!(frame.event, "client_broadcast");
        assert_eq!(frame.id, Some(seen + n), "the same ids as on A");
        assert_eq!(
            frame.data,
            json!({"from": sam.id, "from_name": sam.name, "room": "lobby", "message": {"n": n}})
        );
    }
    let marker = json!("marker");
    let id = a.respond(&sam, &rae, &marker).await;
    assert_eq!(id, seen + 11);
    on_b.expect_response(id, &sam, &rae, &marker).await;
}

#[tokio::test]
async fn a_direct_message_that_reaches_the_old_home_after_a_move_is_forwarded_to_the_new_one() {
    use futures_util::StreamExt;
    let cluster = Cluster::start_own("forward", &[&[], &[], &[]]).await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let (on_a, on_c) = (cluster.own_channel(0).await, cluster.own_channel(2).await);
    let rae = a.helo("rae").await;
    cluster.settle().await;
    let sam = b.helo("sam").await;
    cluster.settle().await;
    // rae moves from A to C.
    let (mut stream, _) = c.attach_roster(&rae, None).await;
    stream.expect_new_user(&sam).await;

    // A direct message to rae at its new home, as it crosses Redis...
    let redis = redis::Client::open(cluster.redis.url()).unwrap();
    let mut watch = redis.get_async_pubsub().await.unwrap();
    watch.subscribe(&on_c).await.unwrap();
    let first = json!("to the new home");
    let id = b.respond(&sam, &rae, &first).await;
    stream.expect_response(id, &sam, &rae, &first).await;
    let payload: Vec<u8> = tokio::time::timeout(WAIT, watch.on_message().next())
        .await
        .expect("the direct message on C's channel")
        .unwrap()
        .get_payload_bytes()
        .to_vec();

    // ... and the same message sent to the old home, as a sender that read the directory
    // before the move would: A forwards it, and rae gets it again, next in line.
    let mut publisher = redis.get_multiplexed_async_connection().await.unwrap();
    let readers: u64 = redis::cmd("PUBLISH")
        .arg(&on_a)
        .arg(payload)
        .query_async(&mut publisher)
        .await
        .unwrap();
    assert_eq!(readers, 1, "A reads its own channel");
    let again = stream.next().await;
    assert_eq!(again.event, "client_response", "{again:?}");
    assert!(again.id > Some(id), "a new event id after {id}: {again:?}");
    assert_eq!(again.data["message"], first);
}
