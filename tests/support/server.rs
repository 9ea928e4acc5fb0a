//! Servers for tests to talk to, and the HTTP calls they all offer.
//!
//! [`spawn_app`] runs `switchboard::serve` inside the test's runtime on `127.0.0.1:0` with a
//! oneshot as its shutdown trigger and returns at once: the listener is already bound, so
//! requests queue until `serve` accepts them. [`Instance`] runs the real binary as a child
//! process (cluster tests kill it; [`Launch`] sets its directory or open-file limit). Both deref to an [`Endpoint`]: a base URL, a raw `reqwest`
//! client for wire-level checks, and a `switchboard-client` for the ordinary calls.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::ops::Deref;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
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

/// A reqwest client whose connects are bounded and never go through a proxy.
fn http_client() -> reqwest::Client {
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
    fn new(label: &str, addr: SocketAddr, client: reqwest::Client) -> Endpoint {
        let base_url = format!("http://{addr}");
        Endpoint {
            label: label.to_owned(),
            hub: switchboard_client::Client::with_http(&base_url, client.clone()),
            base_url,
            client,
        }
    }

    /// `127.0.0.1:<port>`, for raw sockets and for rewriting documented commands.
    pub fn authority(&self) -> &str {
        self.base_url.trim_start_matches("http://")
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

    /// `GET /clients` as (id, name) pairs; fails the test if a session is listed twice.
    pub async fn clients(&self) -> BTreeSet<(String, String)> {
        let response = self.get("/clients").await;
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

/// The real `switchboard` binary as a child process, killed (SIGKILL) on drop; when the test
/// is failing (or `CLUSTER_LOGS` is set) the drop prints the end of its log.
pub struct Instance {
    pub endpoint: Endpoint,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Deref for Instance {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Instance {
    /// Runs the binary with `--listen 127.0.0.1:0` and `args`, and waits for the `listening`
    /// log line that gives its address. Its stdout and stderr are drained into a log by
    /// background threads for as long as it runs, so it never blocks on a full pipe.
    /// `SWITCHBOARD_*` variables of the test's environment are not passed on.
    pub async fn start(label: &str, args: &[&str]) -> Instance {
        Instance::launch(label).start(args).await
    }

    /// [`Instance::start`] with `dir` as the working directory.
    pub async fn start_in(label: &str, dir: &Path, args: &[&str]) -> Instance {
        Instance::launch(label).dir(dir).start(args).await
    }

    /// Runs the binary with exactly `args` (which must make it listen on an ephemeral port) and
    /// waits for the `listening` log line, in text or JSON, that gives its address.
    pub async fn with_args(label: &str, args: &[&str]) -> Instance {
        Instance::launch(label).with_args(args).await
    }

    /// How to run the binary when the arguments are not all a test sets: see [`Launch`].
    pub fn launch(label: &str) -> Launch {
        Launch {
            label: label.to_owned(),
            dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            open_files: None,
        }
    }

    /// The first log line (stdout or stderr) containing `needle`, and every line before it;
    /// fails the test if none appears within [`WAIT`].
    pub async fn log_line(&self, needle: &str) -> (String, Vec<String>) {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(at) = log.iter().position(|line| line.contains(needle)) {
                    return (log[at].clone(), log[..at].to_vec());
                }
                assert!(
                    Instant::now() < deadline,
                    "no log line with {needle:?} from {}; saw {log:#?}",
                    self.label
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends SIGTERM, the signal a service manager stops it with, and returns at once.
    pub fn send_sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM {}", self.id());
    }

    /// Whether the process still runs (it has not been killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id, to send it signals.
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("the instance runs").id()
    }

    /// Waits at most `limit` for the process to exit by itself; its exit status.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("the instance runs");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(exit) = child.try_wait().expect("polling the instance") {
                self.child = None;
                return exit;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {limit:?}",
                self.endpoint.label
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM, then waits (bounded) for the graceful shutdown to finish; its exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.send_sigterm();
        self.wait_for_exit(WAIT * 2).await
    }

    /// The lines it has logged so far (stdout and stderr).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// SIGKILL: no shutdown, no goodbye to anyone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaping the killed instance");
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("CLUSTER_LOGS").is_some() {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            let tail = &log[log.len().saturating_sub(40)..];
            eprintln!(
                "--- last lines of instance {} ({}) ---\n{}",
                self.label,
                self.base_url,
                tail.join("\n")
            );
        }
        self.kill();
    }
}

/// An [`Instance`] about to start: its working directory (the crate's root unless
/// [`Launch::dir`]) and the limits of its process.
pub struct Launch {
    label: String,
    dir: PathBuf,
    /// `RLIMIT_NOFILE` (soft and hard) for the child; inherited when `None`.
    open_files: Option<u64>,
}

impl Launch {
    /// Runs the binary in `dir`.
    pub fn dir(mut self, dir: &Path) -> Launch {
        self.dir = dir.to_owned();
        self
    }

    /// Lowers the child's open-file limit (soft and hard) to `limit` before it execs, so the
    /// server sizes its connection budget from it, as under a service manager's `LimitNOFILE`.
    pub fn open_file_limit(mut self, limit: u64) -> Launch {
        self.open_files = Some(limit);
        self
    }

    /// Starts with `--listen 127.0.0.1:0 --log info` and `args`; see [`Instance::start`].
    pub async fn start(self, args: &[&str]) -> Instance {
        let mut all = vec!["--listen", "127.0.0.1:0", "--log", "info"];
        all.extend_from_slice(args);
        self.with_args(&all).await
    }

    /// Starts with exactly `args` and waits for its address; see [`Instance::with_args`].
    pub async fn with_args(self, args: &[&str]) -> Instance {
        let Launch {
            label,
            dir,
            open_files,
        } = self;
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        command
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SWITCHBOARD_") {
                command.env_remove(key);
            }
        }
        if let Some(limit) = open_files {
            // SAFETY: setrlimit is async-signal-safe, and nothing else runs between fork and
            // exec.
            unsafe {
                command.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, limit, limit));
            }
        }
        let mut child = command.spawn().expect("starting switchboard");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address, listening) = oneshot::channel();
        drain(
            child.stdout.take().unwrap(),
            Arc::clone(&log),
            Some(address),
        );
        drain(child.stderr.take().unwrap(), Arc::clone(&log), None);
        let addr = match timeout(WAIT, listening).await {
            Ok(Ok(addr)) => addr,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "instance {label} never logged `listening address=...`; its log:\n{}",
                    log.lock().unwrap().join("\n")
                )
            }
        };
        Instance {
            endpoint: Endpoint::new(&label, addr, http_client()),
            child: Some(child),
            log,
        }
    }
}

/// Reads `pipe` line by line into `log` until the process closes it; the first `listening`
/// line's `address=` goes to `address`.
fn drain(
    pipe: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    mut address: Option<oneshot::Sender<SocketAddr>>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&raw).trim_end().to_owned();
            if line.contains("listening")
                && let Some(addr) = listening_address(&line)
                && let Some(address) = address.take()
            {
                let _ = address.send(addr);
            }
            log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
}

/// The address of a `listening` log line: `address=...` in text, `"address":"..."` in JSON.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let text = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("address="));
    let json = || {
        let rest = line.split("\"address\":\"").nth(1)?;
        rest.split('"').next()
    };
    text.or_else(json)?.parse().ok()
}

/// Runs the binary with `args` and no `SWITCHBOARD_*` environment to its exit, which must
/// come without a word on stdout; its exit code and stderr.
pub fn refused(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .expect("running the switchboard binary");
    assert!(output.stdout.is_empty(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).expect("stderr is text");
    (output.status.code().expect("exited, not killed"), stderr)
}
