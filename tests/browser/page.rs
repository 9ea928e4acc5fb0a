//! [`Page`]: one Chromium showing the web client, driven through WebDriver, and
//! [`Snapshot`]: what the page shows, read in one round trip so every wait polls one value.
//! [`two_pages_before_a_restart`]: the start of the tests that restart the server under two pages.

use std::path::{Path, PathBuf};
use std::time::Instant;

use fantoccini::{Client, Locator};
use serde::Deserialize;

use crate::support::POLL;
use crate::support::browser::{ChromeDriver, PAGE_WAIT as WAIT, Screen};

/// One browser showing the web client.
pub(crate) struct Page {
    pub(crate) client: Client,
}

/// What a page shows, read in one round trip by [`Page::snapshot`].
#[derive(Debug, Deserialize)]
pub(crate) struct Snapshot {
    pub(crate) status: String,
    pub(crate) me_id: String,
    pub(crate) me_name: String,
    /// The roster beside the conversation in view.
    pub(crate) people: Vec<Person>,
    /// Every conversation's entries (each says which conversation it is in).
    pub(crate) log: Vec<Entry>,
    /// The conversation in view: `room:<name>` or `direct`.
    pub(crate) view: String,
    /// The conversations the sidebar lists, in its order.
    pub(crate) conversations: Vec<Conversation>,
    /// Whether any element was created inside the log's messages: untrusted
    /// text must never become markup. (The page's own notes hold names in `<bdi>`s.)
    pub(crate) markup_in_messages: bool,
    /// Whether every name on the page sits alone in a `<bdi>` (no markup in it), and every
    /// name in the recipient list takes its own direction.
    pub(crate) names_isolated: bool,
    /// The name form (before joining, and after leaving) and what its field holds.
    pub(crate) join_visible: bool,
    pub(crate) name_field: String,
}

