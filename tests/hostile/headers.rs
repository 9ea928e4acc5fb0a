//! Headers the server sets for browsers: CORS origins (a wildcard refused at start, a list
//! trimmed) and the security headers on the page and its assets.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::server::*;
use crate::support::refused;

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
