//! Many clients at once: presence stays exact while they join and attach concurrently.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::Barrier;

use crate::support::*;

const CLIENTS: usize = 50;

/// What one client learned about the others: its id, the roster in `ready`, and the `new_user`
/// ids in the order they arrived.
struct Seen {
    id: String,
    roster: Vec<String>,
    new_users: Vec<String>,
}

fn id_of(peer: &serde_json::Value) -> String {
    peer["id"].as_str().expect("an id").to_owned()
}

/// One client: say hello when everyone does, attach, read until every other client is known;
/// then, once all are there, broadcast a marker and read until the other 49 markers arrived.
/// Every join happened before the first marker was sent, so any `new_user` queued for this
/// client is read before the markers: the list is complete, with no waiting for silence.
async fn join_and_listen(
    app: Arc<TestApp>,
    start: Arc<Barrier>,
    everyone_known: Arc<Barrier>,
    n: usize,
) -> Seen {
    start.wait().await;
    let me = app.helo(&format!("client {n}")).await;
    let mut stream = app.attach(&me, None).await;
    let ready = stream.ready().await;
    assert_eq!(ready["id"], me.id);
    let roster: Vec<String> = ready["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    let mut known: BTreeSet<String> = roster.iter().cloned().collect();
    let mut new_users = Vec::new();
    while known.len() < CLIENTS - 1 {
        let event = stream.next_named("new_user").await;
        known.insert(id_of(&event.data));
        new_users.push(id_of(&event.data));
    }

    everyone_known.wait().await;
    assert_eq!(
        app.broadcast_ok(&me, json!({"done": n})).await,
        CLIENTS as u64 - 1
    );
    let mut markers = 0;
    while markers < CLIENTS - 1 {
        let event = stream.next().await;
        match event.event.as_str() {
            "new_user" if markers == 0 => new_users.push(id_of(&event.data)),
            "client_broadcast" => markers += 1,
            _ => panic!("client {n}: unexpected {event:?} after {markers} markers"),
        }
    }
    Seen {
        id: me.id,
        roster,
        new_users,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_joining_at_once_each_learn_of_exactly_the_other_49() {
    let app = Arc::new(spawn_app(test_config()).await);
    let start = Arc::new(Barrier::new(CLIENTS));
    let everyone_known = Arc::new(Barrier::new(CLIENTS));

    let tasks: Vec<_> = (0..CLIENTS)
        .map(|n| {
            tokio::spawn(join_and_listen(
                app.clone(),
                start.clone(),
                everyone_known.clone(),
                n,
            ))
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.expect("a client task failed"));
    }

    let everyone: BTreeSet<String> = seen.iter().map(|s| s.id.clone()).collect();
    assert_eq!(everyone.len(), CLIENTS, "ids are unique");
    assert_eq!(app.client_ids().await, everyone);
    for client in &seen {
        let me = &client.id;
        assert!(!client.roster.contains(me), "{me} is in its own roster");
        assert!(!client.new_users.contains(me), "{me} heard about itself");
        let roster: BTreeSet<String> = client.roster.iter().cloned().collect();
        assert_eq!(
            roster.len(),
            client.roster.len(),
            "{me}: roster repeats someone"
        );
        let heard: BTreeSet<String> = client.new_users.iter().cloned().collect();
        assert_eq!(
            heard.len(),
            client.new_users.len(),
            "{me}: a new_user arrived twice"
        );
        let mut others = everyone.clone();
        others.remove(me);
        let known: BTreeSet<String> = roster.union(&heard).cloned().collect();
        assert_eq!(
            known,
            others,
            "{me} knows exactly the other {}",
            CLIENTS - 1
        );
    }
}
