//! Deploys: an instance told to stop hands its sessions to the others first, so its clients
//! resume elsewhere with the same ids and tokens, and nobody hears them leave or join again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::timeout;

use crate::support::cluster::{Cluster, bus_reads};
use crate::support::redis_proxy::RedisProxy;
use crate::support::*;

#[tokio::test]
async fn a_stopping_instance_hands_its_sessions_to_the_others_and_nobody_hears_them_leave() {
    let mut cluster = Cluster::start("deploy", &[&[], &[]]).await;
    let rae = cluster.nodes[0].helo("rae").await;
    cluster.settle().await;
    let sam = cluster.nodes[1].helo("sam").await;
    cluster.settle().await;
    let (mut rae_on_a, _) = cluster.nodes[0].attach_roster(&rae, None).await;
    rae_on_a.expect_new_user(&sam).await;
    let (mut sam_on_b, roster) = cluster.nodes[1].attach_roster(&sam, None).await;
    assert_eq!(roster, sessions(&[&rae]));
    let first = json!({"n": 0});
    let id = cluster.nodes[1].respond(&sam, &rae, &first).await;
    rae_on_a.expect_response(id, &sam, &rae, &first).await;

    // sam keeps writing to rae through B while A stops.
    let b = cluster.nodes[1].seen_from("127.0.0.1".parse().unwrap());
    let stopped = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (sam, rae, stopped) = (sam.clone(), rae.clone(), Arc::clone(&stopped));
        async move {
            let mut accepted = Vec::new();
            let mut refused = Vec::new();
            let mut n = 1;
            // Until A is gone, and a few more after.
            let mut after = 5;
            while after > 0 {
                if stopped.load(Ordering::Relaxed) {
                    after -= 1;
                }
                let message = json!({ "n": n });
                let response = b.post_response(&sam, &rae.id, &message).await;
                let status = response.status();
                if status.is_success() {
                    let body = body_json(response).await;
                    accepted.push((body["event_id"].as_u64().expect("event_id"), message));
                    n += 1;
                } else {
                    refused.push((status, body_text(response).await));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (accepted, refused)
        }
    });
    let exit = cluster.nodes[0].terminate().await;
    assert!(exit.success(), "A stops cleanly: {exit:?}");
    stopped.store(true, Ordering::Relaxed);
    let (accepted, refused) = timeout(WAIT, writer)
        .await
        .expect("the writer ends")
        .expect("the writer runs");
    assert_eq!(refused, [], "no message refused while A stopped");
    assert!(accepted.len() >= 5, "{accepted:?}");

    // What A's stream delivered before it ended, then the rest through B, from where it was.
    let mut seen: Vec<(u64, Value)> = vec![(id, first.clone())];
    for frame in rae_on_a.until_end().await {
        assert_eq!(frame.event, "client_response", "on A: {frame:?}");
        seen.push((frame.id.expect("an id"), frame.data["message"].clone()));
    }
    let last = seen.last().expect("the first message").0;
    let (mut rae_on_b, roster) = cluster.nodes[1].attach_roster(&rae, Some(last)).await;
    assert_eq!(
        roster,
        sessions(&[&sam]),
        "the same session, still with sam"
    );
    while seen.len() < accepted.len() + 1 {
        let frame = rae_on_b.next().await;
        assert_eq!(frame.event, "client_response", "on B: {frame:?}");
        seen.push((frame.id.expect("an id"), frame.data["message"].clone()));
    }
    let mut expected = vec![(id, first)];
    expected.extend(accepted);
    assert_eq!(
        seen, expected,
        "every accepted message once, in order, same ids"
    );

    // rae's token works on B, and sam heard no user_left or new_user: this is next.
    let marker = json!("still here");
    let id = cluster.nodes[1].respond(&rae, &sam, &marker).await;
    sam_on_b.expect_response(id, &rae, &sam, &marker).await;
    assert_eq!(cluster.nodes[1].clients().await, sessions(&[&rae, &sam]));
    assert!(
        cluster.nodes[0]
            .log()
            .iter()
            .any(|line| line.contains("handed every session to the cluster")),
        "A says what it did"
    );
}

