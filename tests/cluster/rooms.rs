//! Rooms across instances: presence, rosters, broadcasts and listings span the cluster; a room's
//! traffic is read and appended only where it has members; joining and leaving through any
//! instance reaches the session's home in-band; a drain on deploy carries each session's rooms;
//! a room above the presence limit is counted for its members on every instance; a session
//! hopping between instances under its room's traffic hears all of it once.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use std::time::{Duration, Instant};

use crate::support::cluster::{Cluster, bus_reads};
use crate::support::*;

/// GETs `path` on `node` with `credential`; the JSON body, which must come with 200.
async fn listed(node: &Endpoint, path: &str, credential: &str) -> Value {
    let response = send(node.client.get(node.url(path)).bearer_auth(credential)).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{path} on {}",
        node.label
    );
    body_json(response).await
}

/// The ids of a JSON list of peers, sorted.
fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(sessions: &[&Session]) -> Vec<String> {
    let mut ids: Vec<String> = sessions.iter().map(|s| s.id.clone()).collect();
    ids.sort();
    ids
}

/// Client broadcasts delivered to `node`'s streams so far.
async fn broadcasts_delivered(node: &Endpoint) -> f64 {
    let series = "switchboard_events_delivered_total{event=\"client_broadcast\"}";
    sample(&node.metrics().await, series).unwrap_or(0.0)
}

