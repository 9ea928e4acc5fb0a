//! switchboard.js's room API in a real browser: `join({name, rooms})`, `rooms` and `presence`
//! kept from the stream, `broadcast(message, {room})`, `joinRoom`, `leaveRoom`, the events
//! with their room, a room the app's backend puts the session in, and a session registered
//! again in the rooms the lost one was in.

use std::time::{Duration, Instant};

use fantoccini::Client;
use serde_json::{Value, json};

use crate::bounded;
use crate::support::browser::{ChromeDriver, PAGE_WAIT, Screen, page_config};
use crate::support::{POLL, TEST_API_KEY, spawn_app};

/// Joins from the open page into `dev` and `ops`, keeping the client as `window.board` and
/// what it dispatches in `window.seen`.
const JOIN: &str = r#"
const [done] = arguments;
import('/switchboard.js')
  .then(async ({ Switchboard }) => {
    const seen = [];
    window.seen = seen;
    const board = new Switchboard({ name: 'js', rooms: ['dev', 'ops'], backoffInitialMs: 50 });
    for (const type of ['ready', 'new_user', 'user_left', 'joined', 'left', 'broadcast', 'rejoined']) {
      board.addEventListener(type, ({ detail }) => {
        seen.push({ type, room: detail.room ?? null, id: detail.id ?? null, replayed: detail.replayed ?? null });
      });
    }
    window.board = board;
    await board.connect();
    done({ ok: true, id: board.id });
  })
  .catch((err) => done({ ok: false, error: String((err && err.message) || err) }));
"#;

/// Calls `window.board[method](...args)`; `{ok, value}` or `{ok: false, code, status}`.
const CALL: &str = r#"
const [method, args, done] = arguments;
window.board[method](...args).then(
  (value) => done({ ok: true, value: value ?? null }),
  (err) => done({ ok: false, code: err.code, status: err.status }),
);
"#;

/// What the client holds: its id, its rooms (count and sorted roster), presence, the events.
const STATE: &str = r#"
const board = window.board;
const rooms = {};
for (const [name, room] of board.rooms) {
  rooms[name] = { members: room.members, roster: room.roster && [...room.roster.keys()].sort() };
}
return { id: board.id, rooms, presence: [...board.presence.keys()].sort(), seen: window.seen };
"#;

async fn call(page: &Client, method: &str, args: Value) -> Value {
    page.execute_async(CALL, vec![json!(method), args])
        .await
        .expect("the call ran")
}

