//! An instance killed outright (SIGKILL): its sessions stay valid, with the same ids and tokens,
//! and continue on a survivor. A client resuming with `Last-Event-ID` gets `lagged` counting
//! exactly the events accepted for it that died with the mailbox, then everything after; a
//! session nobody resumes leaves with `user_left` after its TTL, so no ghost remains. Counts
//! that a Redis restart lost are rebuilt from the mailboxes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::json;
use tokio::time::{sleep, timeout};

use crate::support::cluster::{Cluster, KaiAndWen, Redis, bus_reads};
use crate::support::*;

/// Longer than the dead instance's liveness key (3 s) plus a sweep, plus a margin for a busy box.
const ADOPTED_WITHIN: Duration = Duration::from_secs(15);

/// Attaches `session` through `node` after `last`, its instance just killed: 503 until `node`
/// adopted it. Returns the stream, read past `ready`.
pub(crate) async fn resume_after_crash(node: &Instance, session: &Session, last: u64) -> SseReader {
    let started = Instant::now();
    loop {
        let response = node
            .events_response(&session.id, &session.token, Some(last))
            .await;
        match response.status() {
            StatusCode::OK => {
                let tried = started.elapsed();
                eprintln!("{} resumed after {tried:?} of tries", session.name);
                let mut stream = SseReader::new(response).await;
                stream.ready().await;
                return stream;
            }
            StatusCode::SERVICE_UNAVAILABLE if started.elapsed() < ADOPTED_WITHIN => {
                sleep(POLL).await
            }
            status => panic!("resuming {} after the kill: {status}", session.name),
        }
    }
}

#[tokio::test]
async fn a_killed_instances_session_resumes_elsewhere_with_every_lost_event_counted() {
    let mut cluster = Cluster::start("sigkill", &[&[], &[]]).await;
    let KaiAndWen {
        kai,
        wen,
        mut kai_on_a,
        greeted,
    } = cluster.kai_on_a_wen_on_b().await;
    let (mut wen_stream, _) = cluster.nodes[1].attach_roster(&wen, None).await;

    // kai reads the first of three direct messages; the other two and a broadcast wait on A.
    let b = &cluster.nodes[1];
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(b.respond(&wen, &kai, &json!({"n": n})).await);
    }
    assert_eq!(ids, [greeted + 1, greeted + 2, greeted + 3]);
    kai_on_a
        .expect_response(ids[0], &wen, &kai, &json!({"n": 1}))
        .await;
    let seen = ids[0];
    assert_eq!(b.broadcast_ok(&wen, &json!("before")).await, 1);

    cluster.nodes[0].kill();
    drop(kai_on_a);
    // Accepted while kai's mailbox is dead: lost too, and counted.
    let b = &cluster.nodes[1];
    assert_eq!(b.broadcast_ok(&wen, &json!("after")).await, 1);

    // kai comes back through B with the same token.
    let mut kai_on_b = resume_after_crash(b, &kai, seen).await;
    let lagged = kai_on_b.next().await;
    assert_eq!(lagged.event, "lagged", "{lagged:?}");
    // Two direct messages and two broadcasts were accepted for kai after what it saw.
    assert_eq!(lagged.data, json!({"missed": 4}));

    let marker = json!("after the crash");
    let id = b.respond(&wen, &kai, &marker).await;
    assert_eq!(id, seen + 5, "ids continue after the lost ones");
    kai_on_b.expect_response(id, &wen, &kai, &marker).await;

    // kai's token still works for writing, and wen never heard kai leave or join again.
    let back = json!("back");
    assert_eq!(b.broadcast_ok(&kai, &back).await, 1);
    let frame = wen_stream.next().await;
    assert_eq!(frame.event, "client_broadcast", "{frame:?}");
    assert_eq!(frame.data["message"], back);
    assert_eq!(b.clients().await, sessions(&[&kai, &wen]));
    let adopted = sample(&b.metrics().await, "switchboard_sessions_adopted_total");
    assert_eq!(adopted, Some(1.0), "B counts the session it adopted");
}

