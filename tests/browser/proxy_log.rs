//! No secret in a proxy's log: two pages reach the server through the nginx of
//! `docs/cluster/nginx.conf` (its access log in nginx's `combined` format, which logs each
//! request line, query string included), join, send, and resume their streams across a
//! restart with a state file; then the access log holds their requests and no token or ticket.
//!
//! The server allows `?token=` (the default), so a page that put its token in a URL would
//! still work, and be caught here. The recipe's two instances are this test's one: nginx's
//! upstream holds it once (with a server named twice, nginx would count the restart's refused
//! connections against both names and refuse every request for its `fail_timeout`).

use std::time::Instant;

use crate::page::two_pages_before_a_restart;
use crate::support::browser::{ChromeDriver, PAGE_WAIT as WAIT, page_config};
use crate::support::nginx::Nginx;
use crate::support::{POLL, spawn_app, spawn_app_on};
use crate::{bounded, scratch_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_recipes_nginx_the_access_log_holds_no_secret() {
    bounded(async {
        let dir = scratch_dir();
        let config = || switchboard::Config {
            state_file: Some(dir.join("state.json")),
            trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
            streams: Default::default(),
            ..page_config()
        };
        let mut server = spawn_app(config()).await;
        let addr = server.addr;
        let nginx = Nginx::start("browser", &[addr.to_string()]).await;
        let driver = ChromeDriver::start().await;

        let [(first, me1), (second, me2)] =
            two_pages_before_a_restart(&driver, &nginx.url("/?join=1")).await;

        // A restart: both streams end, the pages reconnect through nginx (which answers 502
        // until the server is back) and resume their sessions.
        server.stop(WAIT).await.expect("server returned an error");
        let mut server = spawn_app_on(addr, config()).await;
        for (page, me) in [(&first, &me1), (&second, &me2)] {
            page.wait_for("the page to resume the same session", |s| {
                s.is_live() && s.me_id == me.me_id
            })
            .await;
        }
        first.send(&me2.me_id, "after the restart").await;
        second
            .wait_for("the message after the restart", |s| {
                s.has_entry("client_response", &me1.me_id, "after the restart")
            })
            .await;
        first.quit().await;
        second.quit().await;
        // Streams are logged when they end: with the server gone, every one has.
        server.stop(WAIT).await.expect("server returned an error");

        let log = logged_streams(&nginx, 4).await;
        let requests: Vec<&str> = log.lines().collect();
        for wanted in ["\"POST /helo ", "\"POST /response "] {
            assert!(
                requests.iter().any(|line| line.contains(wanted)),
                "no {wanted} in the access log:\n{log}"
            );
        }
        for line in &requests {
            assert!(
                !line.contains("token=") && !line.contains("ticket="),
                "a credential in a URL: {line}"
            );
            // A token's secret and a ticket are 64 hex digits; nothing else logged is.
            assert!(
                !has_hex_run(line, 64),
                "something like a token or a ticket: {line}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

/// The access log once it holds at least `streams` stream requests (within the page wait).
async fn logged_streams(nginx: &Nginx, streams: usize) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = nginx.access_log();
        if log.matches("\"GET /events/").count() >= streams {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {streams} streams logged:\n{log}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Whether `text` holds `len` hex digits in a row.
fn has_hex_run(text: &str, len: usize) -> bool {
    let mut run = 0;
    text.chars().any(|c| {
        run = if c.is_ascii_hexdigit() { run + 1 } else { 0 };
        run >= len
    })
}