/// Polls the client's state until `ready` holds, for at most [`PAGE_WAIT`].
async fn wait_for(page: &Client, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let state = page.execute(STATE, vec![]).await.expect("read the client");
        if ready(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {state:#}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Whether the client dispatched `type` about `room`.
fn saw(state: &Value, kind: &str, room: &str) -> bool {
    let seen = state["seen"].as_array().expect("the events");
    seen.iter().any(|e| e["type"] == kind && e["room"] == room)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_client_joins_rooms_keeps_them_current_and_broadcasts_to_one() {
    bounded(async {
        let server = spawn_app(switchboard::Config {
            sse_retry: Duration::from_millis(200),
            ..page_config()
        })
        .await;
        let driver = ChromeDriver::start().await;
        let page = driver.open(&server.url("/"), Screen::Desktop).await;
        let joined = page
            .execute_async(JOIN, vec![])
            .await
            .expect("the script ran");
        assert_eq!(joined["ok"], true, "{joined}");
        let first_id = joined["id"].as_str().unwrap().to_owned();
        let state = wait_for(&page, "ready's rooms", |s| {
            s["rooms"].as_object().is_some_and(|r| r.len() == 2)
        })
        .await;
        assert_eq!(state["rooms"]["dev"], json!({"members": 1, "roster": []}));
        assert_eq!(state["rooms"]["ops"], json!({"members": 1, "roster": []}));

        // bob joins dev: the client's dev roster, presence and a `new_user` in dev.
        let bob = server.hub.helo_in("bob", &["dev"]).await.unwrap();
        let mut bob_stream = server.attach_ready(&bob).await;
        let state = wait_for(&page, "bob in dev", |s| s["rooms"]["dev"]["members"] == 2).await;
        assert_eq!(state["rooms"]["dev"]["roster"], json!([bob.id]));
        assert_eq!(state["rooms"]["ops"]["members"], 1);
        assert_eq!(state["presence"], json!([bob.id]));
        let seen = state["seen"].as_array().unwrap();
        let arrival = seen.iter().find(|e| e["type"] == "new_user").unwrap();
        assert_eq!(
            (&arrival["room"], &arrival["replayed"]),
            (&json!("dev"), &json!(false))
        );

        // A broadcast to dev reaches bob with its room; one to lobby, where it is not, is 403.
        let sent = call(&page, "broadcast", json!(["hi dev", {"room": "dev"}])).await;
        assert_eq!(sent, json!({"ok": true, "value": {"recipients": 1}}));
        let event = bob_stream.next_named("client_broadcast").await;
        assert_eq!(
            (&event.data["room"], &event.data["message"]),
            (&json!("dev"), &json!("hi dev"))
        );
        let refused = call(&page, "broadcast", json!(["hi", {"room": "lobby"}])).await;
        assert_eq!(
            refused,
            json!({"ok": false, "code": "not_a_member", "status": 403})
        );
        server
            .hub
            .broadcast_to(&bob, "dev", &"from bob")
            .await
            .unwrap();
        wait_for(&page, "bob's broadcast in dev", |s| {
            saw(s, "broadcast", "dev")
        })
        .await;

        // joinRoom and leaveRoom, and their refusals.
        let answer = call(&page, "joinRoom", json!(["lobby"])).await;
        assert_eq!(
            answer,
            json!({"ok": true, "value": {"room": "lobby", "members": 1}})
        );
        wait_for(&page, "joined lobby", |s| {
            saw(s, "joined", "lobby") && s["rooms"]["lobby"]["members"] == 1
        })
        .await;
        assert_eq!(
            call(&page, "leaveRoom", json!(["ops"])).await,
            json!({"ok": true, "value": null})
        );
        wait_for(&page, "left ops", |s| {
            saw(s, "left", "ops") && s["rooms"].get("ops").is_none()
        })
        .await;
        let again = call(&page, "leaveRoom", json!(["ops"])).await;
        assert_eq!(
            again,
            json!({"ok": false, "code": "not_a_member", "status": 404})
        );
        let bad = call(&page, "joinRoom", json!(["no spaces"])).await;
        assert_eq!(
            bad,
            json!({"ok": false, "code": "invalid_room", "status": 400})
        );

        // The app's backend puts the session into ops again: `joined`, in-band.
        let url = server.url("/api/rooms/ops/members");
        let request = server
            .client
            .put(url)
            .bearer_auth(TEST_API_KEY)
            .json(&json!({"session": first_id}));
        let response = request.send().await.expect("the server API answers");
        assert_eq!(response.status(), 200);
        wait_for(&page, "put in ops", |s| s["rooms"]["ops"]["members"] == 1).await;

        // bob leaves the hub: dev is smaller, and nobody is left to see.
        server.hub.leave(&bob).await.unwrap();
        let state = wait_for(&page, "bob to leave", |s| saw(s, "user_left", "dev")).await;
        assert_eq!(
            (&state["rooms"]["dev"]["members"], &state["presence"]),
            (&json!(1), &json!([]))
        );
        drop(bob_stream);

        // The server ends the session: the client registers again, in the rooms it was in.
        let url = server.url("/api/disconnect");
        let body = json!({"to": {"session": first_id}});
        let response = server
            .client
            .post(url)
            .bearer_auth(TEST_API_KEY)
            .json(&body)
            .send()
            .await;
        assert_eq!(response.expect("the server API answers").status(), 200);
        let state = wait_for(&page, "a new session", |s| {
            s["seen"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["type"] == "rejoined")
                && s["id"].as_str().is_some_and(|id| id != first_id)
                && s["rooms"].as_object().is_some_and(|r| r.len() == 3)
        })
        .await;
        let mut rooms: Vec<&String> = state["rooms"].as_object().unwrap().keys().collect();
        rooms.sort();
        assert_eq!(rooms, ["dev", "lobby", "ops"]);
        let me = server
            .hub
            .clients(&server.hub.helo_in("eve", &["lobby"]).await.unwrap())
            .await
            .unwrap();
        assert!(
            me.iter().any(|p| p.id == state["id"]),
            "the new session shares lobby: {me:?}"
        );
        page.close().await.unwrap();
    })
    .await;
}
