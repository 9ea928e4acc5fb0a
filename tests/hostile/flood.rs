//! One address opening more sockets than a server started from a shell (a soft open-file limit
//! below the hard one) has slots: the server raises its limit, keeps a share for everyone else,
//! and logs the refusals sampled, not one line each.

use std::net::IpAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use crate::client::*;
use crate::server::*;
use crate::support::Endpoint;

/// `switchboard_rate_limited_total{limit}` read from `/metrics` by a client at `from`.
async fn refusals(server: &Endpoint, from: IpAddr, limit: &str) -> Option<u64> {
    let mut stream = connect_from(server, from).await?;
    let request = b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    stream.write_all(request).await.ok()?;
    let (_, body) = read_response(&mut stream).await;
    let series = format!("switchboard_rate_limited_total{{limit=\"{limit}\"}} ");
    body.lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn a_flood_from_one_address_leaves_a_share_for_others_and_few_log_lines() {
    // Soft 256, hard 512: raised to 512 at start, 448 connection slots, a share of 224. Idle
    // sockets are held as long as a head may take, so no deadline frees a slot meanwhile.
    let server = start_with_open_files(256, 512, &["--header-timeout", "30s"]).await;
    assert!(
        logged(&server, &["listening", "open_file_limit=Some(512)"]).await,
        "the soft limit was not raised"
    );
    let flood = 600;
    let mut idle = Vec::new();
    for _ in 0..flood {
        if let Ok(Ok(stream)) = timeout(WAIT, TcpStream::connect(server.authority())).await {
            idle.push(stream);
        }
    }
    let elsewhere: IpAddr = "127.0.0.2".parse().unwrap();
    assert!(
        legit_from(&server, elsewhere).await,
        "another address was shut out"
    );
    // Every connection beyond the share was refused, and counted.
    let refused = (flood - 224) as u64;
    let deadline = Instant::now() + WAIT;
    let mut counted = 0;
    while Instant::now() < deadline {
        counted = refusals(&server, elsewhere, "connections_per_address")
            .await
            .unwrap_or(0);
        if counted >= refused {
            break;
        }
        sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(counted >= refused, "{counted} refusals counted");
    let lines = server
        .log()
        .iter()
        .filter(|line| line.contains("WARN") && line.contains("connection"))
        .count();
    assert!(
        lines <= 3,
        "{lines} log lines for {counted} refused connections"
    );
    drop(idle);
}
