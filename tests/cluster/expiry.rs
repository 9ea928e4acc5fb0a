//! Session lifetimes in a cluster: a refresh taken by another instance reaches the session's
//! home, and the end travels with the session when its home drains it elsewhere.

use jsonwebtoken::get_current_timestamp;
use serde_json::json;

use crate::support::cluster::Cluster;
use crate::support::*;

#[tokio::test]
async fn a_refresh_reaches_the_home_and_the_end_survives_a_drain() {
    let mut cluster = Cluster::start("expiry", &[&[], &[]]).await;
    let rae = cluster.nodes[0].helo("rae").await;
    cluster.settle().await;
    let sam = cluster.nodes[1].helo("sam").await;
    cluster.settle().await;
    let mut sam_on_b = cluster.nodes[1].attach_ready(&sam).await;

    // Asked of B; rae lives on A.
    let ends = get_current_timestamp() + 5;
    let refreshed = send(
        cluster.nodes[1]
            .client
            .post(cluster.nodes[1].url("/api/refresh"))
            .bearer_auth(TEST_API_KEY)
            .json(&json!({ "to": { "session": rae.id }, "expires_at": ends })),
    )
    .await;
    assert_eq!(refreshed.status(), 200);
    assert_eq!(body_json(refreshed).await, json!({ "refreshed": 1 }));

    // A stops and drains rae to B, which ends it at the same moment.
    assert!(cluster.nodes[0].terminate().await.success(), "a clean exit");
    let mut rae_on_b = cluster.nodes[1].attach_ready(&rae).await;
    rae_on_b.expect_new_user(&sam).await;
    let warned = rae_on_b.next_named("refresh_required").await;
    assert!(warned.data["expires_in"].as_u64().unwrap() <= 5);
    let expired = rae_on_b.next_named("expired").await;
    assert_eq!(expired.data, json!({ "reason": "server" }));
    rae_on_b.expect_end().await;
    let left = sam_on_b.next_named("user_left").await;
    assert_eq!(left.data["id"], rae.id.as_str());
    let refused = cluster.nodes[1].delete(&rae.token).await;
    assert_error(
        refused,
        reqwest::StatusCode::UNAUTHORIZED,
        "session_expired",
    )
    .await;
}
