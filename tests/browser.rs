//! Browser tests: the web client in `public/` driven in a real, headless Chromium.
//!
//! Each test starts the real server in-process on `127.0.0.1:0`, its own
//! `chromedriver` on a free port, and one Chromium per page (one WebDriver
//! session each, with a fresh profile, so the pages share no cookies or
//! storage, like two people). They need Debian's `chromium` and
//! `chromium-driver`; without them the tests fail and say how to install them.
//!
//! Pages are read through one small script ([`Snapshot`]) and every wait polls
//! it against a deadline ([`WAIT`]); a timeout prints the last state seen.
//!
//! Screenshots go to `target/tmp/screenshots/`, or to the folder named by
//! `SWITCHBOARD_SCREENSHOTS` (the README's come from
//! `SWITCHBOARD_SCREENSHOTS=docs/screenshots cargo test --test browser`).

#[path = "support/mod.rs"]
mod support;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde::Deserialize;
use serde_json::json;
use support::browser::{ChromeDriver, PAGE_WAIT as WAIT, Screen, page_config};
use support::{POLL, spawn_app, spawn_app_on};

// -------------------------------------------------------------------- page

/// One browser showing the web client.
struct Page {
    client: Client,
}

/// What a page shows, read in one round trip by [`Page::snapshot`].
#[derive(Debug, Deserialize)]
struct Snapshot {
    status: String,
    me_id: String,
    me_name: String,
    people: Vec<Person>,
    log: Vec<Entry>,
    /// Whether any element was created inside the log's messages: untrusted
    /// text must never become markup.
    markup_in_messages: bool,
    rejoin_visible: bool,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Person {
    id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct Entry {
    kind: String,
    direction: String,
    peer: Option<String>,
    who: String,
    text: String,
}

const SNAPSHOT_JS: &str = r#"
const q = (s) => document.querySelector(s);
const all = (s) => [...document.querySelectorAll(s)];
const text = (node) => (node ? node.textContent : '');
return {
  status: q('#status').dataset.state,
  me_id: text(q('#me-id')),
  me_name: text(q('#me-name')),
  people: all('#people li[data-id]').map((li) => ({ id: li.dataset.id, name: text(li.querySelector('.name')) })),
  log: all('#log li').map((li) => ({
    kind: li.dataset.kind,
    direction: li.dataset.direction,
    peer: li.dataset.peer || null,
    who: text(li.querySelector('.who .name')),
    text: text(li.querySelector('.text')),
  })),
  markup_in_messages: q('#log .text *') !== null,
  rejoin_visible: !q('#rejoin-form').hidden,
};
"#;

impl Snapshot {
    fn is_live(&self) -> bool {
        self.status == "live" && looks_like_uuid(&self.me_id)
    }

    fn sees(&self, id: &str) -> bool {
        self.people.iter().any(|p| p.id == id)
    }

    fn has_entry(&self, kind: &str, peer: &str, text: &str) -> bool {
        self.log
            .iter()
            .any(|e| e.kind == kind && e.peer.as_deref() == Some(peer) && e.text == text)
    }
}

impl Page {
    /// Opens `url` in a new Chromium of `driver`'s.
    async fn open(driver: &ChromeDriver, url: &str, screen: Screen) -> Page {
        Page {
            client: driver.open(url, screen).await,
        }
    }

    async fn snapshot(&self) -> Snapshot {
        let value = self
            .client
            .execute(SNAPSHOT_JS, vec![])
            .await
            .expect("read the page");
        serde_json::from_value(value).expect("snapshot shape")
    }

    /// Polls the page until `ready` holds, for at most [`WAIT`].
    async fn wait_for(&self, what: &str, ready: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let deadline = Instant::now() + WAIT;
        loop {
            let snapshot = self.snapshot().await;
            if ready(&snapshot) {
                return snapshot;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for {what}; the page shows {snapshot:#?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_until_live(&self, what: &str) -> Snapshot {
        self.wait_for(what, Snapshot::is_live).await
    }

    /// Types `message` into the form, picks `recipient` (`""` = everyone) and sends.
    async fn send(&self, recipient: &str, message: &str) {
        let select = self.find("#recipient").await;
        select
            .select_by_value(recipient)
            .await
            .expect("choose the recipient");
        let input = self.find("#message").await;
        input.send_keys(message).await.expect("type the message");
        self.find("#send").await.click().await.expect("click Send");
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("take a screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("create the screenshot folder");
        std::fs::write(dir.join(name), png).expect("save the screenshot");
    }

    /// Closes the page's tab the way a person does. A blank tab stays open,
    /// so the browser keeps running while the page's `keepalive` request
    /// finishes; [`Page::quit`] ends it once the effect has been seen.
    async fn close_tab(&self) {
        let blank = self
            .client
            .new_window(true)
            .await
            .expect("open a blank tab");
        self.client
            .close_window()
            .await
            .expect("close the page's tab");
        self.client
            .switch_to_window(blank.handle)
            .await
            .expect("switch to the blank tab");
    }

    /// Ends the WebDriver session, which quits this page's Chromium.
    async fn quit(self) {
        let _ = self.client.close().await;
    }
}

fn screenshot_dir() -> PathBuf {
    match std::env::var_os("SWITCHBOARD_SCREENSHOTS") {
        Some(dir) => Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots"),
    }
}

fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            matches!(i, 8 | 13 | 18 | 23) == (c == '-') && (c == '-' || c.is_ascii_hexdigit())
        })
}

/// Runs `body` with a bounded total time, so a hung browser fails the test
/// instead of the CI run.
async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(Duration::from_secs(120), body)
        .await
        .expect("browser test took longer than 120 s");
}

// ------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_greet_each_other_chat_and_see_each_other_leave() {
    bounded(async {
        let mut server = spawn_app(page_config()).await;
        let driver = ChromeDriver::start().await;

        let first = Page::open(&driver, &server.url("/"), Screen::Desktop).await;
        let me1 = first.wait_until_live("the first page to go live").await;
        assert!(
            me1.me_name.starts_with("new-user-"),
            "generated name, got {:?}",
            me1.me_name
        );
        let (id1, name1) = (me1.me_id, me1.me_name);

        let second = Page::open(&driver, &server.url("/"), Screen::Desktop).await;
        let me2 = second.wait_until_live("the second page to go live").await;
        let (id2, name2) = (me2.me_id, me2.me_name);
        assert_ne!(id1, id2);

        // Each sees the other, exactly once: the second from its `ready`
        // roster, the first from `new_user`.
        let seen = second
            .wait_for("the second page to list the first", |s| s.sees(&id1))
            .await;
        assert_eq!(
            seen.people,
            [Person {
                id: id1.clone(),
                name: name1.clone()
            }]
        );
        let seen = first
            .wait_for("the first page to list the second", |s| s.sees(&id2))
            .await;
        assert_eq!(
            seen.people,
            [Person {
                id: id2.clone(),
                name: name2.clone()
            }]
        );

        // The first greeted the newcomer on `new_user`, and logged it as sent.
        let greeting = format!("hello there {name2}");
        let snap = second
            .wait_for("the greeting to reach the second page", |s| {
                s.has_entry("client_response", &id1, &greeting)
            })
            .await;
        let entry = snap
            .log
            .iter()
            .find(|e| e.kind == "client_response")
            .unwrap();
        assert_eq!(
            (entry.direction.as_str(), entry.who.as_str()),
            ("in", name1.as_str())
        );
        let snap = first
            .wait_for("the first page to log the greeting it sent", |s| {
                s.has_entry("sent_response", &id2, &greeting)
            })
            .await;
        assert!(
            snap.log
                .iter()
                .any(|e| e.kind == "new_user" && e.peer.as_deref() == Some(&*id2))
        );
        // The newcomer greets nobody: it heard of the first through `ready`.
        assert!(
            !second
                .snapshot()
                .await
                .log
                .iter()
                .any(|e| e.kind == "sent_response")
        );

        // A direct message typed in the form; its markup stays text.
        let direct = "hi <b>first</b> & <img src=x onerror=alert(1)>";
        second.send(&id1, direct).await;
        first
            .wait_for("the typed message to reach the first page", |s| {
                s.has_entry("client_response", &id2, direct)
            })
            .await;
        second
            .wait_for("the second page to log what it sent", |s| {
                s.has_entry("sent_response", &id1, direct)
            })
            .await;

        // A broadcast to everyone.
        let broadcast = "hello everyone, ça va ? — from the first page";
        first.send("", broadcast).await;
        second
            .wait_for("the broadcast to reach the second page", |s| {
                s.has_entry("client_broadcast", &id1, broadcast)
            })
            .await;
        let snap = first
            .wait_for("the first page to log its broadcast", |s| {
                s.log
                    .iter()
                    .any(|e| e.kind == "sent_broadcast" && e.text == broadcast)
            })
            .await;
        assert!(
            !snap.markup_in_messages,
            "a message became markup: {snap:#?}"
        );
        assert!(!second.snapshot().await.markup_in_messages);

        // A third person, on a phone: both desktop pages greet it.
        let phone = Page::open(&driver, &server.url("/"), Screen::Phone).await;
        let me3 = phone.wait_until_live("the phone page to go live").await;
        let (id3, name3) = (me3.me_id, me3.me_name);
        let greeting = format!("hello there {name3}");
        let snap = phone
            .wait_for("both greetings to reach the phone page", |s| {
                s.has_entry("client_response", &id1, &greeting)
                    && s.has_entry("client_response", &id2, &greeting)
            })
            .await;
        assert_eq!(snap.people.len(), 2, "{snap:#?}");
        assert!(snap.sees(&id1) && snap.sees(&id2), "{snap:#?}");
        let from_phone = "typing this on my phone";
        phone.send("", from_phone).await;
        for page in [&first, &second] {
            page.wait_for("the phone's broadcast to arrive", |s| {
                s.has_entry("client_broadcast", &id3, from_phone)
            })
            .await;
        }

        first.screenshot("first.png").await;
        second.screenshot("second.png").await;
        phone.screenshot("phone.png").await;

        // Closing a tab deletes its session; the other page hears at once,
        // long before the 30 s TTL would have removed it.
        second.close_tab().await;
        for page in [&first, &phone] {
            let snap = page
                .wait_for("the closed page to leave the list", |s| !s.sees(&id2))
                .await;
            assert_eq!(snap.people.len(), 1, "{snap:#?}");
            assert!(
                snap.log
                    .iter()
                    .any(|e| e.kind == "user_left" && e.peer.as_deref() == Some(&*id2)),
                "{snap:#?}"
            );
        }

        second.quit().await;
        phone.quit().await;
        first.quit().await;
        server.stop(WAIT).await.expect("server returned an error");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_the_stream_and_a_lost_session_rejoins_by_itself() {
    bounded(async {
        let mut server = spawn_app(page_config()).await;
        let addr = server.addr;
        let driver = ChromeDriver::start().await;

        let page = Page::open(&driver, &server.url("/"), Screen::Desktop).await;
        let before = page.wait_until_live("the page to go live").await;
        assert!(!before.rejoin_visible);

        // The server goes away: EventSource keeps retrying.
        server.stop(WAIT).await.expect("server returned an error");
        page.wait_for("the status to say reconnecting", |s| {
            s.status == "reconnecting"
        })
        .await;

        // A fresh server on the same port does not know the session: the page
        // joins again by itself under the same name (no click) and says so.
        let mut server = spawn_app_on(addr, page_config()).await;
        let after = page
            .wait_for("the page to join again by itself", |s| {
                s.is_live() && s.me_id != before.me_id
            })
            .await;
        assert_eq!(after.me_name, before.me_name);
        assert!(!after.rejoin_visible);
        assert!(
            after
                .log
                .iter()
                .any(|e| e.kind == "system" && e.text.contains("joined again")),
            "{after:#?}"
        );

        // Leaving on purpose closes the session at once.
        page.find("#leave")
            .await
            .click()
            .await
            .expect("click Leave");
        page.wait_for("the status to say closed after leaving", |s| {
            s.status == "closed" && s.rejoin_visible
        })
        .await;
        let clients: serde_json::Value = reqwest::get(server.url("/clients"))
            .await
            .expect("GET /clients")
            .json()
            .await
            .expect("a JSON roster");
        assert_eq!(clients, json!([]), "the session was deleted");

        page.quit().await;
        server.stop(WAIT).await.expect("server returned an error");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_has_a_favicon_and_says_when_the_phone_list_overflows() {
    bounded(async {
        let mut server = spawn_app(page_config()).await;
        let icon = reqwest::get(server.url("/favicon.svg"))
            .await
            .expect("GET /favicon.svg");
        assert_eq!(icon.status(), 200);
        assert_eq!(icon.headers()["content-type"], "image/svg+xml");

        // Enough people with long names to overflow a phone-wide row.
        let client = reqwest::Client::new();
        for n in 0..6 {
            let response = client
                .post(server.url("/helo"))
                .json(&json!({ "name": format!("someone with a long name {n}") }))
                .send()
                .await
                .expect("POST /helo");
            assert_eq!(response.status(), 201);
        }
        let driver = ChromeDriver::start().await;
        let phone = Page::open(&driver, &server.url("/"), Screen::Phone).await;
        phone.wait_until_live("the phone page to go live").await;
        let icon_link: String = phone
            .client
            .execute(
                "return document.querySelector('link[rel=icon]').href",
                vec![],
            )
            .await
            .expect("read the icon link")
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(icon_link.ends_with("/favicon.svg"), "{icon_link}");
        let deadline = Instant::now() + WAIT;
        loop {
            let hint_shown = phone
                .client
                .execute(
                    "return !document.querySelector('#people-more').hidden",
                    vec![],
                )
                .await
                .expect("read the hint")
                .as_bool()
                .unwrap_or(false);
            if hint_shown {
                break;
            }
            assert!(Instant::now() < deadline, "no overflow hint on the phone");
            tokio::time::sleep(POLL).await;
        }
        phone.quit().await;
        server.stop(WAIT).await.expect("server returned an error");
    })
    .await;
}

/// How many log entries of `kind` with `text` a page shows.
fn count(snapshot: &Snapshot, kind: &str, text: &str) -> usize {
    snapshot
        .log
        .iter()
        .filter(|e| e.kind == kind && e.text == text)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_keep_their_sessions_across_a_restart_with_a_state_file() {
    bounded(async {
        let dir =
            std::env::temp_dir().join(format!("switchboard-browser-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        let config = || switchboard::Config {
            state_file: Some(dir.join("state.json")),
            ..page_config()
        };
        let mut server = spawn_app(config()).await;
        let addr = server.addr;
        let driver = ChromeDriver::start().await;

        let first = Page::open(&driver, &server.url("/"), Screen::Desktop).await;
        let me1 = first.wait_until_live("the first page to go live").await;
        let second = Page::open(&driver, &server.url("/"), Screen::Desktop).await;
        let me2 = second.wait_until_live("the second page to go live").await;
        let greeting = format!("hello there {}", me2.me_name);
        second
            .wait_for("the greeting", |s| {
                s.has_entry("client_response", &me1.me_id, &greeting)
            })
            .await;
        second.send(&me1.me_id, "before the restart").await;
        first
            .wait_for("the message before the restart", |s| {
                s.has_entry("client_response", &me2.me_id, "before the restart")
            })
            .await;

        server.stop(WAIT).await.expect("server returned an error");
        for page in [&first, &second] {
            page.wait_for("the status to say reconnecting", |s| {
                s.status == "reconnecting"
            })
            .await;
        }
        let mut server = spawn_app_on(addr, config()).await;
        for (page, me) in [(&first, &me1), (&second, &me2)] {
            page.wait_for("the page to resume the same session", |s| {
                s.is_live() && s.me_id == me.me_id && s.me_name == me.me_name
            })
            .await;
        }
        let snap = second
            .wait_for("the second page to list the first again", |s| {
                s.sees(&me1.me_id)
            })
            .await;
        assert_eq!(snap.people.len(), 1, "{snap:#?}");

        // Both directions still work, with the same ids and tokens.
        first.send(&me2.me_id, "after the restart").await;
        second.send("", "everyone, after the restart").await;
        let snap = second
            .wait_for("the message after the restart", |s| {
                s.has_entry("client_response", &me1.me_id, "after the restart")
            })
            .await;
        first
            .wait_for("the broadcast after the restart", |s| {
                s.has_entry(
                    "client_broadcast",
                    &me2.me_id,
                    "everyone, after the restart",
                )
            })
            .await;
        // Nothing lost, nothing twice: one greeting, one copy of each message, no rejoin.
        assert_eq!(count(&snap, "client_response", &greeting), 1, "{snap:#?}");
        let snap1 = first.snapshot().await;
        assert_eq!(
            count(&snap1, "client_response", "before the restart"),
            1,
            "{snap1:#?}"
        );
        for snap in [&snap, &snap1] {
            assert!(
                !snap.log.iter().any(|e| e.text.contains("joined again")),
                "{snap:#?}"
            );
            assert_eq!(
                snap.log.iter().filter(|e| e.kind == "new_user").count(),
                usize::from(snap.me_id == me1.me_id),
                "{snap:#?}"
            );
        }

        first.quit().await;
        second.quit().await;
        server.stop(WAIT).await.expect("server returned an error");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_rejoin_under_their_names_after_a_restart_without_state() {
    bounded(async {
        let mut server = spawn_app(page_config()).await;
        let addr = server.addr;
        let driver = ChromeDriver::start().await;
        let first = Page::open(&driver, &server.url("/?name=ann"), Screen::Desktop).await;
        let me1 = first.wait_until_live("the first page to go live").await;
        let second = Page::open(&driver, &server.url("/?name=bob"), Screen::Desktop).await;
        let me2 = second.wait_until_live("the second page to go live").await;
        assert_eq!((me1.me_name.as_str(), me2.me_name.as_str()), ("ann", "bob"));

        server.stop(WAIT).await.expect("server returned an error");
        let mut server = spawn_app_on(addr, page_config()).await;
        let mut ids = Vec::new();
        for (page, me) in [(&first, &me1), (&second, &me2)] {
            let snap = page
                .wait_for("the page to rejoin by itself", |s| {
                    s.is_live() && s.me_id != me.me_id
                })
                .await;
            assert_eq!(snap.me_name, me.me_name);
            assert!(!snap.rejoin_visible);
            ids.push(snap.me_id);
        }
        let snap = first
            .wait_for("ann to list the new bob", |s| s.sees(&ids[1]))
            .await;
        assert_eq!(
            snap.people,
            [Person {
                id: ids[1].clone(),
                name: "bob".into()
            }]
        );
        second.send(&ids[0], "we are back").await;
        first
            .wait_for("bob's message after the rejoin", |s| {
                s.has_entry("client_response", &ids[1], "we are back")
            })
            .await;

        first.quit().await;
        second.quit().await;
        server.stop(WAIT).await.expect("server returned an error");
    })
    .await;
}
