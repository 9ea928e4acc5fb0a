//! Sessions leaving and parts failing: delete and expiry are announced as `user_left`
//! everywhere (no ghost sessions), a frozen instance keeps its sessions, and a Redis restart is
//! 503 until the cluster recovers by itself. A killed instance: `crashes.rs`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::time::sleep;

use crate::support::cluster::{Cluster, Redis};
use crate::support::*;

/// How long an instance's liveness key outlives its last refresh (`backplane::cluster::LIVENESS`);
/// every instance sweeps the directory once a third of it.
const LIVENESS: Duration = Duration::from_secs(3);

#[tokio::test]
async fn delete_on_one_instance_announces_user_left_on_the_others() {
    let cluster = Cluster::start("delete", &[&[], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let wen = b.helo("wen").await;
    cluster.settle().await;
    let xan = a.helo("xan").await;
    cluster.settle().await;
    let (mut wen_stream, _) = b.attach_roster(&wen, None).await;
    wen_stream.expect_new_user(&xan).await;
    let (mut xan_stream, _) = a.attach_roster(&xan, None).await;

    assert_eq!(a.delete(&xan.token).await.status(), StatusCode::NO_CONTENT);
    let left = wen_stream.next().await;
    assert_eq!(
        (left.event.as_str(), &left.data),
        ("user_left", &xan.member("lobby"))
    );
    assert!(left.id.is_some());
    let rest = xan_stream.until_end().await;
    assert!(rest.is_empty(), "nothing after the delete: {rest:?}");
    for node in [a, b] {
        assert_eq!(node.clients().await, sessions(&[&wen]));
    }
}

#[tokio::test]
async fn a_session_that_expires_on_one_instance_is_announced_as_user_left_on_the_others() {
    let cluster = Cluster::start("ttl", &[&["--session-ttl", "1s"], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let wen = b.helo("wen").await;
    cluster.settle().await;
    let (mut wen_stream, _) = b.attach_roster(&wen, None).await;

    let registered = Instant::now();
    let xan = a.helo("xan").await; // never attaches
    wen_stream.expect_new_user(&xan).await;
    let left = wen_stream.next().await;
    let after = registered.elapsed();
    assert_eq!(
        (left.event.as_str(), &left.data),
        ("user_left", &xan.member("lobby"))
    );
    assert!(
        after >= Duration::from_millis(950),
        "left after the TTL, not {after:?}"
    );
    for node in [a, b] {
        assert_eq!(node.clients().await, sessions(&[&wen]));
    }
}

#[tokio::test]
async fn an_instance_too_busy_to_refresh_its_liveness_key_keeps_its_sessions() {
    let cluster = Cluster::start_own("paused", &[&[], &[]]).await;
    let wen = cluster.nodes[1].helo("wen").await;
    cluster.settle().await;
    let kai = cluster.nodes[0].helo("kai").await;
    cluster.settle().await;
    let (mut wen_stream, _) = cluster.nodes[1].attach_roster(&wen, None).await;
    wen_stream.expect_new_user(&kai).await;

    // A freezes (a long pause): its key expires, but it still reads its channel.
    let key = format!(
        "{}:instance:{}",
        cluster.prefix,
        cluster.instance_id(0).await
    );
    let redis = redis::Client::open(cluster.redis.url()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    cluster.nodes[0].pause();
    let deadline = Instant::now() + WAIT;
    while redis::cmd("EXISTS")
        .arg(&key)
        .query_async::<bool>(&mut conn)
        .await
        .unwrap()
    {
        assert!(
            Instant::now() < deadline,
            "A's liveness key outlived the wait"
        );
        sleep(POLL).await;
    }
    // B sweeps every second; a sweep that finds A's key gone asks Redis whether A still reads
    // its channel (PUBSUB NUMSUB), and must then leave kai alone. Redis counts those questions:
    // three more than now means two whole sweeps ran since the key was gone.
    let asked = numsub_calls(&mut conn).await;
    let deadline = Instant::now() + WAIT;
    while numsub_calls(&mut conn).await < asked + 3 {
        assert!(
            Instant::now() < deadline,
            "B did not sweep twice finding kai homed on A without a key"
        );
        sleep(POLL).await;
    }
    cluster.nodes[0].resume();

    let marker = json!("still here");
    let id = cluster.nodes[0].respond(&kai, &wen, &marker).await;
    wen_stream.expect_response(id, &kai, &wen, &marker).await;
    assert_eq!(cluster.nodes[1].clients().await, sessions(&[&wen, &kai]));
}

/// How many `PUBSUB NUMSUB` commands Redis has run (`INFO commandstats`).
async fn numsub_calls(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_pubsub|numsub:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_redis_restart_makes_health_and_writes_503_then_the_cluster_recovers_by_itself() {
    let mut cluster = Cluster::start_own("restart", &[&[], &[]]).await;
    let xan = cluster.nodes[0].helo("xan").await;
    cluster.settle().await;
    let yul = cluster.nodes[1].helo("yul").await;
    cluster.settle().await;
    let (mut yul_stream, _) = cluster.nodes[1].attach_roster(&yul, None).await;
    let (mut xan_stream, _) = cluster.nodes[0].attach_roster(&xan, None).await;
    xan_stream.expect_new_user(&yul).await;

    let port = cluster.redis.port;
    cluster.redis.kill();
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    for node in [a, b] {
        let (body, _) = wait_for_health(node, StatusCode::SERVICE_UNAVAILABLE, WAIT).await;
        assert_eq!(body["status"], "unavailable", "{body}");
        let reason = body["reason"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "a reason in {body}");
        let response = node.helo_response("zed").await;
        assert_error(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "backplane_unavailable",
        )
        .await;
    }
    let response = a.response_as(&xan.token, &yul.id, &json!("lost?")).await;
    assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "backplane_unavailable",
    )
    .await;

    cluster.redis = Redis::start_on(port).await.expect("restarting Redis");
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    for node in [a, b] {
        let (_, took) = wait_for_health(node, StatusCode::OK, Duration::from_secs(10)).await;
        eprintln!(
            "{} healthy again {took:?} after Redis came back",
            node.label
        );
    }
    // The restarted Redis was empty: each instance re-registered the sessions it homes, and
    // they stay registered while every instance sweeps the directory for dead instances (the
    // liveness keys were lost with the old Redis too): watch a few sweep rounds.
    let watch = Instant::now();
    while watch.elapsed() < LIVENESS + Duration::from_secs(1) {
        for node in [a, b] {
            assert_eq!(
                node.clients().await,
                sessions(&[&xan, &yul]),
                "/clients on {} {:?} after recovery",
                node.label,
                watch.elapsed()
            );
        }
        sleep(POLL).await;
    }
    let message = json!("after the restart");
    let id = a.respond(&xan, &yul, &message).await;
    yul_stream.expect_response(id, &xan, &yul, &message).await;
    let id = b.respond(&yul, &xan, &message).await;
    xan_stream.expect_response(id, &yul, &xan, &message).await;
    // And the bus carries presence again, to both instances.
    let zed = b.helo("zed").await;
    yul_stream.expect_new_user(&zed).await;
    xan_stream.expect_new_user(&zed).await;
}
