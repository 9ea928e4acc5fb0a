//! The operational routes: `/healthz`, `/metrics`, `/clients`, `/openapi.yaml`, static files,
//! and CORS.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::support::*;

#[tokio::test]
async fn healthz_reports_ok_with_counts_and_the_stream_limit() {
    let app = spawn_app(Config {
        max_streams: Some(7),
        ..test_config()
    })
    .await;
    assert_eq!(
        app.health().await,
        json!({"status": "ok", "sessions": 0, "streams": 0, "stream_limit": 7})
    );

    let ann = app.helo("ann").await;
    app.helo("bob").await;
    let _stream = app.attach_ready(&ann).await;

    assert_eq!(
        app.health().await,
        json!({"status": "ok", "sessions": 2, "streams": 1, "stream_limit": 7})
    );
}

#[tokio::test]
async fn healthz_stream_limit_defaults_to_the_open_file_limit_less_the_reserve() {
    // The documented formula, computed here from limits the test sets in the child process
    // before it execs (soft and hard alike), not from the code under test.
    const RESERVED: u64 = 512;
    for open_files in [900, 1300] {
        let server = Instance::launch("stream limit")
            .open_file_limit(open_files)
            .start(&[])
            .await;

        let health = server.health().await;

        assert_eq!(
            health["stream_limit"],
            open_files - RESERVED,
            "with {open_files} open files: {health}"
        );
    }
}

/// The value of the counter or gauge `series` (name and labels, exactly); fails without one.
fn metric(text: &str, series: &str) -> u64 {
    sample(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}")) as u64
}

