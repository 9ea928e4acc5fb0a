//! The two connection paths behave alike (issue 9): a stream request that opens its connection
//! (`GET /events/…`) is served without hyper, any other request (a stream that follows a request
//! on a keep-alive connection included) by hyper. Both answer the same broken head with the same
//! status before closing (no reset) and accept as many header lines (finding 6); both close a
//! stream whose client stopped reading after `--write-timeout`, and an idle connection after
//! `--header-timeout`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::server::WAIT;
use crate::support::Instance;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Sends `head` on a new connection and reads until the server closes it (or, for a request
/// that succeeds on a keep-alive connection, until the answer's head); the status line.
async fn status_line(server: &Instance, head: &[u8]) -> String {
    let mut stream = TcpStream::connect(server.authority()).await.unwrap();
    stream.write_all(head).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match timeout(WAIT, stream.read(&mut chunk)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Ok(Err(err)) => panic!("{err} after {:?}", String::from_utf8_lossy(&answer)),
            Err(_) => panic!("no answer within {WAIT:?}"),
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or("").to_owned()
}

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
        let hyper = status_line(&server, template.replace("{path}", "/healthz").as_bytes()).await;
        let lean = status_line(&server, template.replace("{path}", events).as_bytes()).await;
        if expected == "?" {
            assert!(
                hyper.starts_with("HTTP/1.1 200"),
                "{what} on hyper: {hyper}"
            );
            assert!(
                lean.starts_with("HTTP/1.1 401"),
                "{what} on the stream path: {lean}"
            );
        } else {
            let wanted = format!("HTTP/1.1 {expected} ");
            assert!(hyper.starts_with(&wanted), "{what} on hyper: {hyper}");
            assert!(
                lean.starts_with(&wanted),
                "{what} on the stream path: {lean}"
            );
        }
    }
}

#[tokio::test]
async fn a_stream_served_by_hyper_that_reads_nothing_is_closed_after_the_write_timeout() {
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
    // A stream after another request on the same connection is served by hyper.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket
        .connect(server.authority().parse().unwrap())
        .await
        .unwrap();
    let healthz = status_exchange(&mut stalled, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
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
    let stalled_at = Instant::now();
    server.log_line(&format!("detach session={}", ann.id)).await;
    assert!(
        stalled_at.elapsed() < WAIT,
        "closed within the bounded wait"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let server = Instance::launch("parity-idle")
        .start(&["--header-timeout", "1s"])
        .await;
    let mut idle = TcpStream::connect(server.authority()).await.unwrap();
    let healthz = status_exchange(&mut idle, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    let started = Instant::now();
    let mut rest = [0u8; 4096];
    let closed = timeout(WAIT, idle.read(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the deadline"
    );
}

/// Writes `head` and reads one answer's head on a connection that stays open.
async fn status_exchange(stream: &mut TcpStream, head: &[u8]) -> String {
    stream.write_all(head).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match timeout(WAIT, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Ok(Err(err)) => panic!("{err}"),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or("").to_owned()
}
