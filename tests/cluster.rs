//! Cluster mode, tested for real: each test starts its own `redis-server` on an ephemeral port
//! and two or three `switchboard` processes (the real binary) pointed at it with a prefix of
//! their own, then drives them over HTTP across instances.
//!
//! Synchronisation never rests on a bare sleep:
//! - every HTTP call and every SSE read is bounded by [`WAIT`], so a missing answer or event
//!   fails the test in seconds instead of hanging it;
//! - "eventually" conditions (a dead instance's sessions leaving, health coming back) are polled
//!   until a deadline;
//! - [`Cluster::settle`] is a barrier on the bus: `GET /healthz` in cluster mode publishes a
//!   probe through Redis and waits for it to come back, and every instance applies the bus in
//!   order, so once each instance answered 200 each has applied everything published before.
//!   Settling after every `helo` makes presence deterministic: a session hears `new_user`
//!   exactly for the sessions registered after it.
//!
//! "Nothing else arrived" is checked with a marker: a direct message sent afterwards must be the
//! very next event of the stream.
//!
//! A failing test prints the end of each instance's log; `CLUSTER_LOGS=1` prints them always.
//!
//! Needs `redis-server` (Debian: `apt-get install -y redis-server`); without it every test fails
//! and says so.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventsource_stream::{Event as RawEvent, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

/// Longest wait for anything that should happen: a response, an event, a process starting.
const WAIT: Duration = Duration::from_secs(5);

/// Interval between two looks at an "eventually" condition.
const POLL: Duration = Duration::from_millis(50);

/// How long an instance's liveness key outlives its last refresh (`backplane::redis::LIVENESS`);
/// every instance sweeps the directory once a third of it.
const LIVENESS: Duration = Duration::from_secs(3);

/// Where Debian's `redis-server` package installs the server.
const REDIS_SERVER: &str = "/usr/bin/redis-server";

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// A `redis-server` child process, killed (SIGKILL) on drop. Nothing is persisted.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts a server on a free ephemeral port; retries with another port if one was taken
    /// between finding it and the server binding it.
    async fn start() -> Redis {
        let mut failures = Vec::new();
        for _ in 0..5 {
            match Redis::start_on(free_port()).await {
                Ok(redis) => return redis,
                Err(err) => failures.push(err),
            }
        }
        panic!("could not start redis-server: {failures:?}");
    }

    /// Starts a server on `port` and waits until it answers `PING` and proves it is this child
    /// (its `process_id`), not some other server that owns the port.
    async fn start_on(port: u16) -> Result<Redis, String> {
        let program = if Path::new(REDIS_SERVER).exists() {
            REDIS_SERVER
        } else {
            "redis-server"
        };
        let port_arg = port.to_string();
        let dir = std::env::temp_dir();
        let spawned = Command::new(program)
            .args(["--port", &port_arg, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed ({REDIS_SERVER} not found); the cluster tests \
                 need it: apt-get install -y redis-server"
            ),
            Err(err) => panic!("cannot run {program}: {err}"),
        };
        let pid = child.id();
        let mut redis = Redis {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(info) = redis_command(port, &["INFO", "server"]).await
                && info.lines().any(|l| l == format!("process_id:{pid}"))
            {
                return Ok(redis);
            }
            if let Some(child) = redis.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                redis.child = None;
                return Err(format!("redis-server on port {port} exited: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!("redis-server on port {port} never answered"));
            }
            sleep(POLL).await;
        }
    }

    /// SIGKILL, and wait until the process is gone (its port is then free again).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How many `PUBLISH` commands this server has executed (`INFO commandstats`).
    async fn publish_calls(&self) -> u64 {
        let stats = redis_command(self.port, &["INFO", "commandstats"])
            .await
            .expect("INFO commandstats");
        stats
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_publish:calls="))
            .map_or(0, |rest| {
                rest.split(',')
                    .next()
                    .and_then(|calls| calls.parse().ok())
                    .expect("a number of calls")
            })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listened on a moment ago.
fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

/// One Redis command over a fresh connection, in RESP; the reply as text (bulk, simple or
/// integer replies; a nil reply is the empty string).
async fn redis_command(port: u16, args: &[&str]) -> Result<String, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut reader = AsyncBufReader::new(stream);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        let line = line.trim_end();
        let Some(kind) = line.chars().next() else {
            return Err("the connection closed without a reply".to_owned());
        };
        let rest = &line[1..];
        match kind {
            '+' | ':' => Ok(rest.to_owned()),
            '-' => Err(format!("redis error: {rest}")),
            '$' if rest == "-1" => Ok(String::new()),
            '$' => {
                let len: usize = rest.parse().map_err(|_| format!("bad length {rest}"))?;
                let mut body = vec![0; len + 2];
                reader
                    .read_exact(&mut body)
                    .await
                    .map_err(|e| e.to_string())?;
                body.truncate(len);
                String::from_utf8(body).map_err(|e| e.to_string())
            }
            _ => Err(format!("unexpected reply {line:?}")),
        }
    };
    timeout(WAIT, exchange)
        .await
        .map_err(|_| "no reply within the wait".to_owned())?
}

