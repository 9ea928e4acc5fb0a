//! What every test binary shares: servers to talk to, bounded HTTP and SSE helpers, and the
//! assertions on the API's error format. Each test binary includes it with
//! `#[path = "support/mod.rs"] mod support;` (or `../support/mod.rs` from `tests/api/`).
//!
//! # Layout
//! - [`server`]: one server in-process ([`spawn_app`]), and [`Endpoint`], the HTTP surface
//!   every server offers, driven through `switchboard-client`.
//! - [`instance`]: the real binary as a child process ([`Instance`], started by a [`Launch`]).
//! - [`jwt`]: join tokens for servers running `--auth jwt`.
//! - [`nginx`]: the nginx of `docs/cluster/nginx.conf` in front of servers, and its access log.
//! - [`cluster`]: a `redis-server` child and a [`cluster::Cluster`] of binaries sharing it.
//! - [`redis_cluster`]: a Redis Cluster: the test script's, or one a test starts and breaks.
//! - [`redis_proxy`]: a proxy in front of Redis that holds an instance's messages back.
//! - [`browser`]: a `chromedriver` of our own that opens headless Chromium pages.
//! - [`tls`]: certificates made by the test, and HTTPS clients that trust them.
//! - [`sse`]: [`SseReader`], every read bounded by [`WAIT`]; [`RawStream`] for wire bytes.
//! - [`stats`]: the admin console's `/api/stats` stream, checked against its schema.
//!
//! Every wait is bounded: HTTP calls and SSE reads by [`WAIT`], "eventually" conditions by a
//! deadline polled every [`POLL`].
// Each test binary uses a different part of this module.
#![allow(dead_code, unused_imports)]

pub mod browser;
pub mod cluster;
pub mod instance;
pub mod jwt;
pub mod nginx;
pub mod redis_cluster;
pub mod redis_proxy;
pub mod server;
pub mod sse;
pub mod stats;
pub mod tls;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

pub use instance::{Instance, Launch, refused};
pub use server::{
    Endpoint, REDIS_URL_VAR, TEST_API_KEY, TestApp, api_key_file, public_dir, spawn_app,
    spawn_app_on, test_config, wait_for_health,
};
pub use sse::{RawStream, SseEvent, SseReader};
pub use switchboard::Config;
pub use switchboard_client::Session;

/// Longest wait for anything that should happen: a response, an event, a process starting.
pub const WAIT: Duration = Duration::from_secs(5);

/// Interval between two looks at an "eventually" condition.
pub const POLL: Duration = Duration::from_millis(25);

/// Sends a request, failing the test if no response head arrives within [`WAIT`].
pub async fn send(request: reqwest::RequestBuilder) -> Response {
    tokio::time::timeout(WAIT, request.send())
        .await
        .expect("no response within the wait")
        .expect("request failed")
}

/// The body as JSON, read within [`WAIT`].
pub async fn body_json(response: Response) -> Value {
    tokio::time::timeout(WAIT, response.json())
        .await
        .expect("no body within the wait")
        .expect("the body is JSON")
}

/// The value of the metric line that starts with `series` and a space (its name and labels,
/// exactly) in a `/metrics` exposition; `None` when there is no such line.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The body as text, read within [`WAIT`].
pub async fn body_text(response: Response) -> String {
    tokio::time::timeout(WAIT, response.text())
        .await
        .expect("no body within the wait")
        .expect("the body is text")
}

/// Asserts `response` is the JSON error `{"error": code, "message": <text>}` with `status`,
/// and returns it for further checks.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "status for expected `{code}`");
    assert_json_content_type(response.headers());
    let body: Value = body_json(response).await;
    assert_eq!(body["error"], code, "error code in {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "a human-readable message in {body}");
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "only error and message: {body}"
    );
    body
}

pub fn assert_json_content_type(headers: &HeaderMap) {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type:?}"
    );
}

/// A port nobody listened on a moment ago, for a child process to bind.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

/// A token nobody issued that differs from `session`'s only in its last character: the same
/// length and alphabet, whatever the token's inner layout.
pub fn forged_token(session: &Session) -> String {
    let token = &session.token;
    let last = token.chars().last().expect("a token");
    let other = if last == '0' { '1' } else { '0' };
    let forged = format!("{}{other}", &token[..token.len() - last.len_utf8()]);
    assert_ne!(&forged, token);
    forged
}

/// The `Retry-After` of a refusal as the contract promises it: whole seconds, at least 1, and
/// (a sanity bound) at most an hour.
pub fn retry_after_secs(headers: &HeaderMap) -> u64 {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)
        .unwrap_or_else(|| panic!("a Retry-After header in {headers:?}"));
    let secs: u64 = value
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After {value:?} is not whole seconds"));
    assert!((1..=3600).contains(&secs), "Retry-After {secs}");
    secs
}

/// How the tests look at a [`Session`] from the outside.
pub trait SessionExt {
    /// `{"id", "name"}`, the way others see this session in `ready`, `new_user` and `user_left`.
    fn peer(&self) -> Value;
    /// `(id, name)`, for set comparisons with [`peer_set`].
    fn key(&self) -> (String, String);
    /// `{"id", "name", "room"}`, the way `new_user` and `user_left` tell of it in `room`.
    fn member(&self, room: &str) -> Value;
}

impl SessionExt for Session {
    fn peer(&self) -> Value {
        json!({"id": self.id, "name": self.name})
    }

    fn member(&self, room: &str) -> Value {
        json!({"id": self.id, "name": self.name, "room": room})
    }

    fn key(&self) -> (String, String) {
        (self.id.clone(), self.name.clone())
    }
}

/// The (id, name) pairs of a list of peers; fails the test if a peer has other fields.
pub fn peer_set(peers: &[Value]) -> BTreeSet<(String, String)> {
    peers
        .iter()
        .map(|peer| {
            assert_eq!(peer.as_object().map(|o| o.len()), Some(2), "{peer}");
            (
                peer["id"].as_str().expect("an id").to_owned(),
                peer["name"].as_str().expect("a name").to_owned(),
            )
        })
        .collect()
}

/// The (id, name) pairs of `list`, to compare with [`peer_set`].
pub fn sessions(list: &[&Session]) -> BTreeSet<(String, String)> {
    list.iter().map(|s| s.key()).collect()
}
