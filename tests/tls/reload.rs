//! A renewed certificate needs no restart: new connections get it after SIGHUP, or after the
//! files change; a pair that does not load leaves the old one in use.

use std::time::Duration;

use tokio::time::Instant;

use crate::support::tls::{TestCa, peer_certificate};
use crate::support::{Instance, POLL};

/// The certificate a new connection (a new client) is given.
async fn presented(ca: &TestCa, server: &Instance) -> Vec<u8> {
    let https = ca.endpoint("tls", server.authority().parse().unwrap(), &["h2"]);
    let response = https.get("/healthz").await;
    assert_eq!(response.status(), 200);
    peer_certificate(&response)
}

/// Waits (bounded) until new connections are given `expected`.
async fn presents(ca: &TestCa, server: &Instance, expected: &[u8], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if presented(ca, server).await == expected {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    false
}

#[tokio::test]
async fn sighup_loads_the_renewed_certificate() {
    let mut ca = TestCa::new();
    let server = Instance::start("tls", &ca.args()).await;
    let first = ca.der.clone();
    assert_eq!(presented(&ca, &server).await, first);

    // A half-written pair (a key that is not the certificate's) is refused, the old one stays.
    std::fs::write(&ca.key, "not a key\n").unwrap();
    server.send_sighup();
    server.log_line("TLS certificate not reloaded").await;
    assert_eq!(presented(&ca, &server).await, first);

    ca.renew(2);
    server.send_sighup();
    server.log_line("TLS certificate reloaded").await;
    let second = ca.der.clone();
    assert_ne!(second, first);
    assert!(
        presents(&ca, &server, &second, Duration::from_secs(5)).await,
        "new connections still get the first certificate after SIGHUP"
    );
}

#[tokio::test]
async fn changed_files_are_loaded_without_a_signal() {
    let mut ca = TestCa::new();
    let server = Instance::start("tls", &ca.args()).await;
    assert_eq!(presented(&ca, &server).await, ca.der);
    // The files' modification times are compared every 2 s; a second apart, a coarse
    // filesystem clock still shows the change.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ca.renew(3);
    let renewed = ca.der.clone();
    assert!(
        presents(&ca, &server, &renewed, Duration::from_secs(8)).await,
        "the renewed files were not loaded"
    );
}
