//! The backplane as a scraper sees it: `switchboard_backplane_up` follows the instance's
//! subscription to the Redis bus, down when Redis goes and up again when it is back.

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
