//! The mailbox under a flood (issue 10): presence and broadcast traffic never evicts an accepted
//! direct message; what the flood itself loses is reported as `lagged`, where it was lost; and a
//! recipient full of unread direct messages still answers 429.
//!
//! Cluster mode applies joins and broadcasts when they come back from Redis, after the HTTP
//! answer, so each test reads a witness stream up to the last of them before looking at the
//! mailbox under test: Redis hands every instance the bus in one order.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

/// Reads `witness` until an event named `name` whose data satisfies `is_it` arrives (skipping
/// the rest, `lagged` included); every event sent before it is then in every mailbox.
async fn witness_sees(witness: &mut SseReader, name: &str, is_it: impl Fn(&Value) -> bool) {
    loop {
        let event = witness.next().await;
        if event.event == name && is_it(&event.data) {
            return;
        }
    }
}

/// A witness stream (attached first), then `senders`, then the recipient, registered once the
/// senders' joins were applied, so its mailbox starts empty.
async fn witness_senders_recipient(
    app: &TestApp,
    senders: &[&str],
) -> (SseReader, Vec<Session>, Session) {
    let witness = app.helo("witness").await;
    let mut stream = app.attach_ready(&witness).await;
    let mut sessions = Vec::new();
    for name in senders {
        let sender = app.helo(name).await;
        witness_sees(&mut stream, "new_user", |data| data["id"] == sender.id).await;
        sessions.push(sender);
    }
    let recipient = app.helo("ann").await;
    witness_sees(&mut stream, "new_user", |data| data["id"] == recipient.id).await;
    (stream, sessions, recipient)
}

/// Reads the next event: named `name`, with id `id` and message `message`.
async fn expect(stream: &mut SseReader, name: &str, id: u64, message: &Value) {
    let event = stream.next_named(name).await;
    assert_eq!(
        (event.id, &event.data["message"]),
        (Some(id), message),
        "{}",
        stream.label
    );
}

async fn expect_lagged(stream: &mut SseReader, missed: u64) {
    let lagged = stream.next_named("lagged").await;
    assert_eq!(lagged.data, json!({ "missed": missed }), "{}", stream.label);
}

#[tokio::test]
async fn direct_messages_outlive_a_flood_of_joins_and_broadcasts() {
    let app = spawn_app(Config {
        mailbox_size: 16,
        ..test_config()
    })
    .await;
    let (mut witness, senders, ann) = witness_senders_recipient(&app, &["bob"]).await;
    let bob = &senders[0];
    for n in 1..=5 {
        assert_eq!(app.respond(bob, &ann, json!({ "n": n })).await, n);
    }
    // 300 joins (a `new_user` each, ids 6..=305) and 20 broadcasts (306..=325) while ann is
    // away: far more than her 16 slots.
    let mut strangers = Vec::new();
    for n in 0..300 {
        strangers.push(app.helo(&format!("stranger {n}")).await);
    }
    for (k, stranger) in strangers.iter().take(20).enumerate() {
        app.broadcast_ok(stranger, json!({ "k": k })).await;
    }
    witness_sees(&mut witness, "client_broadcast", |data| {
        data["message"] == json!({ "k": 19 })
    })
    .await;

    let mut stream = app.attach_ready(&ann).await;

    for n in 1..=5 {
        expect(&mut stream, "client_response", n, &json!({ "n": n })).await;
    }
    // The 16 slots hold the 5 direct messages and the newest 11 broadcasts (315..=325, k 9..=19):
    // 300 joins and 9 broadcasts are gone, and ann is told so where they were.
    expect_lagged(&mut stream, 309).await;
    for k in 9..=19 {
        expect(&mut stream, "client_broadcast", 306 + k, &json!({ "k": k })).await;
    }
    // Nothing else: the next event is a new one, with the next id.
    assert_eq!(app.respond(bob, &ann, json!("after")).await, 326);
    expect(&mut stream, "client_response", 326, &json!("after")).await;
}

#[tokio::test]
async fn a_recipient_full_of_direct_messages_answers_429_and_drops_broadcasts_instead() {
    let app = spawn_app(Config {
        mailbox_size: 4,
        ..test_config()
    })
    .await;
    let (mut witness, senders, ann) = witness_senders_recipient(&app, &["bob", "cy"]).await;
    let (bob, cy) = (&senders[0], &senders[1]);
    // Two direct messages (1, 2), two broadcasts (3, 4): the mailbox is full.
    for n in 1..=2 {
        assert_eq!(app.respond(bob, &ann, json!(n)).await, n);
    }
    for n in 3..=4 {
        app.broadcast_ok(cy, json!(n)).await;
    }
    witness_sees(&mut witness, "client_broadcast", |data| {
        data["message"] == 4
    })
    .await;
    // Direct messages take the broadcasts' slots (5, 6) rather than being refused...
    for n in 5..=6 {
        assert_eq!(app.respond(bob, &ann, json!(n)).await, n);
    }
    // ...until unread direct messages fill the mailbox: then the sender gets 429, and a
    // broadcast (7) is dropped on arrival.
    let refused = app.post_response(bob, &ann.id, json!("refused")).await;
    assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "mailbox_full").await;
    app.broadcast_ok(cy, json!(7)).await;
    witness_sees(&mut witness, "client_broadcast", |data| {
        data["message"] == 7
    })
    .await;

    let mut stream = app.attach_ready(&ann).await;

    for n in 1..=2 {
        expect(&mut stream, "client_response", n, &json!(n)).await;
    }
    expect_lagged(&mut stream, 2).await;
    for n in 5..=6 {
        expect(&mut stream, "client_response", n, &json!(n)).await;
    }
    expect_lagged(&mut stream, 1).await;
    // Read now, they make room: the next direct message is accepted, with the next id.
    assert_eq!(app.respond(bob, &ann, json!(8)).await, 8);
    expect(&mut stream, "client_response", 8, &json!(8)).await;
}

#[tokio::test]
async fn large_broadcasts_do_not_evict_a_direct_message_from_the_byte_budget() {
    // Presence off: only the direct message and the broadcasts reach ann's mailbox.
    let app = spawn_app(Config {
        mailbox_bytes: 256 * 1024,
        presence: false,
        ..test_config()
    })
    .await;
    let witness = app.helo("witness").await;
    let mut witness = app.attach_ready(&witness).await;
    let ann = app.helo("ann").await;
    let bob = app.helo("bob").await;
    assert_eq!(app.respond(&bob, &ann, json!("small")).await, 1);
    // Six 60 KB broadcasts (2..=7), each from its own sender: 256 KiB holds four of them beside
    // the direct message.
    let large = "x".repeat(60_000);
    for n in 0..6 {
        let sender = app.helo(&format!("sender {n}")).await;
        app.broadcast_ok(&sender, json!([n, large])).await;
    }
    witness_sees(&mut witness, "client_broadcast", |data| {
        data["message"][0] == 5
    })
    .await;

    let mut stream = app.attach_ready(&ann).await;

    expect(&mut stream, "client_response", 1, &json!("small")).await;
    expect_lagged(&mut stream, 2).await;
    for n in 2..6 {
        expect(&mut stream, "client_broadcast", n + 2, &json!([n, large])).await;
    }
    assert_eq!(app.respond(&bob, &ann, json!("after")).await, 8);
    expect(&mut stream, "client_response", 8, &json!("after")).await;
}
