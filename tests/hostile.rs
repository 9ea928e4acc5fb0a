//! Hostile and broken clients against the real binary (issue 9): for each attack, a legitimate
//! client (healthz, helo, attach, response) is still served during it and afterwards.
//!
//! The server runs with a low open-file limit (set in the child before exec), so an attack that
//! holds sockets would exhaust the connection budget quickly. Every wait is bounded. The
//! clients here speak raw HTTP/1.1 over their own sockets: the attacks are on the wire format.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Endpoint, Instance, public_dir, refused};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// Longest wait for a read or a condition: longer than [`support::WAIT`], since answers under
/// attack may be slow.
const WAIT: Duration = Duration::from_secs(10);

/// Soft and hard open-file limit of the server: 256 descriptors, 192 connection slots.
const NOFILE: u64 = 256;

/// The binary on an ephemeral port with the crate's `public/`, no drain window, the low
/// open-file limit and `extra` arguments.
async fn start(extra: &[&str]) -> Instance {
    let public = public_dir();
    let key = support::api_key_file();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--drain-window",
        "0s",
        "--public-dir",
        public.to_str().unwrap(),
        "--api-key-file",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Instance::launch("hostile")
        .open_file_limit(NOFILE)
        .with_args(&args)
        .await
}

/// One raw request on a new connection; the status and body of the answer.
async fn raw(server: &Endpoint, request: &[u8]) -> (u16, String) {
    let mut stream = timeout(WAIT, TcpStream::connect(server.authority()))
        .await
        .unwrap()
        .unwrap();
    stream.write_all(request).await.unwrap();
    read_response(&mut stream).await
}

/// A legitimate client's whole exchange: healthz, two helos, an attached stream that
/// receives a direct message. Returns whether every step succeeded within the bound.
async fn legit(server: &Endpoint) -> bool {
    timeout(WAIT, legit_steps(server))
        .await
        .is_ok_and(|ok| ok.is_some())
}

async fn legit_steps(server: &Endpoint) -> Option<()> {
    let (status, _) = try_raw(server, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await?;
    if status != 200 {
        return None;
    }
    let ann = helo(server, "ann").await?;
    let bob = helo(server, "bob").await?;
    let mut stream = TcpStream::connect(server.authority()).await.ok()?;
    let request = format!(
        "GET /events/{}?token={} HTTP/1.1\r\nhost: x\r\n\r\n",
        ann["id"].as_str()?,
        ann["token"].as_str()?
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    read_until(&mut stream, "event: ready").await?;
    let body = format!(
        r#"{{"recipient":"{}","message":"hi"}}"#,
        ann["id"].as_str()?
    );
    let request = format!(
        "POST /response HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        bob["token"].as_str()?,
        body.len()
    );
    let (status, _) = try_raw(server, request.as_bytes()).await?;
    if status != 202 {
        return None;
    }
    read_until(&mut stream, "event: client_response").await?;
    Some(())
}

async fn try_raw(server: &Endpoint, request: &[u8]) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(server.authority()).await.ok()?;
    stream.write_all(request).await.ok()?;
    let (status, body) = read_response(&mut stream).await;
    (status != 0).then_some((status, body))
}

/// `POST /helo` as `name`; the session (`id`, `token`, ...) when it was 201.
async fn helo(server: &Endpoint, name: &str) -> Option<Value> {
    let body = format!(r#"{{"name":"{name}"}}"#);
    let request = format!(
        "POST /helo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, body) = try_raw(server, request.as_bytes()).await?;
    (status == 201).then(|| serde_json::from_str(&body).ok())?
}

/// A legitimate client, retried until it succeeds or `within` passes.
async fn legit_within(server: &Endpoint, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if legit(server).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Reads one response (to its close or its Content-Length); status 0 when none came.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            let text = String::from_utf8_lossy(&buf);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head.lines().find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                });
                if length.is_some_and(|n| body.len() >= n) {
                    break;
                }
            }
        }
    };
    let _ = timeout(WAIT, read).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Reads from a stream until `needle` has been seen; `None` on close or after [`WAIT`].
async fn read_until(stream: &mut TcpStream, needle: &str) -> Option<()> {
    let mut seen = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            seen.extend_from_slice(&chunk[..n]);
            if String::from_utf8_lossy(&seen).contains(needle) {
                return Some(());
            }
        }
    };
    timeout(WAIT, read).await.ok().flatten()
}

