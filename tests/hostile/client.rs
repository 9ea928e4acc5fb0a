//! Clients on raw sockets: the attacker's requests and reads, and the legitimate client
//! ([`legit`]) that must still be served during every attack and after it.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::server::*;
use crate::support::Endpoint;

/// One raw request on a new connection; the status and body of the answer.
pub(crate) async fn raw(server: &Endpoint, request: &[u8]) -> (u16, String) {
    let mut stream = timeout(WAIT, TcpStream::connect(server.authority()))
        .await
        .unwrap()
        .unwrap();
    stream.write_all(request).await.unwrap();
    read_response(&mut stream).await
}

/// The attacker's address: where every raw socket of these tests comes from.
pub(crate) const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A legitimate client's whole exchange from the attacker's own address: healthz, two helos,
/// an attached stream that receives a direct message. Returns whether every step succeeded
/// within the bound.
pub(crate) async fn legit(server: &Endpoint) -> bool {
    legit_from(server, ATTACKER).await
}

/// [`legit`] from another loopback address than the attacker's.
pub(crate) async fn legit_from(server: &Endpoint, from: IpAddr) -> bool {
    timeout(WAIT, legit_steps(server, from))
        .await
        .is_ok_and(|ok| ok.is_some())
}

async fn legit_steps(server: &Endpoint, from: IpAddr) -> Option<()> {
    let healthz = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
    let (status, _) = try_raw_from(server, from, healthz).await?;
    if status != 200 {
        return None;
    }
    let ann = helo_from(server, from, "ann").await?;
    let bob = helo_from(server, from, "bob").await?;
    let mut stream = connect_from(server, from).await?;
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
    let (status, _) = try_raw_from(server, from, request.as_bytes()).await?;
    if status != 202 {
        return None;
    }
    read_until(&mut stream, "event: client_response").await?;
    Some(())
}

/// A new connection from `from`, a loopback address.
pub(crate) async fn connect_from(server: &Endpoint, from: IpAddr) -> Option<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind((from, 0).into()).ok()?;
    socket.connect(server.authority().parse().ok()?).await.ok()
}

async fn try_raw_from(server: &Endpoint, from: IpAddr, request: &[u8]) -> Option<(u16, String)> {
    let mut stream = connect_from(server, from).await?;
    stream.write_all(request).await.ok()?;
    let (status, body) = read_response(&mut stream).await;
    (status != 0).then_some((status, body))
}

/// `POST /helo` as `name`; the session (`id`, `token`, ...) when it was 201.
pub(crate) async fn helo(server: &Endpoint, name: &str) -> Option<Value> {
    helo_from(server, ATTACKER, name).await
}

async fn helo_from(server: &Endpoint, from: IpAddr, name: &str) -> Option<Value> {
    let body = format!(r#"{{"name":"{name}"}}"#);
    let request = format!(
        "POST /helo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, body) = try_raw_from(server, from, request.as_bytes()).await?;
    (status == 201).then(|| serde_json::from_str(&body).ok())?
}

/// A legitimate client, retried until it succeeds or `within` passes.
pub(crate) async fn legit_within(server: &Endpoint, within: Duration) -> bool {
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
pub(crate) async fn read_response(stream: &mut TcpStream) -> (u16, String) {
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

/// Reads from a stream until `needle` has been seen; everything read, or `None` on close or
/// after [`WAIT`].
pub(crate) async fn read_until(stream: &mut TcpStream, needle: &str) -> Option<String> {
    let mut seen = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            seen.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&seen);
            if text.contains(needle) {
                return Some(text.into_owned());
            }
        }
    };
    timeout(WAIT, read).await.ok().flatten()
}

/// Whether the server closes `stream` within `within` (reads until EOF or error).
pub(crate) async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
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

/// POST /broadcast from the session with `token`; the status.
pub(crate) async fn broadcast(server: &Endpoint, token: &str, message: &str) -> u16 {
    let body = format!(r#"{{"message":"{message}"}}"#);
    let request = format!(
        "POST /broadcast HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(server, request.as_bytes()).await.0
}

/// A connection whose receive buffer is as small as the kernel allows: a client that stops
/// reading stalls the server's writes almost at once.
pub(crate) async fn small_receiver(server: &Endpoint) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    timeout(WAIT, socket.connect(server.authority().parse().unwrap()))
        .await
        .unwrap()
        .unwrap()
}

/// A stream whose client reads only up to `ready` and then nothing (see [`small_receiver`]).
pub(crate) async fn stalled_stream(server: &Endpoint, session: &Value) -> TcpStream {
    let mut stream = small_receiver(server).await;
    let request = format!(
        "GET /events/{}?token={} HTTP/1.1\r\nhost: x\r\n\r\n",
        session["id"].as_str().unwrap(),
        session["token"].as_str().unwrap()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    read_until(&mut stream, "event: ready").await.unwrap();
    stream
}