#[derive(Debug, Deserialize, PartialEq)]
pub(crate) struct Person {
    pub(crate) id: String,
    pub(crate) name: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Conversation {
    /// `room:<name>` or `direct`.
    pub(crate) key: String,
    pub(crate) unread: u32,
    /// The room's member count as the list shows it (none for direct messages).
    pub(crate) members: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Entry {
    /// The conversation it is in: `room:<name>` or `direct`.
    pub(crate) conversation: String,
    pub(crate) kind: String,
    pub(crate) direction: String,
    pub(crate) peer: Option<String>,
    pub(crate) who: String,
    pub(crate) text: String,
    pub(crate) tag: String,
    /// When the page logged it, in milliseconds since the epoch (its `<time datetime>`).
    pub(crate) at: f64,
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
  log: all('#logs li').map((li) => ({
    conversation: li.closest('.log').dataset.conversation,
    kind: li.dataset.kind,
    direction: li.dataset.direction,
    peer: li.dataset.peer || null,
    who: text(li.querySelector('.who .name')),
    text: text(li.querySelector('.text')),
    tag: text(li.querySelector('.tag')),
    at: Date.parse(li.querySelector('time').dateTime),
  })),
  view: q('#conversations [aria-current="true"]').closest('li').dataset.conversation,
  conversations: all('#conversations li').map((li) => ({
    key: li.dataset.conversation,
    unread: li.querySelector('.unread').hidden ? 0 : Number(text(li.querySelector('.unread'))),
    members: li.querySelector('.members').hidden ? null : Number(text(li.querySelector('.members'))),
  })),
  markup_in_messages: q('#logs li:not([data-kind="system"]) .text *') !== null,
  names_isolated:
    all('.name').every((n) => n.tagName === 'BDI' && n.childElementCount === 0) &&
    all('#recipient option').every((o) => o.value === '' || o.dir === 'auto'),
  join_visible: !q('#join-form').hidden,
  name_field: q('#name-input').value,
};
"#;

impl Snapshot {
    pub(crate) fn is_live(&self) -> bool {
        self.status == "live" && looks_like_uuid(&self.me_id)
    }

    pub(crate) fn sees(&self, id: &str) -> bool {
        self.people.iter().any(|p| p.id == id)
    }

    /// Whether the conversation `key` (`room:<name>`, `direct`) holds an entry of `kind` from
    /// or to `peer` reading `text`.
    pub(crate) fn has_entry_in(&self, key: &str, kind: &str, peer: &str, text: &str) -> bool {
        self.log.iter().any(|e| {
            e.conversation == key
                && e.kind == kind
                && e.peer.as_deref() == Some(peer)
                && e.text == text
        })
    }

    /// The conversation `key` as the sidebar lists it.
    pub(crate) fn conversation(&self, key: &str) -> Option<&Conversation> {
        self.conversations.iter().find(|c| c.key == key)
    }

    pub(crate) fn has_entry(&self, kind: &str, peer: &str, text: &str) -> bool {
        self.log
            .iter()
            .any(|e| e.kind == kind && e.peer.as_deref() == Some(peer) && e.text == text)
    }
}

impl Page {
    /// Opens `url` in a new Chromium of `driver`'s.
    pub(crate) async fn open(driver: &ChromeDriver, url: &str, screen: Screen) -> Page {
        Page {
            client: driver.open(url, screen).await,
        }
    }

    pub(crate) async fn snapshot(&self) -> Snapshot {
        let value = self
            .client
            .execute(SNAPSHOT_JS, vec![])
            .await
            .expect("read the page");
        serde_json::from_value(value).expect("snapshot shape")
    }

    /// Polls the page until `ready` holds, for at most [`WAIT`].
    pub(crate) async fn wait_for(&self, what: &str, ready: impl Fn(&Snapshot) -> bool) -> Snapshot {
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

    pub(crate) async fn wait_until_live(&self, what: &str) -> Snapshot {
        self.wait_for(what, Snapshot::is_live).await
    }

    /// Types `message` into the form, picks `recipient` (`""` = everyone) and sends.
    pub(crate) async fn send(&self, recipient: &str, message: &str) {
        let select = self.find("#recipient").await;
        select
            .select_by_value(recipient)
            .await
            .expect("choose the recipient");
        let input = self.find("#message").await;
        input.send_keys(message).await.expect("type the message");
        self.find("#send").await.click().await.expect("click Send");
    }

    /// Replaces what the name field holds with `name` and presses Join.
    pub(crate) async fn join_as(&self, name: &str) {
        let input = self.find("#name-input").await;
        input.clear().await.expect("clear the name field");
        input.send_keys(name).await.expect("type the name");
        self.find("#join").await.click().await.expect("click Join");
    }

    pub(crate) async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
    }

    pub(crate) async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("take a screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("create the screenshot folder");
        std::fs::write(dir.join(name), png).expect("save the screenshot");
    }

    /// Closes the page's tab the way a person does. A blank tab stays open,
    /// so the browser keeps running while the page's `keepalive` request
    /// finishes; [`Page::quit`] ends it once the effect has been seen.
    pub(crate) async fn close_tab(&self) {
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
    pub(crate) async fn quit(self) {
        let _ = self.client.close().await;
    }
}

/// Two pages of `url` (one that joins, `/?join=1`), each live before the next opens, and a
/// direct message from the second to the first ("before the restart") seen by the first: both
/// sessions hold something when the server then stops. The pages with what they showed when
/// live, first page first.
pub(crate) async fn two_pages_before_a_restart(
    driver: &ChromeDriver,
    url: &str,
) -> [(Page, Snapshot); 2] {
    let first = Page::open(driver, url, Screen::Desktop).await;
    let me1 = first.wait_until_live("the first page to go live").await;
    let second = Page::open(driver, url, Screen::Desktop).await;
    let me2 = second.wait_until_live("the second page to go live").await;
    second.send(&me1.me_id, "before the restart").await;
    first
        .wait_for("the message before the restart", |s| {
            s.has_entry("client_response", &me2.me_id, "before the restart")
        })
        .await;
    [(first, me1), (second, me2)]
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
