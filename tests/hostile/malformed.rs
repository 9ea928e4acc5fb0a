//! Requests off the expected shape: header bytes that are not text, a token spelled to dodge
//! redaction, JSON nested too deep, HEAD and wrong methods. Each is a client error, never a 500
//! or a leak.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::client::*;
use crate::server::*;
use crate::support::{self};

#[tokio::test]
async fn a_full_server_refuses_without_error_lines() {
    // A refusal is the server working as configured, not a fault of it.
    let server = start(&["--max-sessions", "1", "--log-format", "json"]).await;
    let ann = helo(&server, "ann").await.unwrap();
    let ann_id = ann["id"].as_str().unwrap();
    let body = r#"{"name":"bob"}"#;
    let request = format!(
        "POST /helo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, body) = raw(&server, request.as_bytes()).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("session_limit"), "{body}");
    // A line logged after the refusal: whatever the refusal logged came before it.
    let leave = format!(
        "DELETE /session HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
        ann["token"].as_str().unwrap()
    );
    assert_eq!(raw(&server, leave.as_bytes()).await.0, 204);
    let lines = || -> Vec<Value> {
        server
            .log()
            .iter()
            .map(|line| serde_json::from_str(line).expect("a JSON log line"))
            .collect()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while !lines()
        .iter()
        .any(|l| l["session"] == ann_id && l["message"] == "leave")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leave of ann logged"
        );
        tokio::time::sleep(support::POLL).await;
    }
    let errors: Vec<_> = lines()
        .into_iter()
        .filter(|l| l["level"] == "ERROR")
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[tokio::test]
async fn header_bytes_that_are_not_text_are_client_errors_not_500() {
    let server = start(&[]).await;
    let ann = helo(&server, "ann").await.unwrap();
    let id = ann["id"].as_str().unwrap();
    let body = format!(r#"{{"recipient":"{id}","message":1}}"#);
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (
            [&b"POST /response HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \xff\xfe\r\ncontent-type: application/json\r\ncontent-length: "[..], body.len().to_string().as_bytes(), b"\r\nconnection: close\r\n\r\n", body.as_bytes()].concat(),
            401,
        ),
        (
            [&b"POST /helo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\xe9\r\ncontent-length: 12\r\nconnection: close\r\n\r\n{\"name\":\"x\"}"[..]].concat(),
            415,
        ),
        (
            format!("GET /events/{id}?token={} HTTP/1.1\r\nhost: x\r\nlast-event-id: 1", ann["token"].as_str().unwrap()).into_bytes().into_iter().chain(b"\xff\r\n\r\n".iter().copied()).collect(),
            400,
        ),
        (
            format!("GET /events/{id} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ").into_bytes().into_iter().chain(b"\xc3\xa9\r\n\r\n".iter().copied()).collect(),
            401,
        ),
    ];
    for (request, expected) in cases {
        let (status, body) = raw(&server, &request).await;
        assert_eq!(
            status,
            expected,
            "{}: {body}",
            String::from_utf8_lossy(&request)
        );
        let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert!(json["error"].is_string(), "{body}");
    }
    assert!(legit(&server).await);
    let log = server.log();
    assert!(!log.iter().any(|l| l.contains("ERROR")), "{log:#?}");
}

#[tokio::test]
async fn a_token_is_in_no_log_line_however_it_is_spelled() {
    let server = start(&["--log", "trace"]).await;
    let ann = helo(&server, "ann").await.unwrap();
    let (id, token) = (ann["id"].as_str().unwrap(), ann["token"].as_str().unwrap());
    let mut probe = 0;
    for spelling in [
        "token",
        "%74oken",
        "tok%65n",
        "TOKEN",
        "%54%4F%4B%45%4E",
        "token%20",
    ] {
        for path in [format!("/events/{id}"), format!("//events/{id}")] {
            // `x` marks this request: its log line (the request's span prints the redacted
            // target) shows the request reached the logger.
            probe += 1;
            let request = format!(
                "GET {path}?{spelling}={token}&x=probe{probe} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            );
            let mut stream = TcpStream::connect(server.authority()).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            assert!(
                logged(&server, &[&format!("x=probe{probe}}}")]).await,
                "{path}?{spelling}=... was never logged"
            );
        }
    }
    let request = format!(
        "GET /clients HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    raw(&server, request.as_bytes()).await;
    assert!(legit(&server).await);
    // The secret part of the token (after the id) must be nowhere.
    let secret = token.rsplit('.').next().unwrap();
    let log = server.log();
    assert!(log.len() > 20, "trace logging is on: {}", log.len());
    let leaked: Vec<_> = log.iter().filter(|l| l.contains(secret)).collect();
    assert!(leaked.is_empty(), "{leaked:#?}");
}

#[tokio::test]
async fn a_deeply_nested_message_is_400_invalid_body() {
    let server = start(&[]).await;
    let ann = helo(&server, "ann").await.unwrap();
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let body = format!(r#"{{"message":{deep}}}"#);
    let request = format!(
        "POST /broadcast HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        ann["token"].as_str().unwrap(),
        body.len()
    );
    let (status, body) = raw(&server, request.as_bytes()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_body"), "{body}");
    // 64 levels still pass.
    let ok = format!(r#"{{"message":{}{}}}"#, "[".repeat(64), "]".repeat(64));
    let request = format!(
        "POST /broadcast HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{ok}",
        ann["token"].as_str().unwrap(),
        ok.len()
    );
    assert_eq!(raw(&server, request.as_bytes()).await.0, 202);
    assert!(legit(&server).await);
}

#[tokio::test]
async fn head_is_served_on_get_routes_and_405_says_allow() {
    let server = start(&[]).await;
    for path in ["/healthz", "/clients", "/metrics", "/openapi.yaml", "/"] {
        let request = format!(
            "HEAD {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
            support::TEST_API_KEY
        );
        let mut stream = TcpStream::connect(server.authority()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        let _ = timeout(WAIT, stream.read_to_end(&mut all)).await;
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.1 200"), "HEAD {path}: {text}");
    }
    let ann = helo(&server, "ann").await.unwrap();
    let request = format!(
        "HEAD /events/{}?token={} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        ann["id"].as_str().unwrap(),
        ann["token"].as_str().unwrap()
    );
    let mut stream = TcpStream::connect(server.authority()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    let _ = timeout(WAIT, stream.read_to_end(&mut all)).await;
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"));
    for (request, allow) in [
        ("GET /helo", "POST"),
        ("DELETE /healthz", "GET, HEAD"),
        ("PUT /session", "DELETE"),
    ] {
        let raw = format!(
            "{request} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        let mut stream = TcpStream::connect(server.authority()).await.unwrap();
        stream.write_all(raw.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        let _ = timeout(WAIT, stream.read_to_end(&mut all)).await;
        let text = String::from_utf8_lossy(&all).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 405"), "{request}: {text}");
        assert!(
            text.contains(&format!("allow: {}", allow.to_ascii_lowercase())),
            "{request}: {text}"
        );
    }
    assert!(legit(&server).await);
}
