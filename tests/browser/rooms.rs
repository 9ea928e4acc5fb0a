//! Rooms on the page: one conversation per room and one for direct messages, the roster of
//! the room in view, joining a room by typing its name, and who hears what: A and B in `dev`,
//! C in `ops` and `lobby`. The README's screenshots come from here.

use serde_json::json;

use crate::bounded;
use crate::page::{Page, Person, Snapshot};
use crate::support::browser::{ChromeDriver, Screen, page_config};
use crate::support::spawn_app;

/// The ids of the roster a snapshot shows.
fn roster(snap: &Snapshot) -> Vec<&str> {
    let mut ids: Vec<&str> = snap.people.iter().map(|p| p.id.as_str()).collect();
    ids.sort();
    ids
}

fn keys(snap: &Snapshot) -> Vec<&str> {
    snap.conversations.iter().map(|c| c.key.as_str()).collect()
}

impl Page {
    /// Types `room` into the room field and presses its Join.
    async fn join_room(&self, room: &str) {
        let input = self.find("#room-input").await;
        input.send_keys(room).await.expect("type the room");
        self.find("#room-join")
            .await
            .click()
            .await
            .expect("click Join");
    }

    /// Shows the conversation `key` (`room:<name>`, `direct`) from the sidebar.
    async fn open_conversation(&self, key: &str) {
        let css = format!("#conversations li[data-conversation=\"{key}\"] .conversation-button");
        self.find(&css)
            .await
            .click()
            .await
            .expect("open the conversation");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_keep_their_traffic_apart_and_a_live_join_shows_in_the_roster() {
    bounded(async {
        let server = spawn_app(page_config()).await;
        let driver = ChromeDriver::start().await;
        let a = Page::open(
            &driver,
            &server.url("/?join=1&name=ann&rooms=dev"),
            Screen::Desktop,
        )
        .await;
        let ann = a.wait_until_live("ann's page to go live").await;
        let c_url = server.url("/?join=1&name=cat&rooms=ops,lobby");
        let c = Page::open(&driver, &c_url, Screen::Desktop).await;
        let cat = c.wait_until_live("cat's page to go live").await;
        let b = Page::open(
            &driver,
            &server.url("/?join=1&name=bob&rooms=dev"),
            Screen::Desktop,
        )
        .await;
        let bob = b.wait_until_live("bob's page to go live").await;
        // Someone in ops who is no page: what cat hears there, later, proves what it did not.
        let eve = server
            .hub
            .helo_in("eve", &["ops"])
            .await
            .expect("eve joins ops");

        // Each page lists the rooms it asked for, the first in view, and direct messages.
        assert_eq!(
            (keys(&ann), ann.view.as_str()),
            (vec!["room:dev", "direct"], "room:dev")
        );
        assert_eq!(keys(&cat), ["room:ops", "room:lobby", "direct"]);
        assert_eq!(cat.view, "room:ops");
        // ann sees bob in dev; nobody greets in dev.
        let snap = a
            .wait_for("ann to see bob in dev", |s| s.sees(&bob.me_id))
            .await;
        assert_eq!(
            snap.people,
            [Person {
                id: bob.me_id.clone(),
                name: "bob".into()
            }]
        );
        assert_eq!(snap.conversation("room:dev").unwrap().members, Some(2));
        assert!(
            snap.has_entry_in("room:dev", "new_user", &bob.me_id, ""),
            "{snap:#?}"
        );
        assert!(
            !snap.log.iter().any(|e| e.kind == "sent_response"),
            "{snap:#?}"
        );
        let snap = c
            .wait_for("cat to see eve in ops", |s| s.sees(&eve.id))
            .await;
        assert_eq!(
            roster(&snap),
            [eve.id.as_str()],
            "cat's ops roster: eve only"
        );

        // ann's broadcast in dev (the room in view) reaches bob, and only bob.
        a.send("", "dev only").await;
        let snap = a
            .wait_for("ann to log her broadcast", |s| {
                s.log
                    .iter()
                    .any(|e| e.kind == "sent_broadcast" && e.text == "dev only")
            })
            .await;
        let sent = snap
            .log
            .iter()
            .find(|e| e.kind == "sent_broadcast")
            .unwrap();
        assert_eq!(
            (sent.conversation.as_str(), sent.tag.as_str()),
            ("room:dev", "1 recipient")
        );
        b.wait_for("bob to read it in dev", |s| {
            s.has_entry_in("room:dev", "client_broadcast", &ann.me_id, "dev only")
        })
        .await;
        // eve speaks in ops after ann's broadcast was delivered (its answer came back): once cat
        // has read eve, anything of dev's would have come before it.
        let recipients = server
            .hub
            .broadcast_to(&eve, "ops", &json!("ops only"))
            .await
            .unwrap();
        assert_eq!(recipients, 1);
        let snap = c
            .wait_for("cat to read eve in ops", |s| {
                s.has_entry_in("room:ops", "client_broadcast", &eve.id, "ops only")
            })
            .await;
        assert!(
            !snap.log.iter().any(|e| e.text.contains("dev")),
            "cat heard dev: {snap:#?}"
        );
        assert!(
            !snap.sees(&ann.me_id) && !snap.sees(&bob.me_id),
            "{snap:#?}"
        );

        // cat joins dev by typing its name: it goes into view with ann and bob in its roster,
        // and ann's roster of dev shows cat at once.
        c.join_room("dev").await;
        let snap = c
            .wait_for("cat to be in dev", |s| {
                s.view == "room:dev" && s.people.len() == 2
            })
            .await;
        assert_eq!(roster(&snap), {
            let mut v = vec![ann.me_id.as_str(), bob.me_id.as_str()];
            v.sort();
            v
        });
        assert_eq!(
            keys(&snap),
            ["room:ops", "room:lobby", "room:dev", "direct"]
        );
        let snap = a
            .wait_for("ann to see cat join dev", |s| s.sees(&cat.me_id))
            .await;
        assert_eq!(snap.conversation("room:dev").unwrap().members, Some(3));
        assert!(
            snap.has_entry_in("room:dev", "new_user", &cat.me_id, ""),
            "{snap:#?}"
        );

        // What is said in a room out of view counts as unread there until it is opened.
        server
            .hub
            .broadcast_to(&eve, "ops", &json!("while you were in dev"))
            .await
            .unwrap();
        let snap = c
            .wait_for("an unread message in ops", |s| {
                s.conversation("room:ops").is_some_and(|c| c.unread == 1)
            })
            .await;
        assert_eq!(snap.conversation("room:dev").unwrap().unread, 0);
        c.open_conversation("room:ops").await;
        c.wait_for("ops read", |s| {
            s.view == "room:ops" && s.conversation("room:ops").is_some_and(|c| c.unread == 0)
        })
        .await;

        // The greeting still works in lobby: cat greets a newcomer there, on a phone, whose
        // direct messages are apart from the lobby's conversation (and unread while away).
        let d = Page::open(&driver, &server.url("/?join=1&name=dee"), Screen::Phone).await;
        let dee = d.wait_until_live("dee's page to go live").await;
        let snap = d
            .wait_for("cat's greeting to reach dee", |s| {
                s.has_entry_in("direct", "client_response", &cat.me_id, "hello there dee")
            })
            .await;
        assert_eq!(snap.view, "room:lobby");
        assert_eq!(
            snap.people,
            [Person {
                id: cat.me_id.clone(),
                name: "cat".into()
            }]
        );
        assert_eq!(snap.conversation("direct").unwrap().unread, 1, "{snap:#?}");
        c.wait_for("cat to log the greeting it sent", |s| {
            s.has_entry_in("direct", "sent_response", &dee.me_id, "hello there dee")
        })
        .await;
        d.send("", "hi lobby").await;
        c.wait_for("dee's broadcast in cat's lobby", |s| {
            s.has_entry_in("room:lobby", "client_broadcast", &dee.me_id, "hi lobby")
        })
        .await;
        assert!(!a.snapshot().await.log.iter().any(|e| e.text == "hi lobby"));

        a.screenshot("first.png").await;
        c.screenshot("second.png").await;
        d.screenshot("phone.png").await;

        // cat leaves dev with its × button: ann's roster drops cat, cat's list drops dev.
        c.find("#conversations li[data-room=\"dev\"] .leave-room")
            .await
            .click()
            .await
            .unwrap();
        c.wait_for("dev to leave cat's list", |s| {
            s.conversation("room:dev").is_none()
        })
        .await;
        a.wait_for("cat to leave ann's roster", |s| !s.sees(&cat.me_id))
            .await;

        for page in [a, b, c, d] {
            page.quit().await;
        }
    })
    .await;
}
