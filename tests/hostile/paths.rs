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
    // Longer than the flood below takes, so that closing before it is told apart.
    let write_timeout = Duration::from_secs(3);
    let server = Instance::launch("parity-write")
        .start(&[
            "--write-timeout",
            "3s",
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
    // No write to the stream can stall before it is asked for.
    let asked = Instant::now();
    stalled.write_all(events.as_bytes()).await.unwrap();
    server.wait_for_streams(1).await;
    // More than the socket buffers on both sides can absorb; then nothing is read.
    let message = "x".repeat(60_000);
    for _ in 0..128 {
        server.broadcast_ok(&bob, json!(message)).await;
    }
    // The writes stalled by now, the buffers long full.
    let stalled_by = Instant::now();

    // The server's end leaves ESTABLISHED when it closes (its FIN waits behind the data the
    // client never read, so the client's end learns of it only by reading).
    let client_port = stalled.local_addr().unwrap().port();
    let server_port = server
        .authority()
        .parse::<std::net::SocketAddr>()
        .unwrap()
        .port();
    let deadline = Instant::now() + WAIT;
    while server_end_established(server_port, client_port) {
        assert!(Instant::now() < deadline, "still open after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (since_asked, since_stalled) = (asked.elapsed(), stalled_by.elapsed());
    assert!(
        since_asked >= write_timeout,
        "closed {since_asked:?} after the stream was asked for, before the write timeout"
    );
    // One write timeout after the stall, with room for a loaded machine.
    assert!(
        since_stalled < write_timeout + Duration::from_secs(4),
        "closed {since_stalled:?} after the writes stalled"
    );
    // And the client's end reads to the end: what was buffered, then EOF (or a reset).
    let mut rest = vec![0u8; 65_536];
    let end = timeout(WAIT, async {
        loop {
            match stalled.read(&mut rest).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "no EOF within {WAIT:?}");
}

/// Whether the server's end of the loopback connection between `server_port` and
/// `client_port` is still ESTABLISHED, from the kernel's table (`/proc/net/tcp`).
fn server_end_established(server_port: u16, client_port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("reading /proc/net/tcp");
    let (local, remote) = (
        format!("0100007F:{server_port:04X}"),
        format!("0100007F:{client_port:04X}"),
    );
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // `sl local_address rem_address st ...`; state 01 is ESTABLISHED.
        fields.get(1) == Some(&local.as_str())
            && fields.get(2) == Some(&remote.as_str())
            && fields.get(3) == Some(&"01")
    })
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let server = Instance::launch("parity-idle")
        .start(&["--header-timeout", "1s"])
        .await;
    let mut idle = TcpStream::connect(server.authority()).await.unwrap();
    // The connection cannot go idle before its request is sent: the clock starts no later.
    let started = Instant::now();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await.0, 200);
    let mut rest = [0u8; 4096];
    let closed = timeout(WAIT, idle.read(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
    let closed_after = started.elapsed();
    assert!(
        closed_after >= Duration::from_secs(1),
        "closed {closed_after:?} after the request, before the header timeout"
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