/// What the clients of the rolling restart saw, all of them together.
#[derive(Default)]
struct Seen {
    /// Per sender, the `n` of each message the cluster accepted (2xx), in order.
    accepted: Vec<Vec<u64>>,
    /// Per receiver, `(sender, n, event id)` of each `client_response` its streams delivered.
    received: Vec<Vec<(u64, u64, u64)>>,
    /// Per receiver, the names in the `new_user` and `user_left` events it got.
    joined: Vec<Vec<String>>,
    left: Vec<Vec<String>>,
    lagged: u64,
    /// 5xx answers, those of them without `Retry-After`, and the first few.
    server_errors: u64,
    without_retry_after: u64,
    server_error_samples: Vec<String>,
    /// Connections refused (an instance down), requests sent that got no answer (reset),
    /// streams that ended or broke.
    refused: u64,
    reset: u64,
    reconnects: u64,
    /// What must not happen: a session gone (401, 404), or any other failed call.
    failures: Vec<String>,
}

/// The instances' current addresses, as a load balancer would know them.
type Nodes = Arc<std::sync::Mutex<Vec<switchboard_client::Client>>>;

/// The next instance after `cursor`, round robin.
fn pick(nodes: &Nodes, cursor: &mut usize) -> switchboard_client::Client {
    let nodes = nodes.lock().unwrap();
    *cursor += 1;
    nodes[*cursor % nodes.len()].clone()
}

/// How a client that honours `Retry-After` handles a failed call; false when it must give up.
async fn recover(seen: &std::sync::Mutex<Seen>, who: &str, err: switchboard_client::Error) -> bool {
    use switchboard_client::Error;
    match err {
        Error::Status {
            status,
            retry_after,
            body,
        } if status.is_server_error() => {
            let wait = {
                let mut seen = seen.lock().unwrap();
                seen.server_errors += 1;
                if seen.server_error_samples.len() < 5 {
                    let message = body.map(|b| b.message).unwrap_or_default();
                    seen.server_error_samples
                        .push(format!("{who}: {status} {message}"));
                }
                seen.without_retry_after += u64::from(retry_after.is_none());
                retry_after.unwrap_or(Duration::from_secs(1))
            };
            tokio::time::sleep(wait).await;
            true
        }
        // No answer: sent again (with the same key), and the exactly-once check would catch a
        // second delivery.
        Error::Http(err) if err.is_connect() || err.is_request() => {
            let mut seen = seen.lock().unwrap();
            if err.is_connect() {
                seen.refused += 1;
            } else {
                seen.reset += 1;
            }
            true
        }
        err => {
            seen.lock()
                .unwrap()
                .failures
                .push(format!("{who}: {err:?}"));
            false
        }
    }
}

