//! Faults the cluster recovers from, answered "retry" (503 `backplane_recovering` with
//! `Retry-After`) rather than "gone" (404): a session whose instance just died, before a
//! survivor adopts it; a session Redis forgot when it restarted empty, until its instance
//! writes it again.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::time::sleep;

use crate::crashes::resume_after_crash;
use crate::support::cluster::{Cluster, KaiAndWen, Redis};
use crate::support::redis_proxy::RedisProxy;
use crate::support::*;

#[tokio::test]
async fn an_attach_to_a_session_whose_instance_just_died_is_told_at_once_to_retry() {
    let mut cluster = Cluster::start("died", &[&[], &[]]).await;
    let kai = cluster.nodes[0].helo("kai").await;
    cluster.settle().await;
    cluster.nodes[0].kill();

    // Not a wait for the dead instance's answer (2 s), but at once: it died, retry.
    let b = &cluster.nodes[1];
    let started = Instant::now();
    let refused = b.events_response(&kai.id, &kai.token, Some(0)).await;
    let answered = started.elapsed();
    let retry = retry_after_secs(refused.headers());
    let body = assert_error(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "backplane_recovering",
    )
    .await;
    assert!(
        answered < Duration::from_millis(1500),
        "answered after {answered:?}"
    );
    assert!(
        retry <= 5,
        "Retry-After {retry}: the liveness key (3 s) and a sweep"
    );
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("stopped answering"), "{message}");
    let mut stream = resume_after_crash(b, &kai, 0).await;
    let wen = b.helo("wen").await;
    stream.expect_new_user(&wen).await;
}

#[tokio::test]
async fn after_redis_restarts_empty_a_live_recipient_not_written_again_yet_is_503_not_404() {
    let mut cluster = Cluster::start_own("forgotten", &[&[], &[]]).await;
    let KaiAndWen {
        kai,
        wen,
        mut kai_on_a,
        ..
    } = cluster.kai_on_a_wen_on_b().await;

    // A is frozen through the restart: it writes kai to Redis again only once it runs.
    cluster.nodes[0].pause();
    let port = cluster.redis.port;
    cluster.redis.kill();
    cluster.redis = Redis::start_on(port).await.expect("restarting Redis");
    wait_for_health(&cluster.nodes[1], StatusCode::OK, Duration::from_secs(10)).await;
    let b = &cluster.nodes[1];
    let hello = json!("still there?");
    let refused = b.response_as(&wen.token, &kai.id, &hello).await;
    let retry = retry_after_secs(refused.headers());
    let body = assert_error(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "backplane_recovering",
    )
    .await;
    assert_eq!(retry, 1);
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("Redis restarted empty"), "{message}");

    // Once A wrote kai again, the retry is delivered.
    cluster.nodes[0].resume();
    let deadline = Instant::now() + Duration::from_secs(15);
    let id = loop {
        let response = b.response_as(&wen.token, &kai.id, &hello).await;
        match response.status() {
            StatusCode::ACCEPTED => break body_json(response).await["event_id"].as_u64().unwrap(),
            StatusCode::SERVICE_UNAVAILABLE if Instant::now() < deadline => sleep(POLL).await,
            status => panic!("sending to kai once A runs again: {status}"),
        }
    };
    kai_on_a.expect_response(id, &wen, &kai, &hello).await;

    // Every instance re-registered and no late one can come: unknown is unknown again.
    let nobody = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = b.response_as(&wen.token, nobody, &hello).await;
        match response.status() {
            StatusCode::NOT_FOUND => {
                assert_error(response, StatusCode::NOT_FOUND, "unknown_recipient").await;
                break;
            }
            StatusCode::SERVICE_UNAVAILABLE if Instant::now() < deadline => sleep(POLL).await,
            status => panic!("sending to nobody after the recovery: {status}"),
        }
    }
}

