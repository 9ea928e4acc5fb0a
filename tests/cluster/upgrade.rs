//! Rolling upgrades: the previous release's binary and this one serve one cluster side by side,
//! with traffic across both in both directions, until the old one is replaced by a deploy; and
//! what a newer instance may send that this one does not know is ignored, logged and counted.
//!
//! The previous release is built by `scripts/prev-release.sh` into `target/prev/switchboard`
//! (once; `scripts/test.sh` runs it first). A missing binary is built here, and a failed build
//! fails the test: it is never skipped.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::time::sleep;

use crate::support::cluster::{Cluster, bus_reads};
use crate::support::*;

/// The previous release's binary, built if missing.
fn previous_release() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let status = Command::new("bash")
                .arg(root.join("scripts/prev-release.sh"))
                .current_dir(&root)
                .status()
                .expect("running scripts/prev-release.sh");
            assert!(
                status.success(),
                "could not build the previous release: scripts/prev-release.sh {status}"
            );
            let binary = root.join("target/prev/switchboard");
            assert!(binary.exists(), "{} is missing", binary.display());
            binary
        })
        .clone()
}

/// `switchboard_bus_messages_ignored_total{reason}` on `node`.
async fn ignored(node: &Endpoint, reason: &str) -> u64 {
    let series = format!("switchboard_bus_messages_ignored_total{{reason=\"{reason}\"}}");
    sample(&node.metrics().await, &series).map_or(0, |n| n as u64)
}

