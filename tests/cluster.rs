//! Cluster mode, tested for real: each test starts its own `redis-server` on an ephemeral port
//! and two or three `switchboard` processes (the real binary) pointed at it with a prefix of
//! their own, then drives them over HTTP across instances.
//!
//! Synchronisation never rests on a bare sleep:
//! - every HTTP call and every SSE read is bounded by [`WAIT`], so a missing answer or event
//!   fails the test in seconds instead of hanging it;
//! - "eventually" conditions (a dead instance's sessions leaving, health coming back) are polled
//!   until a deadline;
//! - [`Cluster::settle`] is a barrier on the bus (see `support::cluster`). Settling after every
//!   `helo` makes presence deterministic: a session hears `new_user` exactly for the sessions
//!   registered after it.
//!
//! "Nothing else arrived" is checked with a marker: a direct message sent afterwards must be the
//! very next event of the stream.
//!
//! A failing test prints the end of each instance's log; `CLUSTER_LOGS=1` prints them always.
//!
//! Needs `redis-server` (Debian: `apt-get install -y redis-server`); without it every test fails
//! and says so.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::cluster::{Cluster, Redis};
use support::*;
use tokio::time::sleep;

/// How long an instance's liveness key outlives its last refresh (`backplane::cluster::LIVENESS`);
/// every instance sweeps the directory once a third of it.
const LIVENESS: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn helo_on_one_instance_announces_new_user_on_the_others_but_not_to_the_newcomer() {
    let cluster = Cluster::start("helo", &[&[], &[], &[]]).await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let bea = b.helo("bea").await;
    cluster.settle().await;
    let cid = c.helo("cid").await;
    cluster.settle().await;
    let (mut bea_stream, roster) = b.attach_roster(&bea, None).await;
    assert_eq!(roster, sessions(&[&cid]));
    let first = bea_stream.expect_new_user(&cid).await;
    let (mut cid_stream, roster) = c.attach_roster(&cid, None).await;
    assert_eq!(roster, sessions(&[&bea]));

    let ann = a.helo("ann").await;
    let on_b = bea_stream.expect_new_user(&ann).await;
    assert!(on_b > first, "ids increase within bea's stream");
    cid_stream.expect_new_user(&ann).await;

    let (mut ann_stream, roster) = a.attach_roster(&ann, None).await;
    assert_eq!(roster, sessions(&[&bea, &cid]));
    // Markers: what arrives next was sent after the helo, so nothing came in between: the
    // newcomer heard nothing about itself and the others heard about it once.
    let marker = json!("welcome");
    let id = b.respond(&bea, &ann, &marker).await;
    ann_stream.expect_response(id, &bea, &ann, &marker).await;
    let id = a.respond(&ann, &cid, &marker).await;
    cid_stream.expect_response(id, &ann, &cid, &marker).await;
    let id = c.respond(&cid, &bea, &marker).await;
    bea_stream.expect_response(id, &cid, &bea, &marker).await;
}

