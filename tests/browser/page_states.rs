//! What the page says beside the conversation: the automatic greeting under the newcomer's
//! name, a lost server as a plain offline notice, and a server that admits only signed-in
//! users as such rather than as a raw 401.

use std::time::Instant;

use serde_json::Value;

use crate::bounded;
use crate::page::Page;
use crate::support::browser::{ChromeDriver, PAGE_WAIT as WAIT, Screen, page_config};
use crate::support::{POLL, spawn_app};

/// Polls `script` (returning a value) on `page` until `ready` holds for it.
async fn wait_for_js(
    page: &Page,
    what: &str,
    script: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = page
            .client
            .execute(script, vec![])
            .await
            .expect("the script ran");
        if ready(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {what}; last seen {value}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_greeting_is_logged_under_the_newcomers_name() {
    bounded(async {
        let server = spawn_app(page_config()).await;
        let driver = ChromeDriver::start().await;
        let first = Page::open(&driver, &server.url("/?join=1&name=Ann"), Screen::Desktop).await;
        first.wait_until_live("the first page to go live").await;
        let second = Page::open(&driver, &server.url("/?join=1&name=Bob"), Screen::Desktop).await;
        let bob = second.wait_until_live("the second page to go live").await;
        let snap = first
            .wait_for("the greeting to be logged", |s| {
                s.has_entry("sent_response", &bob.me_id, "hello there Bob")
            })
            .await;
        let greeting = snap.log.iter().find(|e| e.kind == "sent_response").unwrap();
        assert_eq!(greeting.who, "Bob", "{greeting:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_server_shows_an_offline_notice_until_it_is_back() {
    bounded(async {
        let mut server = spawn_app(page_config()).await;
        let driver = ChromeDriver::start().await;
        let page = Page::open(&driver, &server.url("/?join=1"), Screen::Desktop).await;
        page.wait_until_live("the page to go live").await;
        let notice = "const n = document.querySelector('#offline'); \
                      return n && !n.hidden && n.getBoundingClientRect().height > 0 ? n.textContent : null;";
        assert_eq!(page.client.execute(notice, vec![]).await.unwrap(), Value::Null);
        server.stop(WAIT).await.expect("server returned an error");
        let shown = wait_for_js(&page, "the offline notice", notice, Value::is_string).await;
        assert!(shown.as_str().unwrap().contains("Offline"), "{shown}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_server_without_a_token_asks_for_a_sign_in_not_a_name() {
    bounded(async {
        let dir = crate::scratch_dir();
        let secret_file = crate::support::jwt::secret_file(&dir);
        let server = crate::support::Instance::start(
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
        let page = Page::open(&driver, &server.url("/?join=1"), Screen::Desktop).await;
        let state = "const e = document.querySelector('#join-error'); \
                     return e && !e.hidden ? { error: e.textContent, \
                       name_shown: !document.querySelector('#name-input').hidden } : null;";
        let shown = wait_for_js(&page, "the sign-in notice", state, Value::is_object).await;
        assert!(
            shown["error"].as_str().unwrap().contains("sign-in token"),
            "{shown}"
        );
        assert_eq!(shown["name_shown"], false, "{shown}");
        let log = page.snapshot().await.log;
        assert!(
            log.iter()
                .all(|e| !e.text.contains("401") && !e.text.contains("Bearer")),
            "{log:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    })
    .await;
}
