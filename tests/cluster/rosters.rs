//! The roster a `ready` carries, in cluster mode, comes from each instance's peer directory,
//! kept from the bus: right across joins, leaves and room changes made through other
//! instances and after a Redis restart, and without a read of the whole directory per attach
//! (counted by the test's own redis-server: `HGETALL`, which the sweep does not use).

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::cluster::{Cluster, Redis};
use crate::support::*;

/// Attaches `session` through `node`; its `ready` roster of `room`, as (id, name) pairs.
async fn roster_in(node: &Instance, session: &Session, room: &str) -> BTreeSet<(String, String)> {
    let mut stream = node.attach(session, None).await;
    let ready = stream.ready().await;
    room_roster(&ready, room)
}

/// The roster of `room` in a `ready`'s data.
fn room_roster(ready: &Value, room: &str) -> BTreeSet<(String, String)> {
    let listed = ready["rooms"][room]
        .as_array()
        .unwrap_or_else(|| panic!("a listed roster of {room} in {ready}"));
    peer_set(listed)
}

/// Kills the cluster's Redis and starts an empty one on its port; waits until every instance
/// has subscribed again and re-registered its sessions.
async fn restart_redis(cluster: &mut Cluster) {
    let port = cluster.redis.port;
    cluster.redis.kill();
    cluster.redis = Redis::start_on(port).await.expect("restarting Redis");
    cluster.settle().await;
}

#[tokio::test]
async fn ready_rosters_follow_changes_made_through_other_instances_and_a_redis_restart() {
    let mut cluster = Cluster::start_own("rosters", &[&[], &[], &[]]).await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let ann = a.helo_in("ann", json!(["lobby", "dev"])).await;
    let bob = b.helo_in("bob", json!(["dev"])).await;
    let cat = c.helo_in("cat", json!(["lobby"])).await;
    cluster.settle().await;
    assert_eq!(roster_in(a, &ann, "dev").await, sessions(&[&bob]));
    assert_eq!(roster_in(a, &ann, "lobby").await, sessions(&[&cat]));

    // Through B and C: bob enters the lobby, cat leaves it, dan joins, bob leaves the hub.
    c.join_room(&bob, "lobby").await;
    let exit = b.room_request(Method::DELETE, &cat, "lobby").await;
    assert!(
        exit.status().is_success(),
        "cat leaves the lobby: {}",
        exit.status()
    );
    let dan = c.helo_in("dan", json!(["dev", "lobby"])).await;
    cluster.settle().await;
    assert_eq!(roster_in(a, &ann, "lobby").await, sessions(&[&bob, &dan]));
    let gone = b.delete(&bob.token).await;
    assert!(gone.status().is_success(), "bob leaves: {}", gone.status());
    cluster.settle().await;
    assert_eq!(roster_in(a, &ann, "dev").await, sessions(&[&dan]));
    assert_eq!(roster_in(a, &ann, "lobby").await, sessions(&[&dan]));

    // Redis forgets everything; each instance writes its own sessions again, A first or not.
    restart_redis(&mut cluster).await;
    let [a, _, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    assert_eq!(roster_in(a, &ann, "dev").await, sessions(&[&dan]));
    let eve = c.helo_in("eve", json!(["dev"])).await;
    cluster.settle().await;
    assert_eq!(roster_in(a, &ann, "dev").await, sessions(&[&dan, &eve]));
    assert_eq!(roster_in(c, &dan, "dev").await, sessions(&[&ann, &eve]));
}

/// Attaches every one of `everyone` through `node` at once; each `ready` must list all the
/// others in the lobby.
async fn storm(node: &Instance, everyone: &[Session]) -> Vec<SseReader> {
    let attaches = everyone.iter().map(|session| async move {
        let mut stream = node.attach(session, None).await;
        let ready = stream.ready().await;
        let others: Vec<&Session> = everyone.iter().filter(|s| s.id != session.id).collect();
        assert_eq!(
            room_roster(&ready, "lobby"),
            sessions(&others),
            "{}",
            session.name
        );
        stream
    });
    futures_util::future::join_all(attaches).await
}

#[tokio::test]
async fn a_storm_of_attaches_reads_no_whole_directory_per_attach() {
    const SESSIONS: usize = 24;
    let mut cluster = Cluster::start_own("storm", &[&[], &[]]).await;
    let mut everyone = Vec::new();
    for n in 0..SESSIONS {
        everyone.push(cluster.nodes[0].helo(&format!("s{n}")).await);
    }
    cluster.settle().await;
    // Every session reconnects through B at once, as after a deploy: each migrates there.
    let before = cluster.redis.calls("hgetall").await;
    let streams = storm(&cluster.nodes[1], &everyone).await;
    let reads = cluster.redis.calls("hgetall").await - before;
    assert!(
        reads <= 2,
        "{SESSIONS} attaches read the whole directory {reads} times"
    );
    drop(streams);

    // After Redis restarted empty, the peer directory is read again once, not per attach.
    restart_redis(&mut cluster).await;
    let before = cluster.redis.calls("hgetall").await;
    let streams = storm(&cluster.nodes[0], &everyone).await;
    let reads = cluster.redis.calls("hgetall").await - before;
    assert!(
        reads <= 3,
        "{SESSIONS} attaches read the whole directory {reads} times"
    );
    drop(streams);
    let (status, body) = cluster.nodes[0].healthz().await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
