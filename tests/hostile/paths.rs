//! The two connection paths behave alike (issue 9): a stream request (`GET /events/…`) is served
//! without hyper, whether it opens its connection or follows other requests on a keep-alive
//! one (hyper hands it over); any other request by hyper. Both answer the same broken head with
//! the same status before closing (no reset) and accept as many header lines (finding 6); both
//! close a stream whose client stopped reading after `--write-timeout`, and an idle connection
//! after `--header-timeout`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{raw, read_response, read_until, small_receiver};
use crate::server::WAIT;
use crate::support::Instance;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

#[tokio::test]
async fn both_paths_answer_a_broken_head_with_the_same_status() {
    let server = Instance::launch("parity").start(&[]).await;
    let events = "/events/0b7e5d2c-1d9e-4b8f-9a77-3f2a1c4e5d6f";
    let lines = |n: usize| -> String { (0..n).map(|i| format!("x-h{i}: v\r\n")).collect() };
    let cases = [
        (
            "a header line without a colon",
            "GET {path} HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n".to_owned(),
            "400",
        ),
        (
            "an unknown version",
            "GET {path} HTTP/9.9\r\nhost: x\r\n\r\n".to_owned(),
            "400",
        ),
        (
            "a control byte in the target",
            "GET {path}\u{1} HTTP/1.1\r\nhost: x\r\n\r\n".to_owned(),
            "400",
        ),
        (
            "a 9 KiB head",
            format!(
                "GET {{path}} HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
                "a".repeat(9000)
            ),
            "431",
        ),
        (
            "120 header lines",
            format!("GET {{path}} HTTP/1.1\r\nhost: x\r\n{}\r\n", lines(120)),
            "431",
        ),
        // Accepted on both: the stream path refuses only the missing token.
        (
            "90 header lines",
            format!(
                "GET {{path}} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{}\r\n",
                lines(90)
            ),
            "?",
        ),
    ];
    for (what, template, expected) in cases {
        let (hyper, _) = raw(&server, template.replace("{path}", "/healthz").as_bytes()).await;
        let (lean, _) = raw(&server, template.replace("{path}", events).as_bytes()).await;
        let (hyper_wanted, lean_wanted) = match expected {
            "?" => (200, 401),
            status => (status.parse().unwrap(), status.parse().unwrap()),
        };
        assert_eq!(hyper, hyper_wanted, "{what} on hyper");
        assert_eq!(lean, lean_wanted, "{what} on the stream path");
    }
}

#[tokio::test]
async fn a_stream_after_another_request_that_reads_nothing_is_closed_after_the_write_timeout() {
    let server = Instance::launch("parity-write")
        .start(&[
            "--write-timeout",
            "1s",
            "--presence",
            "false",
            "--mailbox-bytes",
            "16777216",
            "--byte-rate",
            "0",
        ])
        .await;
    let ann = server.helo("ann").await;
    let bob = server.helo("bob").await;
    // A stream after another request on the same connection, handed over by hyper.
    let mut stalled = small_receiver(&server).await;
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut stalled).await.0, 200);
    let events = format!(
        "GET /events/{}?token={} HTTP/1.1\r\nhost: x\r\n\r\n",
        ann.id, ann.token
    );
    stalled.write_all(events.as_bytes()).await.unwrap();
    server.log_line(&format!("attach session={}", ann.id)).await;
    // More than the socket buffers on both sides can absorb; then nothing is read.
    let message = "x".repeat(60_000);
    for _ in 0..128 {
        server.broadcast_ok(&bob, json!(message)).await;
    }
    // Bounded: `log_line` fails the test when the line does not come within its wait.
    server.log_line(&format!("detach session={}", ann.id)).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let server = Instance::launch("parity-idle")
        .start(&["--header-timeout", "1s"])
        .await;
    let mut idle = TcpStream::connect(server.authority()).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await.0, 200);
    let started = Instant::now();
    let mut rest = [0u8; 4096];
    let closed = timeout(WAIT, idle.read(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the deadline"
    );
}

#[tokio::test]
async fn a_stream_that_follows_a_join_on_its_connection_is_served_by_the_stream_path() {
    let server = Instance::launch("takeover").start(&[]).await;
    let bob = server.helo("bob").await;
    // What a browser does: the page's requests, then the EventSource, on one connection.
    let mut browser = TcpStream::connect(server.authority()).await.unwrap();
    browser
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut browser).await.0, 200);
    let body = r#"{"name":"ann"}"#;
    let helo = format!(
        "POST /helo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    browser.write_all(helo.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut browser).await;
    assert_eq!(status, 201, "{body}");
    let ann: serde_json::Value = serde_json::from_str(&body).unwrap();
    let events = format!(
        "GET /events/{}?token={} HTTP/1.1\r\nhost: x\r\n\r\n",
        ann["id"].as_str().unwrap(),
        ann["token"].as_str().unwrap()
    );
    browser.write_all(events.as_bytes()).await.unwrap();
    let seen = read_until(&mut browser, "event: ready").await.unwrap();
    // The stream path's framing: close-delimited, never hyper's chunked encoding.
    let head = seen.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    let to_ann = server
        .post_response(&bob, ann["id"].as_str().unwrap(), "hi")
        .await;
    assert_eq!(to_ann.status(), 202);
    let seen = read_until(&mut browser, "event: client_response")
        .await
        .unwrap();
    assert!(seen.contains(r#""message":"hi""#), "{seen}");
}