// ---------------------------------------------------------------------------------------------
// switchboard instances
// ---------------------------------------------------------------------------------------------

/// A `switchboard` process in cluster mode, killed (SIGKILL) on drop; when the test is failing,
/// the drop prints the end of its log.
struct Instance {
    label: &'static str,
    base_url: String,
    client: reqwest::Client,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

/// A registered session, as `POST /helo` returned it.
#[derive(Clone, Debug)]
struct Session {
    id: String,
    token: String,
    name: String,
}

impl Session {
    /// `{"id", "name"}`: how the others see this session in presence events.
    fn peer(&self) -> Value {
        json!({"id": self.id, "name": self.name})
    }

    fn key(&self) -> (String, String) {
        (self.id.clone(), self.name.clone())
    }
}

/// The (id, name) pairs of a list of peers, for set comparisons.
fn peer_set(peers: &[Value]) -> BTreeSet<(String, String)> {
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

fn sessions(list: &[&Session]) -> BTreeSet<(String, String)> {
    list.iter().map(|s| s.key()).collect()
}

/// A token with `session`'s id and the right shape, but a secret nobody issued.
fn forged_token(session: &Session) -> String {
    let (id, secret) = session
        .token
        .split_once('.')
        .expect("token is <id>.<secret>");
    let forged = "5a".repeat(32);
    assert_eq!(secret.len(), forged.len(), "same shape as a real token");
    assert_ne!(secret, forged);
    format!("{id}.{forged}")
}

impl Instance {
    /// Runs the binary with `--listen 127.0.0.1:0` and waits for the `listening` log line that
    /// gives its address. Its stdout and stderr are drained into `log` by background threads
    /// for as long as it runs, so it never blocks on a full pipe.
    async fn start(
        label: &'static str,
        redis_port: u16,
        prefix: &str,
        extra: &[&str],
        client: reqwest::Client,
    ) -> Instance {
        let redis_url = format!("redis://127.0.0.1:{redis_port}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        command
            .args(["--listen", "127.0.0.1:0", "--log", "info"])
            .args(["--redis-url", &redis_url, "--redis-prefix", prefix])
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SWITCHBOARD_") {
                command.env_remove(key);
            }
        }
        let mut child = command.spawn().expect("starting switchboard");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address, listening) = tokio::sync::oneshot::channel();
        drain(
            child.stdout.take().unwrap(),
            Arc::clone(&log),
            Some(address),
        );
        drain(child.stderr.take().unwrap(), Arc::clone(&log), None);
        let mut instance = Instance {
            label,
            base_url: String::new(),
            client,
            child: Some(child),
            log,
        };
        match timeout(WAIT, listening).await {
            Ok(Ok(addr)) => instance.base_url = format!("http://{addr}"),
            _ => panic!(
                "instance {label} never logged `listening address=...`; its log:\n{}",
                instance.log.lock().unwrap().join("\n")
            ),
        }
        instance
    }