/// A session hears a join once per room it shares with the joiner: after a crash its count
/// covers every one of them, so its ids never go back.
#[tokio::test]
async fn a_join_heard_in_two_rooms_is_counted_twice_so_ids_go_on_after_a_crash() {
    let mut cluster = Cluster::start("tworooms", &[&[], &[]]).await;
    let kai = cluster.nodes[0].helo_in("kai", json!(["x", "y"])).await;
    cluster.settle().await;
    let mut kai_on_a = cluster.nodes[0].attach_ready(&kai).await;
    let pat = cluster.nodes[1].helo_in("pat", json!(["x", "y"])).await;
    // Rooms sharded over a Redis Cluster are apart: the two joins come in either order.
    let mut heard = Vec::new();
    for _ in ["x", "y"] {
        heard.push(kai_on_a.next_named("new_user").await);
    }
    let mut rooms: Vec<_> = heard.iter().map(|h| h.data["room"].clone()).collect();
    rooms.sort_by_key(|room| room.to_string());
    assert_eq!(rooms, [json!("x"), json!("y")], "{heard:?}");
    for h in &heard {
        assert_eq!(h.data, pat.member(h.data["room"].as_str().unwrap()));
    }
    let seen = heard.last().and_then(|h| h.id).expect("new_user has an id");

    cluster.nodes[0].kill();
    drop(kai_on_a);
    let b = &cluster.nodes[1];
    let mut kai_on_b = resume_after_crash(b, &kai, seen).await;
    let marker = json!("after the crash");
    let id = b.respond(&pat, &kai, &marker).await;
    assert_eq!(id, seen + 1, "ids go on from the last one kai saw");
    kai_on_b.expect_response(id, &pat, &kai, &marker).await;
}

#[tokio::test]
async fn counts_lost_with_a_redis_restart_are_rebuilt_and_a_later_crash_still_counts_exactly() {
    let mut cluster = Cluster::start_own("recount", &[&[], &[]]).await;
    let KaiAndWen {
        kai,
        wen,
        mut kai_on_a,
        ..
    } = cluster.kai_on_a_wen_on_b().await;
    let before = json!("before the Redis restart");
    let id = cluster.nodes[1].respond(&wen, &kai, &before).await;
    kai_on_a.expect_response(id, &wen, &kai, &before).await;

    // Redis comes back empty: the sequence and every count are gone.
    let port = cluster.redis.port;
    cluster.redis.kill();
    cluster.redis = Redis::start_on(port).await.expect("restarting Redis");
    for node in &cluster.nodes {
        wait_for_health(node, StatusCode::OK, Duration::from_secs(10)).await;
    }

    // kai sees one more message, then two wait on A (a direct one and a broadcast) when A dies.
    let b = &cluster.nodes[1];
    let seen = json!("seen");
    let seen_id = b.respond(&wen, &kai, &seen).await;
    assert_eq!(seen_id, id + 1, "A kept kai's mailbox through the outage");
    kai_on_a.expect_response(seen_id, &wen, &kai, &seen).await;
    b.respond(&wen, &kai, &json!("unseen")).await;
    assert_eq!(b.broadcast_ok(&wen, &json!("unseen too")).await, 1);
    cluster.nodes[0].kill();
    drop(kai_on_a);

    let b = &cluster.nodes[1];
    let mut kai_on_b = resume_after_crash(b, &kai, seen_id).await;
    let lagged = kai_on_b.next().await;
    assert_eq!(
        (lagged.event.as_str(), &lagged.data),
        ("lagged", &json!({"missed": 2}))
    );
    let marker = json!("marker");
    let id = b.respond(&wen, &kai, &marker).await;
    assert_eq!(id, seen_id + 3);
    kai_on_b.expect_response(id, &wen, &kai, &marker).await;
}

