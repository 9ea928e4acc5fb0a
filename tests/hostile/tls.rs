//! The TLS listener under the same attacks on its slots: a client that opens a socket and
//! never finishes its handshake (silent, or half a ClientHello) is closed at the header
//! timeout, and a legitimate HTTPS client is served during the attack and after it. After the
//! handshake the deadlines go on: an HTTP/2 client that opens no stream, or whose streams have
//! all ended, is closed after the header timeout, and an HTTP/1.1 stream that reads nothing
//! after the write timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use warp::http::Request;

use crate::client::closed_within;
use crate::server::*;
use crate::support::tls::TestCa;
use crate::support::{Endpoint, Instance};

/// The first bytes of a TLS ClientHello (record header, handshake type, part of its length):
/// a handshake begun and never finished.
const HALF_A_HELLO: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";

/// A new HTTPS client (so a new connection) joins and gets its stream's `ready`.
async fn served(https: &Endpoint) -> bool {
    let steps = async {
        let health = https.client.get(https.url("/healthz")).send().await.ok()?;
        (health.status() == 200).then_some(())?;
        let session = https.hub.helo("legit").await.ok()?;
        let mut events = https.hub.attach(&session, None).await.ok()?;
        let ready = events.next().await?.ok()?;
        (ready.event == "ready").then_some(())
    };
    timeout(WAIT, steps).await.is_ok_and(|ok| ok.is_some())
}

/// [`served`] with a new client each try, until `within` has passed.
async fn served_within(ca: &TestCa, server: &Endpoint, within: Duration) -> bool {
    let addr = server.authority().parse().unwrap();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if served(&ca.endpoint("legit", addr, &["h2", "http/1.1"])).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn handshakes_never_finished_are_closed_after_the_header_timeout() {
    let ca = TestCa::new();
    let mut args = vec!["--header-timeout", "1s"];
    args.extend(ca.args());
    let server = start(&args).await;
    // More sockets than the server has slots, every other one with half a ClientHello.
    let mut idle = Vec::new();
    for i in 0..300 {
        if let Ok(Ok(mut stream)) = timeout(WAIT, TcpStream::connect(server.authority())).await {
            if i % 2 == 1 {
                let _ = stream.write_all(HALF_A_HELLO).await;
            }
            idle.push(stream);
        }
    }
    assert!(
        served_within(&ca, &server, Duration::from_secs(8)).await,
        "no service during the attack"
    );
    for (which, stream) in idle.iter_mut().take(2).enumerate() {
        assert!(
            closed_within(stream, Duration::from_secs(3)).await,
            "socket {which} (silent, then half a hello) was held past its deadline"
        );
    }
    drop(idle);
    assert!(
        served_within(&ca, &server, Duration::from_secs(5)).await,
        "no service after the attack"
    );
}

/// A TLS connection to `server` that agreed `alpn` and has sent nothing since. Its receive
/// buffer is as small as the kernel allows: when the client stops reading, the server's
/// writes stall soon.
async fn handshaken(ca: &TestCa, server: &Instance, alpn: &str) -> TlsStream<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr = server.authority().parse().unwrap();
    let tcp = timeout(WAIT, socket.connect(addr)).await.unwrap().unwrap();
    let tls = TlsConnector::from(Arc::new(ca.client_config(&[alpn])))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp);
    let tls = timeout(WAIT, tls).await.unwrap().unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn.as_bytes()));
    tls
}

/// Whether the server ends `stream` within `within` (after whatever it sent first).
async fn tls_closed_within(stream: &mut TlsStream<TcpStream>, within: Duration) -> bool {
    let mut sink = vec![0u8; 64 * 1024];
    let ended = async {
        // Until the end of the stream, or an error (a reset, or TCP closed without TLS's own
        // close).
        while let Ok(1..) = stream.read(&mut sink).await {}
    };
    timeout(within, ended).await.is_ok()
}

/// An HTTP/2 client connection, and the task driving it (it ends when the server closes it).
async fn h2_client(
    tls: TlsStream<TcpStream>,
) -> (
    h2::client::SendRequest<Bytes>,
    JoinHandle<Result<(), h2::Error>>,
) {
    let (send, connection) = timeout(WAIT, h2::client::handshake(tls))
        .await
        .unwrap()
        .unwrap();
    (send, tokio::spawn(connection))
}

/// `GET path` over `send`; the response's status and body.
async fn h2_get(send: &h2::client::SendRequest<Bytes>, path: &str) -> (u16, h2::RecvStream) {
    let mut send = timeout(WAIT, send.clone().ready()).await.unwrap().unwrap();
    let request = Request::get(format!("https://127.0.0.1{path}"))
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    (response.status().as_u16(), response.into_body())
}