#[tokio::test]
async fn the_previous_release_and_this_one_serve_one_cluster_side_by_side() {
    let previous = previous_release();
    let mut cluster = Cluster::start_own("upgrade", &[&[]]).await;
    let old = cluster.add_program("OLD", &previous, &[]).await;
    cluster.settle().await;
    let (new, old_node) = (&cluster.nodes[0], &cluster.nodes[old]);
    new.log_line("an instance of an older protocol is alive")
        .await;

    // Joins across versions, in the lobby and in a room.
    let ann = new.helo_in("ann", json!(["lobby", "dev"])).await;
    cluster.settle().await;
    let mut ann_stream = new.attach_ready(&ann).await;
    let olga = old_node.helo_in("olga", json!(["lobby", "dev"])).await;
    let mut heard = vec![
        ann_stream.next_named("new_user").await.data,
        ann_stream.next_named("new_user").await.data,
    ];
    heard.sort_by_key(|member| member["room"].as_str().map(str::to_owned));
    assert_eq!(
        heard,
        [olga.member("dev"), olga.member("lobby")],
        "once per room"
    );
    let mut olga_stream = old_node.attach_ready(&olga).await;
    let ben = new.helo_in("ben", json!(["dev"])).await;
    assert_eq!(
        olga_stream.next_named("new_user").await.data,
        ben.member("dev")
    );
    ann_stream.next_named("new_user").await;
    let mut ben_stream = new.attach_ready(&ben).await;

    // Direct messages, both ways.
    let id = new.respond(&ann, &olga, "to the old one").await;
    olga_stream
        .expect_response(id, &ann, &olga, &json!("to the old one"))
        .await;
    let id = old_node.respond(&olga, &ann, "to the new one").await;
    ann_stream
        .expect_response(id, &olga, &ann, &json!("to the new one"))
        .await;

    // Broadcasts, both ways: the lobby, and a room while an old instance lives (on the bus).
    new.broadcast_ok(&ann, "hello lobby").await;
    let heard = olga_stream.next_named("client_broadcast").await.data;
    assert_eq!(
        (&heard["room"], &heard["message"]),
        (&json!("lobby"), &json!("hello lobby"))
    );
    old_node.broadcast_ok(&olga, "hello back").await;
    assert_eq!(
        ann_stream.next_named("client_broadcast").await.data["message"],
        "hello back"
    );
    for (node, from, text) in [
        (new, &ben, "dev from new"),
        (old_node, &olga, "dev from old"),
    ] {
        let body = json!({"room": "dev", "message": text}).to_string();
        let response = node.post_raw("/broadcast", Some(&from.token), &body).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{text}");
        assert_eq!(
            ann_stream.next_named("client_broadcast").await.data["message"],
            text
        );
    }
    assert_eq!(
        olga_stream.next_named("client_broadcast").await.data["message"],
        "dev from new"
    );
    assert_eq!(
        ben_stream.next_named("client_broadcast").await.data["message"],
        "dev from old"
    );

    // Joining and leaving a room through the other version's instance.
    assert_eq!(new.join_room(&olga, "ops").await, 1);
    olga_stream.next_named("joined").await;
    assert_eq!(old_node.join_room(&ann, "ops").await, 2);
    ann_stream.next_named("joined").await;
    assert_eq!(
        olga_stream.next_named("new_user").await.data,
        ann.member("ops")
    );
    let response = old_node.room_request(Method::DELETE, &ann, "ops").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    ann_stream.next_named("left").await;
    assert_eq!(
        olga_stream.next_named("user_left").await.data,
        ann.member("ops")
    );

    // A session's stream moves to the other version's instance, and back.
    drop(ben_stream);
    let mut ben_stream = old_node.attach(&ben, None).await;
    ben_stream.ready().await;
    let id = new.respond(&ann, &ben, "on the old one now").await;
    ben_stream
        .expect_response(id, &ann, &ben, &json!("on the old one now"))
        .await;
    drop(ben_stream);
    let mut ben_stream = new.attach(&ben, None).await;
    ben_stream.ready().await;
    let id = old_node.respond(&olga, &ben, "back on the new one").await;
    ben_stream
        .expect_response(id, &olga, &ben, &json!("back on the new one"))
        .await;

    // While the old instance lives, room traffic rides the bus it reads: nothing on rooms'.
    cluster.settle().await;
    assert_eq!(bus_reads(new, "room").await, 0);
    for reason in ["unknown_kind", "unknown_field", "malformed"] {
        assert_eq!(ignored(new, reason).await, 0, "{reason}");
    }

    // A refresh of a session homed on the old instance, which knows no lifetimes: the new
    // instance records the end in the directory and answers (it used to wait for an answer
    // that never came: 503). The old instance does not enforce it; the new one it drains to does.
    let oz = old_node.helo_in("oz", json!(["solo"])).await;
    let ends = jsonwebtoken::get_current_timestamp() + 6;
    let refreshed = send(
        new.client
            .post(new.url("/api/refresh"))
            .bearer_auth(TEST_API_KEY)
            .json(&json!({ "to": { "session": oz.id }, "expires_at": ends })),
    )
    .await;
    assert_eq!(
        refreshed.status(),
        StatusCode::OK,
        "answered for the old home"
    );
    assert_eq!(body_json(refreshed).await, json!({ "refreshed": 1 }));

    // The deploy: the old instance drains to the new one and comes back as this release.
    cluster.restart(old).await;
    cluster.settle().await;
    let (new, upgraded) = (&cluster.nodes[0], &cluster.nodes[old]);
    let mut olga_stream = upgraded.attach(&olga, None).await;
    olga_stream.ready().await;
    let body = json!({"room": "dev", "message": "after the upgrade"}).to_string();
    let response = new.post_raw("/broadcast", Some(&ann.token), &body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let heard = olga_stream.next_named("client_broadcast").await.data;
    assert_eq!(heard["message"], "after the upgrade");
    let id = upgraded.respond(&olga, &ann, "upgraded").await;
    ann_stream
        .expect_response(id, &olga, &ann, &json!("upgraded"))
        .await;

    // oz, drained to a new instance, ends at the end recorded for it there (long before its
    // TTL would remove it), and its token then says why.
    let gone_by = Instant::now() + Duration::from_secs(15);
    while new.client_ids().await.contains(&oz.id) {
        assert!(
            Instant::now() < gone_by,
            "oz outlived the end recorded for it"
        );
        sleep(POLL).await;
    }
    let refused = upgraded.delete(&oz.token).await;
    assert_error(refused, StatusCode::UNAUTHORIZED, "session_expired").await;
}

#[tokio::test]
async fn what_a_newer_instance_sends_that_this_one_does_not_know_is_logged_and_counted() {
    let cluster = Cluster::start_own("newer", &[&[], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let ann = a.helo("ann").await;
    let bob = b.helo("bob").await;
    cluster.settle().await;
    let mut bob_stream = b.attach_ready(&bob).await;
    let bus = format!("{}:bus", cluster.prefix);
    // A kind it does not know, twice; a known kind with a field it does not know; junk.
    for _ in 0..2 {
        cluster
            .publish_raw(&bus, r#"{"v":4,"type":"teleport","body":{"to":"mars"}}"#)
            .await;
    }
    // As instances write them: the version first, the kind before its body.
    let newer =
        r#"{"v":4,"type":"announce","body":{"message":"from the future","priority":"high"}}"#;
    cluster.publish_raw(&bus, newer).await;
    cluster.publish_raw(&bus, "not json").await;
    cluster.settle().await;

    // The known part is applied; the connection and the instance carry on.
    let heard = bob_stream.next_named("server_message").await.data;
    assert_eq!(heard["message"], "from the future");
    let id = a.respond(&ann, &bob, "still here").await;
    bob_stream
        .expect_response(id, &ann, &bob, &json!("still here"))
        .await;
    for node in [a, b] {
        assert_eq!(ignored(node, "unknown_kind").await, 2);
        assert_eq!(ignored(node, "unknown_field").await, 1);
        assert_eq!(ignored(node, "malformed").await, 1);
        let (line, _) = node.log_line("a kind this version does not know").await;
        assert!(line.contains("teleport"), "{line}");
        let logged = node
            .log()
            .iter()
            .filter(|l| l.contains("does not know (a newer"))
            .count();
        assert_eq!(logged, 1, "logged once");
    }
}
