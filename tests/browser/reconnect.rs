//! Reconnecting: the status follows the stream, a page whose session is gone joins again
//! under its name, and with a state file both pages resume the same sessions across a restart.

use crate::page::{Page, Person, Snapshot, two_pages_before_a_restart};
use crate::support::browser::{ChromeDriver, PAGE_WAIT as WAIT, Screen, page_config};
use crate::support::{spawn_app, spawn_app_on};
use crate::{bounded, scratch_dir};

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

        let [(first, me1), (second, me2)] =
            two_pages_before_a_restart(&driver, &server.url("/?join=1")).await;
        // The first page's auto-reply to the second's join, counted once at the end.
        let greeting = format!("hello there {}", me2.me_name);
        second
            .wait_for("the greeting", |s| {
                s.has_entry("client_response", &me1.me_id, &greeting)
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
