//! A client re-attaching its session in a loop (each attach costs a `ready` with the whole
//! roster) is refused with 429 naming the limit, and nobody else notices.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::client::*;
use crate::server::*;

/// Attaches `session` on a new connection; the status and what was read with it.
async fn attach_once(
    server: &crate::support::Endpoint,
    session: &serde_json::Value,
) -> (u16, String) {
    let mut stream = TcpStream::connect(server.authority()).await.unwrap();
    let request = format!(
        "GET /events/{}?token={} HTTP/1.1\r\nhost: x\r\n\r\n",
        session["id"].as_str().unwrap(),
        session["token"].as_str().unwrap()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_until(&mut stream, "\r\n\r\n")
        .await
        .unwrap_or_default();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // The head's packet may already hold the rest.
    let wanted = if status == 200 { "event: ready" } else { "}" };
    if head.contains(wanted) {
        return (status, head);
    }
    let rest = read_until(&mut stream, wanted).await.unwrap_or_default();
    (status, head + &rest)
}

#[tokio::test]
async fn a_client_reattaching_in_a_loop_gets_429_and_others_are_served() {
    let server = start(&[]).await;
    let looper = helo(&server, "looper").await.unwrap();
    let mut refused = 0;
    for _ in 0..60 {
        let (status, seen) = attach_once(&server, &looper).await;
        match status {
            200 => {}
            429 => {
                refused += 1;
                let lower = seen.to_ascii_lowercase();
                assert!(lower.contains("retry-after:"), "{seen}");
                assert!(seen.contains("attach_rate"), "{seen}");
            }
            other => panic!("attach answered {other}: {seen}"),
        }
    }
    assert!(refused >= 30, "only {refused} of 60 attaches refused");
    // Another session from the same address attaches, and its direct message goes through.
    assert!(legit(&server).await, "a legitimate client was not served");
}
