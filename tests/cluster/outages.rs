//! Faults the cluster recovers from, answered "retry" (503 `backplane_recovering` with
//! `Retry-After`) rather than "gone" (404): a session whose instance just died, before a
//! survivor adopts it; a session Redis forgot when it restarted empty, until its instance
//! writes it again.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::time::sleep;

use crate::crashes::resume_after_crash;
use crate::support::cluster::{Cluster, Redis};
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
    let kai = cluster.nodes[0].helo("kai").await;
    cluster.settle().await;
    let wen = cluster.nodes[1].helo("wen").await;
    cluster.settle().await;
    let (mut kai_on_a, _) = cluster.nodes[0].attach_roster(&kai, None).await;
    kai_on_a.expect_new_user(&wen).await;

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