#[tokio::test]
async fn an_instance_whose_pull_timed_out_lets_the_session_in_once_another_adopted_it() {
    let mut cluster = Cluster::start("orphan", &[&[], &[], &[]]).await;
    let kai = cluster.nodes[0].helo("kai").await;
    cluster.settle().await;
    // Frozen, A still reads its channel (a dead instance would be refused at once).
    cluster.nodes[0].pause();

    // kai tries B: B asks A for the session and waits. A dies, and B is frozen before A's
    // liveness key runs out, so C adopts kai; B's wait has timed out by the time it runs.
    let b = switchboard_client::Client::new(&cluster.nodes[1].base_url);
    let before = bus_reads(&cluster.nodes[1], "bus").await;
    let first = tokio::spawn({
        let (b, kai) = (b.clone(), kai.clone());
        // Longer than B's wait for A, which B's pause stretches.
        async move {
            timeout(WAIT * 4, b.attach(&kai, None))
                .await
                .map(|r| r.map(drop))
        }
    });
    // B's request for kai came back to it on the bus: B is waiting for A's answer.
    let deadline = Instant::now() + WAIT;
    while bus_reads(&cluster.nodes[1], "bus").await == before {
        assert!(Instant::now() < deadline, "B never asked for kai");
        sleep(POLL).await;
    }
    cluster.nodes[0].kill();
    cluster.nodes[1].pause();
    let c = &cluster.nodes[2];
    let deadline = Instant::now() + ADOPTED_WITHIN;
    while sample(&c.metrics().await, "switchboard_sessions_adopted_total") != Some(1.0) {
        assert!(Instant::now() < deadline, "C did not adopt kai");
        sleep(POLL).await;
    }
    cluster.nodes[1].resume();
    let _ = timeout(WAIT, first)
        .await
        .expect("B answered the first attach");

    // B no longer waits on A: its very next attach moves kai from C (before, B refused every
    // attach of kai with 503 for the 10 s it kept waiting for A's late answer). Counted in
    // tries, not seconds, so a loaded machine cannot blur it.
    let node = &cluster.nodes[1];
    let response = node.events_response(&kai.id, &kai.token, Some(0)).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "kai's first attach through B once B ran again"
    );
    let mut stream = SseReader::new(response).await;
    stream.ready().await;
    let wen = node.helo("wen").await;
    stream.expect_new_user(&wen).await;
    let hello = json!("through B");
    let id = node.respond(&wen, &kai, &hello).await;
    stream.expect_response(id, &wen, &kai, &hello).await;
}

#[tokio::test]
async fn a_killed_instances_sessions_nobody_resumes_leave_with_user_left_after_their_ttl() {
    let ttl = ["--session-ttl", "2s"];
    let mut cluster = Cluster::start("crash", &[&ttl, &ttl]).await;
    let wen = cluster.nodes[1].helo("wen").await;
    cluster.settle().await;
    let kai = cluster.nodes[0].helo("kai").await;
    cluster.settle().await;
    let kit = cluster.nodes[0].helo("kit").await; // never attaches
    cluster.settle().await;
    let (mut wen_stream, _) = cluster.nodes[1].attach_roster(&wen, None).await;
    wen_stream.expect_new_user(&kai).await;
    wen_stream.expect_new_user(&kit).await;
    let (_kai_stream, _) = cluster.nodes[0].attach_roster(&kai, None).await;

    cluster.nodes[0].kill();
    let killed = Instant::now();
    let b = &cluster.nodes[1];
    // Adopted after the liveness key (3 s), then detached for the 2 s TTL.
    let limit = Duration::from_secs(15);
    loop {
        let listed = b.clients().await;
        if listed == sessions(&[&wen]) {
            break;
        }
        assert!(
            killed.elapsed() < limit,
            "ghosts after {limit:?}: {listed:?}"
        );
        sleep(POLL).await;
    }
    let gone = killed.elapsed();
    let mut left = BTreeSet::new();
    for _ in 0..2 {
        let frame = wen_stream.next().await;
        assert_eq!(frame.event, "user_left", "{frame:?}");
        let mut peer = frame.data;
        let room = peer.as_object_mut().unwrap().remove("room");
        assert_eq!(room, Some(json!("lobby")));
        left.insert(peer_set(&[peer]).pop_first().unwrap());
    }
    assert_eq!(left, sessions(&[&kai, &kit]));
    eprintln!("sessions of the killed instance left after {gone:?}");
    let (status, body) = b.healthz().await;
    assert_eq!(status, StatusCode::OK, "the survivor stays healthy: {body}");
}

