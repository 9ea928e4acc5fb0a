//! The harness every API test uses: a real server on an ephemeral port, a reqwest client, and
//! readers for its SSE streams.
//!
//! [`spawn_app`] binds `127.0.0.1:0`, spawns `switchboard::serve` with a oneshot as its shutdown
//! trigger and returns at once. [`SseReader`] parses a stream with `eventsource-stream` and bounds
//! every read by [`WAIT`], so a missing event fails the test in seconds instead of hanging it;
//! [`RawStream`] reads the bytes themselves for wire-format checks (`retry:`, `: ping`, `id:`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event as RawEvent, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
pub use switchboard::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest wait for anything that should happen: a response, an event, the end of a stream.
pub const WAIT: Duration = Duration::from_secs(5);

/// A server running inside the test's runtime.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub base_url: String,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// Fires `serve`'s shutdown trigger; `None` once [`TestApp::stop`] has used it.
    pub shutdown: Option<oneshot::Sender<()>>,
    /// The task running `serve`.
    pub server: Option<JoinHandle<std::io::Result<()>>>,
}

/// A registered session, as `POST /helo` returned it.
#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub token: String,
    pub name: String,
}

impl Session {
    /// `{"id", "name"}`, the way others see this session in `ready`, `new_user` and `user_left`.
    pub fn peer(&self) -> Value {
        json!({"id": self.id, "name": self.name})
    }
}

/// The crate's `public/` directory, whatever the working directory.
pub fn public_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("public")
}

/// Set to a Redis URL to run the whole suite in cluster mode (one instance per test, each
/// with its own key prefix); unset, every test runs the default in-process hub.
pub const REDIS_URL_VAR: &str = "TEST_REDIS_URL";

/// The contract's defaults, with the crate's `public/`, a drain window short enough that tests
/// which shut down do not wait for it, and cluster mode when [`REDIS_URL_VAR`] is set.
pub fn test_config() -> Config {
    Config {
        public_dir: Some(public_dir()),
        drain_window: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(2),
        redis_url: std::env::var(REDIS_URL_VAR).ok(),
        redis_prefix: format!("switchboard-test-{}", uuid::Uuid::new_v4().simple()),
        ..Config::default()
    }
}

/// Binds an ephemeral port, spawns the server and returns without waiting for anything else:
/// the listener is already bound, so requests queue until `serve` accepts them. In cluster
/// mode it first waits for `/healthz` to say the instance is on the Redis bus.
pub async fn spawn_app(config: Config) -> TestApp {
    let cluster = config.redis_url.is_some();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding an ephemeral port");
    let addr = listener.local_addr().unwrap();
    let (shutdown, trigger) = oneshot::channel::<()>();
    let server = tokio::spawn(switchboard::serve(listener, config, async move {
        let _ = trigger.await;
    }));
    let client = reqwest::Client::builder()
        .connect_timeout(WAIT)
        .build()
        .unwrap();
    let app = TestApp {
        base_url: format!("http://{addr}"),
        addr,
        client,
        shutdown: Some(shutdown),
        server: Some(server),
    };
    if cluster {
        app.wait_until_healthy().await;
    }
    app
}