/// B is cut off from Redis longer than its liveness key lives, so A adopts B's session; when B
/// comes back it must not write itself as the session's home again. B drops its copy and ends
/// the stream; the client's reconnect (through B, as a balancer may send it) finds the session
/// where it lives, and every message arrives once.
#[tokio::test]
async fn an_instance_cut_off_past_its_liveness_gives_up_the_sessions_adopted_meanwhile() {
    let mut cluster = Cluster::start_own("cutoff", &[&[]]).await;
    let proxy = RedisProxy::start(cluster.redis.port).await;
    let b = cluster.add("B", &proxy.url(), &[]).await;
    cluster.settle().await;
    let wen = cluster.nodes[0].helo("wen").await;
    cluster.settle().await;
    let kai = cluster.nodes[b].helo("kai").await;
    cluster.settle().await;
    let mut kai_on_b = cluster.nodes[b].attach_ready(&kai).await;
    let before = json!("before the cut");
    let seen = cluster.nodes[0].respond(&wen, &kai, &before).await;
    kai_on_b.expect_response(seen, &wen, &kai, &before).await;

    // B runs on, but Redis no longer hears from it: its liveness key runs out, A adopts kai.
    proxy.cut();
    let a = &cluster.nodes[0];
    let deadline = Instant::now() + Duration::from_secs(15);
    while sample(&a.metrics().await, "switchboard_sessions_adopted_total") != Some(1.0) {
        assert!(Instant::now() < deadline, "A did not adopt kai");
        sleep(POLL).await;
    }
    // Accepted while B is cut off: kai lives on A now.
    let meanwhile = json!("while B was cut off");
    let meanwhile_id = a.respond(&wen, &kai, &meanwhile).await;
    assert_eq!(meanwhile_id, seen + 1);

    // B comes back: its copy of kai goes, and so does the stream it held.
    proxy.mend();
    wait_for_health(&cluster.nodes[b], StatusCode::OK, Duration::from_secs(10)).await;
    let after_cut = kai_on_b.until_end().await;
    assert!(after_cut.is_empty(), "B's stream ended: {after_cut:?}");
    let a_id = cluster.instance_id(0).await;
    assert_eq!(home_of(&cluster, &kai).await, a_id, "the directory keeps A");
    let nodes = &cluster.nodes;
    let homed =
        |node: usize| async move { sample(&nodes[node].metrics().await, "switchboard_sessions") };
    let adopted_from_b = format!(
        "{}:adopted:{}",
        cluster.prefix,
        cluster.instance_id(b).await
    );
    let exists: bool = cluster
        .redis
        .command(redis::cmd("EXISTS").arg(&adopted_from_b))
        .await;
    assert!(
        !exists,
        "B read and removed the record of what was adopted from it"
    );
    assert_eq!(homed(0).await, Some(2.0), "A holds wen and kai");
    assert_eq!(homed(b).await, Some(0.0), "B holds no copy of kai");

    // The reconnect lands on B again: B moves kai from A, and what A accepted arrives once.
    let mut kai_again = cluster.nodes[b].attach(&kai, Some(seen)).await;
    kai_again.ready().await;
    kai_again
        .expect_response(meanwhile_id, &wen, &kai, &meanwhile)
        .await;
    let after = json!("after the return");
    let after_id = cluster.nodes[0].respond(&wen, &kai, &after).await;
    assert_eq!(after_id, meanwhile_id + 1);
    kai_again
        .expect_response(after_id, &wen, &kai, &after)
        .await;
    let b_id = cluster.instance_id(b).await;
    assert_eq!(home_of(&cluster, &kai).await, b_id);
    assert_eq!(homed(0).await, Some(1.0), "A holds wen only");
    assert_eq!(homed(b).await, Some(1.0), "B holds kai");
}

/// The home the directory names for `session`.
async fn home_of(cluster: &Cluster, session: &Session) -> String {
    let entry: String = cluster
        .redis
        .command(
            redis::cmd("HGET")
                .arg(format!("{}:sessions", cluster.prefix))
                .arg(&session.id),
        )
        .await;
    let entry: serde_json::Value = serde_json::from_str(&entry).expect("an entry");
    entry["home"].as_str().expect("a home").to_owned()
}