#[tokio::test]
async fn response_through_one_instance_reaches_a_recipient_attached_to_another_with_the_same_id() {
    let cluster = Cluster::start("response", &[&[], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let sam = a.helo("sam").await;
    cluster.settle().await;
    let rae = b.helo("rae").await;
    cluster.settle().await;
    let (mut rae_stream, roster) = b.attach_roster(&rae, None).await;
    assert_eq!(roster, sessions(&[&sam]));

    let message = json!({"text": "hi from A", "n": [1, 2, 3], "nested": {"ok": true}});
    let first = a.respond(&sam, &rae, &message).await;
    rae_stream
        .expect_response(first, &sam, &rae, &message)
        .await;

    let again = json!("again");
    let second = a.respond(&sam, &rae, &again).await;
    assert!(second > first, "event ids increase: {first} then {second}");
    rae_stream.expect_response(second, &sam, &rae, &again).await;
}

#[tokio::test]
async fn broadcast_through_one_instance_reaches_the_others_with_a_single_redis_publish() {
    let cluster = Cluster::start("broadcast", &[&[], &[], &[]]).await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let sam = a.helo("sam").await;
    cluster.settle().await;
    let bea = b.helo("bea").await;
    cluster.settle().await;
    let cid = c.helo("cid").await;
    cluster.settle().await;
    let cyd = c.helo("cyd").await;
    cluster.settle().await;

    let (mut sam_stream, _) = a.attach_roster(&sam, None).await;
    for newer in [&bea, &cid, &cyd] {
        sam_stream.expect_new_user(newer).await;
    }
    let (mut bea_stream, _) = b.attach_roster(&bea, None).await;
    for newer in [&cid, &cyd] {
        bea_stream.expect_new_user(newer).await;
    }
    let (mut cid_stream, _) = c.attach_roster(&cid, None).await;
    cid_stream.expect_new_user(&cyd).await;
    let (mut cyd_stream, _) = c.attach_roster(&cyd, None).await;
    // From here on nothing publishes on its own: the instances only refresh their liveness.
    cluster.settle().await;

    let before = cluster.redis.publish_calls().await;
    let message = json!({"text": "to everyone", "list": [1, 2]});
    assert_eq!(a.broadcast_ok(&sam, &message).await, 3);
    let expected = json!({"from": sam.id, "from_name": sam.name, "message": message});
    for stream in [&mut bea_stream, &mut cid_stream, &mut cyd_stream] {
        let frame = stream.next().await;
        assert_eq!(frame.event, "client_broadcast", "{}", stream.label);
        assert!(frame.id.is_some());
        assert_eq!(frame.data, expected, "{}", stream.label);
    }
    let after = cluster.redis.publish_calls().await;
    assert_eq!(
        after - before,
        1,
        "one PUBLISH for a broadcast to 3 sessions on 2 other instances"
    );

    // The sender did not hear its own broadcast; the others heard it once.
    let marker = json!("marker");
    let id = b.respond(&bea, &sam, &marker).await;
    sam_stream.expect_response(id, &bea, &sam, &marker).await;
    for (stream, who) in [
        (&mut bea_stream, &bea),
        (&mut cid_stream, &cid),
        (&mut cyd_stream, &cyd),
    ] {
        let id = a.respond(&sam, who, &marker).await;
        stream.expect_response(id, &sam, who, &marker).await;
    }
}

#[tokio::test]
async fn clients_on_any_instance_lists_every_session_of_the_cluster() {
    let cluster = Cluster::start("clients", &[&[], &[], &[]]).await;
    let mut everyone = Vec::new();
    for (n, node) in cluster.nodes.iter().enumerate() {
        for k in 0..2 {
            everyone.push(node.helo(&format!("user-{n}-{k}")).await);
        }
    }
    let expected = sessions(&everyone.iter().collect::<Vec<_>>());
    assert_eq!(expected.len(), 6);
    for node in &cluster.nodes {
        assert_eq!(node.clients().await, expected, "/clients on {}", node.label);
    }
}

#[tokio::test]
async fn a_token_issued_by_one_instance_works_on_another() {
    let cluster = Cluster::start("token", &[&[], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let xan = a.helo("xan").await;
    cluster.settle().await;
    let yul = b.helo("yul").await;
    cluster.settle().await;
    let (mut yul_stream, _) = b.attach_roster(&yul, None).await;

    // xan's token, issued by A, authenticates a response on B...
    let message = json!("sent through B with a token from A");
    let id = b.respond(&xan, &yul, &message).await;
    yul_stream.expect_response(id, &xan, &yul, &message).await;

    // ...and attaches xan's stream on B, with what waited in its mailbox on A.
    let (mut xan_stream, roster) = b.attach_roster(&xan, None).await;
    assert_eq!(roster, sessions(&[&yul]));
    xan_stream.expect_new_user(&yul).await;

    // Now homed on B, xan's token still works on A, and messages through A reach it.
    let message = json!("through A");
    let id = a.respond(&xan, &yul, &message).await;
    yul_stream.expect_response(id, &xan, &yul, &message).await;
    let id = a.respond(&yul, &xan, &message).await;
    xan_stream.expect_response(id, &yul, &xan, &message).await;
}

#[tokio::test]
async fn a_join_tokens_user_and_broadcast_permission_hold_on_every_instance() {
    use support::jwt::{SECRET, claims, hs256, join, secret_file, with};

    let secret = secret_file(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")));
    let flags = [
        "--auth",
        "jwt",
        "--jwt-secret-file",
        secret.to_str().unwrap(),
    ];
    let cluster = Cluster::start("jwt", &[&flags, &flags]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let muted = with(claims("quiet"), json!({ "broadcast": false }));
    let quiet = join(a, &hs256(SECRET, &muted)).await;
    cluster.settle().await;
    let loud = join(b, &hs256(SECRET, &claims("loud"))).await;
    cluster.settle().await;

    // Both instances list both users, from the directory.
    for node in [a, b] {
        let list = body_json(node.get_as_backend("/clients").await).await;
        let mut users: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|peer| peer["user"].as_str().expect("a user"))
            .collect();
        users.sort_unstable();
        assert_eq!(
            users,
            ["user-loud", "user-quiet"],
            "/clients on {}",
            node.label
        );
    }
    // quiet may not broadcast, through its home or through the other instance...
    let refused_everywhere = async || {
        for node in [a, b] {
            let response = node.broadcast(&quiet, "hello all").await;
            assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
        }
    };
    refused_everywhere().await;
    // ...nor after its session moved to B with its stream.
    let mut quiet_stream = b.attach(&quiet, None).await;
    let ready = quiet_stream.ready().await;
    assert_eq!(
        ready["clients"],
        json!([{ "id": loud.id, "name": "loud", "user": "user-loud" }])
    );
    let frame = quiet_stream.next_named("new_user").await;
    assert_eq!(frame.data["user"], "user-loud");
    refused_everywhere().await;
    assert_eq!(a.broadcast_ok(&loud, "hello all").await, 1);
    let _ = std::fs::remove_file(secret);
}

#[tokio::test]
async fn forged_and_stale_tokens_are_refused_by_every_instance() {
    let cluster = Cluster::start("forged", &[&[], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let xan = a.helo("xan").await;
    let yul = b.helo("yul").await;
    let forged = forged_token(&xan);
    let message = json!({"message": "forged"});
    for node in [a, b] {
        let response = node.response_as(&forged, &yul.id, &json!("forged")).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let response = node
            .post_raw("/broadcast", Some(&forged), &message.to_string())
            .await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let response = node.events_response(&xan.id, &forged, None).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let response = node.delete(&forged).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    // The forgeries changed nothing.
    for node in [a, b] {
        assert_eq!(node.clients().await, sessions(&[&xan, &yul]));
    }

    // Once xan has left, its genuine token is stale everywhere.
    assert_eq!(a.delete(&xan.token).await.status(), StatusCode::NO_CONTENT);
    for node in [a, b] {
        let response = node.response_as(&xan.token, &yul.id, &json!("stale")).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let response = node
            .post_raw("/broadcast", Some(&xan.token), &message.to_string())
            .await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let response = node.events_response(&xan.id, &xan.token, None).await;
        assert_error(response, StatusCode::NOT_FOUND, "unknown_session").await;
        assert_eq!(node.clients().await, sessions(&[&yul]));
    }
}

#[tokio::test]
async fn reattaching_through_another_instance_resumes_after_last_event_id_with_the_same_ids() {
    let cluster = Cluster::start("handover", &[&[], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let rae = a.helo("rae").await;
    cluster.settle().await;
    let sam = b.helo("sam").await;
    cluster.settle().await;
    let (mut on_a, roster) = a.attach_roster(&rae, None).await;
    assert_eq!(roster, sessions(&[&sam]));
    let joined = on_a.expect_new_user(&sam).await;

    let messages: Vec<Value> = (1..=5).map(|n| json!({"n": n})).collect();
    let mut ids = Vec::new();
    for message in &messages {
        ids.push(b.respond(&sam, &rae, message).await);
    }
    assert!(
        ids[0] > joined && ids.windows(2).all(|w| w[0] < w[1]),
        "{ids:?}"
    );
    // The client reads two of them on A, then its connection moves to B.
    on_a.expect_response(ids[0], &sam, &rae, &messages[0]).await;
    on_a.expect_response(ids[1], &sam, &rae, &messages[1]).await;

    let (mut on_b, roster) = b.attach_roster(&rae, Some(ids[1])).await;
    assert_eq!(roster, sessions(&[&sam]));
    for (id, message) in ids.iter().zip(&messages).skip(2) {
        on_b.expect_response(*id, &sam, &rae, message).await;
    }

    // The stream on A ends; what it still had in flight is a prefix of the same events.
    let rest: Vec<Option<u64>> = on_a.until_end().await.iter().map(|f| f.id).collect();
    let sent: Vec<Option<u64>> = ids[2..].iter().copied().map(Some).collect();
    assert!(sent.starts_with(&rest), "A's stream ended after {rest:?}");

    // The session now lives on B: a message through A follows it, next in line.
    let later = json!("after the move");
    let id = a.respond(&sam, &rae, &later).await;
    assert!(id > ids[4], "ids keep increasing after the move: {id}");
    on_b.expect_response(id, &sam, &rae, &later).await;
}

#[tokio::test]
async fn reattaching_through_another_instance_after_evictions_reports_lagged_first() {
    let small = ["--mailbox-size", "4"];
    let cluster = Cluster::start("lagged", &[&small, &small]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let sam = a.helo("sam").await;
    cluster.settle().await;
    let rae = a.helo("rae").await;
    cluster.settle().await;
    let (mut on_a, _) = a.attach_roster(&rae, None).await;
    let hello = json!("read this one");
    let seen = a.respond(&sam, &rae, &hello).await;
    on_a.expect_response(seen, &sam, &rae, &hello).await;
    drop(on_a);

    // Ten broadcasts while detached: the mailbox keeps the newest 4, so 6 are gone.
    for n in 1..=10 {
        assert_eq!(a.broadcast_ok(&sam, &json!({"n": n})).await, 1);
    }
    let (mut on_b, _) = b.attach_roster(&rae, Some(seen)).await;
    let lagged = on_b.next().await;
    assert_eq!(lagged.event, "lagged");
    assert_eq!(lagged.id, None, "lagged carries no id");
    assert_eq!(lagged.data, json!({"missed": 6}));
    for n in 7..=10 {
        let frame = on_b.next().await;
        assert_eq!(frame.event, "client_broadcast");
        assert_eq!(frame.id, Some(seen + n), "the same ids as on A");
        assert_eq!(
            frame.data,
            json!({"from": sam.id, "from_name": sam.name, "message": {"n": n}})
        );
    }
    let marker = json!("marker");
    let id = a.respond(&sam, &rae, &marker).await;
    assert_eq!(id, seen + 11);
    on_b.expect_response(id, &sam, &rae, &marker).await;
}

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
        ("user_left", &xan.peer())
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
        ("user_left", &xan.peer())
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
async fn a_killed_instance_leaves_no_ghost_sessions_and_its_sessions_leave_with_user_left() {
    let mut cluster = Cluster::start("crash", &[&[], &[]]).await;
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
    // Well within the 30 s TTL: the dead instance's liveness key lasts 3 s.
    let limit = Duration::from_secs(10);
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

#[tokio::test]
async fn a_redis_restart_makes_health_and_writes_503_then_the_cluster_recovers_by_itself() {
    let mut cluster = Cluster::start("restart", &[&[], &[]]).await;
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
