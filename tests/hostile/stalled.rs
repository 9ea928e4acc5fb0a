//! Clients that stop halfway: idle sockets, stalled or trickled bodies and streams that read
//! nothing are closed at their deadlines, and stalled streams share their queued events
//! instead of each holding a copy.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::client::*;
use crate::server::*;

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
async fn one_address_holds_at_most_its_share_of_the_connections() {
    // Idle sockets held for as long as a head may take (30 s): no deadline frees them during
    // the attack, only the share keeps slots (192 here) for everyone else.
    let server = start(&[
        "--header-timeout",
        "30s",
        "--max-connections-per-address",
        "100",
    ])
    .await;
    // More than all the slots, from one address.
    let mut idle = Vec::new();
    for _ in 0..300 {
        if let Ok(Ok(stream)) = timeout(WAIT, TcpStream::connect(server.authority())).await {
            idle.push(stream);
        }
    }
    // The first one past the share is told which limit refused it and when to retry.
    let (status, body) = read_response(&mut idle[100]).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("connections_per_address"), "{body}");
    // Another address is served at once, during the attack.
    let elsewhere = "127.0.0.2".parse().unwrap();
    assert!(
        legit_from(&server, elsewhere).await,
        "no service during the attack"
    );
    // The places come back as the sockets close.
    drop(idle);
    assert!(
        legit_within(&server, Duration::from_secs(5)).await,
        "no service after the attack"
    );
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
    let mut stalled = stalled_stream(&server, &ann).await;
    let message = "x".repeat(60_000);
    for _ in 0..128 {
        assert_eq!(
            broadcast(&server, bob["token"].as_str().unwrap(), &message).await,
            202
        );
    }
    // The socket stays open on the client's side; the server gives up on it and detaches.
    server.wait_for_streams(0).await;
    // Closed with a reset, so the kernel dropped the unsent queue at once: what the client
    // reads now is its own buffer, then the reset, never the megabytes that were queued.
    let mut sink = vec![0u8; 64 * 1024];
    let mut read = 0;
    let end = loop {
        match timeout(WAIT, stalled.read(&mut sink)).await {
            Ok(Ok(0)) => break "a graceful close",
            Ok(Ok(n)) => read += n,
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionReset => break "a reset",
            Ok(Err(err)) => panic!("{err}"),
            Err(_) => break "no end",
        }
    };
    assert_eq!(end, "a reset", "after {read} bytes");
    assert!(
        read < 1024 * 1024,
        "{read} bytes were still queued for the stalled client"
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

#[tokio::test]
async fn a_stream_that_reads_slowly_gets_every_event_whole_and_in_order() {
    // An idle stream's events are sent to its socket by the fan-out itself, as far as the
    // socket takes them, and the stream's task sends the rest. Past what the kernel buffers
    // (4 MiB), sends stop midway through a frame, small (copied) or large (shared): what the
    // client reads must still be every event, whole, once, in order.
    const EVENTS: usize = 160;
    let server = start(&[
        "--presence",
        "false",
        "--byte-rate",
        "0",
        "--message-rate",
        "0",
        "--mailbox-bytes",
        "16777216",
    ])
    .await;
    let ann = helo(&server, "ann").await.unwrap();
    let bob = helo(&server, "bob").await.unwrap();
    let mut stream = stalled_stream(&server, &ann).await;
    let token = bob["token"].as_str().unwrap();
    let message = |n: usize| {
        let size = if n.is_multiple_of(2) { 60_000 } else { 600 };
        format!("{n:04}-{}", "x".repeat(size))
    };
    let mut seen = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    for n in 0..EVENTS {
        assert_eq!(broadcast(&server, token, &message(n)).await, 202);
        // A little now and then: the stream is full, drains, parks, and fills again.
        if n % 10 == 9 {
            let read = timeout(WAIT, stream.read(&mut chunk[..1024]))
                .await
                .unwrap()
                .unwrap();
            seen.extend_from_slice(&chunk[..read]);
        }
    }
    // Broadcasts whose frame has come whole (the head and `ready` were read before).
    let whole = |seen: &[u8]| {
        let text = String::from_utf8_lossy(seen);
        let complete = text.rsplit_once("\n\n").map_or("", |(done, _)| done);
        complete.matches("event: client_broadcast").count()
    };
    // Megabytes through a receive window of a few KiB: a round trip per window, which on a
    // loaded machine adds up to more than one wait. The server must keep the bytes coming
    // (each read within the wait), and all of them come within a few waits.
    let rest = async {
        while whole(&seen) < EVENTS {
            let read = timeout(WAIT, stream.read(&mut chunk))
                .await
                .expect("the stream stalled: no byte within the wait")
                .unwrap();
            assert_ne!(read, 0, "the stream ended early");
            seen.extend_from_slice(&chunk[..read]);
        }
    };
    timeout(6 * WAIT, rest)
        .await
        .expect("every event within six waits");

    let text = String::from_utf8(seen).expect("frames are never cut into invalid UTF-8");
    // The fan-out's sends stopped midway (the case this test is about), and went out whole
    // while the client kept up.
    let metrics = server.metrics().await;
    for outcome in ["whole", "partial"] {
        let series = format!("switchboard_parked_sends_total{{outcome=\"{outcome}\"}}");
        let sends = crate::support::sample(&metrics, &series).unwrap_or(0.0);
        assert!(sends > 0.0, "no {outcome} send: {series} {sends}");
    }
    let events: Vec<(u64, String)> = text
        .split("\n\n")
        .filter(|frame| frame.contains("event: client_broadcast"))
        .map(|frame| {
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {frame:.80}"))
            };
            let data: serde_json::Value = serde_json::from_str(field("data: ")).unwrap();
            (
                field("id: ").parse().unwrap(),
                data["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(events.len(), EVENTS);
    let first = events[0].0;
    for (n, (id, got)) in events.iter().enumerate() {
        assert_eq!(*id, first + n as u64, "ids follow each other");
        assert!(*got == message(n), "event {n} arrived changed");
    }
}
