//! The two connection paths answer alike (issue 9, finding 6): a stream request
//! (`GET /events/…`, served without hyper) and any other request (served by hyper) get the same
//! status for the same broken head, the answer arrives before the connection closes (no reset),
//! and as many header lines are accepted on both.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use support::Instance;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

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
