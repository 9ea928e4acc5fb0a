//! Join tokens from the host page (`#token=`): the page sends it with `POST /helo`, and a
//! `--auth jwt` server names each page after its token.

use serde_json::json;

use crate::page::{Page, Person};
use crate::support::browser::{ChromeDriver, PAGE_WAIT as WAIT, Screen, page_config};
use crate::support::{self, spawn_app};
use crate::{bounded, scratch_dir};

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
