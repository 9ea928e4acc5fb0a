//! The admin console's figures across instances: `GET /api/stats` on any instance streams every
//! instance's figures, each marked by its id and state, and follows what clients do on the
//! others; an instance that stops shows `draining`, and one that stops or dies drops out within
//! a bounded time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::cluster::Cluster;
use crate::support::stats::StatsStream;
use crate::support::*;

/// A dead instance's figures expire after 3 s; a second for the next round, and a margin.
const GONE_WITHIN: Duration = Duration::from_secs(8);

/// Each instance's figures, by instance id, as one second of a stream sent them.
type Round = BTreeMap<String, Value>;

/// Reads `stats`, opened on instance `here`, until a whole round (from one of `here`'s events
/// to its next: its own figures come first each second) satisfies `ready`, within `limit`.
async fn round_until(
    stats: &mut StatsStream,
    here: &str,
    limit: Duration,
    what: &str,
    ready: impl Fn(&Round) -> bool,
) -> Round {
    let deadline = Instant::now() + limit;
    let mut round: Option<Round> = None;
    loop {
        let figures = stats.next().await;
        let instance = figures["instance"]
            .as_str()
            .expect("an instance")
            .to_owned();
        if instance == here {
            if let Some(done) = round.take() {
                if ready(&done) {
                    return done;
                }
                assert!(
                    Instant::now() < deadline,
                    "waiting for {what}; last round {done:#?}"
                );
            }
            round = Some(Round::new());
        }
        if let Some(round) = round.as_mut() {
            assert!(
                round.insert(instance, figures).is_none(),
                "one event per instance a second"
            );
        }
    }
}

#[tokio::test]
async fn stats_on_one_instance_follow_every_instance_until_it_stops_or_dies() {
    let mut cluster = Cluster::start("stats", &[&[], &[], &[]]).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(cluster.instance_id(i).await);
    }
    let [a, b, c] = [&ids[0], &ids[1], &ids[2]];
    let mut stats = StatsStream::open(&cluster.nodes[0]).await;
    let round = round_until(&mut stats, a, WAIT, "all three ready", |round| {
        round.len() == 3 && round.values().all(|f| f["state"] == "ready")
    })
    .await;
    assert_eq!(
        round.keys().collect::<Vec<_>>(),
        {
            let mut all = vec![a, b, c];
            all.sort();
            all
        },
        "every instance, by its id"
    );

    // A client on B shows in B's figures, read through A: its join in a second's rate, then
    // its session and stream.
    let bob = cluster.nodes[1].helo("bob").await;
    let _bob_stream = cluster.nodes[1].attach_ready(&bob).await;
    let joined = std::cell::Cell::new(false);
    let round = round_until(&mut stats, a, WAIT, "bob on B", |round| {
        let on_b = round.get(b);
        joined
            .set(joined.get() || on_b.is_some_and(|f| f["joins_per_second"].as_f64() > Some(0.0)));
        joined.get() && on_b.is_some_and(|f| f["sessions"] == 1 && f["streams"] == 1)
    })
    .await;
    assert_eq!(round[a]["sessions"], 0, "bob is homed on B: {round:#?}");
    assert_eq!(round[c]["sessions"], 0);

    // The hub's rooms are listed by the watched instance alone (A, read from Redis); B and C,
    // which no console watches, say only how many there are.
    let lobby = serde_json::json!([{"room": "lobby", "members": 1}]);
    let round = round_until(&mut stats, a, WAIT, "A listing bob's room", |round| {
        round[a]["rooms"] == lobby
    })
    .await;
    for other in [b, c] {
        assert_eq!(round[other]["rooms"], serde_json::json!([]), "{round:#?}");
        assert_eq!(round[other]["room_count"], 1, "{round:#?}");
    }

    // C dies: it drops out once its figures expire.
    cluster.nodes[2].kill();
    let killed = Instant::now();
    let round = round_until(&mut stats, a, GONE_WITHIN, "C gone", |round| {
        !round.contains_key(c)
    })
    .await;
    eprintln!("C dropped out {:?} after the kill", killed.elapsed());
    assert!(round.contains_key(b), "B still there: {round:#?}");

    // B stops: it drains bob to A, and A shows it `draining` until its last figures expire.
    // A stream on B ends with those last figures.
    let on_b = StatsStream::open(&cluster.nodes[1]).await;
    cluster.nodes[1].send_sigterm();
    let rest = on_b.rest(WAIT * 2).await;
    let last = rest
        .iter()
        .rev()
        .find(|f| f["instance"] == **b)
        .expect("B's own figures");
    assert_eq!(last["state"], "draining", "{rest:#?}");
    round_until(&mut stats, a, WAIT, "B draining, seen on A", |round| {
        round.get(b).is_some_and(|f| f["state"] == "draining")
    })
    .await;
    let round = round_until(&mut stats, a, WAIT * 2, "B gone, bob on A", |round| {
        !round.contains_key(b) && round[a]["sessions"] == 1
    })
    .await;
    assert_eq!(round.len(), 1, "A alone: {round:#?}");
    let exit = cluster.nodes[1].wait_for_exit(WAIT * 2).await;
    assert!(exit.success(), "B stops cleanly: {exit:?}");
}
