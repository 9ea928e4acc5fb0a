//! Over a Redis Cluster of the test's own (three masters, a replica each), the topology changes
//! under traffic: the slot holding the cluster's keys and channels moves to another master
//! (resharding), and its master is killed (its replica takes over). Every message accepted
//! (202) reaches its stream, or the stream reports it missed (`lagged`); the rest were refused
//! (503 with `Retry-After`). Nothing accepted is lost silently.
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
    /// How many were refused 503 (each with `Retry-After`).
    refused: usize,
}

/// Sends numbered messages from `from` on `node`, alternately to `to` and to everyone, until
/// `stop` is set and then `AFTER` more were accepted, 5 ms apart (a steady load, not a flood).
async fn traffic(node: &Instance, from: &Session, to: &Session, stop: &AtomicBool) -> Sent {
    const AFTER: usize = 20;
    let mut sent = Sent::default();
    let mut accepted_after_stop = 0;
    for n in 0u64.. {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping && accepted_after_stop >= AFTER {
            break;
        }
        let message = json!({ "n": n });
        let response = if n % 2 == 0 {
            node.post_response(from, &to.id, &message).await
        } else {
            node.broadcast(from, &message).await
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
                sent.refused += 1;
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

/// Starts two instances on `redis`, ann on A sending to bob on B (whose stream is open), runs
/// `fault` under traffic, and checks that every accepted message arrived or was reported.
async fn under_traffic<F: Future<Output = ()>>(
    test: &str,
    redis_url: &str,
    fault: impl FnOnce(String) -> F,
) {
    let cluster = Cluster::start_on(Redis::absent(), redis_url, test, &[&[], &[]]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let ann = a.helo("ann").await;
    cluster.settle().await;
    let bob = b.helo("bob").await;
    cluster.settle().await;
    let (mut stream, _) = b.attach_roster(&bob, None).await;

    let stop = AtomicBool::new(false);
    let tag = format!("{{{}}}", cluster.prefix);
    let run = async {
        tokio::join!(traffic(a, &ann, &bob, &stop), async {
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

    assert!(arrived.is_subset(&sent.accepted), "only what was accepted");
    let lost: Vec<u64> = sent.accepted.difference(&arrived).copied().collect();
    eprintln!(
        "{test}: {} accepted, {} refused (503), {} arrived, {} reported missed",
        sent.accepted.len(),
        sent.refused,
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
    under_traffic("reshard", &redis.url(), |tag| async move {
        let from = redis.owner(&tag).await;
        let to = redis.other_master(from).await;
        redis.move_slot(&tag, from, to).await;
    })
    .await;
}

#[tokio::test]
async fn a_master_killed_under_traffic_fails_over_and_loses_nothing_accepted_silently() {
    if ran_in_the_first_pass(
        "failover",
        "it kills a master of a Redis Cluster of its own",
    ) {
        return;
    }
    let mut redis = RedisCluster::start().await;
    let url = redis.url();
    let redis = &mut redis;
    under_traffic("failover", &url, |tag| async move {
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
