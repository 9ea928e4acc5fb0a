//! Joining, streaming and messaging over HTTPS, over each protocol ALPN can agree; and the
//! starts that are refused.

use reqwest::Version;
use serde_json::json;

use crate::support::tls::TestCa;
use crate::support::{Instance, SseReader, refused};

/// Over `alpn`: `/healthz`, two joins, two streams and a direct message between them, each
/// answer in `version`.
async fn converse(alpn: &[&str], version: Version) {
    let ca = TestCa::new();
    let server = Instance::start("tls", &ca.args()).await;
    let https = ca.endpoint("tls", server.authority().parse().unwrap(), alpn);

    let health = https.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.version(), version, "/healthz");

    let ann = https.helo("ann").await;
    let bob = https.helo("bob").await;
    let response = https.events_response(&bob.id, &bob.token, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), version, "bob's stream");
    let mut bob_stream = SseReader::new(response).await;
    bob_stream.ready().await;
    let mut ann_stream = https.attach_ready(&ann).await;
    ann_stream.expect_new_user(&bob).await;
    let message = json!({"text": "over TLS"});
    let event_id = https.respond(&ann, &bob, &message).await;
    bob_stream
        .expect_response(event_id, &ann, &bob, &message)
        .await;
    let event_id = https.respond(&bob, &ann, &json!("back")).await;
    ann_stream
        .expect_response(event_id, &bob, &ann, &json!("back"))
        .await;
}

#[tokio::test]
async fn http2_is_agreed_by_alpn_and_carries_streams_and_messages() {
    converse(&["h2", "http/1.1"], Version::HTTP_2).await;
}

#[tokio::test]
async fn http1_over_tls_carries_streams_and_messages() {
    converse(&["http/1.1"], Version::HTTP_11).await;
}

#[tokio::test]
async fn a_start_without_a_usable_pair_is_one_line() {
    let ca = TestCa::new();
    let (cert, key) = (ca.cert.to_str().unwrap(), ca.key.to_str().unwrap());
    let missing = ca.dir().join("missing.pem");
    let garbage = ca.dir().join("garbage.pem");
    std::fs::write(&garbage, "not a PEM file\n").unwrap();
    let (missing, garbage) = (missing.to_str().unwrap(), garbage.to_str().unwrap());
    let cases: [(&[&str], &str); 6] = [
        (&["--tls-cert", cert], "--tls-cert needs --tls-key"),
        (&["--tls-key", key], "--tls-key needs --tls-cert"),
        (&["--tls-cert", missing, "--tls-key", key], "--tls-cert"),
        (
            &["--tls-cert", garbage, "--tls-key", key],
            "no PEM certificate",
        ),
        (
            &["--tls-cert", cert, "--tls-key", garbage],
            "no PEM private key",
        ),
        // A certificate is no key.
        (
            &["--tls-cert", cert, "--tls-key", cert],
            "no PEM private key",
        ),
    ];
    for (flags, reason) in cases {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let (code, stderr) = refused(&args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_key_of_another_certificate_is_refused() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let (code, stderr) = refused(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        ca.cert.to_str().unwrap(),
        "--tls-key",
        other.key.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("does not go with --tls-cert's certificate"),
        "{stderr}"
    );
}
