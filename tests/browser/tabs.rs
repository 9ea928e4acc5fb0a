//! Ten tabs of one browser on the page (issue 26): over HTTPS, HTTP/2 carries every tab's
//! stream on one connection and all ten join, send and receive; over plain HTTP/1.1 the
//! browser's six connections per site are all held by the first six tabs' streams, and the
//! seventh tab cannot even load the page until one of them closes.

use std::time::{Duration, Instant};

use fantoccini::Client;
use fantoccini::wd::WindowHandle;
use serde_json::json;

use crate::bounded;
use crate::page::Page;
use crate::support::browser::{ChromeDriver, PAGE_WAIT, Screen, page_config};
use crate::support::tls::TestCa;
use crate::support::{POLL, spawn_app};

const TABS: usize = 10;

/// Opens `url` in a new tab of `browser`'s and makes it the current one.
async fn open_tab(browser: &Client, url: &str) -> WindowHandle {
    let tab = browser.new_window(true).await.expect("open a tab").handle;
    browser
        .switch_to_window(tab.clone())
        .await
        .expect("switch to the new tab");
    browser.goto(url).await.expect("navigate the new tab");
    tab
}

/// The current tab's connection state (`live`, `connecting`, ...), or `None` while the page
/// has not loaded.
async fn state(browser: &Client) -> Option<String> {
    let script = "const s = document.querySelector('#status'); return s ? s.dataset.state : null;";
    let value = browser.execute(script, vec![]).await.expect("read the tab");
    value.as_str().map(str::to_owned)
}

/// Whether the current tab goes live within `within`.
async fn goes_live(browser: &Client, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if state(browser).await.as_deref() == Some("live") {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_tabs_over_http2_all_join_send_and_receive() {
    bounded(async {
        let ca = TestCa::new();
        let mut config = page_config();
        config.tls_cert = Some(ca.cert.clone());
        config.tls_key = Some(ca.key.clone());
        let mut server = spawn_app(config).await;
        let url = format!("https://{}/?join=1", server.authority());
        let driver = ChromeDriver::start().await;
        // The test's own certificate, trusted by its key's hash alone.
        let trust = format!("--ignore-certificate-errors-spki-list={}", ca.spki_sha256);
        let browser = driver
            .open_with(&url, Screen::Desktop, &[trust], false)
            .await;
        let page = Page {
            client: browser.clone(),
        };

        let mut tabs = vec![browser.window().await.expect("the first tab")];
        let mut ids = Vec::new();
        for n in 0..TABS {
            if n > 0 {
                tabs.push(open_tab(&browser, &url).await);
            }
            assert!(
                goes_live(&browser, PAGE_WAIT).await,
                "tab {n} did not go live over HTTP/2"
            );
            let me = page.snapshot().await;
            let protocol = browser
                .execute(
                    "return performance.getEntriesByType('navigation')[0].nextHopProtocol;",
                    vec![],
                )
                .await
                .expect("read the protocol");
            assert_eq!(protocol, json!("h2"), "tab {n} loaded over {protocol}");
            ids.push(me.me_id);
        }

        // Each tab broadcasts; each hears the one before it.
        for (n, tab) in tabs.iter().enumerate() {
            browser.switch_to_window(tab.clone()).await.unwrap();
            page.send("", &format!("from tab {n}")).await;
        }
        for (n, tab) in tabs.iter().enumerate() {
            let before = (n + TABS - 1) % TABS;
            browser.switch_to_window(tab.clone()).await.unwrap();
            page.wait_for(&format!("tab {n} to hear tab {before}"), |s| {
                s.has_entry(
                    "client_broadcast",
                    &ids[before],
                    &format!("from tab {before}"),
                )
            })
            .await;
        }
        let _ = browser.close().await;
        server.stop(Duration::from_secs(5)).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_tabs_over_plain_http1_stall_at_the_seventh() {
    bounded(async {
        let mut server = spawn_app(page_config()).await;
        let url = server.url("/?join=1");
        let driver = ChromeDriver::start().await;
        let browser = driver.open_with(&url, Screen::Desktop, &[], false).await;

        let mut tabs = vec![browser.window().await.expect("the first tab")];
        for n in 0..6 {
            if n > 0 {
                tabs.push(open_tab(&browser, &url).await);
            }
            assert!(
                goes_live(&browser, PAGE_WAIT).await,
                "tab {n} did not go live over HTTP/1.1"
            );
        }
        // Six streams hold the browser's six connections to the site: the next tabs wait.
        for n in 6..TABS {
            tabs.push(open_tab(&browser, &url).await);
            assert!(
                !goes_live(&browser, Duration::from_secs(2)).await,
                "tab {n} went live: the browser allowed more than six connections"
            );
        }
        // The last three give up; one stream closes (its tab does): the seventh tab loads and
        // goes live.
        for tab in tabs.drain(7..) {
            browser.switch_to_window(tab).await.unwrap();
            browser.close_window().await.expect("close a waiting tab");
        }
        browser.switch_to_window(tabs[0].clone()).await.unwrap();
        browser.close_window().await.expect("close the first tab");
        browser.switch_to_window(tabs[6].clone()).await.unwrap();
        assert!(
            goes_live(&browser, PAGE_WAIT).await,
            "the seventh tab did not go live once a connection was free"
        );
        let _ = browser.close().await;
        server.stop(Duration::from_secs(5)).await.unwrap();
    })
    .await;
}
