//! Servers for tests to talk to, and the HTTP calls they all offer.
//!
//! [`spawn_app`] runs `switchboard::serve` inside the test's runtime on `127.0.0.1:0` with a
//! oneshot as its shutdown trigger and returns at once: the listener is already bound, so
//! requests queue until `serve` accepts them. The real binary as a child process
//! ([`Instance`](super::Instance)) lives in `instance.rs`. Both deref to an [`Endpoint`]: a
//! base URL, a raw `reqwest` client for wire-level checks, and a `switchboard-client` for the
//! ordinary calls.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Response, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use switchboard::Config;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::{POLL, Session, SseReader, WAIT, body_json, body_text, peer_set, send};

/// The crate's `public/` directory, whatever the working directory.
pub fn public_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("public")
}

/// Set to a Redis URL to run the whole API suite in cluster mode (one instance per test, each
/// with its own key prefix); unset, every test runs the default in-process hub.
pub const REDIS_URL_VAR: &str = "TEST_REDIS_URL";

/// The server API key every test server gets (`--api-key-file`), so that tests can list
/// sessions with it; the API's own tests also start servers with other keys, or none.
pub const TEST_API_KEY: &str = "switchboard-test-api-key-0123456789";

/// A file holding [`TEST_API_KEY`], written once per test process.
pub fn api_key_file() -> PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("switchboard-test-api-key-{}", std::process::id()));
        std::fs::write(&path, TEST_API_KEY).expect("writing the test API key");
        path
    })
    .clone()
}

/// The contract's defaults, with the crate's `public/`, the test API key, a drain window short enough that tests
/// which shut down do not wait for it, and cluster mode when [`REDIS_URL_VAR`] is set.
pub fn test_config() -> Config {
    Config {
        public_dir: Some(public_dir()),
        api_key_file: Some(api_key_file()),
        drain_window: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(2),
        redis_url: std::env::var(REDIS_URL_VAR).ok(),
        redis_prefix: format!("switchboard-test-{}", uuid::Uuid::new_v4().simple()),
        ..Config::default()
    }
}

/// A reqwest client whose connects are bounded and never go through a proxy.
pub(super) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(WAIT)
        .no_proxy()
        .build()
        .unwrap()
}

/// One server's HTTP surface, as the tests use it.
pub struct Endpoint {
    /// Names the server in failure messages (`A`, `B`, ... in a cluster).
    pub label: String,
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub base_url: String,
    /// For requests the tests shape by hand.
    pub client: reqwest::Client,
    /// For the ordinary calls, as a Rust user of the hub makes them.
    pub hub: switchboard_client::Client,
}

impl Endpoint {
    pub(super) fn new(label: &str, addr: SocketAddr, client: reqwest::Client) -> Endpoint {
        Endpoint::with_base_url(label, format!("http://{addr}"), client)
    }

    /// The server at `base_url` (`http://...` or `https://...`, no trailing slash), reached
    /// with `client`.
    pub fn with_base_url(label: &str, base_url: String, client: reqwest::Client) -> Endpoint {
        Endpoint {
            label: label.to_owned(),
            hub: switchboard_client::Client::with_http(&base_url, client.clone()),
            base_url,
            client,
        }
    }

    /// The same server as seen from another loopback address (`127.0.0.2`, ...): every
    /// request of the returned endpoint leaves from `local`, so per-address limits count it
    /// apart from the default client's 127.0.0.1.
    pub fn seen_from(&self, local: std::net::IpAddr) -> Endpoint {
        let client = reqwest::Client::builder()
            .connect_timeout(WAIT)
            .no_proxy()
            .local_address(local)
            .build()
            .unwrap();
        let addr = self.authority().parse().expect("a socket address");
        Endpoint::new(&format!("{} from {local}", self.label), addr, client)
    }

