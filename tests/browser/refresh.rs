//! Join tokens that count after the join, in a real browser (`--auth jwt`): the page's
//! `switchboard.js` refreshes its session through the host page's token function
//! (`window.SWITCHBOARD_TOKEN`, handed to `joinToken`) when `refresh_required` comes, so the
//! session outlives its first token's `exp`; a function that fails or gives nothing lets the
//! session expire, and the page says so.
//!
//! The host page's function hands out tokens the test signed, in order; a script run before the
//! page's own ([`ChromeDriver::run_first_in_each_document`]) sets it, and records when it was
//! asked and what `POST /session/refresh` answered. The first token lives a few seconds (the
//! server warns a third of that ahead), so each test waits for events, never longer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fantoccini::Client;
use jsonwebtoken::get_current_timestamp;
use serde::Deserialize;
use serde_json::json;

use crate::bounded;
use crate::page::{Page, Snapshot};
use crate::support::browser::{ChromeDriver, PAGE_WAIT, Screen, page_config};
use crate::support::jwt::{self, SECRET};
use crate::support::{POLL, body_json, spawn_app};
use switchboard::{AuthMode, Config};

/// How long the first token lives: long enough for a busy machine to start Chromium's page
/// and join (the warning comes a third of what is left ahead of the end).
const FIRST_TOKEN_SECS: u64 = 10;

/// The host page's token function and what the test reads back: it hands out `TOKENS` in
/// order, then throws (`AFTER` = "throw") or gives nothing ("nothing"); `window.hostSeen`
/// keeps when it was asked and each `POST /session/refresh`'s status, both in ms since the
/// epoch. Wrapping `fetch` here works because the client takes `fetch` when it is built.
const HOST_PAGE: &str = r#"
(() => {
  const tokens = TOKENS;
  const after = AFTER;
  const seen = (window.hostSeen = { asked: [], refreshes: [] });
  window.SWITCHBOARD_TOKEN = async () => {
    seen.asked.push(Date.now());
    if (tokens.length > 0) return tokens.shift();
    if (after === 'throw') throw new Error('the app signed this user out');
    return undefined;
  };
  const fetch = window.fetch;
  window.fetch = async (url, init) => {
    const response = await fetch.call(window, url, init);
    if (String(url).endsWith('/session/refresh')) {
      seen.refreshes.push({ at: Date.now(), status: response.status });
    }
    return response;
  };
})();
"#;

#[derive(Debug, Deserialize)]
struct HostSeen {
    asked: Vec<f64>,
    refreshes: Vec<Refresh>,
}

#[derive(Debug, Deserialize)]
struct Refresh {
    at: f64,
    status: u16,
}

/// `--auth jwt` with no leeway (a session ends exactly at its token's `exp`), serving the page.
fn jwt_page_config() -> Config {
    Config {
        auth: AuthMode::Jwt,
        jwt_secret_file: Some(jwt::secret_file(std::path::Path::new(env!(
            "CARGO_TARGET_TMPDIR"
        )))),
        jwt_leeway: Duration::ZERO,
        ..page_config()
    }
}

/// A join token for `name` (`sub` `user-<name>`) that expires at `exp` (seconds since the epoch).
fn token_until(name: &str, exp: u64) -> String {
    jwt::hs256(SECRET, &jwt::with(jwt::claims(name), json!({ "exp": exp })))
}

/// A new Chromium of `driver`'s on a blank page, to sign the tokens for once it runs: starting
/// a browser on a busy machine takes seconds of a short token's life.
async fn blank(driver: &ChromeDriver) -> Client {
    driver.open("about:blank", Screen::Desktop).await
}

/// Opens the page at `url` in `blank`, its host page handing out `tokens` and then doing
/// `after`.
async fn open_with_tokens(
    driver: &ChromeDriver,
    blank: Client,
    url: &str,
    tokens: &[String],
    after: &str,
) -> Page {
    let script = HOST_PAGE
        .replace("TOKENS", &json!(tokens).to_string())
        .replace("AFTER", &json!(after).to_string());
    driver.run_first_in_each_document(&blank, &script).await;
    blank.goto(url).await.expect("open the page");
    Page { client: blank }
}

