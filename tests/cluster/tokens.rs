//! Tokens across instances: a session token or a join token issued through one instance holds on
//! every other, and forged or stale ones are refused everywhere.

use reqwest::StatusCode;
use serde_json::json;

use crate::support;
use crate::support::cluster::Cluster;
use crate::support::*;

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
