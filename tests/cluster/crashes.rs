//! An instance killed outright (SIGKILL): its sessions stay valid, with the same ids and tokens,
//! and continue on a survivor. A client resuming with `Last-Event-ID` gets `lagged` counting
//! exactly the events accepted for it that died with the mailbox, then everything after; a
//! session nobody resumes leaves with `user_left` after its TTL, so no ghost remains.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::time::sleep;

use crate::support::cluster::Cluster;
use crate::support::*;

/// Longer than the dead instance's liveness key (3 s) plus a sweep, plus a margin for a busy box.
const ADOPTED_WITHIN: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_killed_instances_session_resumes_elsewhere_with_every_lost_event_counted() {
    let mut cluster = Cluster::start("sigkill", &[&[], &[]]).await;
    let kai = cluster.nodes[0].helo("kai").await;
    cluster.settle().await;
    let wen = cluster.nodes[1].helo("wen").await;
    cluster.settle().await;
    let (mut kai_on_a, _) = cluster.nodes[0].attach_roster(&kai, None).await;
    let greeted = kai_on_a.expect_new_user(&wen).await;
    let (mut wen_stream, _) = cluster.nodes[1].attach_roster(&wen, None).await;

    // kai reads the first of three direct messages; the other two and a broadcast wait on A.
    let b = &cluster.nodes[1];
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(b.respond(&wen, &kai, &json!({"n": n})).await);
    }
    assert_eq!(ids, [greeted + 1, greeted + 2, greeted + 3]);
    kai_on_a
        .expect_response(ids[0], &wen, &kai, &json!({"n": 1}))
        .await;
    let seen = ids[0];
    assert_eq!(b.broadcast_ok(&wen, &json!("before")).await, 1);

    cluster.nodes[0].kill();
    drop(kai_on_a);
    // Accepted while kai's mailbox is dead: lost too, and counted.
    let b = &cluster.nodes[1];
    assert_eq!(b.broadcast_ok(&wen, &json!("after")).await, 1);

    // kai comes back through B with the same token: 503 until B adopted it.
    let killed = Instant::now();
    let response = loop {
        let response = b.events_response(&kai.id, &kai.token, Some(seen)).await;
        match response.status() {
            StatusCode::OK => break response,
            StatusCode::SERVICE_UNAVAILABLE if killed.elapsed() < ADOPTED_WITHIN => {
                sleep(POLL).await
            }
            status => panic!("resuming through B after the kill: {status}"),
        }
    };
    eprintln!(
        "kai resumed through B {:?} after the kill",
        killed.elapsed()
    );
    let mut kai_on_b = SseReader::new(response).await;
    kai_on_b.ready().await;
    let lagged = kai_on_b.next().await;
    assert_eq!(lagged.event, "lagged", "{lagged:?}");
    // Two direct messages and two broadcasts were accepted for kai after what it saw.
    assert_eq!(lagged.data, json!({"missed": 4}));

    let marker = json!("after the crash");
    let id = b.respond(&wen, &kai, &marker).await;
    assert_eq!(id, seen + 5, "ids continue after the lost ones");
    kai_on_b.expect_response(id, &wen, &kai, &marker).await;

    // kai's token still works for writing, and wen never heard kai leave or join again.
    let back = json!("back");
    assert_eq!(b.broadcast_ok(&kai, &back).await, 1);
    let frame = wen_stream.next().await;
    assert_eq!(frame.event, "client_broadcast", "{frame:?}");
    assert_eq!(frame.data["message"], back);
    assert_eq!(b.clients().await, sessions(&[&kai, &wen]));
}

#[tokio::test]
async fn a_killed_instances_sessions_nobody_resumes_leave_with_user_left_after_their_ttl() {
    let ttl = ["--session-ttl", "2s"];
    let mut cluster = Cluster::start("crash", &[&ttl, &ttl]).await;
    let wen = cluster.nodes[1].helo("wen").await;
    cluster.settle().await;
    let kai = cluster.nodes[0].helo("kai").await;
    cluster.settle().await;
    let kit = cluster.nodes[0].helo("kit").await; // never attaches
    cluster.settle().await;
    let (mut wen_stream, _) = cluster.nodes[1].attach_roster(&wen, None).await;
    wen_stream.expect_new_user(&kai).await;
    wen_stream.expect_new_user(&kit).await;
    let (_kai_stream, _) = cluster.nodes[0].attach_roster(&kai, None).await;

    cluster.nodes[0].kill();
    let killed = Instant::now();
    let b = &cluster.nodes[1];
    // Adopted after the liveness key (3 s), then detached for the 2 s TTL.
    let limit = Duration::from_secs(15);
    loop {
        let listed = b.clients().await;
        if listed == sessions(&[&wen]) {
            break;
        }
        assert!(
            killed.elapsed() < limit,
            "ghosts after {limit:?}: {listed:?}"
        );
        sleep(POLL).await;
    }
    let gone = killed.elapsed();
    let mut left = BTreeSet::new();
    for _ in 0..2 {
        let frame = wen_stream.next().await;
        assert_eq!(frame.event, "user_left", "{frame:?}");
        left.insert(peer_set(&[frame.data]).pop_first().unwrap());
    }
    assert_eq!(left, sessions(&[&kai, &kit]));
    eprintln!("sessions of the killed instance left after {gone:?}");
    let (status, body) = b.healthz().await;
    assert_eq!(status, StatusCode::OK, "the survivor stays healthy: {body}");
}
