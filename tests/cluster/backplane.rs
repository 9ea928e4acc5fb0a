//! The backplane as a scraper sees it: `switchboard_backplane_up` follows the instance's
//! subscription to the Redis bus, down when Redis goes and up again when it is back. A prefix
//! that cannot tag a Redis Cluster's keys stops the start.

use std::time::{Duration, Instant};

use crate::support::cluster::{Cluster, Redis};
use crate::support::*;

/// Polls `node`'s `/metrics` until `switchboard_backplane_up` is `up`, for at most `within`.
async fn wait_for_backplane(node: &Instance, up: f64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let seen = sample(&node.metrics().await, "switchboard_backplane_up");
        if seen == Some(up) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: switchboard_backplane_up {seen:?}, not {up} within {within:?}",
            node.label
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn backplane_up_follows_the_redis_bus() {
    let mut cluster = Cluster::start_own("backplane", &[&[]]).await;
    // Healthy (settled): a probe went round the bus, so the subscription is up.
    wait_for_backplane(&cluster.nodes[0], 1.0, WAIT).await;

    let port = cluster.redis.port;
    cluster.redis.kill();
    wait_for_backplane(&cluster.nodes[0], 0.0, Duration::from_secs(10)).await;

    cluster.redis = Redis::start_on(port).await.expect("restarting Redis");
    wait_for_backplane(&cluster.nodes[0], 1.0, Duration::from_secs(10)).await;
}

#[test]
fn an_empty_redis_prefix_on_a_redis_cluster_stops_the_start_naming_the_flag() {
    for prefix in ["", "a{b}"] {
        let (code, stderr) = refused(&[
            "--listen",
            "0",
            "--redis-url",
            "redis+cluster://127.0.0.1:1",
            "--redis-prefix",
            prefix,
        ]);
        assert_eq!(code, 1, "{stderr}");
        let lines: Vec<&str> = stderr.trim_end().lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(
            lines[0].starts_with("error: --redis-prefix ")
                && lines[0].contains("cannot tag the keys of a Redis Cluster"),
            "{stderr}"
        );
    }
}