#[tokio::test]
async fn a_rolling_restart_of_every_instance_loses_no_session_and_no_message() {
    // ROLLING_CLIENTS=300 for a larger run (the figures in BENCHMARKS.md); 6 in CI.
    let clients_n: usize = std::env::var("ROLLING_CLIENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(6);
    // Room for every join announced before the streams attach, however many clients.
    let roomy: &[&str] = &["--mailbox-size", "4096"];
    let mut cluster = Cluster::start("rolling", &[roomy, roomy, roomy]).await;
    let mut clients = Vec::new();
    for i in 0..clients_n {
        clients.push(cluster.nodes[i % 3].helo(&format!("c{i}")).await);
        cluster.settle().await;
    }
    let nodes: Nodes = Arc::new(std::sync::Mutex::new(
        cluster
            .nodes
            .iter()
            .map(|n| switchboard_client::Client::new(&n.base_url))
            .collect(),
    ));
    let seen = Arc::new(std::sync::Mutex::new(Seen {
        accepted: vec![Vec::new(); clients_n],
        received: vec![Vec::new(); clients_n],
        joined: vec![Vec::new(); clients_n],
        left: vec![Vec::new(); clients_n],
        ..Seen::default()
    }));
    let sending = Arc::new(AtomicBool::new(true));
    let reading = Arc::new(AtomicBool::new(true));

    // Each client reads its stream, reconnecting through the next instance when it ends.
    let mut readers = Vec::new();
    for (i, me) in clients.iter().cloned().enumerate() {
        let (nodes, seen, reading) = (Arc::clone(&nodes), Arc::clone(&seen), Arc::clone(&reading));
        readers.push(tokio::spawn(async move {
            let (mut cursor, mut last) = (i, None);
            while reading.load(Ordering::Relaxed) {
                let node = pick(&nodes, &mut cursor);
                let mut events = match timeout(WAIT, node.attach(&me, last)).await {
                    Ok(Ok(events)) => events,
                    Ok(Err(err)) => {
                        if recover(&seen, &me.name, err).await {
                            continue;
                        }
                        return;
                    }
                    Err(_) => panic!("{}: no answer to attach within {WAIT:?}", me.name),
                };
                loop {
                    let frame = match timeout(Duration::from_millis(100), events.next()).await {
                        Err(_) if reading.load(Ordering::Relaxed) => continue,
                        Err(_) => return,
                        Ok(Some(Ok(frame))) => frame,
                        Ok(_) => {
                            seen.lock().unwrap().reconnects += 1;
                            break;
                        }
                    };
                    last = frame.id.or(last);
                    let mut seen = seen.lock().unwrap();
                    let name = || frame.data["name"].as_str().unwrap_or("?").to_owned();
                    match frame.event.as_str() {
                        "client_response" => {
                            let message = &frame.data["message"];
                            let (from, n) = (message["from"].as_u64(), message["n"].as_u64());
                            let id = frame.id.expect("an id");
                            seen.received[i].push((from.unwrap(), n.unwrap(), id));
                        }
                        "new_user" => seen.joined[i].push(name()),
                        "user_left" => seen.left[i].push(name()),
                        "lagged" => seen.lagged += frame.data["missed"].as_u64().unwrap_or(0),
                        _ => {}
                    }
                }
            }
        }));
    }
    // Each client writes to the next one, one message at a time, through the next instance.
    let mut writers = Vec::new();
    for (i, me) in clients.iter().cloned().enumerate() {
        let to = clients[(i + 1) % clients_n].id.clone();
        let (nodes, seen, sending) = (Arc::clone(&nodes), Arc::clone(&seen), Arc::clone(&sending));
        writers.push(tokio::spawn(async move {
            let (mut cursor, mut n) = (i, 0);
            while sending.load(Ordering::Relaxed) {
                let node = pick(&nodes, &mut cursor);
                let message = json!({"from": i, "n": n});
                // Resent with the same key until answered: a message delivered whose answer
                // was lost (a reset, a 503) is not delivered again.
                let key = format!("c{i}-{n}");
                match timeout(WAIT, node.send_once(&me, &to, &message, &key)).await {
                    Ok(Ok(_)) => {
                        seen.lock().unwrap().accepted[i].push(n);
                        n += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Ok(Err(err)) => {
                        if !recover(&seen, &me.name, err).await {
                            return;
                        }
                    }
                    Err(_) => panic!("{}: no answer within {WAIT:?}", me.name),
                }
            }
        }));
    }

    // Everyone streaming and writing before the first deploy (longer for a larger run).
    let deadline = std::time::Instant::now() + WAIT + Duration::from_millis(20 * clients_n as u64);
    while !seen.lock().unwrap().received.iter().all(|r| r.len() >= 3) {
        if std::time::Instant::now() > deadline {
            let seen = seen.lock().unwrap();
            panic!(
                "the clients did not get going: accepted {:?}, received {:?}, failures {:?}",
                seen.accepted, seen.received, seen.failures
            );
        }
        tokio::time::sleep(POLL).await;
    }
    let started = std::time::Instant::now();
    for i in 0..3 {
        cluster.restart(i).await;
        let restarted = switchboard_client::Client::new(&cluster.nodes[i].base_url);
        nodes.lock().unwrap()[i] = restarted;
    }
    let rolled = started.elapsed();
    sending.store(false, Ordering::Relaxed);
    for writer in writers {
        timeout(WAIT * 2, writer)
            .await
            .expect("writers stop")
            .unwrap();
    }
    // Every accepted message reaches its stream.
    let deadline = std::time::Instant::now() + WAIT * 2;
    loop {
        let done = {
            let seen = seen.lock().unwrap();
            (0..clients_n).all(|r| {
                let from = (r + clients_n - 1) % clients_n;
                seen.received[r].len() >= seen.accepted[from].len()
            })
        };
        if done || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    reading.store(false, Ordering::Relaxed);
    for reader in readers {
        timeout(WAIT * 2, reader)
            .await
            .expect("readers stop")
            .unwrap();
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let accepted: usize = seen.accepted.iter().map(Vec::len).sum();
    let delivered: usize = seen.received.iter().map(Vec::len).sum();
    // Part of every failure's message: a CI log's excerpt may show nothing else.
    let summary = format!(
        "rolling restart of 3 instances in {rolled:?}: {clients_n} sessions; messages accepted \
         {accepted}, delivered {delivered}, reported lagged {}; 5xx {} ({} without Retry-After); \
         connections refused {}, reset {}; streams reconnected {}",
        seen.lagged,
        seen.server_errors,
        seen.without_retry_after,
        seen.refused,
        seen.reset,
        seen.reconnects
    );
    eprintln!("{summary}");
    assert_eq!(
        seen.failures,
        Vec::<String>::new(),
        "no session lost ({summary})"
    );
    for r in 0..clients_n {
        let from = (r + clients_n - 1) % clients_n;
        let got: Vec<u64> = seen.received[r].iter().map(|&(_, n, _)| n).collect();
        assert_eq!(
            got, seen.accepted[from],
            "c{r}: every message of c{from} once, in order: {:?} ({summary})",
            seen.received[r]
        );
        assert!(
            seen.received[r]
                .iter()
                .all(|&(sender, ..)| sender == from as u64),
            "c{r} hears c{from} only ({summary})"
        );
        let ids: Vec<u64> = seen.received[r].iter().map(|&(.., id)| id).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "c{r}: ids increase: {ids:?} ({summary})"
        );
        let later: Vec<String> = (r + 1..clients_n).map(|j| format!("c{j}")).collect();
        assert_eq!(
            seen.joined[r], later,
            "c{r}: each join once, none again ({summary})"
        );
        assert_eq!(
            seen.left[r],
            Vec::<String>::new(),
            "c{r}: nobody left ({summary})"
        );
    }
    assert_eq!(seen.lagged, 0, "nothing reported lost ({summary})");
    assert!(
        accepted >= clients_n * 10,
        "the clients kept writing ({summary})"
    );
    assert_eq!(
        seen.server_errors, 0,
        "no 5xx, not even one with Retry-After: {:?} ({summary})",
        seen.server_error_samples
    );
    let everyone = sessions(&clients.iter().collect::<Vec<_>>());
    for node in &cluster.nodes {
        assert_eq!(
            node.clients().await,
            everyone,
            "{} lists every session",
            node.label
        );
    }
}

#[tokio::test]
async fn a_stream_attaching_while_its_session_is_handed_off_elsewhere_waits_for_it_to_arrive() {
    // B alone at first, and F, whose Redis is behind a proxy that can hold its messages back.
    let mut cluster = Cluster::start_own("transit", &[]).await;
    let redis_url = cluster.redis.url();
    let b = cluster.add("B", &redis_url, &[]).await;
    let proxy = RedisProxy::start(cluster.redis.port).await;
    let f = cluster.add("F", &proxy.url(), &[]).await;
    cluster.settle().await;
    let rae = cluster.nodes[f].helo("rae").await;
    cluster.settle().await;
    let sam = cluster.nodes[b].helo("sam").await;
    cluster.settle().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            cluster.nodes[b]
                .respond(&sam, &rae, &json!({ "n": n }))
                .await,
        );
    }

    // F stops and drains rae to B, the only other instance; rae's snapshot is held on its way.
    proxy.hold_publishes_to(&cluster.own_channel(b).await);
    cluster.nodes[f].send_sigterm();
    proxy.held().await;
    // C starts meanwhile: too late to be a drain target. B has read F's handoff (a barrier).
    let c = cluster.add("C", &redis_url, &[]).await;
    wait_for_health(&cluster.nodes[c], reqwest::StatusCode::OK, WAIT).await;
    wait_for_health(&cluster.nodes[b], reqwest::StatusCode::OK, WAIT).await;

    // rae's client comes back through C: C asks, B says "not yet", C asks again. (The attach
    // succeeds only so: an unanswered request would time out before the snapshot is released.)
    let before = bus_reads(&cluster.nodes[b], "bus").await;
    let c_endpoint = cluster.nodes[c].seen_from("127.0.0.1".parse().unwrap());
    let (rae2, last) = (rae.clone(), ids[0]);
    let attaching = tokio::spawn(async move { c_endpoint.attach_roster(&rae2, Some(last)).await });
    let deadline = std::time::Instant::now() + WAIT;
    while bus_reads(&cluster.nodes[b], "bus").await < before + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "C's requests for rae reached B"
        );
        tokio::time::sleep(POLL).await;
    }
    // The snapshot arrives at B.
    proxy.release();

    let (mut stream, roster) = timeout(WAIT, attaching)
        .await
        .expect("attached within the wait")
        .expect("attached, not refused");
    assert_eq!(roster, sessions(&[&sam]));
    for (n, id) in ids.iter().enumerate().skip(1) {
        stream
            .expect_response(*id, &sam, &rae, &json!({ "n": n }))
            .await;
    }
    assert_eq!(cluster.nodes[c].clients().await, sessions(&[&rae, &sam]));
    let exit = cluster.nodes[f].wait_for_exit(WAIT).await;
    assert!(exit.success(), "F stops cleanly: {exit:?}");
}
