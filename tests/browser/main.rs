//! Browser tests: the web client in `public/` driven in a real, headless Chromium.
//!
//! Each test starts the real server in-process on `127.0.0.1:0`, its own
//! `chromedriver` on a free port, and one Chromium per page (one WebDriver
//! session each, with a fresh profile, so the pages share no cookies or
//! storage, like two people). They need Debian's `chromium` and
//! `chromium-driver`; without them the tests fail and say how to install them.
//!
//! Pages are read through one small script ([`page::Snapshot`]) and every wait polls
//! it against a deadline ([`support::browser::PAGE_WAIT`]); a timeout prints the last state seen.
//!
//! Screenshots go to `target/tmp/screenshots/`, or to the folder named by
//! `SWITCHBOARD_SCREENSHOTS` (the README's come from the rooms test:
//! `SWITCHBOARD_SCREENSHOTS=docs/screenshots cargo test --test browser rooms::`).

mod admin;
mod auto_reply;
mod chat;
mod cross_origin;
mod page;
mod page_states;
mod proxy_log;
mod reconnect;
mod refresh;
mod rooms;
mod rooms_client;
mod stream_url;
mod tabs;
mod tokens;

#[path = "../support/mod.rs"]
mod support;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// A new empty folder for a test's files (a state file, a key); the test removes it.
pub(crate) fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-browser-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&dir).expect("create a scratch folder");
    dir
}

/// Runs `body` with a bounded total time, so a hung browser fails the test
/// instead of the CI run.
pub(crate) async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(Duration::from_secs(120), body)
        .await
        .expect("browser test took longer than 120 s");
}
