//! No secret in the stream's URL: the real binary, with `?token=` still allowed and every
//! request logged (`--log debug`), serves the page; the page's stream requests, as the server
//! logged them, carry neither a token nor a ticket. (Every other browser test runs
//! `--url-tokens off`, where a page using `?token=` would not go live at all.)

use crate::bounded;
use crate::page::Page;
use crate::support::browser::{ChromeDriver, Screen};
use crate::support::{Instance, public_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_streams_with_the_cookie_and_no_secret_in_its_url() {
    bounded(async {
        let public = public_dir();
        let args = [
            "--listen",
            "0",
            "--log",
            "debug",
            "--public-dir",
            public.to_str().unwrap(),
        ];
        let server = Instance::with_args("page server", &args).await;
        let driver = ChromeDriver::start().await;
        let page = Page::open(&driver, &server.url("/?join=1"), Screen::Desktop).await;
        let me = page
            .wait_until_live("the page to go live on its cookie")
            .await;

        let stream = format!("/events/{}", me.me_id);
        server.log_line(&stream).await;
        let requests: Vec<String> = server
            .log()
            .into_iter()
            .filter(|line| line.contains("/events/"))
            .collect();
        assert!(!requests.is_empty());
        for line in &requests {
            assert!(
                !line.contains("token=") && !line.contains("ticket="),
                "a secret in the stream's URL: {line}"
            );
        }
        page.client.close().await.unwrap();
    })
    .await;
}
