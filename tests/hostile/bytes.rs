//! No client bytes reach a 500: header values that are not text, on every route, and a body
//! cut short by a client that half-closes its socket. Each is the client's fault (a 4xx) or
//! ignored where HTTP says a header that cannot match simply does not; never a 5xx, and never
//! an ERROR line.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::client::*;
use crate::server::*;
use crate::support::{Endpoint, Instance, TEST_API_KEY, api_key_file};

/// Headers a route may read, each given a value with bytes that are not ASCII.
const HEADERS: [&str; 9] = [
    "idempotency-key",
    "accept",
    "if-none-match",
    "if-modified-since",
    "last-event-id",
    "content-type",
    "origin",
    "x-forwarded-for",
    "range",
];

/// Not text: a Latin-1 `é`, an invalid UTF-8 lead byte, and a valid UTF-8 `é`.
const NOT_ASCII: &[u8] = b"caf\xe9-\xff-\xc3\xa9";

/// The status of the answer to `request`, read from its first line; the rest is dropped (a
/// stream would never end).
async fn status_of(server: &Endpoint, request: &[u8]) -> u16 {
    let mut stream = timeout(WAIT, TcpStream::connect(server.authority()))
        .await
        .unwrap()
        .unwrap();
    stream.write_all(request).await.unwrap();
    first_status(&mut stream).await
}

async fn first_status(stream: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        let read = timeout(WAIT, stream.read(&mut byte)).await;
        match read {
            Ok(Ok(1)) => head.push(byte[0]),
            other => panic!(
                "no status line ({other:?}): {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let line = String::from_utf8_lossy(&head);
    line.split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line:?}"))
}

/// The binary serving its built-in page (which answers `If-None-Match` itself), not the
/// `--public-dir` that [`start`] gives.
async fn start_builtin() -> Instance {
    let key = api_key_file();
    Instance::launch("hostile-builtin")
        .open_file_limit(NOFILE)
        .with_args(&[
            "--listen",
            "127.0.0.1:0",
            "--drain-window",
            "0s",
            "--api-key-file",
            key.to_str().unwrap(),
        ])
        .await
}

#[tokio::test]
async fn header_values_that_are_not_text_never_reach_a_5xx_on_any_route() {
    every_route_with_each_header(&start_builtin().await).await;
    every_route_with_each_header(&start(&[]).await).await;
}

async fn every_route_with_each_header(server: &Instance) {
    let ann = helo(server, "ann").await.unwrap();
    let (id, token) = (ann["id"].as_str().unwrap(), ann["token"].as_str().unwrap());

    let mut failures = Vec::new();
    for &(method, template, _) in switchboard::ROUTES {
        let path = template.replace("{id}", id);
        let credential = if path.starts_with("/api/") {
            TEST_API_KEY
        } else {
            token
        };
        let body = match path.as_str() {
            "/helo" => r#"{"name":"bob"}"#.to_owned(),
            "/response" => format!(r#"{{"recipient":"{id}","message":1}}"#),
            "/api/publish" => format!(r#"{{"to":{{"session":"{id}"}},"message":1}}"#),
            "/api/disconnect" => r#"{"to":{"user":"nobody"}}"#.to_owned(),
            _ => r#"{"message":1}"#.to_owned(),
        };
        for name in HEADERS {
            let mut request = format!(
                "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {credential}\r\n"
            )
            .into_bytes();
            if name != "content-type" && method == "POST" {
                request.extend_from_slice(b"content-type: application/json\r\n");
            }
            request.extend_from_slice(format!("{name}: ").as_bytes());
            request.extend_from_slice(NOT_ASCII);
            request.extend_from_slice(b"\r\n");
            if method == "POST" {
                request.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
            }
            request.extend_from_slice(b"connection: close\r\n\r\n");
            if method == "POST" {
                request.extend_from_slice(body.as_bytes());
            }
            let status = status_of(server, &request).await;
            if status >= 500 {
                failures.push(format!("{method} {path} with {name}: {status}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let log = server.log();
    assert!(!log.iter().any(|l| l.contains("ERROR")), "{log:#?}");
}

#[tokio::test]
async fn a_body_cut_short_by_a_half_close_is_a_client_error() {
    let server = start(&[]).await;
    let ann = helo(&server, "ann").await.unwrap();
    let (id, token) = (ann["id"].as_str().unwrap(), ann["token"].as_str().unwrap());

    for (path, credential) in [
        ("/helo", ""),
        ("/response", token),
        ("/broadcast", token),
        ("/api/publish", TEST_API_KEY),
    ] {
        let whole = format!(r#"{{"recipient":"{id}","message":"a long enough message"}}"#);
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {credential}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            whole.len()
        );
        let mut stream = timeout(WAIT, TcpStream::connect(server.authority()))
            .await
            .unwrap()
            .unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&whole.as_bytes()[..10]).await.unwrap();
        // The client will send nothing more, but still reads the answer.
        stream.shutdown().await.unwrap();
        let status = first_status(&mut stream).await;
        assert_eq!(status, 400, "{path}");
    }
    let log = server.log();
    assert!(!log.iter().any(|l| l.contains("ERROR")), "{log:#?}");
}
