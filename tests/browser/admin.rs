//! The admin console in Chromium: a wrong key refused; signing in, a figure moving when a test
//! client joins and sends, a publish from the console reaching the client's stream, and
//! disconnecting it, each action confirmed in the console's dialog; disconnecting a user (a
//! JWT `sub`) ends every session of theirs; in a cluster, every instance listed with its state,
//! and one that stops shown draining, then gone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fantoccini::Locator;
use serde_json::{Value, json};

use crate::bounded;
use crate::page::Page;
use crate::support::browser::{ChromeDriver, PAGE_WAIT as WAIT, Screen, page_config};
use crate::support::cluster::Cluster;
use crate::support::jwt::{self, SECRET};
use crate::support::{POLL, TEST_API_KEY, body_json, spawn_app};
use switchboard::{AuthMode, Config};

/// What the console shows, read in one round trip.
const READ_JS: &str = r#"
const q = (s) => document.querySelector(s);
const figure = (name) => q(`[data-figure="${name}"]`).textContent;
return {
  live: q('#live').dataset.state,
  signed_in: !q('#console').hidden,
  error: q('#sign-in-error').textContent,
  sessions: figure('sessions'),
  messages: figure('messages_per_second'),
  instances: [...document.querySelectorAll('#instances tr')].map((tr) => tr.cells[1].textContent),
  rows: [...document.querySelectorAll('#instances tr')].map((tr) => [...tr.cells].map((td) => td.textContent)),
  found: [...document.querySelectorAll('#sessions tr')].map((tr) => tr.dataset.id),
  rooms: [...document.querySelectorAll('#rooms tr')].map((tr) => [...tr.cells].map((td) => td.textContent)),
  dialog: q('#confirm').open,
  result: q('#action-result').textContent,
};
"#;

async fn wait_for(page: &Page, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    wait_within(page, WAIT, what, ready).await
}