/// Whether the server closes `stream` within `within` (reads until EOF or error).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    timeout(within, read).await.is_ok()
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_header_timeout() {
    let server = start(&["--header-timeout", "1s"]).await;
    // More idle sockets than the server has slots: on main they were held for ever and every
    // new connection was reset.
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(Ok(stream)) = timeout(WAIT, TcpStream::connect(server.authority())).await {
            idle.push(stream);
        }
    }
    // During the attack: slots come back as the deadlines pass.
    assert!(
        legit_within(&server, Duration::from_secs(8)).await,
        "no service during the attack"
    );
    let mut first = idle.remove(0);
    assert!(
        closed_within(&mut first, Duration::from_secs(3)).await,
        "an idle socket was held past its deadline"
    );
    // A connection that sent half a head is closed too, on both paths.
    for partial in [
        &b"GET /events/x HTTP/1.1\r\nhost"[..],
        b"POST /helo HTTP/1.1\r\nhost",
    ] {
        let mut stream = TcpStream::connect(server.authority()).await.unwrap();
        stream.write_all(partial).await.unwrap();
        assert!(closed_within(&mut stream, Duration::from_secs(3)).await);
    }
    drop(idle);
    assert!(legit(&server).await, "no service after the attack");
}

#[tokio::test]
async fn stalled_and_trickled_bodies_get_408_and_are_closed() {
    let server = start(&["--request-timeout", "1s"]).await;
    let head = b"POST /helo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n";
    let mut stalled = TcpStream::connect(server.authority()).await.unwrap();
    stalled.write_all(head).await.unwrap();
    stalled.write_all(b"{").await.unwrap();
    let mut trickled = TcpStream::connect(server.authority()).await.unwrap();
    trickled.write_all(head).await.unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..20 {
            if trickled.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        trickled
    });
    assert!(legit(&server).await, "no service during the attack");
    let started = Instant::now();
    let (status, body) = read_response(&mut stalled).await;
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("request_timeout"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(closed_within(&mut stalled, Duration::from_secs(2)).await);
    let mut trickled = timeout(WAIT, trickle).await.unwrap().unwrap();
    assert!(closed_within(&mut trickled, Duration::from_secs(2)).await);
    assert!(legit(&server).await, "no service after the attack");
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
    for spelling in [
        "token",
        "%74oken",
        "tok%65n",
        "TOKEN",
        "%54%4F%4B%45%4E",
        "token%20",
    ] {
        for path in [format!("/events/{id}"), format!("//events/{id}")] {
            let request = format!(
                "GET {path}?{spelling}={token}&x=1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            );
            let mut stream = TcpStream::connect(server.authority()).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let _ = timeout(
                Duration::from_millis(300),
                read_until(&mut stream, "event: ready"),
            )
            .await;
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

#[test]
fn a_wildcard_cors_origin_is_refused_at_start_without_a_panic() {
    let (code, stderr) = refused(&["--listen", "127.0.0.1:0", "--cors-origin", "*"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("`*` is not supported"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn every_listed_cors_origin_matches_after_trimming() {
    let server = start(&["--cors-origin", "https://a.example, https://b.example"]).await;
    let request = b"GET /healthz HTTP/1.1\r\nhost: x\r\norigin: https://b.example\r\nconnection: close\r\n\r\n";
    let mut stream = TcpStream::connect(server.authority()).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut all = Vec::new();
    let _ = timeout(WAIT, stream.read_to_end(&mut all)).await;
    let text = String::from_utf8_lossy(&all).to_ascii_lowercase();
    assert!(
        text.contains("access-control-allow-origin: https://b.example"),
        "{text}"
    );
}

#[tokio::test]
async fn the_page_and_its_assets_carry_security_headers() {
    let server = start(&[]).await;
    for path in ["/", "/index.html", "/healthz"] {
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let mut stream = TcpStream::connect(server.authority()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        let _ = timeout(WAIT, stream.read_to_end(&mut all)).await;
        let text = String::from_utf8_lossy(&all).to_ascii_lowercase();
        assert!(
            text.contains("content-security-policy: default-src 'self'; frame-ancestors 'none'"),
            "{path}: {text}"
        );
        assert!(
            text.contains("referrer-policy: no-referrer"),
            "{path}: {text}"
        );
        assert!(
            text.contains("x-content-type-options: nosniff"),
            "{path}: {text}"
        );
    }
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

/// POST /broadcast from the session with `token`; the status.
async fn broadcast(server: &Endpoint, token: &str, message: &str) -> u16 {
    let body = format!(r#"{{"message":"{message}"}}"#);
    let request = format!(
        "POST /broadcast HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(server, request.as_bytes()).await.0
}

/// A stream whose client reads only up to `ready` and then nothing: its receive buffer is
/// as small as the kernel allows, so the server's writes stall almost at once.
async fn stalled_stream(server: &Endpoint, session: &Value) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = timeout(WAIT, socket.connect(server.authority().parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    let request = format!(
        "GET /events/{}?token={} HTTP/1.1\r\nhost: x\r\n\r\n",
        session["id"].as_str().unwrap(),
        session["token"].as_str().unwrap()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    read_until(&mut stream, "event: ready").await.unwrap();
    stream
}

/// The server's resident memory, from /proc/<pid>/status.
fn rss_kib(server: &Instance) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.id())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Waits for a log line holding every one of `needles`.
async fn logged(server: &Instance, needles: &[&str]) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if server
            .log()
            .iter()
            .any(|line| needles.iter().all(|n| line.contains(n)))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn a_stream_that_reads_nothing_is_closed_after_the_write_timeout_and_can_resume() {
    // More than the kernel's largest send buffer (4 MiB) can absorb.
    let server = start(&[
        "--write-timeout",
        "1s",
        "--presence",
        "false",
        "--mailbox-bytes",
        "16777216",
        "--max-streams",
        "10",
        // The flood below is the point: one session far past the default byte rate.
        "--byte-rate",
        "0",
    ])
    .await;
    let ann = helo(&server, "ann").await.unwrap();
    let bob = helo(&server, "bob").await.unwrap();
    let ann_id = ann["id"].as_str().unwrap();
    let _stalled = stalled_stream(&server, &ann).await;
    let message = "x".repeat(60_000);
    for _ in 0..128 {
        assert_eq!(
            broadcast(&server, bob["token"].as_str().unwrap(), &message).await,
            202
        );
    }
    // The socket stays open on the client's side; the server gives up on it and detaches.
    assert!(
        logged(&server, &["detach", ann_id]).await,
        "the stalled stream was not closed"
    );
    // The session and its mailbox stayed: a reconnect from the start replays the broadcasts.
    let mut again = TcpStream::connect(server.authority()).await.unwrap();
    let request = format!(
        "GET /events/{ann_id}?token={} HTTP/1.1\r\nhost: x\r\nlast-event-id: 0\r\n\r\n",
        ann["token"].as_str().unwrap()
    );
    again.write_all(request.as_bytes()).await.unwrap();
    read_until(&mut again, "event: client_broadcast")
        .await
        .unwrap();
    assert!(legit(&server).await);
}

#[tokio::test]
async fn streams_that_read_nothing_share_their_queued_events() {
    // 50 detached sessions each get 64 broadcasts of 60 KB (3.8 MB), then attach and read
    // nothing. When each stream copied its batch, that cost 3.8 MB per stream (190 MB here).
    const SESSIONS: usize = 50;
    let server = start(&[
        "--presence",
        "false",
        "--mailbox-bytes",
        "8388608",
        "--max-streams",
        "100",
    ])
    .await;
    let mut sessions = Vec::new();
    for n in 0..SESSIONS {
        sessions.push(helo(&server, &format!("s{n}")).await.unwrap());
    }
    let sender = helo(&server, "sender").await.unwrap();
    let message = "x".repeat(60_000);
    for _ in 0..64 {
        let token = sender["token"].as_str().unwrap();
        assert_eq!(broadcast(&server, token, &message).await, 202);
    }
    let before = rss_kib(&server);
    let mut streams = Vec::new();
    for session in &sessions {
        streams.push(stalled_stream(&server, session).await);
    }
    // Each stream took its batch when it attached; sample while they all sit stalled.
    let mut peak = 0;
    for _ in 0..20 {
        peak = peak.max(rss_kib(&server));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grown = peak.saturating_sub(before);
    eprintln!("RSS before {before} KiB, peak {peak} KiB, grown {grown} KiB");
    assert!(
        grown < 40 * 1024,
        "{SESSIONS} stalled streams grew RSS by {grown} KiB (before {before}, peak {peak})"
    );
    assert!(legit(&server).await);
}

#[tokio::test]
async fn bytes_sent_up_a_stream_close_it() {
    let server = start(&["--presence", "false", "--max-streams", "10"]).await;
    let ann = helo(&server, "ann").await.unwrap();
    let mut stream = stalled_stream(&server, &ann).await;
    stream.write_all(&[b'x'; 65_536]).await.unwrap();
    assert!(closed_within(&mut stream, WAIT).await);
    assert!(legit(&server).await);
}
