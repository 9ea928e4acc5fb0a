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
use support::{POLL, SessionExt, spawn_app, spawn_app_on};

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
    /// text must never become markup. (The page's own notes hold names in `<bdi>`s.)
    markup_in_messages: bool,
    /// Whether every name on the page sits alone in a `<bdi>` (no markup in it), and every
    /// name in the recipient list takes its own direction.
    names_isolated: bool,
    /// The name form (before joining, and after leaving) and what its field holds.
    join_visible: bool,
    name_field: String,
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
    tag: String,
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
    tag: text(li.querySelector('.tag')),
  })),
  markup_in_messages: q('#log li:not([data-kind="system"]) .text *') !== null,
  names_isolated:
    all('.name').every((n) => n.tagName === 'BDI' && n.childElementCount === 0) &&
    all('#recipient option').every((o) => o.value === '' || o.dir === 'auto'),
  join_visible: !q('#join-form').hidden,
  name_field: q('#name-input').value,
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

/// A new empty folder for a test's files (a state file, a key); the test removes it.
fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-browser-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&dir).expect("create a scratch folder");
    dir
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

        let first = Page::open(&driver, &server.url("/?join=1"), Screen::Desktop).await;
        let me1 = first.wait_until_live("the first page to go live").await;
        assert!(
            me1.me_name.starts_with("new-user-"),
            "generated name, got {:?}",
            me1.me_name
        );
        let (id1, name1) = (me1.me_id, me1.me_name);

        let second = Page::open(&driver, &server.url("/?join=1"), Screen::Desktop).await;
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
        for snap in [&snap, &second.snapshot().await] {
            assert!(snap.names_isolated, "a name outside a <bdi>: {snap:#?}");
        }

        // A third person, on a phone: both desktop pages greet it.
        let phone = Page::open(&driver, &server.url("/?join=1"), Screen::Phone).await;
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

        let page = Page::open(&driver, &server.url("/?join=1"), Screen::Desktop).await;
        let before = page.wait_until_live("the page to go live").await;
        assert!(!before.join_visible);

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
        assert!(!after.join_visible);
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
            s.status == "closed" && s.join_visible
        })
        .await;
        assert!(server.clients().await.is_empty(), "the session was deleted");

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
        let phone = Page::open(&driver, &server.url("/?join=1"), Screen::Phone).await;
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
        let dir = scratch_dir();
        let config = || switchboard::Config {
            state_file: Some(dir.join("state.json")),
            ..page_config()
        };
        let mut server = spawn_app(config()).await;
        let addr = server.addr;
        let driver = ChromeDriver::start().await;

        let first = Page::open(&driver, &server.url("/?join=1"), Screen::Desktop).await;
        let me1 = first.wait_until_live("the first page to go live").await;
        let second = Page::open(&driver, &server.url("/?join=1"), Screen::Desktop).await;
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
        let first = Page::open(&driver, &server.url("/?name=ann&join=1"), Screen::Desktop).await;
        let me1 = first.wait_until_live("the first page to go live").await;
        let second = Page::open(&driver, &server.url("/?name=bob&join=1"), Screen::Desktop).await;
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
            assert!(!snap.join_visible);
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