    /// SIGKILL: no shutdown, no goodbye to Redis.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaping the killed instance");
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        send(request).await
    }

    async fn helo_response(&self, name: &str) -> Response {
        self.post("/helo", None, &json!({ "name": name })).await
    }

    /// Registers `name` here; fails the test unless the answer is 201.
    async fn helo(&self, name: &str) -> Session {
        let response = self.helo_response(name).await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "helo {name} on {}",
            self.label
        );
        let body = body_json(response).await;
        assert_eq!(body["name"], name);
        Session {
            id: body["id"].as_str().expect("id").to_owned(),
            token: body["token"].as_str().expect("token").to_owned(),
            name: name.to_owned(),
        }
    }

    async fn response_as(&self, token: &str, to: &Session, message: &Value) -> Response {
        let body = json!({"recipient": to.id, "message": message});
        self.post("/response", Some(token), &body).await
    }

    /// `POST /response` from `from` to `to` through this instance; the `event_id` of the 202.
    async fn respond(&self, from: &Session, to: &Session, message: &Value) -> u64 {
        let response = self.response_as(&from.token, to, message).await;
        let status = response.status();
        let body = body_json(response).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "response {} -> {} on {}: {body}",
            from.name,
            to.name,
            self.label
        );
        body["event_id"].as_u64().expect("an event_id")
    }

    /// `POST /broadcast` from `from` through this instance; the `recipients` of the 202.
    async fn broadcast(&self, from: &Session, message: &Value) -> u64 {
        let response = self
            .post(
                "/broadcast",
                Some(&from.token),
                &json!({ "message": message }),
            )
            .await;
        let status = response.status();
        let body = body_json(response).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "broadcast on {}: {body}",
            self.label
        );
        body["recipients"].as_u64().expect("a recipient count")
    }

    async fn delete_as(&self, token: &str) -> Response {
        send(
            self.client
                .delete(self.url("/session"))
                .header(AUTHORIZATION, format!("Bearer {token}")),
        )
        .await
    }

    /// `GET /clients`, as a set; fails the test if a session is listed twice.
    async fn clients(&self) -> BTreeSet<(String, String)> {
        let response = send(self.client.get(self.url("/clients"))).await;
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

    async fn healthz(&self) -> (StatusCode, Value) {
        let response = send(self.client.get(self.url("/healthz"))).await;
        (response.status(), body_json(response).await)
    }

    async fn events_response(&self, id: &str, token: &str, last_event_id: Option<u64>) -> Response {
        let mut request = self
            .client
            .get(self.url(&format!("/events/{id}")))
            .header(AUTHORIZATION, format!("Bearer {token}"));
        if let Some(n) = last_event_id {
            request = request.header("Last-Event-ID", n.to_string());
        }
        send(request).await
    }

    /// Attaches `session`'s stream here and reads its `ready`; returns the stream and the
    /// roster `ready` carried.
    async fn attach(
        &self,
        session: &Session,
        last_event_id: Option<u64>,
    ) -> (SseStream, BTreeSet<(String, String)>) {
        let response = self
            .events_response(&session.id, &session.token, last_event_id)
            .await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "attaching {} on {}",
            session.name,
            self.label
        );
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        let mut stream = SseStream {
            label: format!("{}'s stream on {}", session.name, self.label),
            inner: Box::pin(response.bytes_stream().eventsource()),
        };
        let ready = stream.next().await;
        assert_eq!(ready.event, "ready", "{} starts with ready", stream.label);
        assert_eq!(ready.id, None, "ready carries no id");
        assert_eq!(ready.data["id"], session.id);
        assert_eq!(ready.data["name"], session.name);
        let roster = peer_set(ready.data["clients"].as_array().expect("clients"));
        (stream, roster)
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

/// Reads `pipe` line by line into `log` until the process closes it; the first `listening`
/// line's `address=` goes to `address`.
fn drain(
    pipe: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    mut address: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
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
                && let Some(addr) = line
                    .split_whitespace()
                    .find_map(|field| field.strip_prefix("address="))
                    .and_then(|addr| addr.parse().ok())
                && let Some(address) = address.take()
            {
                let _ = address.send(addr);
            }
            log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
}

/// Sends a request, failing the test if no response head arrives within [`WAIT`].
async fn send(request: reqwest::RequestBuilder) -> Response {
    timeout(WAIT, request.send())
        .await
        .expect("no response within the wait")
        .expect("request failed")
}

async fn body_json(response: Response) -> Value {
    timeout(WAIT, response.json())
        .await
        .expect("no body within the wait")
        .expect("the body is JSON")
}

/// Asserts `response` is the JSON error `{"error": code, "message": <text>}` with `status`.
async fn assert_error(response: Response, status: StatusCode, code: &str) {
    assert_eq!(response.status(), status, "status for expected `{code}`");
    let body = body_json(response).await;
    assert_eq!(body["error"], code, "error code in {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "a message for humans in {body}");
}

// ---------------------------------------------------------------------------------------------
// SSE
// ---------------------------------------------------------------------------------------------

type RawStream =
    Pin<Box<dyn Stream<Item = Result<RawEvent, EventStreamError<reqwest::Error>>> + Send>>;

/// One session's stream, parsed by `eventsource-stream`, every read bounded.
struct SseStream {
    label: String,
    inner: RawStream,
}

/// One event: its `id:` (absent for `ready` and `lagged`), name and JSON data.
#[derive(Debug)]
struct Frame {
    id: Option<u64>,
    event: String,
    data: Value,
}

impl Frame {
    fn from_raw(raw: RawEvent) -> Frame {
        Frame {
            id: (!raw.id.is_empty()).then(|| raw.id.parse().expect("numeric ids")),
            event: raw.event,
            data: serde_json::from_str(&raw.data).expect("JSON data"),
        }
    }
}

impl SseStream {
    async fn next(&mut self) -> Frame {
        self.next_within(WAIT).await
    }

    async fn next_within(&mut self, wait: Duration) -> Frame {
        match timeout(wait, self.inner.next()).await {
            Err(_) => panic!("{}: no event within {wait:?}", self.label),
            Ok(None) => panic!("{}: the stream ended", self.label),
            Ok(Some(Err(err))) => panic!("{}: {err}", self.label),
            Ok(Some(Ok(raw))) => Frame::from_raw(raw),
        }
    }

    /// Reads until the server ends the stream (within [`WAIT`]); the events read meanwhile.
    async fn until_end(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            match timeout(WAIT, self.inner.next()).await {
                Err(_) => panic!("{}: still open after {WAIT:?}", self.label),
                Ok(None) => return frames,
                Ok(Some(Err(err))) => panic!("{}: {err}", self.label),
                Ok(Some(Ok(raw))) => frames.push(Frame::from_raw(raw)),
            }
        }
    }

    /// The next event is `new_user` for `who`; returns its id.
    async fn expect_new_user(&mut self, who: &Session) -> u64 {
        let frame = self.next().await;
        assert_eq!(
            (frame.event.as_str(), &frame.data),
            ("new_user", &who.peer()),
            "{}",
            self.label
        );
        frame.id.expect("new_user has an id")
    }

    /// The next event is the `client_response` with `event_id` from `from` to `to`.
    async fn expect_response(
        &mut self,
        event_id: u64,
        from: &Session,
        to: &Session,
        message: &Value,
    ) {
        let frame = self.next().await;
        assert_eq!(frame.event, "client_response", "{}: {frame:?}", self.label);
        assert_eq!(
            frame.id,
            Some(event_id),
            "{}: the 202's event_id",
            self.label
        );
        assert_eq!(
            frame.data,
            json!({"from": from.id, "from_name": from.name, "recipient": to.id, "message": message})
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A cluster
// ---------------------------------------------------------------------------------------------

/// One Redis and a few instances sharing a prefix of their own.
struct Cluster {
    // Dropped first: instances die before their Redis.
    nodes: Vec<Instance>,
    redis: Redis,
}

impl Cluster {
    /// One instance per entry of `extra` (its extra flags), labelled A, B, C; returns once
    /// every instance is subscribed to the bus.
    async fn start(test: &str, extra: &[&[&str]]) -> Cluster {
        const LABELS: [&str; 3] = ["A", "B", "C"];
        let redis = Redis::start().await;
        let prefix = format!("sbtest-{test}-{}", std::process::id());
        let client = reqwest::Client::builder()
            .connect_timeout(WAIT)
            .no_proxy()
            .build()
            .unwrap();
        let mut nodes = Vec::new();
        for (label, flags) in LABELS.into_iter().zip(extra) {
            nodes.push(Instance::start(label, redis.port, &prefix, flags, client.clone()).await);
        }
        let cluster = Cluster { nodes, redis };
        cluster.settle().await;
        cluster
    }

    /// A bus barrier: waits until every live instance answers `/healthz` 200, i.e. a probe it
    /// published came back, so it has applied everything published before.
    async fn settle(&self) {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            wait_for_health(node, StatusCode::OK, Duration::from_secs(10)).await;
        }
    }
}

/// Polls `node`'s `/healthz` until it answers `status`; returns the body and how long it took.
async fn wait_for_health(
    node: &Instance,
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
        sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn helo_on_one_instance_announces_new_user_on_the_others_but_not_to_the_newcomer() {
    let cluster = Cluster::start("helo", &[&[], &[], &[]]).await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let bea = b.helo("bea").await;
    cluster.settle().await;
    let cid = c.helo("cid").await;
    cluster.settle().await;
    let (mut bea_stream, roster) = b.attach(&bea, None).await;
    assert_eq!(roster, sessions(&[&cid]));
    let first = bea_stream.expect_new_user(&cid).await;
    let (mut cid_stream, roster) = c.attach(&cid, None).await;
    assert_eq!(roster, sessions(&[&bea]));

    let ann = a.helo("ann").await;
    let on_b = bea_stream.expect_new_user(&ann).await;
    assert!(on_b > first, "ids increase within bea's stream");
    cid_stream.expect_new_user(&ann).await;

    let (mut ann_stream, roster) = a.attach(&ann, None).await;
    assert_eq!(roster, sessions(&[&bea, &cid]));
    // Markers: what arrives next was sent after the helo, so nothing came in between: the
    // newcomer heard nothing about itself and the others heard about it once.
    let marker = json!("welcome");
    let id = b.respond(&bea, &ann, &marker).await;
    ann_stream.expect_response(id, &bea, &ann, &marker).await;
    let id = a.respond(&ann, &cid, &marker).await;
    cid_stream.expect_response(id, &ann, &cid, &marker).await;
    let id = c.respond(&cid, &bea, &marker).await;
    bea_stream.expect_response(id, &cid, &bea, &marker).await;
}

#[tokio::test]
async fn response_through_one_instance_reaches_a_recipient_attached_to_another_with_the_same_id() {
    let cluster = Cluster::start("response", &[&[], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let sam = a.helo("sam").await;
    cluster.settle().await;
    let rae = b.helo("rae").await;
    cluster.settle().await;
    let (mut rae_stream, roster) = b.attach(&rae, None).await;
    assert_eq!(roster, sessions(&[&sam]));

    let message = json!({"text": "hi from A", "n": [1, 2, 3], "nested": {"ok": true}});
    let first = a.respond(&sam, &rae, &message).await;
    rae_stream
        .expect_response(first, &sam, &rae, &message)
        .await;

    let again = json!("again");
    let second = a.respond(&sam, &rae, &again).await;
    assert!(second > first, "event ids increase: {first} then {second}");
    rae_stream.expect_response(second, &sam, &rae, &again).await;
}

#[tokio::test]
async fn broadcast_through_one_instance_reaches_the_others_with_a_single_redis_publish() {
    let cluster = Cluster::start("broadcast", &[&[], &[], &[]]).await;
    let [a, b, c] = &cluster.nodes[..] else {
        unreachable!()
    };
    let sam = a.helo("sam").await;
    cluster.settle().await;
    let bea = b.helo("bea").await;
    cluster.settle().await;
    let cid = c.helo("cid").await;
    cluster.settle().await;
    let cyd = c.helo("cyd").await;
    cluster.settle().await;

    let (mut sam_stream, _) = a.attach(&sam, None).await;
    for newer in [&bea, &cid, &cyd] {
        sam_stream.expect_new_user(newer).await;
    }
    let (mut bea_stream, _) = b.attach(&bea, None).await;
    for newer in [&cid, &cyd] {
        bea_stream.expect_new_user(newer).await;
    }
    let (mut cid_stream, _) = c.attach(&cid, None).await;
    cid_stream.expect_new_user(&cyd).await;
    let (mut cyd_stream, _) = c.attach(&cyd, None).await;
    // From here on nothing publishes on its own: the instances only refresh their liveness.
    cluster.settle().await;

    let before = cluster.redis.publish_calls().await;
    let message = json!({"text": "to everyone", "list": [1, 2]});
    assert_eq!(a.broadcast(&sam, &message).await, 3);
    let expected = json!({"from": sam.id, "from_name": sam.name, "message": message});
    for stream in [&mut bea_stream, &mut cid_stream, &mut cyd_stream] {
        let frame = stream.next().await;
        assert_eq!(frame.event, "client_broadcast", "{}", stream.label);
        assert!(frame.id.is_some());
        assert_eq!(frame.data, expected, "{}", stream.label);
    }
    let after = cluster.redis.publish_calls().await;
    assert_eq!(
        after - before,
        1,
        "one PUBLISH for a broadcast to 3 sessions on 2 other instances"
    );

    // The sender did not hear its own broadcast; the others heard it once.
    let marker = json!("marker");
    let id = b.respond(&bea, &sam, &marker).await;
    sam_stream.expect_response(id, &bea, &sam, &marker).await;
    for (stream, who) in [
        (&mut bea_stream, &bea),
        (&mut cid_stream, &cid),
        (&mut cyd_stream, &cyd),
    ] {
        let id = a.respond(&sam, who, &marker).await;
        stream.expect_response(id, &sam, who, &marker).await;
    }
}

#[tokio::test]
async fn clients_on_any_instance_lists_every_session_of_the_cluster() {
    let cluster = Cluster::start("clients", &[&[], &[], &[]]).await;
    let mut everyone = Vec::new();
    for (n, node) in cluster.nodes.iter().enumerate() {
        for k in 0..2 {
            everyone.push(node.helo(&format!("user-{n}-{k}")).await);
        }
    }
    let expected = sessions(&everyone.iter().collect::<Vec<_>>());
    assert_eq!(expected.len(), 6);
    for node in &cluster.nodes {
        assert_eq!(node.clients().await, expected, "/clients on {}", node.label);
    }
}

#[tokio::test]
async fn a_token_issued_by_one_instance_works_on_another() {
    let cluster = Cluster::start("token", &[&[], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let xan = a.helo("xan").await;
    cluster.settle().await;
    let yul = b.helo("yul").await;
    cluster.settle().await;
    let (mut yul_stream, _) = b.attach(&yul, None).await;

    // xan's token, issued by A, authenticates a response on B...
    let message = json!("sent through B with a token from A");
    let id = b.respond(&xan, &yul, &message).await;
    yul_stream.expect_response(id, &xan, &yul, &message).await;

    // ...and attaches xan's stream on B, with what waited in its mailbox on A.
    let (mut xan_stream, roster) = b.attach(&xan, None).await;
    assert_eq!(roster, sessions(&[&yul]));
    xan_stream.expect_new_user(&yul).await;

    // Now homed on B, xan's token still works on A, and messages through A reach it.
    let message = json!("through A");
    let id = a.respond(&xan, &yul, &message).await;
    yul_stream.expect_response(id, &xan, &yul, &message).await;
    let id = a.respond(&yul, &xan, &message).await;
    xan_stream.expect_response(id, &yul, &xan, &message).await;
}

#[tokio::test]
async fn forged_and_stale_tokens_are_refused_by_every_instance() {
    let cluster = Cluster::start("forged", &[&[], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let xan = a.helo("xan").await;
    let yul = b.helo("yul").await;
    let forged = forged_token(&xan);
    let message = json!({"message": "forged"});
    for node in [a, b] {
        let response = node.response_as(&forged, &yul, &json!("forged")).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let response = node.post("/broadcast", Some(&forged), &message).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let response = node.events_response(&xan.id, &forged, None).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let response = node.delete_as(&forged).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    // The forgeries changed nothing.
    for node in [a, b] {
        assert_eq!(node.clients().await, sessions(&[&xan, &yul]));
    }

    // Once xan has left, its genuine token is stale everywhere.
    assert_eq!(
        a.delete_as(&xan.token).await.status(),
        StatusCode::NO_CONTENT
    );
    for node in [a, b] {
        let response = node.response_as(&xan.token, &yul, &json!("stale")).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let response = node.post("/broadcast", Some(&xan.token), &message).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let response = node.events_response(&xan.id, &xan.token, None).await;
        assert_error(response, StatusCode::NOT_FOUND, "unknown_session").await;
        assert_eq!(node.clients().await, sessions(&[&yul]));
    }
}

#[tokio::test]
async fn reattaching_through_another_instance_resumes_after_last_event_id_with_the_same_ids() {
    let cluster = Cluster::start("handover", &[&[], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let rae = a.helo("rae").await;
    cluster.settle().await;
    let sam = b.helo("sam").await;
    cluster.settle().await;
    let (mut on_a, roster) = a.attach(&rae, None).await;
    assert_eq!(roster, sessions(&[&sam]));
    let joined = on_a.expect_new_user(&sam).await;

    let messages: Vec<Value> = (1..=5).map(|n| json!({"n": n})).collect();
    let mut ids = Vec::new();
    for message in &messages {
        ids.push(b.respond(&sam, &rae, message).await);
    }
    assert!(
        ids[0] > joined && ids.windows(2).all(|w| w[0] < w[1]),
        "{ids:?}"
    );
    // The client reads two of them on A, then its connection moves to B.
    on_a.expect_response(ids[0], &sam, &rae, &messages[0]).await;
    on_a.expect_response(ids[1], &sam, &rae, &messages[1]).await;

    let (mut on_b, roster) = b.attach(&rae, Some(ids[1])).await;
    assert_eq!(roster, sessions(&[&sam]));
    for (id, message) in ids.iter().zip(&messages).skip(2) {
        on_b.expect_response(*id, &sam, &rae, message).await;
    }

    // The stream on A ends; what it still had in flight is a prefix of the same events.
    let rest: Vec<Option<u64>> = on_a.until_end().await.iter().map(|f| f.id).collect();
    let sent: Vec<Option<u64>> = ids[2..].iter().copied().map(Some).collect();
    assert!(sent.starts_with(&rest), "A's stream ended after {rest:?}");

    // The session now lives on B: a message through A follows it, next in line.
    let later = json!("after the move");
    let id = a.respond(&sam, &rae, &later).await;
    assert!(id > ids[4], "ids keep increasing after the move: {id}");
    on_b.expect_response(id, &sam, &rae, &later).await;
}

#[tokio::test]
async fn reattaching_through_another_instance_after_evictions_reports_lagged_first() {
    let small = ["--mailbox-size", "4"];
    let cluster = Cluster::start("lagged", &[&small, &small]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let sam = a.helo("sam").await;
    cluster.settle().await;
    let rae = a.helo("rae").await;
    cluster.settle().await;
    let (mut on_a, _) = a.attach(&rae, None).await;
    let hello = json!("read this one");
    let seen = a.respond(&sam, &rae, &hello).await;
    on_a.expect_response(seen, &sam, &rae, &hello).await;
    drop(on_a);

    // Ten broadcasts while detached: the mailbox keeps the newest 4, so 6 are gone.
    for n in 1..=10 {
        assert_eq!(a.broadcast(&sam, &json!({"n": n})).await, 1);
    }
    let (mut on_b, _) = b.attach(&rae, Some(seen)).await;
    let lagged = on_b.next().await;
    assert_eq!(lagged.event, "lagged");
    assert_eq!(lagged.id, None, "lagged carries no id");
    assert_eq!(lagged.data, json!({"missed": 6}));
    for n in 7..=10 {
        let frame = on_b.next().await;
        assert_eq!(frame.event, "client_broadcast");
        assert_eq!(frame.id, Some(seen + n), "the same ids as on A");
        assert_eq!(
            frame.data,
            json!({"from": sam.id, "from_name": sam.name, "message": {"n": n}})
        );
    }
    let marker = json!("marker");
    let id = a.respond(&sam, &rae, &marker).await;
    assert_eq!(id, seen + 11);
    on_b.expect_response(id, &sam, &rae, &marker).await;
}

#[tokio::test]
async fn delete_on_one_instance_announces_user_left_on_the_others() {
    let cluster = Cluster::start("delete", &[&[], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let wen = b.helo("wen").await;
    cluster.settle().await;
    let xan = a.helo("xan").await;
    cluster.settle().await;
    let (mut wen_stream, _) = b.attach(&wen, None).await;
    wen_stream.expect_new_user(&xan).await;
    let (mut xan_stream, _) = a.attach(&xan, None).await;

    assert_eq!(
        a.delete_as(&xan.token).await.status(),
        StatusCode::NO_CONTENT
    );
    let left = wen_stream.next().await;
    assert_eq!(
        (left.event.as_str(), &left.data),
        ("user_left", &xan.peer())
    );
    assert!(left.id.is_some());
    let rest = xan_stream.until_end().await;
    assert!(rest.is_empty(), "nothing after the delete: {rest:?}");
    for node in [a, b] {
        assert_eq!(node.clients().await, sessions(&[&wen]));
    }
}

#[tokio::test]
async fn a_session_that_expires_on_one_instance_is_announced_as_user_left_on_the_others() {
    let cluster = Cluster::start("ttl", &[&["--session-ttl", "1s"], &[]]).await;
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    let wen = b.helo("wen").await;
    cluster.settle().await;
    let (mut wen_stream, _) = b.attach(&wen, None).await;

    let registered = Instant::now();
    let xan = a.helo("xan").await; // never attaches
    wen_stream.expect_new_user(&xan).await;
    let left = wen_stream.next().await;
    let after = registered.elapsed();
    assert_eq!(
        (left.event.as_str(), &left.data),
        ("user_left", &xan.peer())
    );
    assert!(
        after >= Duration::from_millis(950),
        "left after the TTL, not {after:?}"
    );
    for node in [a, b] {
        assert_eq!(node.clients().await, sessions(&[&wen]));
    }
}

#[tokio::test]
async fn a_killed_instance_leaves_no_ghost_sessions_and_its_sessions_leave_with_user_left() {
    let mut cluster = Cluster::start("crash", &[&[], &[]]).await;
    let wen = cluster.nodes[1].helo("wen").await;
    cluster.settle().await;
    let kai = cluster.nodes[0].helo("kai").await;
    cluster.settle().await;
    let kit = cluster.nodes[0].helo("kit").await; // never attaches
    cluster.settle().await;
    let (mut wen_stream, _) = cluster.nodes[1].attach(&wen, None).await;
    wen_stream.expect_new_user(&kai).await;
    wen_stream.expect_new_user(&kit).await;
    let (_kai_stream, _) = cluster.nodes[0].attach(&kai, None).await;

    cluster.nodes[0].kill();
    let killed = Instant::now();
    let b = &cluster.nodes[1];
    // Well within the 30 s TTL: the dead instance's liveness key lasts 3 s.
    let limit = Duration::from_secs(10);
    loop {
        let listed = b.clients().await;
        if listed == sessions(&[&wen]) {
            break;
        }
        assert!(
            killed.elapsed() < limit,
            "ghosts after {limit:?}: {listed:?}"
        );
        sleep(POLL).await;
    }
    let gone = killed.elapsed();
    let mut left = BTreeSet::new();
    for _ in 0..2 {
        let frame = wen_stream.next().await;
        assert_eq!(frame.event, "user_left", "{frame:?}");
        left.insert(peer_set(&[frame.data]).pop_first().unwrap());
    }
    assert_eq!(left, sessions(&[&kai, &kit]));
    eprintln!("sessions of the killed instance left after {gone:?}");
    let (status, body) = b.healthz().await;
    assert_eq!(status, StatusCode::OK, "the survivor stays healthy: {body}");
}

#[tokio::test]
async fn a_redis_restart_makes_health_and_writes_503_then_the_cluster_recovers_by_itself() {
    let mut cluster = Cluster::start("restart", &[&[], &[]]).await;
    let xan = cluster.nodes[0].helo("xan").await;
    cluster.settle().await;
    let yul = cluster.nodes[1].helo("yul").await;
    cluster.settle().await;
    let (mut yul_stream, _) = cluster.nodes[1].attach(&yul, None).await;
    let (mut xan_stream, _) = cluster.nodes[0].attach(&xan, None).await;
    xan_stream.expect_new_user(&yul).await;

    let port = cluster.redis.port;
    cluster.redis.kill();
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    for node in [a, b] {
        let (body, _) = wait_for_health(node, StatusCode::SERVICE_UNAVAILABLE, WAIT).await;
        assert_eq!(body["status"], "unavailable", "{body}");
        let reason = body["reason"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "a reason in {body}");
        let response = node.helo_response("zed").await;
        assert_error(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "backplane_unavailable",
        )
        .await;
    }
    let response = a.response_as(&xan.token, &yul, &json!("lost?")).await;
    assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "backplane_unavailable",
    )
    .await;

    cluster.redis = Redis::start_on(port).await.expect("restarting Redis");
    let [a, b] = &cluster.nodes[..] else {
        unreachable!()
    };
    for node in [a, b] {
        let (_, took) = wait_for_health(node, StatusCode::OK, Duration::from_secs(10)).await;
        eprintln!(
            "{} healthy again {took:?} after Redis came back",
            node.label
        );
    }
    // The restarted Redis was empty: each instance re-registered the sessions it homes, and
    // they stay registered while every instance sweeps the directory for dead instances (the
    // liveness keys were lost with the old Redis too): watch a few sweep rounds.
    let watch = Instant::now();
    while watch.elapsed() < LIVENESS + Duration::from_secs(1) {
        for node in [a, b] {
            assert_eq!(
                node.clients().await,
                sessions(&[&xan, &yul]),
                "/clients on {} {:?} after recovery",
                node.label,
                watch.elapsed()
            );
        }
        sleep(POLL).await;
    }
    let message = json!("after the restart");
    let id = a.respond(&xan, &yul, &message).await;
    yul_stream.expect_response(id, &xan, &yul, &message).await;
    let id = b.respond(&yul, &xan, &message).await;
    xan_stream.expect_response(id, &yul, &xan, &message).await;
    // And the bus carries presence again, to both instances.
    let zed = b.helo("zed").await;
    yul_stream.expect_new_user(&zed).await;
    xan_stream.expect_new_user(&zed).await;
}