#[tokio::test]
async fn rooms_span_instances_and_a_rooms_traffic_is_appended_only_where_it_has_members() {
    let cluster = Cluster::start("rooms", &[&[], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let ann = a.helo_in("ann", json!(["dev"])).await;
    cluster.settle().await;
    let bob = b.helo_in("bob", json!(["dev", "ops"])).await;
    cluster.settle().await;
    let cat = b.helo_in("cat", json!(["ops"])).await;
    cluster.settle().await;

    // Rosters come from the whole cluster.
    let mut ann_stream = a.attach(&ann, None).await;
    let ready = ann_stream.ready().await;
    assert_eq!(ready["rooms"], json!({"dev": [bob.peer()]}));
    assert_eq!(
        ann_stream.next_named("new_user").await.data,
        bob.member("dev")
    );
    let mut bob_stream = b.attach(&bob, None).await;
    let ready = bob_stream.ready().await;
    assert_eq!(ready["rooms"]["dev"], json!([ann.peer()]));
    assert_eq!(ready["rooms"]["ops"], json!([cat.peer()]));
    assert_eq!(
        bob_stream.next_named("new_user").await.data,
        cat.member("ops")
    );
    let mut cat_stream = b.attach_ready(&cat).await;

    // A join on A is announced on B in its rooms only.
    let dan = a.helo_in("dan", json!(["ops"])).await;
    assert_eq!(
        bob_stream.next_named("new_user").await.data,
        dan.member("ops")
    );
    assert_eq!(
        cat_stream.next_named("new_user").await.data,
        dan.member("ops")
    );
    let marker = json!("marker");
    let id = b.respond(&cat, &ann, &marker).await;
    ann_stream.expect_response(id, &cat, &ann, &marker).await;

    // A broadcast into dev from A reaches bob on B, not cat; ann's instance has no other
    // member of dev and delivers it to nobody.
    cluster.settle().await;
    let on_a = broadcasts_delivered(a).await;
    let body = json!({"room": "dev", "message": "dev only"}).to_string();
    let response = a.post_raw("/broadcast", Some(&ann.token), &body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(body_json(response).await, json!({"recipients": 1}));
    let heard = bob_stream.next_named("client_broadcast").await.data;
    assert_eq!(
        (&heard["room"], &heard["message"]),
        (&json!("dev"), &json!("dev only"))
    );
    let id = a.respond(&ann, &cat, &marker).await;
    cat_stream.expect_response(id, &ann, &cat, &marker).await;
    cluster.settle().await;
    assert_eq!(
        broadcasts_delivered(a).await,
        on_a,
        "no member of dev on A but ann"
    );

    // Listings span the cluster.
    let members = listed(b, "/rooms/dev/members", &bob.token).await;
    assert_eq!(ids(&members), sorted(&[&ann, &bob]));
    let members = listed(a, "/rooms/ops/members", TEST_API_KEY).await;
    assert_eq!(ids(&members), sorted(&[&bob, &cat, &dan]));
    let clients = listed(a, "/clients", &ann.token).await;
    assert_eq!(ids(&clients), sorted(&[&ann, &bob]));
    let rooms = listed(b, "/api/rooms", TEST_API_KEY).await;
    assert_eq!(
        rooms,
        json!([{"room": "dev", "members": 2}, {"room": "ops", "members": 3}])
    );

    // Leaving the hub on one instance tells each room on the other.
    assert_eq!(b.delete(&bob.token).await.status(), 204);
    assert_eq!(
        ann_stream.next_named("user_left").await.data,
        bob.member("dev")
    );
    assert_eq!(
        cat_stream.next_named("user_left").await.data,
        bob.member("ops")
    );
    cluster.settle().await;
    let rooms = listed(a, "/api/rooms", TEST_API_KEY).await;
    assert_eq!(
        rooms,
        json!([{"room": "dev", "members": 1}, {"room": "ops", "members": 2}])
    );
}

#[tokio::test]
async fn joining_and_leaving_through_another_instance_reaches_the_home_in_band() {
    let cluster = Cluster::start("roomjoin", &[&[], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let ann = a.helo_in("ann", json!(["ops"])).await;
    cluster.settle().await;
    let bob = b.helo_in("bob", json!([])).await;
    cluster.settle().await;
    let mut ann_stream = a.attach_ready(&ann).await;
    let mut bob_stream = b.attach_ready(&bob).await;

    // bob's stream is on B; his PUT goes through A.
    assert_eq!(a.join_room(&bob, "ops").await, 2);
    let joined = bob_stream.next_named("joined").await;
    assert_eq!(
        joined.data,
        json!({"room": "ops", "clients": [ann.peer()], "members": 2})
    );
    assert_eq!(
        ann_stream.next_named("new_user").await.data,
        bob.member("ops")
    );
    assert_eq!(a.join_room(&bob, "ops").await, 2, "in already: no change");

    let response = a.room_request(Method::DELETE, &bob, "ops").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let left = bob_stream.next_named("left").await;
    assert_eq!(left.data, json!({"room": "ops"}));
    assert!(left.id > joined.id);
    assert_eq!(
        ann_stream.next_named("user_left").await.data,
        bob.member("ops")
    );
    let response = b.room_request(Method::DELETE, &bob, "ops").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // The backend moves him through B; a broadcast into the room then reaches him.
    let response = send(
        b.client
            .put(b.url("/api/rooms/ops/members"))
            .bearer_auth(TEST_API_KEY)
            .json(&json!({"session": bob.id})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    bob_stream.next_named("joined").await;
    ann_stream.next_named("new_user").await;
    let body = json!({"room": "ops", "message": "welcome"}).to_string();
    let response = a.post_raw("/broadcast", Some(&ann.token), &body).await;
    assert_eq!(body_json(response).await, json!({"recipients": 1}));
    let heard = bob_stream.next_named("client_broadcast").await;
    assert_eq!(heard.data["message"], "welcome");
}

#[tokio::test]
async fn a_drain_on_deploy_carries_each_sessions_rooms() {
    let mut cluster = Cluster::start("roomdrain", &[&[], &[]]).await;
    let ann = cluster.nodes[0].helo_in("ann", json!(["dev"])).await;
    cluster.settle().await;
    let bob = cluster.nodes[1].helo_in("bob", json!(["dev", "ops"])).await;
    cluster.settle().await;
    let mut ann_stream = cluster.nodes[0].attach_ready(&ann).await;
    ann_stream.next_named("new_user").await;

    // B stops: bob is drained to A with his rooms, and nobody hears him leave or join.
    cluster.restart(1).await;
    cluster.settle().await;
    let a = &cluster.nodes[0];
    let mut bob_stream = a.attach(&bob, None).await;
    let ready = bob_stream.ready().await;
    assert_eq!(ready["rooms"], json!({"dev": [ann.peer()], "ops": []}));
    let body = json!({"room": "dev", "message": "still here?"}).to_string();
    let response = a.post_raw("/broadcast", Some(&ann.token), &body).await;
    assert_eq!(body_json(response).await, json!({"recipients": 1}));
    let heard = bob_stream.next_named("client_broadcast").await;
    assert_eq!(heard.data["room"], "dev");
    let marker = json!("marker");
    let id = a.respond(&bob, &ann, &marker).await;
    ann_stream.expect_response(id, &bob, &ann, &marker).await;
    let members = listed(&cluster.nodes[1], "/rooms/ops/members", TEST_API_KEY).await;
    assert_eq!(ids(&members), sorted(&[&bob]));
}

#[tokio::test]
async fn a_room_above_the_presence_limit_is_counted_for_its_members_on_every_instance() {
    let limit: &[&str] = &["--room-presence-limit", "2"];
    let cluster = Cluster::start("roomcount", &[limit, limit]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let ann = a.helo_in("ann", json!(["big"])).await;
    cluster.settle().await;
    let bob = b.helo_in("bob", json!(["big"])).await;
    cluster.settle().await;
    let mut ann_stream = a.attach(&ann, None).await;
    assert_eq!(
        ann_stream.ready().await["rooms"]["big"],
        json!([bob.peer()])
    );
    assert_eq!(
        ann_stream.next_named("new_user").await.data,
        bob.member("big")
    );
    let mut bob_stream = b.attach_ready(&bob).await;

    // Above two members, a join on either instance is counted on both, never announced.
    let counted = |members: u64| json!({"room": "big", "members": members});
    let cat = a.helo_in("cat", json!(["big"])).await;
    for stream in [&mut ann_stream, &mut bob_stream] {
        let event = stream.next_named("room_count").await;
        assert_eq!(event.data, counted(3));
        assert!(event.id.is_some(), "room_count has an id");
    }
    let dan = b.helo_in("dan", json!([])).await;
    assert_eq!(
        a.join_room(&dan, "big").await,
        4,
        "joined through A, homed on B"
    );
    for stream in [&mut ann_stream, &mut bob_stream] {
        assert_eq!(stream.next_named("room_count").await.data, counted(4));
    }
    let ready = a.attach(&cat, None).await.ready().await;
    assert_eq!(
        ready["rooms"]["big"],
        json!({"members": 4}),
        "a count, not a roster"
    );

    // A leave on the other instance is counted too, and nobody hears user_left.
    assert_eq!(b.delete(&dan.token).await.status(), 204);
    for stream in [&mut ann_stream, &mut bob_stream] {
        assert_eq!(stream.next_named("room_count").await.data, counted(3));
    }
    let marker = json!("marker");
    let id = b.respond(&bob, &ann, &marker).await;
    ann_stream.expect_response(id, &bob, &ann, &marker).await;
    let id = a.respond(&ann, &bob, &marker).await;
    bob_stream.expect_response(id, &ann, &bob, &marker).await;
}

/// What `node` read from Redis on the bus and on room channels so far.
async fn shared_reads(node: &Endpoint) -> (u64, u64) {
    (bus_reads(node, "bus").await, bus_reads(node, "room").await)
}

/// Waits (bounded) until exactly `readers` connections read `channel`.
async fn wait_for_readers(cluster: &Cluster, channel: &str, readers: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster.readers(channel).await != readers {
        assert!(
            Instant::now() < deadline,
            "{channel} never had {readers} readers"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn a_rooms_traffic_is_read_only_by_the_instances_with_members_in_it() {
    let cluster = Cluster::start_own("roomreads", &[&[], &[], &[]]).await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let dev = format!("{}:room:dev", cluster.prefix);
    let ann = a.helo_in("ann", json!(["dev"])).await;
    let bob = b.helo_in("bob", json!(["dev"])).await;
    let cat = c.helo_in("cat", json!(["ops"])).await;
    let eve = a.helo_in("eve", json!([])).await;
    cluster.settle().await;
    assert_eq!(
        cluster.readers(&dev).await,
        2,
        "A and B read dev, C does not"
    );
    let mut ann_stream = a.attach_ready(&ann).await;
    assert_eq!(
        ann_stream.next_named("new_user").await.data,
        bob.member("dev")
    );
    let mut bob_stream = b.attach_ready(&bob).await;
    let mut eve_stream = a.attach_ready(&eve).await;
    let mut cat_stream = c.attach_ready(&cat).await;
    cluster.settle().await;
    let on_c = shared_reads(c).await;
    let rooms_on = (bus_reads(a, "room").await, bus_reads(b, "room").await);

    // dev's traffic, through every instance: a join, a broadcast, a session joining through
    // another instance than its home and leaving again, a session leaving the hub.
    let dan = c.helo_in("dan", json!(["dev"])).await;
    assert_eq!(
        ann_stream.next_named("new_user").await.data,
        dan.member("dev")
    );
    assert_eq!(
        bob_stream.next_named("new_user").await.data,
        dan.member("dev")
    );
    let body = json!({"room": "dev", "message": "dev only"}).to_string();
    let response = b.post_raw("/broadcast", Some(&bob.token), &body).await;
    assert_eq!(body_json(response).await, json!({"recipients": 2}));
    assert_eq!(
        ann_stream.next_named("client_broadcast").await.data["message"],
        "dev only"
    );
    assert_eq!(b.join_room(&eve, "dev").await, 4);
    eve_stream.next_named("joined").await;
    assert_eq!(
        bob_stream.next_named("new_user").await.data,
        eve.member("dev")
    );
    let response = c.room_request(Method::DELETE, &eve, "dev").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    eve_stream.next_named("left").await;
    assert_eq!(
        bob_stream.next_named("user_left").await.data,
        eve.member("dev")
    );
    assert_eq!(c.delete(&dan.token).await.status(), 204);
    assert_eq!(
        bob_stream.next_named("user_left").await.data,
        dan.member("dev")
    );

    // C homed dan for a while: it read dev then, and leaves it once he is gone.
    wait_for_readers(&cluster, &dev, 2).await;
    cluster.settle().await;
    let on_c = shared_reads(c).await.1 - on_c.1;
    let body = json!({"room": "dev", "message": "after dan"}).to_string();
    let response = a.post_raw("/broadcast", Some(&ann.token), &body).await;
    assert_eq!(body_json(response).await, json!({"recipients": 1}));
    bob_stream.next_named("client_broadcast").await;
    cluster.settle().await;
    // Six messages of dev (join, broadcast, enter, exit, leave, broadcast): A and B read each
    // once on dev's channel.
    assert_eq!(bus_reads(a, "room").await - rooms_on.0, 6);
    assert_eq!(bus_reads(b, "room").await - rooms_on.1, 6);
    assert!(on_c <= 5, "C read dev only while dan was there");

    // The same without C ever homing a member: nothing of dev reaches it.
    let quiet = shared_reads(c).await;
    let fay = a.helo_in("fay", json!(["dev"])).await;
    bob_stream.next_named("new_user").await;
    let body = json!({"room": "dev", "message": "quiet"}).to_string();
    a.post_raw("/broadcast", Some(&fay.token), &body).await;
    bob_stream.next_named("client_broadcast").await;
    assert_eq!(a.join_room(&eve, "dev").await, 4);
    eve_stream.next_named("joined").await;
    a.room_request(Method::DELETE, &eve, "dev").await;
    eve_stream.next_named("left").await;
    assert_eq!(a.delete(&fay.token).await.status(), 204);
    for (event, who) in [("new_user", &eve), ("user_left", &eve), ("user_left", &fay)] {
        assert_eq!(bob_stream.next_named(event).await.data, who.member("dev"));
    }
    cluster.settle().await;
    assert_eq!(
        shared_reads(c).await,
        quiet,
        "C reads none of dev's traffic"
    );
    let marker = json!("marker");
    let id = a.respond(&ann, &cat, &marker).await;
    cat_stream.expect_response(id, &ann, &cat, &marker).await;

    // B's last member of dev leaves: B stops reading dev.
    let response = b.room_request(Method::DELETE, &bob, "dev").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    wait_for_readers(&cluster, &dev, 1).await;
}

/// A session whose client hops from instance to instance (each hop a migration, resuming with
/// `Last-Event-ID`) while its room's traffic flows hears every broadcast of the room once, in
/// order, and is told of no loss. Over a Redis Cluster with rooms sharded the room's channel is
/// on another shard than the bus, so each hop hands the room over by its numbers.
#[tokio::test]
async fn a_session_hopping_between_instances_under_room_traffic_hears_every_broadcast_once() {
    const SENT: u64 = 150;
    let cluster = Cluster::start("hops", &[&[], &[], &[]]).await;
    let nodes = &cluster.nodes;
    let ann = nodes[0].helo_in("ann", json!(["dev"])).await;
    cluster.settle().await;
    let bob = nodes[1].helo_in("bob", json!(["dev"])).await;
    cluster.settle().await;
    let say = |message: Value| {
        let body = json!({ "room": "dev", "message": message }).to_string();
        let ann = &ann;
        async move {
            let response = nodes[0]
                .post_raw("/broadcast", Some(&ann.token), &body)
                .await;
            assert_eq!(
                response.status(),
                StatusCode::ACCEPTED,
                "broadcast {message}"
            );
        }
    };
    let send = async {
        for n in 0..SENT {
            say(json!(n)).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        say(json!("end")).await;
    };
    let hop = async {
        let (mut heard, mut last, mut hops) = (Vec::new(), None, 0);
        loop {
            let node = &nodes[(hops + 1) % nodes.len()];
            hops += 1;
            let mut stream = node.attach(&bob, last).await;
            let mut here = 0;
            while here < 10 {
                let event = stream.next_within(Duration::from_secs(10)).await;
                last = event.id.or(last);
                match event.event.as_str() {
                    "lagged" => panic!("told of a loss after {heard:?}: {}", event.data),
                    "client_broadcast" if event.data["message"] == "end" => return (heard, hops),
                    "client_broadcast" => {
                        heard.push(event.data["message"].as_u64().expect("a number"));
                        here += 1;
                    }
                    _ => {}
                }
            }
        }
    };
    let ((), (heard, hops)) =
        tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(send, hop) })
            .await
            .expect("the traffic and the hops within a minute");
    assert!(hops >= 10, "{hops} hops");
    assert_eq!(
        heard,
        (0..SENT).collect::<Vec<_>>(),
        "every broadcast once, in order"
    );
}

/// A session drained off a stopping instance while its room's traffic flows hears every
/// broadcast of the room once, in order, or is told exactly how many it missed (a drain cannot
/// wait for a lagging reader: over a Redis Cluster with rooms sharded, the room's channel is on
/// another shard than the bus).
#[tokio::test]
async fn a_session_drained_under_room_traffic_hears_every_broadcast_once_or_is_told() {
    const SENT: u64 = 150;
    let mut cluster = Cluster::start("drainroom", &[&[], &[], &[]]).await;
    let [a, b, c] = &mut cluster.nodes[..] else {
        unreachable!()
    };
    let ann = a.helo_in("ann", json!(["dev"])).await;
    let bob = b.helo_in("bob", json!(["dev"])).await;
    // The cluster settles: both hear of each other before the traffic.
    let mut on_b = b.attach(&bob, None).await;
    on_b.ready().await;
    let a = &*a;
    let send = async {
        for n in 0..=SENT {
            let message = if n == SENT { json!("end") } else { json!(n) };
            let body = json!({ "room": "dev", "message": message }).to_string();
            let response = a.post_raw("/broadcast", Some(&ann.token), &body).await;
            assert_eq!(response.status(), StatusCode::ACCEPTED, "broadcast {n}");
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    };
    let listen = async {
        let mut seen = Heard::default();
        // On B until it stops (a third of the way in), then on C, resuming.
        while seen.heard.len() < (SENT / 3) as usize {
            seen.read(on_b.next_within(Duration::from_secs(10)).await);
        }
        let (stopped, rest) = tokio::join!(b.terminate(), on_b.until_end());
        assert!(stopped.success(), "B stops cleanly");
        for event in rest {
            seen.read(event);
        }
        let mut on_c = c.attach(&bob, seen.last).await;
        while !seen.read(on_c.next_within(Duration::from_secs(10)).await) {}
        (seen.heard, seen.missed)
    };
    let ((), (heard, missed)) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(send, listen)
    })
    .await
    .expect("the traffic and the drain within a minute");
    assert!(
        heard.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {heard:?}"
    );
    assert_eq!(
        heard.len() as u64 + missed,
        SENT,
        "every broadcast heard or told missed (lagged {missed}): {heard:?}"
    );
}

/// What a stream heard of numbered room broadcasts.
#[derive(Default)]
struct Heard {
    heard: Vec<u64>,
    missed: u64,
    last: Option<u64>,
}

impl Heard {
    /// Reads one event; true at the marker `"end"`.
    fn read(&mut self, event: SseEvent) -> bool {
        self.last = event.id.or(self.last);
        match event.event.as_str() {
            "lagged" => self.missed += event.data["missed"].as_u64().expect("missed"),
            "client_broadcast" if event.data["message"] == "end" => return true,
            "client_broadcast" => self.heard.push(event.data["message"].as_u64().expect("n")),
            _ => {}
        }
        false
    }
}