/// Sends a request, failing the test if no response head arrives within [`WAIT`].
pub async fn send(request: reqwest::RequestBuilder) -> Response {
    tokio::time::timeout(WAIT, request.send())
        .await
        .expect("no response within the wait")
        .expect("request failed")
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

/// The body as JSON, read within [`WAIT`].
pub async fn body_json(response: Response) -> Value {
    tokio::time::timeout(WAIT, response.json())
        .await
        .expect("no body within the wait")
        .expect("the body is JSON")
}

/// The body as text, read within [`WAIT`].
pub async fn body_text(response: Response) -> String {
    tokio::time::timeout(WAIT, response.text())
        .await
        .expect("no body within the wait")
        .expect("the body is text")
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        send(self.client.get(self.url(path))).await
    }

    /// POSTs `body` verbatim as `application/json`.
    pub async fn post_raw(&self, path: &str, token: Option<&str>, body: &str) -> Response {
        let mut request = self
            .client
            .post(self.url(path))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_owned());
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        send(request).await
    }

    /// `POST /helo` with `{"name": name}`; the raw response, for status checks.
    pub async fn helo_response(&self, name: &str) -> Response {
        send(
            self.client
                .post(self.url("/helo"))
                .json(&json!({ "name": name })),
        )
        .await
    }

    /// Registers `name` and returns the session; fails the test unless the answer is 201.
    pub async fn helo(&self, name: &str) -> Session {
        let response = self.helo_response(name).await;
        assert_eq!(response.status(), StatusCode::CREATED, "helo {name}");
        let body = body_json(response).await;
        Session {
            id: body["id"].as_str().expect("id").to_owned(),
            token: body["token"].as_str().expect("token").to_owned(),
            name: body["name"].as_str().expect("name").to_owned(),
        }
    }

    /// `GET /events/{id}` with the bearer header and an optional `Last-Event-ID` header.
    pub async fn events_response(
        &self,
        id: &str,
        token: &str,
        last_event_id: Option<u64>,
    ) -> Response {
        let mut request = self
            .client
            .get(self.url(&format!("/events/{id}")))
            .header(AUTHORIZATION, format!("Bearer {token}"));
        if let Some(last) = last_event_id {
            request = request.header("Last-Event-ID", last.to_string());
        }
        send(request).await
    }

    /// Attaches a stream for `session`, asserting 200; resumes after `last_event_id` if given.
    pub async fn attach(&self, session: &Session, last_event_id: Option<u64>) -> SseReader {
        let response = self
            .events_response(&session.id, &session.token, last_event_id)
            .await;
        SseReader::new(response)
    }

    /// Attaches and reads the `ready` event, returning the reader positioned after it.
    pub async fn attach_ready(&self, session: &Session) -> SseReader {
        let mut stream = self.attach(session, None).await;
        stream.ready().await;
        stream
    }

    /// `POST /response` from `from` to `recipient`; the raw response.
    pub async fn post_response(&self, from: &Session, recipient: &str, message: Value) -> Response {
        let body = json!({ "recipient": recipient, "message": message }).to_string();
        self.post_raw("/response", Some(&from.token), &body).await
    }

    /// `POST /response` that must be accepted; returns the event id it got.
    pub async fn respond(&self, from: &Session, recipient: &Session, message: Value) -> u64 {
        let response = self.post_response(from, &recipient.id, message).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body = body_json(response).await;
        body["event_id"].as_u64().expect("event_id is a number")
    }

    /// `POST /broadcast` from `from`; the raw response.
    pub async fn broadcast(&self, from: &Session, message: Value) -> Response {
        let body = json!({ "message": message }).to_string();
        self.post_raw("/broadcast", Some(&from.token), &body).await
    }

    /// `POST /broadcast` that must be accepted; returns the recipient count.
    pub async fn broadcast_ok(&self, from: &Session, message: Value) -> u64 {
        let response = self.broadcast(from, message).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body = body_json(response).await;
        body["recipients"].as_u64().expect("recipients is a number")
    }

    /// `DELETE /session` with `token`; the raw response.
    pub async fn delete(&self, token: &str) -> Response {
        send(
            self.client
                .delete(self.url("/session"))
                .header(AUTHORIZATION, format!("Bearer {token}")),
        )
        .await
    }

    /// The ids `GET /clients` lists.
    pub async fn client_ids(&self) -> BTreeSet<String> {
        let response = self.get("/clients").await;
        assert_eq!(response.status(), StatusCode::OK);
        body_json(response)
            .await
            .as_array()
            .expect("an array")
            .iter()
            .map(|c| c["id"].as_str().expect("id").to_owned())
            .collect()
    }

    /// `GET /healthz` as JSON.
    pub async fn health(&self) -> Value {
        let response = self.get("/healthz").await;
        assert_eq!(response.status(), StatusCode::OK);
        body_json(response).await
    }

    /// Polls `/healthz` until it answers 200, within [`WAIT`]; nothing else announces readiness.
    async fn wait_until_healthy(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.get("/healthz").await.status() != StatusCode::OK {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not healthy after {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `/healthz` counts `streams` attached streams, polling, within [`WAIT`].
    ///
    /// A client closing its stream produces no event anyone can await; the server notices the
    /// closed socket on its own schedule, and only the count shows it.
    pub async fn wait_for_streams(&self, streams: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.health().await["streams"] == streams {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still not {streams} streams after {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The `/metrics` exposition.
    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), StatusCode::OK);
        body_text(response).await
    }

    /// Fires the shutdown trigger and waits at most `within` for `serve` to return.
    pub async fn stop(&mut self, within: Duration) -> std::io::Result<()> {
        if let Some(trigger) = self.shutdown.take() {
            let _ = trigger.send(());
        }
        let server = self.server.take().expect("server still running");
        tokio::time::timeout(within, server)
            .await
            .expect("serve did not return in time")
            .expect("serve panicked")
    }
}

/// One parsed SSE event.
#[derive(Clone, Debug, PartialEq)]
pub struct SseEvent {
    /// The stream's last event id after this event, as `EventSource.lastEventId` reports it
    /// (the `id:` field is sticky); `None` while no `id:` line has been seen on this stream.
    pub id: Option<u64>,
    pub event: String,
    pub data: Value,
}

type EventStream = Pin<
    Box<dyn Stream<Item = Result<RawEvent, EventStreamError<reqwest::Error>>> + Send + 'static>,
>;

/// An attached SSE stream, parsed by `eventsource-stream`; every read is bounded by [`WAIT`].
pub struct SseReader {
    pub headers: HeaderMap,
    events: EventStream,
}

impl SseReader {
    /// Wraps a `200` event-stream response.
    pub fn new(response: Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK, "attach");
        let headers = response.headers().clone();
        SseReader {
            headers,
            events: Box::pin(response.bytes_stream().eventsource()),
        }
    }

    /// The next event, or `None` when the stream ended; `Err` when none came within `wait`.
    pub async fn try_next(
        &mut self,
        wait: Duration,
    ) -> Result<Option<SseEvent>, tokio::time::error::Elapsed> {
        let item = tokio::time::timeout(wait, self.events.next()).await?;
        Ok(item.map(|event| {
            let event = event.expect("a well-formed event stream");
            SseEvent {
                id: if event.id.is_empty() {
                    None
                } else {
                    Some(event.id.parse().expect("event ids are integers"))
                },
                data: serde_json::from_str(&event.data)
                    .unwrap_or_else(|e| panic!("data of {} is JSON: {e}", event.event)),
                event: event.event,
            }
        }))
    }

    /// The next event; fails the test if the stream ends or nothing comes within [`WAIT`].
    pub async fn next(&mut self) -> SseEvent {
        match self.try_next(WAIT).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the stream ended while an event was expected"),
            Err(_) => panic!("no event within {WAIT:?}"),
        }
    }

    /// The next event, which must be named `name`; returns it.
    pub async fn next_named(&mut self, name: &str) -> SseEvent {
        let event = self.next().await;
        assert_eq!(event.event, name, "unexpected event {event:?}");
        event
    }

    /// Reads the `ready` event, which must come without an id, and returns its data.
    pub async fn ready(&mut self) -> Value {
        let ready = self.next_named("ready").await;
        assert_eq!(ready.id, None, "ready carries no id");
        ready.data
    }

    /// Asserts the stream ends (the server closed it) within [`WAIT`], with no further event.
    pub async fn expect_end(&mut self) {
        match self.try_next(WAIT).await {
            Ok(None) => {}
            Ok(Some(event)) => panic!("expected the stream to end, got {event:?}"),
            Err(_) => panic!("the stream was still open after {WAIT:?}"),
        }
    }

    /// Asserts nothing arrives for `quiet`. Only for absences no later event can prove.
    pub async fn expect_no_event_within(&mut self, quiet: Duration) {
        match self.try_next(quiet).await {
            Err(_) => {}
            Ok(Some(event)) => panic!("expected silence, got {event:?}"),
            Ok(None) => panic!("expected silence, the stream ended"),
        }
    }
}

/// The raw bytes of a response body, for wire-format assertions the parser would hide.
pub struct RawStream {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    bytes: Vec<u8>,
    /// Everything read so far, as text.
    pub text: String,
}

impl RawStream {
    pub fn new(response: Response) -> Self {
        RawStream {
            body: Box::pin(response.bytes_stream()),
            bytes: Vec::new(),
            text: String::new(),
        }
    }

    /// Reads until the text received so far contains `needle` (counting from `from`); returns
    /// the index just past its first occurrence. Fails the test after [`WAIT`].
    pub async fn read_until(&mut self, from: usize, needle: &str) -> usize {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(at) = self.text[from..].find(needle) {
                return from + at + needle.len();
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{needle:?} did not arrive within {WAIT:?}; got {:?}",
                        self.text
                    )
                })
                .expect("the stream ended early")
                .expect("reading the body");
            // A chunk may end inside a character; decode everything read so far.
            self.bytes.extend_from_slice(&chunk);
            self.text = String::from_utf8_lossy(&self.bytes).into_owned();
        }
    }
}
