//! The TLS listener under the same attacks on its slots: a client that opens a socket and
//! never finishes its handshake (silent, or half a ClientHello) is closed at the header
//! timeout, and a legitimate HTTPS client is served during the attack and after it.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::client::closed_within;
use crate::server::*;
use crate::support::Endpoint;
use crate::support::tls::TestCa;

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
