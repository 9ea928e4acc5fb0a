//! Deploys: an instance told to stop hands its sessions to the others first, so its clients
//! resume elsewhere with the same ids and tokens, and nobody hears them leave or join again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::support::cluster::Cluster;
use crate::support::*;

#[tokio::test]
async fn a_stopping_instance_hands_its_sessions_to_the_others_and_nobody_hears_them_leave() {
    let mut cluster = Cluster::start("deploy", &[&[], &[]]).await;
    let rae = cluster.nodes[0].helo("rae").await;
    cluster.settle().await;
    let sam = cluster.nodes[1].helo("sam").await;
    cluster.settle().await;
    let (mut rae_on_a, _) = cluster.nodes[0].attach_roster(&rae, None).await;
    rae_on_a.expect_new_user(&sam).await;
    let (mut sam_on_b, roster) = cluster.nodes[1].attach_roster(&sam, None).await;
    assert_eq!(roster, sessions(&[&rae]));
    let first = json!({"n": 0});
    let id = cluster.nodes[1].respond(&sam, &rae, &first).await;
    rae_on_a.expect_response(id, &sam, &rae, &first).await;

    // sam keeps writing to rae through B while A stops.
    let b = cluster.nodes[1].seen_from("127.0.0.1".parse().unwrap());
    let stopped = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (sam, rae, stopped) = (sam.clone(), rae.clone(), Arc::clone(&stopped));
        async move {
            let mut accepted = Vec::new();
            let mut refused = Vec::new();
            let mut n = 1;
            // Until A is gone, and a few more after.
            let mut after = 5;
            while after > 0 {
                if stopped.load(Ordering::Relaxed) {
                    after -= 1;
                }
                let message = json!({ "n": n });
                let response = b.post_response(&sam, &rae.id, &message).await;
                let status = response.status();
                if status.is_success() {
                    let body = body_json(response).await;
                    accepted.push((body["event_id"].as_u64().expect("event_id"), message));
                    n += 1;
                } else {
                    refused.push((status, body_text(response).await));
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            (accepted, refused)
        }
    });
    let exit = cluster.nodes[0].terminate().await;
    assert!(exit.success(), "A stops cleanly: {exit:?}");
    stopped.store(true, Ordering::Relaxed);
    let (accepted, refused) = tokio::time::timeout(WAIT, writer)
        .await
        .expect("the writer ends")
        .expect("the writer runs");
    assert_eq!(refused, [], "no message refused while A stopped");
    assert!(accepted.len() >= 5, "{accepted:?}");

    // What A's stream delivered before it ended, then the rest through B, from where it was.
    let mut seen: Vec<(u64, Value)> = vec![(id, first.clone())];
    for frame in rae_on_a.until_end().await {
        assert_eq!(frame.event, "client_response", "on A: {frame:?}");
        seen.push((frame.id.expect("an id"), frame.data["message"].clone()));
    }
    let last = seen.last().expect("the first message").0;
    let (mut rae_on_b, roster) = cluster.nodes[1].attach_roster(&rae, Some(last)).await;
    assert_eq!(
        roster,
        sessions(&[&sam]),
        "the same session, still with sam"
    );
    while seen.len() < accepted.len() + 1 {
        let frame = rae_on_b.next().await;
        assert_eq!(frame.event, "client_response", "on B: {frame:?}");
        seen.push((frame.id.expect("an id"), frame.data["message"].clone()));
    }
    let mut expected = vec![(id, first)];
    expected.extend(accepted);
    assert_eq!(
        seen, expected,
        "every accepted message once, in order, same ids"
    );

    // rae's token works on B, and sam heard no user_left or new_user: this is next.
    let marker = json!("still here");
    let id = cluster.nodes[1].respond(&rae, &sam, &marker).await;
    sam_on_b.expect_response(id, &rae, &sam, &marker).await;
    assert_eq!(cluster.nodes[1].clients().await, sessions(&[&rae, &sam]));
    assert!(
        cluster.nodes[0]
            .log()
            .iter()
            .any(|line| line.contains("handed every session to the cluster")),
        "A says what it did"
    );
}
