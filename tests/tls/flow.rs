//! HTTP/2 flow control: a client that stops reading one stream (its window for it stays
//! shut) while the connection lives loses that stream after the write timeout, not the
//! connection; its session stays for the next stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use warp::http::{Request, StatusCode};

use crate::support::tls::TestCa;
use crate::support::{Instance, WAIT};

/// An HTTP/2 connection (h2 by ALPN) whose streams get 64 KiB of window each, released only
/// when the test says so (it never does), and a connection window large enough that one shut
/// stream leaves the others room.
async fn connect(ca: &TestCa, addr: SocketAddr) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(ca.client_config(&["h2"])))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(65_535)
        .initial_connection_window_size(16 << 20)
        .handshake(tls)
        .await
        .unwrap();
    tokio::spawn(connection);
    send
}

/// `GET path` on the connection; the response's status and body.
async fn get(send: &SendRequest<Bytes>, path: &str) -> (StatusCode, h2::RecvStream) {
    let mut send = timeout(WAIT, send.clone().ready()).await.unwrap().unwrap();
    let request = Request::get(format!("https://127.0.0.1{path}"))
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    (response.status(), response.into_body())
}

#[tokio::test]
async fn a_stream_whose_window_stays_shut_is_reset_after_the_write_timeout() {
    let ca = TestCa::new();
    let mut args = vec!["--write-timeout", "1s"];
    args.extend(ca.args());
    let server = Instance::start("tls", &args).await;
    let addr: SocketAddr = server.authority().parse().unwrap();
    let https = ca.endpoint("tls", addr, &["h2"]);
    let reader = https.helo("reader").await;
    let writer = https.helo("writer").await;

    let h2 = connect(&ca, addr).await;
    let stream_path = format!("/events/{}?token={}", reader.id, reader.token);
    let (status, mut body) = get(&h2, &stream_path).await;
    assert_eq!(status, 200);
    // Twice the stream's window in broadcasts: the server can send half, the rest waits.
    let text = "x".repeat(4000);
    for _ in 0..32 {
        https.broadcast_ok(&writer, &json!(text)).await;
    }
    // Read what arrived (without giving any window back) until the server resets the stream.
    let reset = timeout(Duration::from_secs(10), async {
        loop {
            match body.data().await {
                Some(Ok(_)) => {}
                Some(Err(err)) => return Some(err),
                None => return None,
            }
        }
    })
    .await
    .expect("the stream was not reset within the write timeout and then some")
    .expect("the stream ended instead of being reset");
    assert_eq!(reset.reason(), Some(h2::Reason::CANCEL), "{reset}");

    // The connection is still served, and the session takes its next stream.
    let (status, _) = get(&h2, "/healthz").await;
    assert_eq!(status, 200);
    let (status, _) = get(&h2, &stream_path).await;
    assert_eq!(status, 200);
}