/// `POST /response` requests the server has answered so far, whatever their status.
async fn responses_posted(server: &support::TestApp) -> u64 {
    let metrics = server.metrics().await;
    metrics
        .lines()
        .filter(|line| line.starts_with(r#"switchboard_http_requests_total{route="/response","#))
        .map(|line| {
            let value = line.rsplit(' ').next().unwrap_or_default();
            value.parse::<f64>().expect("a counter value") as u64
        })
        .sum()
}

impl Page {
    /// Replaces what the name field holds with `name` and presses Join.
    async fn join_as(&self, name: &str) {
        let input = self.find("#name-input").await;
        input.clear().await.expect("clear the name field");
        input.send_keys(name).await.expect("type the name");
        self.find("#join").await.click().await.expect("click Join");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_offers_a_random_name_and_joins_only_when_told() {
    bounded(async {
        let mut server = spawn_app(page_config()).await;
        let driver = ChromeDriver::start().await;
        let first = Page::open(&driver, &server.url("/?name=ann&join=1"), Screen::Desktop).await;
        let ann = first.wait_until_live("ann's page to go live").await;

        // A page without `?join=1` shows the name form, pre-filled, and joins nobody.
        let second = Page::open(&driver, &server.url("/"), Screen::Desktop).await;
        let form = second
            .wait_for("the name form", |s| {
                s.join_visible && !s.name_field.is_empty()
            })
            .await;
        assert_eq!(form.status, "idle", "{form:#?}");
        assert!(
            form.name_field.starts_with("new-user-") && form.name_field.len() > "new-user-".len(),
            "a random name, got {:?}",
            form.name_field
        );
        let third = Page::open(&driver, &server.url("/"), Screen::Phone).await;
        let other = third
            .wait_for("the phone's name form", |s| {
                s.join_visible && !s.name_field.is_empty()
            })
            .await;
        assert_ne!(
            other.name_field, form.name_field,
            "each page draws its own name"
        );
        assert_eq!(
            server.clients().await,
            [(ann.me_id.clone(), "ann".to_owned())].into(),
            "only the page told to join has joined"
        );

        // Typing a name (right-to-left, with markup) and pressing Join: the first page lists
        // it, in a <bdi>, as text.
        let name = "שרה <b>&amp;</b>";
        second.join_as(name).await;
        let me = second.wait_until_live("the second page to join").await;
        assert_eq!(me.me_name, name);
        assert!(!me.join_visible, "{me:#?}");
        let seen = first
            .wait_for("ann's page to list the newcomer", |s| s.sees(&me.me_id))
            .await;
        assert_eq!(
            seen.people,
            [Person {
                id: me.me_id.clone(),
                name: name.to_owned()
            }]
        );
        let greeting = format!("hello there {name}");
        let snap = second
            .wait_for("ann's greeting", |s| {
                s.has_entry("client_response", &ann.me_id, &greeting)
            })
            .await;
        for snap in [&snap, &first.snapshot().await] {
            assert!(snap.names_isolated, "a name outside a <bdi>: {snap:#?}");
            assert!(!snap.markup_in_messages, "{snap:#?}");
        }
        // The phone page still has not joined.
        let still = third.snapshot().await;
        assert!(still.join_visible && still.status == "idle", "{still:#?}");
        assert_eq!(server.clients().await.len(), 2);

        third.quit().await;
        second.quit().await;
        first.quit().await;
        server.stop(WAIT).await.expect("server returned an error");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_new_user_gets_no_auto_reply_and_a_live_one_does() {
    bounded(async {
        let dir = scratch_dir();
        // The page's stream comes back `sse_retry` after the restart: time enough for someone
        // to join while it is away.
        let config = || switchboard::Config {
            state_file: Some(dir.join("state.json")),
            sse_retry: Duration::from_secs(3),
            drain_window: Duration::ZERO,
            ..page_config()
        };
        let mut server = spawn_app(config()).await;
        let addr = server.addr;
        let driver = ChromeDriver::start().await;
        let page = Page::open(&driver, &server.url("/?name=ann&join=1"), Screen::Desktop).await;
        let ann = page.wait_until_live("ann's page to go live").await;

        server.stop(WAIT).await.expect("server returned an error");
        page.wait_for("the status to say reconnecting", |s| {
            s.status == "reconnecting"
        })
        .await;
        let mut server = spawn_app_on(addr, config()).await;
        let bob = server.helo("bob").await;
        assert_eq!(
            server.health().await["streams"],
            0,
            "ann's page must still be away, so that bob's new_user waits in its mailbox"
        );
        let mut bob_stream = server.attach_ready(&bob).await;

        // The page resumes its session (Last-Event-ID) and reads bob's new_user as a replay:
        // bob is already in the roster of its `ready`.
        let snap = page
            .wait_for("the page to resume and read bob's new_user", |s| {
                s.is_live()
                    && s.me_id == ann.me_id
                    && s.log
                        .iter()
                        .any(|e| e.kind == "new_user" && e.peer.as_deref() == Some(&*bob.id))
            })
            .await;
        let entry = snap
            .log
            .iter()
            .find(|e| e.kind == "new_user" && e.peer.as_deref() == Some(&*bob.id))
            .unwrap();
        assert_eq!(entry.tag, "replayed", "{snap:#?}");

        // Carol joins while the page watches: she is greeted. The page handles events in
        // order, so by then a greeting to bob would have been sent.
        let carol = server.helo("carol").await;
        page.wait_for("the page to greet carol", |s| {
            s.has_entry("sent_response", &carol.id, "hello there carol")
        })
        .await;
        let event = bob_stream.next().await;
        assert_eq!(
            (event.event.as_str(), &event.data),
            ("new_user", &carol.peer())
        );
        bob_stream
            .expect_no_event_within(Duration::from_millis(500))
            .await;
        assert_eq!(responses_posted(&server).await, 1, "carol's greeting only");
        let snap = page.snapshot().await;
        assert!(
            !snap
                .log
                .iter()
                .any(|e| e.peer.as_deref() == Some(&*bob.id) && e.kind != "new_user"),
            "nothing sent to bob: {snap:#?}"
        );

        page.quit().await;
        server.stop(WAIT).await.expect("server returned an error");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_newcomers_gets_at_most_three_auto_replies_a_second() {
    bounded(async {
        let mut server = spawn_app(page_config()).await;
        let driver = ChromeDriver::start().await;
        let page = Page::open(&driver, &server.url("/?name=ann&join=1"), Screen::Desktop).await;
        page.wait_until_live("ann's page to go live").await;

        const BURST: usize = 10;
        let started = Instant::now();
        let names: Vec<String> = (0..BURST).map(|n| format!("bot {n}")).collect();
        let bots = futures_util::future::join_all(names.iter().map(|name| server.helo(name))).await;
        let elapsed = started.elapsed();

        // Every newcomer is either greeted or skipped with a note, and logged as it joined.
        let ids: Vec<&str> = bots.iter().map(|bot| bot.id.as_str()).collect();
        let decided = |s: &Snapshot, id: &str| {
            s.log.iter().any(|e| {
                e.peer.as_deref() == Some(id)
                    && ((e.kind == "sent_response" && e.tag == "auto-reply")
                        || (e.kind == "system" && e.text.contains("no auto-reply")))
            })
        };
        let snap = page
            .wait_for("the page to greet or skip every newcomer", |s| {
                ids.iter().all(|id| decided(s, id))
            })
            .await;
        let greeted = snap
            .log
            .iter()
            .filter(|e| e.kind == "sent_response" && e.tag == "auto-reply")
            .count();
        let skipped = snap
            .log
            .iter()
            .filter(|e| e.kind == "system" && e.text.contains("no auto-reply"))
            .count();
        assert_eq!(greeted + skipped, BURST, "{snap:#?}");
        // At most 3 in any second: the burst took `elapsed` (plus some delivery jitter).
        let seconds = (elapsed + Duration::from_millis(250)).as_secs() as usize;
        assert!(
            (1..=3 * (seconds + 1)).contains(&greeted),
            "{greeted} greetings for {BURST} newcomers in {elapsed:?}: {snap:#?}"
        );
        assert_eq!(responses_posted(&server).await, greeted as u64);

        page.quit().await;
        server.stop(WAIT).await.expect("server returned an error");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_sends_its_host_pages_token_when_it_joins() {
    bounded(async {
        let mut server = spawn_app(page_config()).await;
        let driver = ChromeDriver::start().await;
        let page = Page::open(
            &driver,
            &server.url("/?name=ann#token=a-token-from-the-host-page"),
            Screen::Desktop,
        )
        .await;
        page.wait_for("the join form", |s| s.join_visible).await;
        // The token left the address bar, and the name field with it: the token names the user.
        let shown = page
            .client
            .execute(
                "return [location.href, document.querySelector('#name-input').hidden]",
                vec![],
            )
            .await
            .expect("read the page");
        assert_eq!(shown, json!([server.url("/?name=ann"), true]));

        // Record what the page's requests carry, then join.
        page.client
            .execute(
                r#"
                const seen = (window.requestsSeen = []);
                const fetch = window.fetch;
                window.fetch = (url, init = {}) => {
                  const headers = new Headers(init.headers);
                  seen.push({ url: String(url), authorization: headers.get('Authorization') });
                  return fetch.call(window, url, init);
                };
                "#,
                vec![],
            )
            .await
            .expect("instrument fetch");
        page.find("#join").await.click().await.expect("click Join");
        let me = page.wait_until_live("the page to join").await;
        let seen = page
            .client
            .execute("return window.requestsSeen", vec![])
            .await
            .expect("read the requests");
        let helo = seen
            .as_array()
            .expect("a list")
            .iter()
            .find(|r| r["url"].as_str().unwrap_or_default().ends_with("/helo"))
            .unwrap_or_else(|| panic!("no POST /helo among {seen}"));
        assert_eq!(
            helo["authorization"], "Bearer a-token-from-the-host-page",
            "{seen}"
        );
        // An open server ignores the token: the page joined under its name field's name.
        assert_eq!(me.me_name, "ann");

        page.quit().await;
        server.stop(WAIT).await.expect("server returned an error");
    })
    .await;
}

/// An HS256 join token for the test secret, naming `name`.
fn join_token(name: &str) -> String {
    support::jwt::hs256(support::jwt::SECRET, &support::jwt::claims(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_join_a_jwt_server_with_the_tokens_their_host_page_gives() {
    bounded(async {
        let dir = scratch_dir();
        let secret_file = support::jwt::secret_file(&dir);
        let server = support::Instance::start(
            "jwt",
            &[
                "--auth",
                "jwt",
                "--jwt-secret-file",
                secret_file.to_str().unwrap(),
            ],
        )
        .await;
        let driver = ChromeDriver::start().await;

        // Without a token the server refuses the hello, and the page says so.
        let stranger = Page::open(&driver, &server.url("/?join=1"), Screen::Desktop).await;
        let refused = stranger
            .wait_for("the page to report the refusal", |s| {
                s.status == "closed" && s.log.iter().any(|e| e.kind == "error")
            })
            .await;
        assert!(refused.join_visible, "{refused:#?}");

        // With one, the token's `name` claim names the session, whatever the field held.
        let ada = Page::open(
            &driver,
            &server.url(&format!(
                "/?name=someone&join=1#token={}",
                join_token("Ada")
            )),
            Screen::Desktop,
        )
        .await;
        let me = ada.wait_until_live("Ada's page to join").await;
        assert_eq!(me.me_name, "Ada");
        let grace = Page::open(
            &driver,
            &server.url(&format!("/#token={}", join_token("Grace"))),
            Screen::Desktop,
        )
        .await;
        grace.wait_for("the join form", |s| s.join_visible).await;
        grace.find("#join").await.click().await.expect("click Join");
        let grace_me = grace.wait_until_live("Grace's page to join").await;
        assert_eq!(grace_me.me_name, "Grace");
        let seen = grace
            .wait_for("Grace's page to list Ada", |s| s.sees(&me.me_id))
            .await;
        assert_eq!(
            seen.people,
            [Person {
                id: me.me_id.clone(),
                name: "Ada".into()
            }]
        );
        ada.wait_for("Ada's page to greet Grace", |s| {
            s.has_entry("sent_response", &grace_me.me_id, "hello there Grace")
        })
        .await;

        grace.quit().await;
        ada.quit().await;
        stranger.quit().await;
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