    /// `127.0.0.1:<port>` (either scheme), for raw sockets and for rewriting documented commands.
    pub fn authority(&self) -> &str {
        self.base_url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
    }

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
        let body = json!({ "name": name }).to_string();
        self.post_raw("/helo", None, &body).await
    }

    /// Registers `name` and returns the session; fails the test unless the answer is 201 with
    /// that name.
    pub async fn helo(&self, name: &str) -> Session {
        let session = bounded(self.hub.helo(name))
            .await
            .unwrap_or_else(|e| panic!("helo {name} on {}: {e}", self.label));
        assert_eq!(session.name, name, "helo {name} on {}", self.label);
        session
    }

    /// `POST /helo` with `{"name": name, "rooms": rooms}`; the raw response.
    pub async fn helo_in_response(&self, name: &str, rooms: Value) -> Response {
        let body = json!({ "name": name, "rooms": rooms }).to_string();
        self.post_raw("/helo", None, &body).await
    }

    /// Registers `name` in `rooms`; fails the test unless the answer is 201.
    pub async fn helo_in(&self, name: &str, rooms: Value) -> Session {
        let response = self.helo_in_response(name, rooms).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "helo {name} on {}",
            self.label
        );
        serde_json::from_value(body_json(response).await).expect("a session")
    }

    /// `method /session/rooms/{room}` with `session`'s token; the raw response.
    pub async fn room_request(
        &self,
        method: reqwest::Method,
        session: &Session,
        room: &str,
    ) -> Response {
        let url = self.url(&format!("/session/rooms/{room}"));
        send(self.client.request(method, url).bearer_auth(&session.token)).await
    }

    /// `PUT /session/rooms/{room}`, which must answer 200; the member count it reports.
    pub async fn join_room(&self, session: &Session, room: &str) -> u64 {
        let response = self.room_request(reqwest::Method::PUT, session, room).await;
        let joins = format!("{} joins {room} on {}", session.name, self.label);
        assert_eq!(response.status(), StatusCode::OK, "{joins}");
        let body = body_json(response).await;
        assert_eq!(body["room"], room, "{joins}");
        body["members"].as_u64().expect("a member count")
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
        let label = format!("{}'s stream on {}", session.name, self.label);
        let events = bounded(self.hub.attach(session, last_event_id))
            .await
            .unwrap_or_else(|e| panic!("attaching {label}: {e}"));
        SseReader::from_events(label, events)
    }

    /// Attaches and reads the `ready` event, returning the reader positioned after it.
    pub async fn attach_ready(&self, session: &Session) -> SseReader {
        let mut stream = self.attach(session, None).await;
        stream.ready().await;
        stream
    }

    /// Attaches and reads `ready`, which must name `session`; returns the stream and the
    /// roster `ready` carried.
    pub async fn attach_roster(
        &self,
        session: &Session,
        last_event_id: Option<u64>,
    ) -> (SseReader, BTreeSet<(String, String)>) {
        let mut stream = self.attach(session, last_event_id).await;
        let ready = stream.ready().await;
        assert_eq!(ready["id"], session.id);
        assert_eq!(ready["name"], session.name);
        let roster = peer_set(ready["clients"].as_array().expect("clients"));
        (stream, roster)
    }

    /// `POST /response` with `token` to the session `recipient`; the raw response.
    pub async fn response_as(
        &self,
        token: &str,
        recipient: &str,
        message: impl Serialize,
    ) -> Response {
        let body = json!({ "recipient": recipient, "message": message }).to_string();
        self.post_raw("/response", Some(token), &body).await
    }

    /// `POST /response` from `from` to `recipient`; the raw response.
    pub async fn post_response(
        &self,
        from: &Session,
        recipient: &str,
        message: impl Serialize,
    ) -> Response {
        self.response_as(&from.token, recipient, message).await
    }

    /// `POST /response` that must be accepted (202); returns the event id it got.
    pub async fn respond(&self, from: &Session, to: &Session, message: impl Serialize) -> u64 {
        bounded(self.hub.send(from, &to.id, &message))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "response {} -> {} on {}: {e}",
                    from.name, to.name, self.label
                )
            })
    }

    /// `POST /broadcast` from `from`; the raw response.
    pub async fn broadcast(&self, from: &Session, message: impl Serialize) -> Response {
        let body = json!({ "message": message }).to_string();
        self.post_raw("/broadcast", Some(&from.token), &body).await
    }

    /// `POST /broadcast` that must be accepted (202); returns the recipient count.
    pub async fn broadcast_ok(&self, from: &Session, message: impl Serialize) -> u64 {
        bounded(self.hub.broadcast(from, &message))
            .await
            .unwrap_or_else(|e| panic!("broadcast from {} on {}: {e}", from.name, self.label))
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

    /// GETs `path` as the app's backend, with [`TEST_API_KEY`].
    pub async fn get_as_backend(&self, path: &str) -> Response {
        send(self.client.get(self.url(path)).bearer_auth(TEST_API_KEY)).await
    }

    /// `GET /clients` as (id, name) pairs; fails the test if a session is listed twice.
    pub async fn clients(&self) -> BTreeSet<(String, String)> {
        let response = self.get_as_backend("/clients").await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "/clients on {}",
            self.label
        );
        let list = body_json(response).await;
        let list = list.as_array().expect("a JSON array");
        let set = peer_set(list);
        assert_eq!(set.len(), list.len(), "nobody twice in {list:?}");
        set
    }

    /// The ids `GET /clients` lists.
    pub async fn client_ids(&self) -> BTreeSet<String> {
        self.clients().await.into_iter().map(|(id, _)| id).collect()
    }

    /// `GET /healthz`: its status and JSON body.
    pub async fn healthz(&self) -> (StatusCode, Value) {
        let response = self.get("/healthz").await;
        (response.status(), body_json(response).await)
    }

    /// `GET /healthz` as JSON; fails the test unless it answers 200.
    pub async fn health(&self) -> Value {
        let (status, body) = self.healthz().await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Polls `/healthz` until it answers 200, within [`WAIT`]; nothing else announces readiness.
    pub async fn wait_until_healthy(&self) {
        wait_for_health(self, StatusCode::OK, WAIT).await;
    }

    /// Waits until `/healthz` counts `streams` attached streams, polling, within [`WAIT`].
    ///
    /// A client closing its stream produces no event anyone can await; the server notices the
    /// closed socket on its own schedule, and only the count shows it.
    pub async fn wait_for_streams(&self, streams: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.health().await["streams"] == streams {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still not {streams} streams after {WAIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The `/metrics` exposition.
    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), StatusCode::OK);
        body_text(response).await
    }
}