#[tokio::test]
async fn metrics_count_sessions_streams_events_evictions_refusals_and_requests() {
    let app = spawn_app(Config {
        mailbox_size: 2,
        heartbeat: Duration::from_secs(600),
        ..test_config()
    })
    .await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    let mut ann_stream = app.attach_ready(&ann).await;
    ann_stream.next_named("new_user").await;
    app.respond(&bob, &ann, json!("hi ann")).await;
    ann_stream.next_named("client_response").await;
    // Bob is detached: two direct messages fill his mailbox, the third is refused, and a
    // broadcast finds no room beside them (direct messages are never evicted): bob lags by one.
    app.respond(&ann, &bob, json!(1)).await;
    app.respond(&ann, &bob, json!(2)).await;
    assert_eq!(
        app.post_response(&ann, &bob.id, json!(3)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    app.broadcast_ok(&ann, json!("all")).await;
    let mut bob_stream = app.attach_ready(&bob).await;
    bob_stream.next_named("client_response").await;
    bob_stream.next_named("client_response").await;
    bob_stream.next_named("lagged").await;
    app.broadcast_ok(&bob, json!("all")).await;
    ann_stream.next_named("client_broadcast").await;

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = body_text(response).await;

    let expected = [
        ("switchboard_sessions", 2),
        ("switchboard_streams", 2),
        (r#"switchboard_events_delivered_total{event="ready"}"#, 2),
        (r#"switchboard_events_delivered_total{event="new_user"}"#, 1),
        (
            r#"switchboard_events_delivered_total{event="client_response"}"#,
            3,
        ),
        (
            r#"switchboard_events_delivered_total{event="client_broadcast"}"#,
            1,
        ),
        (
            r#"switchboard_events_delivered_total{event="user_left"}"#,
            0,
        ),
        (r#"switchboard_events_delivered_total{event="lagged"}"#, 1),
        // Heartbeats are not events: counted apart (none within a 600 s heartbeat).
        ("switchboard_heartbeats_total", 0),
        ("switchboard_mailbox_evictions_total", 1),
        ("switchboard_mailbox_full_total", 1),
        (
            r#"switchboard_http_requests_total{route="/helo",status="201"}"#,
            2,
        ),
        (
            r#"switchboard_http_requests_total{route="/events/{id}",status="200"}"#,
            2,
        ),
        (
            r#"switchboard_http_requests_total{route="/response",status="202"}"#,
            3,
        ),
        (
            r#"switchboard_http_requests_total{route="/response",status="429"}"#,
            1,
        ),
        (
            r#"switchboard_http_requests_total{route="/broadcast",status="202"}"#,
            2,
        ),
    ];
    for (series, value) in expected {
        assert_eq!(metric(&text, series), value, "{series}");
    }
    assert!(
        // The classic text format names a counter family with its `_total` suffix.
        text.contains("# TYPE switchboard_events_delivered_total counter"),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_label_requests_by_route_template_never_by_id() {
    let app = spawn_app(test_config()).await;
    let ann = app.helo("ann").await;
    app.get("/events/00000000-0000-4000-8000-000000000000")
        .await;
    app.get("/nope").await;

    let text = app.metrics().await;

    assert_eq!(
        metric(
            &text,
            r#"switchboard_http_requests_total{route="/events/{id}",status="401"}"#
        ),
        1
    );
    assert_eq!(
        metric(
            &text,
            r#"switchboard_http_requests_total{route="static",status="404"}"#
        ),
        1
    );
    assert!(!text.contains(&ann.id), "a session id leaked into a label");
    assert!(
        !text.contains("00000000-0000"),
        "a path leaked into a label"
    );
}

#[tokio::test]
async fn clients_lists_every_registered_session_with_id_and_name() {
    let app = spawn_app(test_config()).await;
    assert_eq!(
        body_json(app.get_as_backend("/clients").await).await,
        json!([])
    );
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;

    let response = app.get_as_backend("/clients").await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_json_content_type(response.headers());
    let mut clients = body_json(response).await.as_array().unwrap().clone();
    clients.sort_by_key(|c| c["name"].as_str().unwrap().to_owned());
    assert_eq!(clients, [ann.peer(), bob.peer()]);
}

#[tokio::test]
async fn openapi_yaml_is_served_as_written() {
    let app = spawn_app(test_config()).await;

    let response = app.get("/openapi.yaml").await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/yaml");
    let body = body_text(response).await;
    assert_eq!(body, include_str!("../../openapi.yaml"));
}

#[tokio::test]
async fn root_serves_the_web_client_from_public_dir() {
    let app = spawn_app(test_config()).await;
    let index =
        std::fs::read_to_string(public_dir().join("index.html")).expect("public/index.html exists");

    let response = app.get("/").await;

    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert_eq!(body_text(response).await, index);
    let index_by_name = app.get("/index.html").await;
    assert_eq!(index_by_name.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_client_module_and_its_types_have_their_content_types() {
    // Built in, and from a directory: `.ts` is not a video here.
    let built_in = spawn_app(Config {
        public_dir: None,
        ..test_config()
    })
    .await;
    let from_dir = spawn_app(test_config()).await;
    for app in [built_in, from_dir] {
        for (path, expected) in [
            ("/switchboard.js", "text/javascript"),
            ("/switchboard/client.js", "text/javascript"),
            ("/switchboard.d.ts", "application/typescript"),
        ] {
            let response = app.get(path).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let content_type = response.headers()["content-type"].to_str().unwrap();
            assert!(content_type.starts_with(expected), "{path}: {content_type}");
        }
    }
}

#[tokio::test]
async fn static_files_come_from_the_configured_directory_only() {
    let dir = std::env::temp_dir().join(format!("switchboard-api-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>own</title>").unwrap();
    std::fs::write(dir.join("hello.txt"), "hello").unwrap();
    let app = spawn_app(Config {
        public_dir: Some(dir.clone()),
        ..test_config()
    })
    .await;

    assert_eq!(
        body_text(app.get("/").await).await,
        "<!doctype html><title>own</title>"
    );
    assert_eq!(body_text(app.get("/hello.txt").await).await, "hello");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Request targets that would leave the served directory for its parent if a path were
/// joined naively: dot segments plain, percent-encoded, with encoded slashes, and with
/// backslashes, raw or encoded.
const ESCAPES: [&str; 14] = [
    "/../{file}",
    "/%2e%2e/{file}",
    "/%2E%2E/{file}",
    "/..%2f{file}",
    "/..%2F{file}",
    "/%2e%2e%2f{file}",
    "/./../{file}",
    "/index.html/../../{file}",
    "//../{file}",
    "/..\\{file}",
    "/..%5c{file}",
    "/%2e%2e%5c{file}",
    "/%2e%2e%5C{file}",
    "/.%2e/{file}",
];

/// Sends `target` verbatim on a raw socket (reqwest would normalise the dot segments away);
/// the status and the whole answer's bytes.
async fn raw_get(app: &Endpoint, target: &str) -> (u16, Vec<u8>) {
    let request = format!("GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let mut socket = timeout(WAIT, TcpStream::connect(app.authority()))
        .await
        .expect("connect within the wait")
        .expect("connect");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    timeout(WAIT, socket.read_to_end(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("{target}: no whole answer within the wait"))
        .expect("reading the answer");
    let head = String::from_utf8_lossy(&answer);
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{target}: not an HTTP answer: {head}"));
    (status, answer)
}

/// Asserts every escape toward `file` (which sits in the parent of what `app` serves) gets a
/// client error without `secret` anywhere in the answer.
async fn assert_no_escape(app: &Endpoint, file: &str, secret: &[u8]) {
    for template in ESCAPES {
        let target = template.replace("{file}", file);
        let (status, answer) = raw_get(app, &target).await;
        assert!(
            (400..500).contains(&status),
            "{target}: {status} {}",
            String::from_utf8_lossy(&answer)
        );
        assert!(
            !answer.windows(secret.len()).any(|w| w == secret),
            "{target} served the file above the public directory"
        );
    }
}

#[tokio::test]
async fn no_request_target_escapes_the_public_dir() {
    // A secret beside the served directory, where `public/../secret` would find it.
    let root = std::env::temp_dir().join(format!("switchboard-escape-{}", uuid::Uuid::new_v4()));
    let public = root.join("public");
    std::fs::create_dir_all(&public).unwrap();
    std::fs::write(
        public.join("index.html"),
        "<!doctype html><title>own</title>",
    )
    .unwrap();
    let secret = format!("secret-{}", uuid::Uuid::new_v4());
    std::fs::write(root.join("secret"), &secret).unwrap();
    let app = spawn_app(Config {
        public_dir: Some(public),
        ..test_config()
    })
    .await;
    // The directory is served, so a 4xx below is the refusal, not a server serving nothing.
    let (status, page) = raw_get(&app, "/index.html").await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("<title>own</title>"));

    assert_no_escape(&app, "secret", secret.as_bytes()).await;
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn no_request_target_escapes_the_built_in_page() {
    // The built-in page is the crate's `public/`; its parent holds Cargo.toml.
    let app = spawn_app(Config {
        public_dir: None,
        ..test_config()
    })
    .await;
    let (status, _) = raw_get(&app, "/index.html").await;
    assert_eq!(status, 200);

    assert_no_escape(&app, "Cargo.toml", b"[package]").await;
}

#[tokio::test]
async fn cors_headers_are_absent_by_default_and_sent_for_configured_origins() {
    let same_origin = spawn_app(test_config()).await;
    let response = send(
        same_origin
            .client
            .get(same_origin.url("/clients"))
            .header("origin", "https://elsewhere.example"),
    )
    .await;
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let app = app_allowing("https://app.example").await;
    let preflight = send(
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/helo"))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type"),
    )
    .await;
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = send(
        app.client
            .get(app.url("/clients"))
            .header("origin", "https://evil.example"),
    )
    .await;
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // A stream on a connection of its own (served by `lean`) follows the same policy.
    let ann = app.helo("ann").await;
    for (origin, allowed) in [
        ("https://app.example", true),
        ("https://evil.example", false),
    ] {
        let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
        let stream = send(
            fresh
                .get(app.url(&format!("/events/{}", ann.id)))
                .bearer_auth(&ann.token)
                .header("origin", origin),
        )
        .await;
        assert_eq!(stream.status(), StatusCode::OK);
        let echoed = stream.headers().get("access-control-allow-origin");
        assert_eq!(
            echoed.map(|v| v.to_str().unwrap()),
            allowed.then_some(origin),
            "{origin}"
        );
    }
}

#[tokio::test]
async fn allowed_origins_may_send_an_idempotency_key_and_read_retry_after_and_link() {
    let app = app_allowing("https://app.example").await;
    // What switchboard.js sends with a direct message.
    let preflight = send(
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/response"))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            ),
    )
    .await;
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in ["authorization", "content-type", "idempotency-key"] {
        assert!(allowed.contains(header), "{header} not in {allowed}");
    }
    // A page of `/clients` (its `Link`), as a 429 (its `Retry-After`), is read by the page.
    let answer = send(
        app.client
            .get(app.url("/clients"))
            .header("origin", "https://app.example"),
    )
    .await;
    let exposed = answer.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in ["retry-after", "link"] {
        assert!(exposed.contains(header), "{header} not in {exposed}");
    }
}

/// A server that allows calls from `origin` (`--cors-origin`).
async fn app_allowing(origin: &str) -> TestApp {
    spawn_app(Config {
        cors_origins: vec![origin.to_owned()],
        ..test_config()
    })
    .await
}
