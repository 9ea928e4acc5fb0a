//! The admin console's server side: `/admin` only with the server API, and `/api/stats`
//! behind the key, its figures following what clients do. The page itself is driven in
//! Chromium by `tests/browser/admin.rs`.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use serde_json::json;

use crate::support::stats::StatsStream;
use crate::support::{Config, assert_error, send, spawn_app, test_config};

#[tokio::test]
async fn the_console_is_served_only_with_the_server_api() {
    let without = spawn_app(Config {
        api_key_file: None,
        ..test_config()
    })
    .await;
    for path in ["/admin", "/admin/", "/admin/admin.js", "/api/stats"] {
        assert_error(without.get(path).await, StatusCode::NOT_FOUND, "not_found").await;
    }

    let with = spawn_app(test_config()).await;
    let page = with.get("/admin").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(
        page.headers()[CONTENT_SECURITY_POLICY],
        "default-src 'self'; frame-ancestors 'none'"
    );
    let script = with.get("/admin/admin.js").await;
    assert_eq!(script.status(), StatusCode::OK);
    assert_eq!(
        with.get("/admin/missing.js").await.status(),
        StatusCode::NOT_FOUND
    );
    let post = send(with.client.post(with.url("/admin"))).await;
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn stats_need_the_key_and_follow_the_hub() {
    let app = spawn_app(test_config()).await;
    for credential in [None, Some("not-the-api-key-at-all")] {
        let mut request = app.client.get(app.url("/api/stats"));
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        assert_error(
            send(request).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    }

    let mut stats = StatsStream::open(&app).await;
    let first = stats.next().await;
    assert_eq!(first["state"], "ready", "{first}");
    assert_eq!(first["sessions"], 0, "{first}");
    assert!(first["instance"].as_str().is_some_and(|id| !id.is_empty()));

    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let _cy = app.helo_in("cy", json!(["dev"])).await;
    let mut bob_stream = app.attach_ready(&bob).await;
    let figures = stats
        .until("three sessions and a stream", |f| {
            f["sessions"] == 3 && f["streams"] == 1
        })
        .await;
    assert_eq!(
        figures["rooms"],
        json!([{"room": "lobby", "members": 2}, {"room": "dev", "members": 1}]),
        "largest first"
    );
    assert_eq!(figures["room_count"], 2);

    // Rates are per second: sending until both show is bounded by `until`'s deadline.
    let (mut sent, mut delivered) = (false, false);
    while !(sent && delivered) {
        let id = app.respond(&ann, &bob, json!("hello")).await;
        bob_stream
            .expect_response(id, &ann, &bob, &json!("hello"))
            .await;
        let figures = stats
            .until("a second with traffic", |f| {
                f["messages_per_second"].as_f64() > Some(0.0)
                    || f["deliveries_per_second"].as_f64() > Some(0.0)
            })
            .await;
        sent |= figures["messages_per_second"].as_f64() >= Some(1.0);
        delivered |= figures["deliveries_per_second"].as_f64() >= Some(1.0)
            && figures["latency_p99_ms"]
                .as_f64()
                .is_some_and(|ms| ms > 0.0);
    }
    assert_eq!(figures["refusals"]["helo_rate"], 0);
}