/// Polls `node`'s `/healthz` until it answers `status`; returns the body and how long it took.
pub async fn wait_for_health(
    node: &Endpoint,
    status: StatusCode,
    limit: Duration,
) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let (got, body) = node.healthz().await;
        if got == status {
            return (body, start.elapsed());
        }
        assert!(
            start.elapsed() < limit,
            "/healthz on {} still {got} {body} after {limit:?}",
            node.label
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A `switchboard-client` call bounded by [`WAIT`].
async fn bounded<T>(call: impl Future<Output = T>) -> T {
    timeout(WAIT, call)
        .await
        .expect("no answer within the wait")
}

/// A server running inside the test's runtime.
pub struct TestApp {
    pub endpoint: Endpoint,
    pub addr: SocketAddr,
    /// Fires `serve`'s shutdown trigger; `None` once [`TestApp::stop`] has used it.
    pub shutdown: Option<oneshot::Sender<()>>,
    /// The task running `serve`.
    pub server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Deref for TestApp {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// Binds an ephemeral port and spawns the server; see [`spawn_app_on`].
pub async fn spawn_app(config: Config) -> TestApp {
    spawn_app_on("127.0.0.1:0".parse().unwrap(), config).await
}

/// Binds `addr` (with `SO_REUSEADDR`, so a test can bring a fresh server up on the port the
/// previous one just left), spawns the server and returns without waiting for anything else.
/// In cluster mode it first waits for `/healthz` to say the instance is on the Redis bus.
pub async fn spawn_app_on(addr: SocketAddr, config: Config) -> TestApp {
    let cluster = config.redis_url.is_some();
    let socket = TcpSocket::new_v4().expect("creating a socket");
    socket.set_reuseaddr(true).expect("setting SO_REUSEADDR");
    socket.bind(addr).expect("binding the server's port");
    let listener: TcpListener = socket.listen(1024).expect("listening");
    let addr = listener.local_addr().unwrap();
    let (shutdown, trigger) = oneshot::channel::<()>();
    let server = tokio::spawn(switchboard::serve(listener, config, async move {
        let _ = trigger.await;
    }));
    let app = TestApp {
        endpoint: Endpoint::new("the server", addr, http_client()),
        addr,
        shutdown: Some(shutdown),
        server: Some(server),
    };
    if cluster {
        app.wait_until_healthy().await;
    }
    app
}

impl TestApp {
    /// Fires the shutdown trigger and waits at most `within` for `serve` to return.
    pub async fn stop(&mut self, within: Duration) -> std::io::Result<()> {
        if let Some(trigger) = self.shutdown.take() {
            let _ = trigger.send(());
        }
        let server = self.server.take().expect("server still running");
        timeout(within, server)
            .await
            .expect("serve did not return in time")
            .expect("serve panicked")
    }
}
