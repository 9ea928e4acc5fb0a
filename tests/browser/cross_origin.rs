//! switchboard.js on a page of another origin (`--cors-origin`): it joins, and a direct
//! message it sends (with its `Idempotency-Key`, which the preflight must allow) arrives.

use serde_json::{Value, json};
use tokio::net::TcpListener;
use warp::Filter;

use crate::bounded;
use crate::support::browser::{ChromeDriver, Screen, page_config};
use crate::support::{Config, public_dir, spawn_app};

/// A page of its own origin: an empty document, and `public/` for `switchboard.js`.
async fn elsewhere() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let blank = warp::path::end()
        .map(|| warp::reply::html("<!doctype html><title>another site</title><p>another site</p>"));
    let routes = blank.or(warp::fs::dir(public_dir()));
    tokio::spawn(warp::serve(routes).incoming(listener).run());
    origin
}

/// Joins the server at `base` from the open page and sends `to` one direct message; what
/// happened, as `{ok, id}` or `{ok: false, error}`.
const JOIN_AND_SEND: &str = r#"
const [base, to, done] = arguments;
import('/switchboard.js')
  .then(async ({ Switchboard }) => {
    const board = await Switchboard.join({ name: 'far', baseUrl: base, maxSendRetries: 0 });
    await board.send(to, 'from another origin');
    done({ ok: true, id: board.id });
  })
  .catch((err) => done({ ok: false, error: String((err && err.message) || err) }));
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_origin_joins_and_sends_a_direct_message() {
    bounded(async {
        let origin = elsewhere().await;
        let server = spawn_app(Config {
            cors_origins: vec![origin.clone()],
            ..page_config()
        })
        .await;
        let near = server.helo("near").await;
        let mut stream = server.attach_ready(&near).await;

        let driver = ChromeDriver::start().await;
        let page = driver.open(&format!("{origin}/"), Screen::Desktop).await;
        let base = server.url("");
        let base = base.trim_end_matches('/');
        let outcome: Value = page
            .execute_async(JOIN_AND_SEND, vec![json!(base), json!(near.id)])
            .await
            .expect("the script ran");
        assert_eq!(outcome["ok"], true, "{outcome}");
        let far = outcome["id"].as_str().unwrap();

        let event = loop {
            let event = stream.next().await;
            if event.event == "client_response" {
                break event;
            }
        };
        assert_eq!(event.data["from"], far, "{event:?}");
        assert_eq!(event.data["message"], "from another origin", "{event:?}");
        page.close().await.unwrap();
    })
    .await;
}