async fn wait_within(
    page: &Page,
    limit: Duration,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let seen = page
            .client
            .execute(READ_JS, vec![])
            .await
            .expect("read the console");
        if ready(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {what}; the console shows {seen}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn sign_in(page: &Page, key: &str) {
    page.find("#key")
        .await
        .send_keys(key)
        .await
        .expect("type the key");
    page.find("#sign-in-button")
        .await
        .click()
        .await
        .expect("click Sign in");
}

/// Clicks `button`, then Confirm in the dialog it opens.
async fn confirmed(page: &Page, button: &str) {
    page.find(button)
        .await
        .click()
        .await
        .expect("click the action");
    wait_for(page, "the confirm dialog", |s| s["dialog"] == true).await;
    page.find("#confirm-ok")
        .await
        .click()
        .await
        .expect("click Confirm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused() {
    bounded(async {
        let server = spawn_app(page_config()).await;
        let driver = ChromeDriver::start().await;
        let page = Page::open(&driver, &server.url("/admin"), Screen::Desktop).await;
        sign_in(&page, "not-the-api-key-at-all").await;
        let seen = wait_for(&page, "the refusal", |s| s["error"] != "").await;
        assert_eq!(seen["error"], "That key was refused.");
        assert_eq!(seen["signed_in"], false);
        page.quit().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_watches_publishes_and_disconnects() {
    bounded(async {
        let server = spawn_app(page_config()).await;
        let driver = ChromeDriver::start().await;
        let page = Page::open(&driver, &server.url("/admin"), Screen::Desktop).await;
        sign_in(&page, TEST_API_KEY).await;
        let seen = wait_for(&page, "live figures", |s| s["live"] == "live").await;
        assert_eq!(seen["sessions"], "0");
        assert_eq!(seen["instances"], json!(["ready"]));

        // A figure moves: a client joins, and sends until a second shows it.
        let ann = server.helo("ann").await;
        let bob = server.helo("bob").await;
        let mut bob_stream = server.attach_ready(&bob).await;
        wait_for(&page, "two sessions", |s| s["sessions"] == "2").await;
        let deadline = Instant::now() + WAIT;
        loop {
            let id = server.respond(&ann, &bob, json!("hi")).await;
            bob_stream
                .expect_response(id, &ann, &bob, &json!("hi"))
                .await;
            let seen = page.client.execute(READ_JS, vec![]).await.expect("read");
            if seen["messages"] != "0" {
                break;
            }
            assert!(Instant::now() < deadline, "messages/s never moved: {seen}");
            tokio::time::sleep(POLL * 4).await;
        }
        page.screenshot("admin.png").await;

        // Publish to bob's session, picked from the search.
        page.find("#search button")
            .await
            .click()
            .await
            .expect("search");
        wait_for(&page, "bob in the search", |s| {
            s["found"]
                .as_array()
                .unwrap()
                .iter()
                .any(|id| id == bob.id.as_str())
        })
        .await;
        let select = format!("#sessions tr[data-id='{}'] button", bob.id);
        page.find(&select).await.click().await.expect("select bob");
        page.client
            .find(Locator::Css("#message"))
            .await
            .unwrap()
            .send_keys(r#"{"text":"from the console"}"#)
            .await
            .unwrap();
        confirmed(&page, "#publish").await;
        let event = bob_stream.next_named("server_message").await;
        assert_eq!(event.data["message"], json!({"text": "from the console"}));
        wait_for(&page, "the publish's result", |s| {
            s["result"].as_str().unwrap().starts_with("Published to 1")
        })
        .await;

        // Disconnect him: his stream ends, and the figures show one session.
        confirmed(&page, "#disconnect").await;
        bob_stream.expect_end().await;
        wait_for(&page, "one session left", |s| {
            s["sessions"] == "1" && s["result"] == "Disconnected 1."
        })
        .await;
        page.quit().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_disconnects_a_user_and_every_session_of_theirs_ends() {
    bounded(async {
        let server = spawn_app(Config {
            auth: AuthMode::Jwt,
            jwt_secret_file: Some(jwt::secret_file(std::path::Path::new(env!(
                "CARGO_TARGET_TMPDIR"
            )))),
            ..page_config()
        })
        .await;
        // Two tabs of ann (one `sub`), and bob.
        let ann = jwt::hs256(SECRET, &jwt::claims("ann"));
        let first = jwt::join(&server, &ann).await;
        let second = jwt::join(&server, &ann).await;
        let bob = jwt::join(&server, &jwt::hs256(SECRET, &jwt::claims("bob"))).await;
        let mut first_stream = server.attach_ready(&first).await;
        let mut second_stream = server.attach_ready(&second).await;
        let _bob_stream = server.attach_ready(&bob).await;

        let driver = ChromeDriver::start().await;
        let page = Page::open(&driver, &server.url("/admin"), Screen::Desktop).await;
        sign_in(&page, TEST_API_KEY).await;
        wait_for(&page, "three sessions", |s| s["sessions"] == "3").await;

        // The search by user finds both of ann's sessions.
        page.find("#search-user")
            .await
            .send_keys("user-ann")
            .await
            .expect("type the user");
        page.find("#search button")
            .await
            .click()
            .await
            .expect("search");
        let mut ids = [first.id.clone(), second.id.clone()];
        ids.sort();
        wait_for(&page, "ann's two sessions", |s| s["found"] == json!(ids)).await;

        // Disconnect the user: both of ann's streams end, bob stays.
        page.find("#target-kind")
            .await
            .select_by_value("user")
            .await
            .expect("choose a user");
        page.find("#target")
            .await
            .send_keys("user-ann")
            .await
            .expect("type the user");
        confirmed(&page, "#disconnect").await;
        first_stream.until_end().await;
        second_stream.until_end().await;
        wait_for(&page, "bob alone", |s| {
            s["sessions"] == "1" && s["result"] == "Disconnected 2."
        })
        .await;
        let left = body_json(server.get_as_backend("/api/sessions").await).await;
        assert_eq!(
            left,
            json!([{"id": bob.id, "name": "bob", "user": "user-bob"}]),
            "bob stays"
        );
        page.quit().await;
    })
    .await;
}

/// The console's instances table: each instance's id, and its state, sessions and streams.
fn instance_rows(seen: &Value) -> BTreeMap<String, [String; 3]> {
    let rows = seen["rows"].as_array().expect("the rows");
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = serde_json::from_value(row.clone()).expect("cells of text");
            let [id, state, sessions, streams] = &cells[..] else {
                panic!("four cells: {row}");
            };
            (
                id.clone(),
                [state.clone(), sessions.clone(), streams.clone()],
            )
        })
        .collect()
}

fn row(state: &str, sessions: &str, streams: &str) -> [String; 3] {
    [state.into(), sessions.into(), streams.into()]
}

/// How long a stopped instance may stay listed: its last figures live 3 s in Redis, the
/// console keeps an instance it has not heard from for 5 s, and a second for the next round.
const GONE_WITHIN: Duration = Duration::from_secs(12);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_lists_both_instances_and_one_that_stops_drains_then_goes() {
    bounded(async {
        let mut cluster = Cluster::start("console", &[&[], &[]]).await;
        let a = cluster.instance_id(0).await;
        let b = cluster.instance_id(1).await;
        // A client on B, so that B has a session to drain.
        let bob = cluster.nodes[1].helo("bob").await;
        let mut bob_stream = cluster.nodes[1].attach_ready(&bob).await;

        // Signed in on A, the console lists both, by id, ready, with bob on B.
        let driver = ChromeDriver::start().await;
        let page = Page::open(&driver, &cluster.nodes[0].url("/admin"), Screen::Desktop).await;
        sign_in(&page, TEST_API_KEY).await;
        let both = BTreeMap::from([
            (a.clone(), row("ready", "0", "0")),
            (b.clone(), row("ready", "1", "1")),
        ]);
        let seen = wait_for(&page, "both instances, bob on B", |s| {
            instance_rows(s) == both
        })
        .await;
        assert_eq!(seen["sessions"], "1", "the sum of both: {seen}");

        // The hub's rooms, as A lists them (B, which no console watches, lists none): shown,
        // and still shown over the next rounds of figures, whichever instance's came last.
        let lobby = json!([["lobby", "1"]]);
        wait_for(&page, "bob's room", |s| s["rooms"] == lobby).await;
        for _ in 0..30 {
            tokio::time::sleep(POLL * 4).await;
            let seen = page.client.execute(READ_JS, vec![]).await.expect("read");
            assert_eq!(seen["rooms"], lobby, "{seen}");
        }

        // B stops: the console shows it draining, then A alone, holding bob.
        cluster.nodes[1].send_sigterm();
        wait_for(&page, "B draining", |s| {
            instance_rows(s).get(&b).is_some_and(|r| r[0] == "draining")
        })
        .await;
        bob_stream.until_end().await;
        let alone = BTreeMap::from([(a.clone(), row("ready", "1", "0"))]);
        let seen = wait_within(&page, GONE_WITHIN, "B gone, bob on A", |s| {
            instance_rows(s) == alone
        })
        .await;
        assert_eq!(seen["sessions"], "1", "{seen}");
        let exit = cluster.nodes[1].wait_for_exit(WAIT).await;
        assert!(exit.success(), "B stops cleanly: {exit:?}");
        page.quit().await;
    })
    .await;
}
