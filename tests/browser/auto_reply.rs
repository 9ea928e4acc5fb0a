//! The page's auto-reply: it greets newcomers it sees join live, not those it reads in a
//! replay, and at most three a second in a burst.

use std::time::Duration;

use crate::page::{Page, Snapshot};
use crate::support::browser::{ChromeDriver, PAGE_WAIT as WAIT, Screen, page_config};
use crate::support::{self, SessionExt, spawn_app, spawn_app_on};
use crate::{bounded, scratch_dir};

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
            ("new_user", &carol.member("lobby"))
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
        let names: Vec<String> = (0..BURST).map(|n| format!("bot {n}")).collect();
        let bots = futures_util::future::join_all(names.iter().map(|name| server.helo(name))).await;

        // Every newcomer is either greeted or skipped with a note, and logged as it joined.
        let ids: Vec<&str> = bots.iter().map(|bot| bot.id.as_str()).collect();
        let greeted = |s: &Snapshot, id: &str| {
            s.log.iter().any(|e| {
                e.peer.as_deref() == Some(id) && e.kind == "sent_response" && e.tag == "auto-reply"
            })
        };
        let skipped = |s: &Snapshot, id: &str| {
            s.log.iter().any(|e| {
                e.peer.as_deref() == Some(id)
                    && e.kind == "system"
                    && e.text.contains("no auto-reply")
            })
        };
        let snap = page
            .wait_for("the page to greet or skip every newcomer", |s| {
                ids.iter().all(|id| greeted(s, id) || skipped(s, id))
            })
            .await;
        let greeted_ids: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| greeted(&snap, id))
            .collect();
        assert!(
            ids.iter()
                .all(|id| greeted(&snap, id) != skipped(&snap, id)),
            "each newcomer greeted or skipped, not both: {snap:#?}"
        );
        let greeted = greeted_ids.len();
        assert!(greeted >= 1, "{snap:#?}");
        // At most 3 in any second, by the page's own clock: the page decides as it logs each
        // newcomer's `new_user`, so any four greeted newcomers were logged a second apart or more
        // (998 ms: both times are whole milliseconds).
        let mut times: Vec<f64> = snap
            .log
            .iter()
            .filter(|e| {
                e.kind == "new_user" && greeted_ids.contains(&e.peer.as_deref().unwrap_or(""))
            })
            .map(|e| e.at)
            .collect();
        assert_eq!(times.len(), greeted, "{snap:#?}");
        times.sort_by(f64::total_cmp);
        for four in times.windows(4) {
            assert!(
                four[3] - four[0] >= 998.0,
                "four greetings within {} ms: {times:?}",
                four[3] - four[0]
            );
        }
        assert_eq!(responses_posted(&server).await, greeted as u64);

        page.quit().await;
        server.stop(WAIT).await.expect("server returned an error");
    })
    .await;
}