/// What one recipient of the load below saw, and what was accepted for it.
#[derive(Default, Debug)]
struct Tally {
    /// Direct messages to it answered 202, and answered otherwise.
    accepted: u64,
    refused: u64,
    /// Events its streams delivered, and what `lagged` said they missed.
    got: u64,
    missed: u64,
}

#[tokio::test]
async fn a_crash_under_load_misses_no_accepted_event_uncounted() {
    let quiet = ["--presence", "false", "--message-rate", "0"];
    let mut cluster = Cluster::start("crashload", &[&quiet, &quiet, &quiet]).await;
    let mut recipients = Vec::new();
    for i in 0..4 {
        recipients.push(cluster.nodes[0].helo(&format!("r{i}")).await);
    }
    let writers = [
        cluster.nodes[1].helo("w1").await,
        cluster.nodes[2].helo("w2").await,
    ];
    cluster.settle().await;
    let client = |i: usize| switchboard_client::Client::new(&cluster.nodes[i].base_url);
    let (on_a, on_b) = (client(0), client(1));
    let tallies: Arc<Vec<std::sync::Mutex<Tally>>> =
        Arc::new((0..recipients.len()).map(|_| Default::default()).collect());
    let broadcasts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let resumed = Arc::new(AtomicUsize::new(0));

    // Each recipient reads on A until A dies, then resumes through B after what it saw.
    let mut readers = Vec::new();
    for (i, me) in recipients.iter().cloned().enumerate() {
        let mut events = timeout(WAIT, on_a.attach(&me, None))
            .await
            .expect("attached on A within the wait")
            .expect("attach on A");
        let (on_b, tallies, resumed) = (on_b.clone(), Arc::clone(&tallies), Arc::clone(&resumed));
        readers.push(tokio::spawn(async move {
            let mut last = None;
            loop {
                while let Ok(Some(Ok(frame))) = timeout(WAIT, events.next()).await {
                    last = frame.id.or(last);
                    let mut tally = tallies[i].lock().unwrap();
                    match frame.event.as_str() {
                        "client_response" if frame.data["message"] == json!("end") => return,
                        "client_response" | "client_broadcast" => tally.got += 1,
                        "lagged" => tally.missed += frame.data["missed"].as_u64().unwrap(),
                        _ => {}
                    }
                }
                let deadline = Instant::now() + ADOPTED_WITHIN;
                events = loop {
                    match timeout(WAIT, on_b.attach(&me, last)).await {
                        Ok(Ok(events)) => break events,
                        _ if Instant::now() < deadline => sleep(POLL).await,
                        Ok(Err(err)) => panic!("r{i} could not resume through B: {err}"),
                        Err(_) => panic!("r{i}: no answer from B within {WAIT:?}"),
                    }
                };
                resumed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Two writers on B and C send direct messages to every recipient, and broadcasts.
    let writing = Arc::new(AtomicBool::new(true));
    let mut senders = Vec::new();
    for (w, me) in writers.iter().cloned().enumerate() {
        let node = client(w + 1);
        let (writing, tallies, broadcasts) = (
            Arc::clone(&writing),
            Arc::clone(&tallies),
            Arc::clone(&broadcasts),
        );
        let recipients = recipients.clone();
        senders.push(tokio::spawn(async move {
            let mut n = 0;
            while writing.load(Ordering::Relaxed) {
                n += 1;
                for (i, to) in recipients.iter().enumerate() {
                    let sent = timeout(WAIT, node.send(&me, &to.id, &json!({"n": n}))).await;
                    let mut tally = tallies[i].lock().unwrap();
                    match sent {
                        Ok(Ok(_)) => tally.accepted += 1,
                        _ => tally.refused += 1,
                    }
                }
                match timeout(WAIT, node.broadcast(&me, &json!({"n": n}))).await {
                    Ok(Ok(_)) => broadcasts.0.fetch_add(1, Ordering::Relaxed),
                    _ => broadcasts.1.fetch_add(1, Ordering::Relaxed),
                };
                sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    // Every recipient reads for a while before the crash, and again after its resume.
    let got = |i: usize| tallies[i].lock().unwrap().got;
    let read_more = |since: Vec<u64>| {
        let got = &got;
        async move {
            let deadline = Instant::now() + WAIT;
            while since.iter().enumerate().any(|(i, &n)| got(i) < n + 20) {
                assert!(Instant::now() < deadline, "the recipients stopped reading");
                sleep(POLL).await;
            }
        }
    };
    read_more(vec![0; recipients.len()]).await;
    cluster.nodes[0].kill();
    let deadline = Instant::now() + ADOPTED_WITHIN + WAIT;
    while resumed.load(Ordering::Relaxed) < recipients.len() {
        assert!(Instant::now() < deadline, "not every recipient resumed");
        sleep(POLL).await;
    }
    read_more((0..recipients.len()).map(got).collect()).await;
    writing.store(false, Ordering::Relaxed);
    for sender in senders {
        // Each call of a sender is bounded; so is its last round.
        timeout(WAIT * 3, sender)
            .await
            .expect("a sender stopped")
            .unwrap();
    }
    for to in &recipients {
        timeout(WAIT, on_b.send(&writers[0], &to.id, &json!("end")))
            .await
            .expect("an answer within the wait")
            .unwrap();
    }
    for reader in readers {
        timeout(WAIT, reader)
            .await
            .expect("a reader ended")
            .unwrap();
    }

    let (broadcast, broadcast_failed) = (
        broadcasts.0.load(Ordering::Relaxed),
        broadcasts.1.load(Ordering::Relaxed),
    );
    let mut missed = 0;
    for (i, tally) in tallies.iter().enumerate() {
        let tally = tally.lock().unwrap();
        eprintln!("r{i}: {tally:?}, broadcasts {broadcast} accepted, {broadcast_failed} refused");
        let accepted = tally.accepted + broadcast;
        let reported = tally.got + tally.missed;
        // Every accepted event arrived or was counted missed; the count may also include a
        // message its sender was told failed (its home died before answering), no other.
        assert!(
            reported >= accepted,
            "r{i}: {accepted} accepted, {reported} delivered or reported lost"
        );
        assert!(
            reported <= accepted + tally.refused + broadcast_failed,
            "r{i}: more reported than was ever sent: {tally:?}"
        );
        missed += tally.missed;
    }
    assert!(
        missed > 0,
        "the crash lost the events accepted before the adoption"
    );
}

/// What an idle cluster asks Redis costs O(instances) a second, not O(sessions): the live
/// instances come from the set they list themselves in, not a keyspace scan, and the directory
/// is read only when an instance died (or now and then), not every second; nor is every room's
/// count, for figures no console watches. Issue 13: at 100,000 sessions, each instance's scan
/// and sweep were 96% of Redis's commands.
#[tokio::test]
async fn an_idle_cluster_neither_scans_its_keys_nor_sweeps_its_directory_every_second() {
    let cluster = Cluster::start_own("idle", &[&[], &[]]).await;
    for (i, node) in cluster.nodes.iter().enumerate() {
        for n in 0..20 {
            node.helo(&format!("idle{i}x{n}")).await;
        }
    }
    cluster.settle().await;
    let redis = &cluster.redis;
    let (scans, sweeps, looks, listings) = (
        redis.calls("scan").await,
        redis.calls("hscan").await,
        redis.calls("smembers").await,
        redis.calls("hgetall").await,
    );
    // Four liveness ticks of each instance: each used to scan and sweep at every one.
    sleep(Duration::from_secs(4)).await;
    let looks = redis.calls("smembers").await - looks;
    assert!(looks >= 4, "the instances look at the listed ones: {looks}");
    // At most one of each per instance: the first look's or a backstop's.
    let scans = redis.calls("scan").await - scans;
    assert!(scans <= 2, "keyspace scans in 4 s: {scans}");
    let sweeps = redis.calls("hscan").await - sweeps;
    assert!(sweeps <= 2, "directory sweeps in 4 s: {sweeps}");
    // Nor reads every room's count for figures that no console watches (each instance did,
    // every second).
    let listings = redis.calls("hgetall").await - listings;
    assert!(listings <= 2, "whole hashes read in 4 s: {listings}");
}