#[tokio::test]
async fn an_h2_client_that_opens_no_stream_is_closed_after_the_header_timeout() {
    let ca = TestCa::new();
    let mut args = vec!["--header-timeout", "1s"];
    args.extend(ca.args());
    let server = start(&args).await;

    // Silent after the handshake: not even the connection preface.
    let started = Instant::now();
    let mut silent = handshaken(&ca, &server, "h2").await;
    assert!(
        tls_closed_within(&mut silent, Duration::from_secs(3)).await,
        "a silent h2 connection was held past its deadline"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed early"
    );

    // The preface and settings, and then no request.
    let (_send, connection) = h2_client(handshaken(&ca, &server, "h2").await).await;
    let closed = timeout(Duration::from_secs(3), connection).await;
    assert!(
        closed.is_ok(),
        "an h2 connection without a request was held"
    );

    let addr: SocketAddr = server.authority().parse().unwrap();
    assert!(served(&ca.endpoint("legit", addr, &["h2"])).await);
}

#[tokio::test]
async fn an_h2_connection_is_closed_once_it_has_had_no_stream_for_the_header_timeout() {
    let ca = TestCa::new();
    let mut args = vec!["--header-timeout", "1s"];
    args.extend(ca.args());
    let server = start(&args).await;
    let addr: SocketAddr = server.authority().parse().unwrap();
    let ann = ca.endpoint("tls", addr, &["h2"]).helo("ann").await;

    let (send, connection) = h2_client(handshaken(&ca, &server, "h2").await).await;
    let stream = format!("/events/{}?token={}", ann.id, ann.token);
    let (status, events) = h2_get(&send, &stream).await;
    assert_eq!(status, 200);
    // An open stream keeps its connection however long it lasts (here twice the deadline,
    // a wait for an absence), and the connection takes requests beside it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!connection.is_finished(), "closed with a stream open");
    let (status, _) = h2_get(&send, "/healthz").await;
    assert_eq!(status, 200);

    // The stream ends (the client resets it): one header timeout later the server says GOAWAY
    // and closes.
    drop(events);
    let ended = Instant::now();
    // (The client's side may end in an error: it can still be writing when the server closes.)
    let _ = timeout(Duration::from_secs(4), connection)
        .await
        .expect("an idle h2 connection was held past its deadline");
    assert!(
        ended.elapsed() >= Duration::from_millis(900),
        "closed early"
    );
    let refused = timeout(WAIT, send.clone().ready())
        .await
        .unwrap()
        .expect_err("a closed connection takes no request");
    assert!(
        refused.is_go_away()
            && refused.is_remote()
            && refused.reason() == Some(h2::Reason::NO_ERROR),
        "closed with a GOAWAY, not cut: {refused:?}"
    );
}

#[tokio::test]
async fn an_http1_stream_over_tls_that_reads_nothing_is_closed_after_the_write_timeout() {
    let ca = TestCa::new();
    // More than the kernel's buffers can absorb, as on the plain listener.
    let mut args = vec![
        "--write-timeout",
        "1s",
        "--presence",
        "false",
        "--mailbox-bytes",
        "16777216",
        "--byte-rate",
        "0",
    ];
    args.extend(ca.args());
    let server = start(&args).await;
    let addr: SocketAddr = server.authority().parse().unwrap();
    let https = ca.endpoint("tls", addr, &["http/1.1"]);
    let ann = https.helo("ann").await;
    let bob = https.helo("bob").await;

    let mut stalled = handshaken(&ca, &server, "http/1.1").await;
    let request = format!(
        "GET /events/{}?token={} HTTP/1.1\r\nhost: x\r\n\r\n",
        ann.id, ann.token
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    let ready = async {
        while !String::from_utf8_lossy(&seen).contains("event: ready") {
            let read = stalled.read(&mut chunk).await.unwrap();
            assert_ne!(read, 0, "the stream ended before ready");
            seen.extend_from_slice(&chunk[..read]);
        }
    };
    timeout(WAIT, ready).await.expect("ready within the wait");

    // The client reads nothing more; the server gives up on the stream and detaches it.
    let message = "x".repeat(60_000);
    for _ in 0..128 {
        assert_eq!(https.broadcast(&bob, &message).await.status(), 202);
    }
    https.wait_for_streams(0).await;
    assert!(
        tls_closed_within(&mut stalled, WAIT).await,
        "the stalled stream's socket stayed open"
    );
    // The session stayed: its next stream replays from the start.
    let mut again = https.attach(&ann, Some(0)).await;
    again.ready().await;
    assert_eq!(again.next().await.event, "client_broadcast");
}
