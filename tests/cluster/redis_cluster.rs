//! Over a Redis Cluster of the test's own (three masters, a replica each), the topology changes
//! under traffic: the slot holding the cluster's keys and channels moves to another master
//! (resharding), and its master is killed (its replica takes over); so does the slot of a room
//! (each room has a slot of its own, `--redis-shard-rooms`) under traffic in that room. Every
//! message accepted (202) reaches its stream, or the stream reports it missed (`lagged`); the
//! rest were refused (503 with `Retry-After`). Nothing accepted is lost silently. A refused
//! message may still arrive: its sender cannot know (docs/api.md, "Sending twice, delivered
//! once"), for instance when its recipient's home delivered it but the answer was lost in the
//! failover.
//!
//! Left out over the test script's shared cluster: they break the cluster they run on.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::cluster::{Cluster, Redis};
use crate::support::redis_cluster::{RedisCluster, ran_in_the_first_pass};
use crate::support::*;

/// What the sender's traffic came to.
#[derive(Default)]
struct Sent {
    /// The numbers of the messages answered 202.
    accepted: BTreeSet<u64>,
    /// The numbers of those refused 503 (each with `Retry-After`).
    refused: BTreeSet<u64>,
}

/// Sends numbered messages from `from` on `node`, alternately to `to` and to everyone (or
/// everyone in `room`), until `stop` is set and then `AFTER` more were accepted, 5 ms apart (a
/// steady load, not a flood).
async fn traffic(
    node: &Instance,
    (from, to): (&Session, &Session),
    room: Option<&str>,
    stop: &AtomicBool,
) -> Sent {
    const AFTER: usize = 20;
    let mut sent = Sent::default();
    let mut accepted_after_stop = 0;
    for n in 0u64.. {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping && accepted_after_stop >= AFTER {
            break;
        }
        let message = json!({ "n": n });
        let response = match room {
            _ if n % 2 == 0 => node.post_response(from, &to.id, &message).await,
            None => node.broadcast(from, &message).await,
            Some(room) => {
                let body = json!({ "room": room, "message": message }).to_string();
                node.post_raw("/broadcast", Some(&from.token), &body).await
            }
        };
        match response.status() {
            StatusCode::ACCEPTED | StatusCode::OK => {
                sent.accepted.insert(n);
                accepted_after_stop += usize::from(stopping);
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(
                    response.headers().contains_key("retry-after"),
                    "a 503 says when to retry"
                );
                sent.refused.insert(n);
            }
            other => panic!("message {n}: {other}: {}", body_text(response).await),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sent
}

/// Reads `stream` until the marker `end`: the numbers of the messages that arrived, and how
/// many events it was told it missed.
async fn received(stream: &mut SseReader) -> (BTreeSet<u64>, u64) {
    let (mut arrived, mut missed) = (BTreeSet::new(), 0);
    loop {
        let event = stream.next_within(Duration::from_secs(10)).await;
        match event.event.as_str() {
            "lagged" => missed += event.data["missed"].as_u64().expect("missed"),
            "client_response" | "client_broadcast" => {
                let message = &event.data["message"];
                if message == "end" {
                    return (arrived, missed);
                }
                arrived.insert(message["n"].as_u64().expect("a numbered message"));
            }
            _ => {}
        }
    }
}

/// Starts two instances on `redis`, ann on A sending to bob on B (whose stream is open), both
/// in `lobby` or else in `room` alone, runs `fault` under traffic on the hash tag of the slot
/// that carries it (the deployment's, or the room's), and checks that every accepted message
/// arrived or was reported.
async fn under_traffic<F: Future<Output = ()>>(
    test: &str,
    redis_url: &str,
    room: Option<&str>,
    fault: impl FnOnce(String) -> F,
) {
    let cluster = Cluster::start_on(Redis::absent(), redis_url, test, &[&[], &[]]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let rooms = json!([room.unwrap_or("lobby")]);
    let ann = a.helo_in("ann", rooms.clone()).await;
    cluster.settle().await;
    let bob = b.helo_in("bob", rooms).await;
    cluster.settle().await;
    let (mut stream, _) = b.attach_roster(&bob, None).await;

    let stop = AtomicBool::new(false);
    let tag = match room {
        None => format!("{{{}}}", cluster.prefix),
        Some(room) => format!("{{{}:{room}}}", cluster.prefix),
    };
    let run = async {
        tokio::join!(traffic(a, (&ann, &bob), room, &stop), async {
            // Traffic first, then the fault in the middle of it.
            tokio::time::sleep(Duration::from_millis(300)).await;
            fault(tag).await;
            cluster.settle().await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let (sent, ()) = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the fault and the traffic after it within a minute");
    a.respond(&ann, &bob, "end").await;
    let (arrived, missed) = received(&mut stream).await;

    let sent_at_all: BTreeSet<u64> = sent.accepted.union(&sent.refused).copied().collect();
    assert!(arrived.is_subset(&sent_at_all), "only what was sent");
    let refused_arrived = arrived.intersection(&sent.refused).count();
    let lost: Vec<u64> = sent.accepted.difference(&arrived).copied().collect();
    eprintln!(
        "{test}: {} accepted, {} refused (503, of which {refused_arrived} arrived), {} arrived, \
         {} reported missed",
        sent.accepted.len(),
        sent.refused.len(),
        arrived.len(),
        missed
    );
    assert!(
        lost.len() as u64 <= missed,
        "accepted but neither delivered nor reported: {lost:?} (lagged said {missed})"
    );
}

#[tokio::test]
async fn a_resharding_that_moves_the_live_slot_loses_nothing_accepted_silently() {
    if ran_in_the_first_pass("resharding", "it reshards a Redis Cluster of its own") {
        return;
    }
    let redis = RedisCluster::start().await;
    let redis = &redis;
    let reshard = |tag: String| async move {
        let from = redis.owner(&tag).await;
        let to = redis.other_master(from).await;
        redis.move_slot(&tag, from, to).await;
    };
    under_traffic("reshard", &redis.url(), None, reshard).await;
    under_traffic("reshardroom", &redis.url(), Some("dev"), reshard).await;
}

#[tokio::test]
async fn a_master_killed_under_traffic_fails_over_and_loses_nothing_accepted_silently() {
    if ran_in_the_first_pass(
        "failover",
        "it kills a master of a Redis Cluster of its own",
    ) {
        return;
    }
    for room in [None, Some("dev")] {
        let mut redis = RedisCluster::start().await;
        let url = redis.url();
        let redis = &mut redis;
        under_traffic("failover", &url, room, |tag| async move {
            let master = redis.owner(&tag).await;
            redis.kill(master);
            // Its replica takes over once the others see it failed (node timeout: 1 s).
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while redis.owner(&tag).await == master {
                assert!(std::time::Instant::now() < deadline, "no replica took over");
                tokio::time::sleep(POLL).await;
            }
            redis.wait_until_ok().await;
        })
        .await;
    }
}

/// One deployment's rooms spread over the shards: each room's traffic is numbered and
/// published by the master owning the room's own slot (`{<prefix>:<room>}`), not by the one
/// holding the deployment's keys.
#[tokio::test]
async fn one_deployments_rooms_spread_over_the_shards() {
    if ran_in_the_first_pass(
        "spread",
        "it reads each master of a Redis Cluster of its own",
    ) {
        return;
    }
    let redis = RedisCluster::start().await;
    let cluster = Cluster::start_on(Redis::absent(), &redis.url(), "spread", &[&[], &[]]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    // A room on each master (the names are tried in turn until every master owns one).
    let counter = |room: &str| format!("{{{}:{room}}}:seq", cluster.prefix);
    let mut rooms: Vec<(String, usize)> = Vec::new();
    for n in 0.. {
        let room = format!("r{n}");
        let owner = redis.owner(&counter(&room)).await;
        if rooms.iter().all(|(_, taken)| *taken != owner) {
            rooms.push((room, owner));
        }
        if rooms.len() == 3 {
            break;
        }
    }
    let names: Vec<&str> = rooms.iter().map(|(room, _)| room.as_str()).collect();
    let ann = a.helo_in("ann", json!(names)).await;
    let bob = b.helo_in("bob", json!(names)).await;
    cluster.settle().await;
    let (mut stream, _) = b.attach_roster(&bob, None).await;
    let deployment = redis.owner(&format!("{{{}}}:seq", cluster.prefix)).await;

    for (room, owner) in &rooms {
        let at = || async {
            let value: Option<u64> = redis.nodes[*owner]
                .command(redis::cmd("GET").arg(counter(room)))
                .await;
            value.unwrap_or(0)
        };
        let before = at().await;
        let body = json!({ "room": room, "message": room }).to_string();
        let response = a.post_raw("/broadcast", Some(&ann.token), &body).await;
        assert_eq!(
            response.status(),
            StatusCode::ACCEPTED,
            "broadcast in {room}"
        );
        let heard = stream.next_named("client_broadcast").await.data;
        assert_eq!(
            (&heard["room"], &heard["message"]),
            (&json!(room), &json!(room))
        );
        // Numbered on its master, in its own slot.
        assert_eq!(at().await, before + 1, "{room}'s counter on its own master");
    }
    let owners: BTreeSet<usize> = rooms.iter().map(|(_, owner)| *owner).collect();
    assert_eq!(owners.len(), 3, "the three rooms on three masters");
    assert!(
        owners.contains(&deployment),
        "and one of them the deployment's"
    );
}

/// `--redis-shard-rooms false`: everything of the deployment in one slot, as builds before the
/// flag keep it (the layout a deployment is upgraded from).
#[tokio::test]
async fn with_rooms_not_sharded_everything_stays_in_the_deployments_slot() {
    if ran_in_the_first_pass("one slot", "it reads a Redis Cluster of its own") {
        return;
    }
    let redis = RedisCluster::start().await;
    let together: &[&str] = &["--redis-shard-rooms", "false"];
    let cluster = Cluster::start_on(
        Redis::absent(),
        &redis.url(),
        "oneslot",
        &[together, together],
    )
    .await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let ann = a.helo_in("ann", json!(["dev"])).await;
    let bob = b.helo_in("bob", json!(["dev"])).await;
    cluster.settle().await;
    let (mut stream, _) = b.attach_roster(&bob, None).await;
    let body = json!({ "room": "dev", "message": "hi" }).to_string();
    let response = a.post_raw("/broadcast", Some(&ann.token), &body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        stream.next_named("client_broadcast").await.data["message"],
        "hi"
    );
    let tag = format!("{{{}}}", cluster.prefix);
    let owner = redis.owner(&tag).await;
    let counter: Option<u64> = redis.nodes[owner]
        .command(redis::cmd("GET").arg(format!("{tag}:seq:dev")))
        .await;
    assert!(
        counter.is_some_and(|n| n >= 1),
        "dev's counter in the deployment's slot"
    );
}

/// Two instances of one deployment that disagree on `--redis-shard-rooms` (or one of a release
/// before the flag beside one with it) would keep a room's keys in two slots: each says so in
/// `/healthz` (503), naming the flag, so that no balancer sends it traffic.
#[tokio::test]
async fn instances_that_disagree_on_sharding_rooms_say_so_in_healthz() {
    if ran_in_the_first_pass("disagree", "it starts instances that refuse to serve") {
        return;
    }
    let redis = RedisCluster::start().await;
    let url = redis.url();
    let mut cluster = Cluster::start_on(Redis::absent(), &url, "disagree", &[&[]]).await;
    let b = cluster
        .add("B", &url, &["--redis-shard-rooms", "false"])
        .await;
    for node in [&cluster.nodes[0], &cluster.nodes[b]] {
        let (body, _) = wait_for_health(
            node,
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(10),
        )
        .await;
        let said = body.to_string();
        assert!(said.contains("--redis-shard-rooms"), "{said}");
    }
    // Once the other stops, each serves again.
    cluster.nodes[b].terminate().await;
    wait_for_health(&cluster.nodes[0], StatusCode::OK, Duration::from_secs(10)).await;
}
