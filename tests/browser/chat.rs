//! Joining, presence and chat: pages greet newcomers, exchange direct messages and
//! broadcasts, keep untrusted text as text, and see each other leave; the name form.

use std::time::Instant;

use serde_json::json;

use crate::bounded;
use crate::page::{Page, Person};
use crate::support::browser::{ChromeDriver, PAGE_WAIT as WAIT, Screen, page_config};
use crate::support::{POLL, spawn_app};

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
async fn a_message_whose_answer_was_lost_is_sent_again_and_delivered_once() {
    bounded(async {
        let mut server = spawn_app(page_config()).await;
        let driver = ChromeDriver::start().await;
        let bob = Page::open(&driver, &server.url("/?join=1"), Screen::Desktop).await;
        let bob_id = bob.wait_until_live("bob's page to go live").await.me_id;

        // Ann's page loses the answer to its first "once, please": the request reached the
        // server, the page saw a network error. Every POST /response's key is recorded.
        let ann = Page::open(&driver, &server.url("/?name=ann"), Screen::Desktop).await;
        ann.wait_for("the join form", |s| s.join_visible).await;
        ann.client
            .execute(
                r#"
                const keys = (window.responseKeys = []);
                const fetch = window.fetch;
                let lost = false;
                window.fetch = async (url, init = {}) => {
                  const response = await fetch.call(window, url, init);
                  if (String(url).endsWith('/response') && String(init.body).includes('once, please')) {
                    keys.push(new Headers(init.headers).get('Idempotency-Key'));
                    if (!lost) {
                      lost = true;
                      throw new TypeError('Failed to fetch');
                    }
                  }
                  return response;
                };
                "#,
                vec![],
            )
            .await
            .expect("instrument fetch");
        ann.find("#join").await.click().await.expect("click Join");
        let ann_id = ann.wait_until_live("ann's page to go live").await.me_id;
        ann.wait_for("ann to list bob", |s| s.sees(&bob_id)).await;

        ann.send(&bob_id, "once, please").await;
        ann.wait_for("ann's page to log the message as sent", |s| {
            s.log.iter().any(|e| e.kind == "sent_response" && e.text == "once, please")
        })
        .await;
        ann.send(&bob_id, "marker").await;
        let seen = bob
            .wait_for("the marker to reach bob", |s| {
                s.has_entry("client_response", &ann_id, "marker")
            })
            .await;
        let delivered = seen
            .log
            .iter()
            .filter(|e| e.kind == "client_response" && e.text == "once, please")
            .count();
        assert_eq!(delivered, 1, "{:?}", seen.log);
        let keys = ann
            .client
            .execute("return window.responseKeys", vec![])
            .await
            .expect("read the keys");
        let keys = keys.as_array().expect("a list");
        assert_eq!(keys.len(), 2, "sent, then sent again: {keys:?}");
        assert!(keys[0].is_string() && keys[0] == keys[1], "one key: {keys:?}");
        let errors = ann.snapshot().await.log;
        assert!(!errors.iter().any(|e| e.kind == "error"), "{errors:?}");

        ann.quit().await;
        bob.quit().await;
        server.stop(WAIT).await.expect("server returned an error");
    })
    .await;
}