async fn host_seen(page: &Page) -> HostSeen {
    let seen = page
        .client
        .execute("return window.hostSeen", vec![])
        .await
        .expect("read what the host page saw");
    serde_json::from_value(seen).expect("the host page's record")
}

/// Whether the page's log holds a system line starting with `start`.
fn says(snapshot: &Snapshot, start: &str) -> bool {
    snapshot
        .log
        .iter()
        .any(|e| e.kind == "system" && e.text.starts_with(start))
}

const WARNED: &str = "the session ends in ";
const REFRESHED: &str = "the session was refreshed: it now ends in ";
const EXPIRED: &str = "the session expired (its sign-in ran out)";

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs_f64()
        * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_refreshes_through_its_token_function_before_exp_and_lives_past_it() {
    bounded(async {
        let server = spawn_app(jwt_page_config()).await;
        let bob = jwt::join(&server, &jwt::hs256(SECRET, &jwt::claims("Bob"))).await;
        let mut bobs = server.attach_ready(&bob).await;
        let driver = ChromeDriver::start().await;

        let client = blank(&driver).await;
        let first_exp = get_current_timestamp() + FIRST_TOKEN_SECS;
        let tokens = [
            token_until("Ada", first_exp),
            jwt::hs256(SECRET, &jwt::claims("Ada")),
        ];
        let url = server.url("/?join=1");
        let page = open_with_tokens(&driver, client, &url, &tokens, "throw").await;
        let me = page.wait_until_live("Ada's page to join").await;
        assert_eq!(me.me_name, "Ada", "named after the token");
        let arrival = bobs.next_named("new_user").await;
        assert_eq!(arrival.data["id"], me.me_id);

        // The server warns; the client asks the host page for a token and refreshes by itself.
        let refreshed = page
            .wait_for("the page to refresh its session", |s| says(s, REFRESHED))
            .await;
        assert!(says(&refreshed, WARNED), "warned first: {refreshed:#?}");
        let seen = host_seen(&page).await;
        assert_eq!(
            seen.asked.len(),
            2,
            "one token to join, one to refresh: {seen:?}"
        );
        let [refresh] = &seen.refreshes[..] else {
            panic!("one POST /session/refresh: {seen:?}");
        };
        assert_eq!(refresh.status, 200, "{seen:?}");
        assert!(
            refresh.at < (first_exp * 1000) as f64,
            "refreshed before the first token's exp: {seen:?}"
        );
        let line = refreshed
            .log
            .iter()
            .find_map(|e| e.text.strip_prefix(REFRESHED))
            .expect("the refresh line");
        let secs: u64 = line
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("seconds in {line:?}"));
        assert!(secs > 250, "the second token's five minutes: {line:?}");

        // Past the first token's exp (and a second more), Bob's messages still arrive...
        let past = (first_exp + 1) as f64 * 1000.0;
        let deadline = past + PAGE_WAIT.as_secs_f64() * 1000.0;
        for n in 1.. {
            let text = format!("ping {n}");
            let sent = server.post_response(&bob, &me.me_id, json!(text)).await;
            assert_eq!(sent.status(), 202, "the session takes messages");
            page.wait_for("Bob's message", |s| {
                s.has_entry("client_response", &bob.id, &text)
            })
            .await;
            if now_ms() > past {
                break;
            }
            assert!(now_ms() < deadline, "the clock passed the first exp");
            tokio::time::sleep(POLL * 10).await;
        }
        // ...and the page's reach Bob, the very next event of his stream: no `user_left`.
        page.send(&bob.id, "still here").await;
        let reply = bobs.next_named("client_response").await;
        assert_eq!(
            (&reply.data["from"], &reply.data["message"]),
            (&json!(me.me_id), &json!("still here"))
        );
        let after = page.snapshot().await;
        assert!(after.is_live() && after.me_id == me.me_id, "{after:#?}");
        assert!(!says(&after, "the session expired"), "{after:#?}");
        assert!(!says(&after, "the session was lost"), "{after:#?}");

        page.quit().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_token_function_fails_or_gives_nothing_is_told_its_session_expired() {
    bounded(async {
        let server = spawn_app(jwt_page_config()).await;
        let bob = jwt::join(&server, &jwt::hs256(SECRET, &jwt::claims("Bob"))).await;
        let mut bobs = server.attach_ready(&bob).await;
        let driver = ChromeDriver::start().await;

        // Two users whose app stops handing out tokens after the first: one function throws,
        // the other gives nothing. Each joins and, warned, cannot refresh.
        let url = server.url("/?join=1");
        let client = blank(&driver).await;
        let exp = get_current_timestamp() + FIRST_TOKEN_SECS;
        let tokens = [token_until("Ada", exp)];
        let throws = open_with_tokens(&driver, client, &url, &tokens, "throw").await;
        let client = blank(&driver).await;
        let exp = get_current_timestamp() + FIRST_TOKEN_SECS;
        let tokens = [token_until("Cy", exp)];
        let nothing = open_with_tokens(&driver, client, &url, &tokens, "nothing").await;

        // Warned, then expired at `exp`: each page says so, and its session is gone for all.
        let ada_after = throws
            .wait_for("Ada's page to hear it expired", |s| says(s, EXPIRED))
            .await;
        let cy_after = nothing
            .wait_for("Cy's page to hear it expired", |s| says(s, EXPIRED))
            .await;
        assert!(now_ms() >= (exp * 1000) as f64, "not before Cy's exp");
        for shown in [&ada_after, &cy_after] {
            assert!(says(shown, WARNED), "warned first: {shown:#?}");
            assert!(!says(shown, REFRESHED), "{shown:#?}");
        }
        // Bob heard both join and both leave (Ada may leave before Cy joins on a slow machine).
        let (mut joined, mut gone) = (Vec::new(), Vec::new());
        for _ in 0..4 {
            let event = bobs.next().await;
            match event.event.as_str() {
                "new_user" => joined.push(event.data["id"].clone()),
                "user_left" => gone.push(event.data["id"].clone()),
                _ => panic!("Bob heard {event:?}"),
            }
        }
        gone.sort_by_key(|id| id.to_string());
        joined.sort_by_key(|id| id.to_string());
        assert_eq!(gone, joined, "both sessions ended");
        let mut shown = vec![json!(ada_after.me_id), json!(cy_after.me_id)];
        shown.sort_by_key(|id| id.to_string());
        assert_eq!(shown, joined, "the pages show the sessions that ended");
        let left = body_json(server.get_as_backend("/api/sessions").await).await;
        assert_eq!(
            left,
            json!([{"id": bob.id, "name": "Bob", "user": "user-Bob"}]),
            "only Bob is left"
        );

        // The throwing function sent no refresh; the empty one's was refused.
        let ada_seen = host_seen(&throws).await;
        assert!(ada_seen.refreshes.is_empty(), "{ada_seen:?}");
        let cy_seen = host_seen(&nothing).await;
        assert_eq!(cy_seen.refreshes.len(), 1, "{cy_seen:?}");
        assert_eq!(cy_seen.refreshes[0].status, 401, "{cy_seen:?}");

        // Neither page is live any more: joining again needs a token the app no longer gives.
        // Without one, the hello is refused and the page shows its join form again; a failing
        // function is retried, as a network error would be.
        let cy_closed = nothing
            .wait_for("Cy's page to give up", |s| {
                s.status == "closed" && s.join_visible
            })
            .await;
        assert!(
            cy_closed
                .log
                .iter()
                .any(|e| e.kind == "error" && e.text.starts_with("could not join")),
            "{cy_closed:#?}"
        );
        throws
            .wait_for("Ada's page to try again", |s| s.status == "reconnecting")
            .await;
        let deadline = std::time::Instant::now() + PAGE_WAIT;
        while host_seen(&throws).await.asked.len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "Ada's page never asked its function again"
            );
            tokio::time::sleep(POLL).await;
        }

        throws.quit().await;
        nothing.quit().await;
    })
    .await;
}
