//! Running switchboard as a service: start-up flags and their errors (against the real binary),
//! `/readyz`, and `/metrics` as Prometheus' own parser reads it.
//!
//! The metrics format test runs Python's `prometheus_client` parser (Debian:
//! `python3-prometheus-client`; `scripts/test.sh` installs it when missing).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use switchboard::Config;
use switchboard::backplane::Hub;
use switchboard::http::{self, Context, StreamSettings};
use switchboard::metrics::Metrics;
use switchboard::registry::{Registry, Settings};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const WAIT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------ the binary

/// The binary's exit status and stderr, for flags that must stop it at start.
fn refused(args: &[&str]) -> (i32, String) {
    let output = Command::new(BIN)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .expect("running the switchboard binary");
    assert!(output.stdout.is_empty(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    (output.status.code().expect("exited, not killed"), stderr)
}

/// A running binary and every line it logged so far (stdout and stderr merged in one channel).
struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the switchboard binary");
        let (tx, lines) = std::sync::mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Running { child, lines }
    }

    /// The next logged line containing `needle`, within [`WAIT`]; the lines before it too.
    fn wait_for(&self, needle: &str) -> (String, Vec<String>) {
        let deadline = std::time::Instant::now() + WAIT;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return (line, before),
                Ok(line) => before.push(line),
                Err(_) => panic!("no log line with {needle:?}; saw {before:#?}"),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `address=...` of a text `listening` line.
fn address_of(line: &str) -> String {
    line.split("address=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn a_port_in_use_is_one_line_naming_the_address_and_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, stderr) = refused(&["--listen", &port]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim_end().lines().collect::<Vec<_>>(),
        [format!(
            "error: cannot listen on 127.0.0.1:{port} (--listen): Address already in use (os error 98)"
        )]
    );
}

#[test]
fn bad_flags_are_refused_at_start_naming_the_flag() {
    for (args, says) in [
        (&["--listen", "localhost"][..], "'--listen <LISTEN>'"),
        (&["--listen", "localhost:http"], "is not a port number"),
        (&["--log", "info,["], "not a valid log filter"),
        (&["--log", "switchboard=loud"], "not a valid log filter"),
        (&["--log", "json"], "use --log-format json"),
        (&["--log-format", "yaml"], "'--log-format <LOG_FORMAT>'"),
    ] {
        let (code, stderr) = refused(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or("");
        assert!(
            first.starts_with("error: ") && first.contains(says),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn listen_takes_a_port_alone_on_the_loopback_address() {
    for form in ["0", ":0", "localhost:0"] {
        let server = Running::start(&["--listen", form]);
        let (line, _) = server.wait_for("listening");
        assert!(
            address_of(&line).starts_with("127.0.0.1:"),
            "{form}: {line}"
        );
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_same_fields_and_redaction() {
    let server = Running::start(&["--listen", "0", "--log-format", "json", "--log", "debug"]);
    let (line, _) = server.wait_for("\"listening\"");
    let listening: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(listening["level"], "INFO");
    let address = listening["address"]
        .as_str()
        .expect("address field")
        .to_owned();
    assert!(listening["max_streams"].is_u64(), "{listening}");

    // A token in a query string is redacted from request spans in JSON as in text.
    let response = reqwest::get(format!("http://{address}/clients?token=secret"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (line, before) = server.wait_for("token=REDACTED");
    for line in before.iter().chain([&line]) {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(!line.contains("secret"), "{line}");
    }
}

#[tokio::test]
async fn a_missing_public_dir_is_reported_and_the_built_in_page_served() {
    let server = Running::start(&["--listen", "0", "--public-dir", "/nonexistent/public"]);
    let (warning, _) = server.wait_for("--public-dir");
    assert!(
        warning.contains("WARN") && warning.contains("/nonexistent/public"),
        "{warning}"
    );
    let (line, _) = server.wait_for("listening");
    let page = reqwest::get(format!("http://{}/", address_of(&line)))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.text().await.unwrap(),
        include_str!("../public/index.html")
    );
}

// ------------------------------------------------------------------ in-process servers

struct App {
    base: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
}

impl App {
    async fn spawn(config: Config) -> App {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(switchboard::serve(listener, config, async {
            let _ = stopped.await;
        }));
        App {
            base,
            client: reqwest::Client::new(),
            stop: Some(stop),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        tokio::time::timeout(WAIT, self.client.get(format!("{}{path}", self.base)).send())
            .await
            .expect("answered in time")
            .unwrap()
    }

    async fn helo(&self, name: &str) -> Value {
        let response = self
            .client
            .post(format!("{}/helo", self.base))
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The value of the sample `name` (with its labels, as written) in classic text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn readyz_is_ready_on_a_healthy_instance() {
    let app = App::spawn(Config::default()).await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ready"})
    );
}

#[tokio::test]
async fn readyz_fails_while_the_backplane_is_down() {
    // Nothing listens on port 1: the instance never gets onto the Redis bus.
    let app = App::spawn(Config {
        redis_url: Some("redis://127.0.0.1:1".to_owned()),
        ..Config::default()
    })
    .await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert!(body["reason"].as_str().unwrap().contains("Redis"), "{body}");
}

#[tokio::test]
async fn readyz_fails_while_draining() {
    let registry = Registry::new(
        Settings {
            mailbox_size: 4,
            max_sessions: 4,
            max_streams: 4,
            session_ttl: Duration::from_secs(30),
        },
        Arc::new(Metrics::default()),
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let context = Context {
        hub: Hub::local(registry, true),
        stream: StreamSettings {
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(2),
            drain_window: Duration::ZERO,
        },
        shutdown: shutdown.clone(),
    };
    let routes = http::routes(context, 1024, None);
    let ready = warp::test::request().path("/readyz").reply(&routes).await;
    assert_eq!(ready.status(), 200);

    shutdown.cancel();
    let draining = warp::test::request().path("/readyz").reply(&routes).await;
    assert_eq!(draining.status(), 503);
    let body: Value = serde_json::from_slice(draining.body()).unwrap();
    assert_eq!(
        body,
        json!({"status": "unavailable", "reason": "shutting down"})
    );
    // Liveness is another question: the process still answers.
    let health = warp::test::request().path("/healthz").reply(&routes).await;
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn heartbeats_are_counted_apart_from_events() {
    let app = App::spawn(Config {
        heartbeat: Duration::from_millis(50),
        ..Config::default()
    })
    .await;
    let ann = app.helo("ann").await;
    let url = format!(
        "{}/events/{}?token={}",
        app.base,
        ann["id"].as_str().unwrap(),
        ann["token"].as_str().unwrap()
    );
    let stream = app.client.get(url).send().await.unwrap();
    let mut body = stream.bytes_stream();
    let mut seen = String::new();
    tokio::time::timeout(WAIT, async {
        while seen.matches(": ping").count() < 2 {
            let chunk = body.next().await.expect("stream open").unwrap();
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .expect("two pings in time");

    let text = app.metrics().await;
    assert!(
        sample(&text, "switchboard_heartbeats_total").unwrap() >= 2.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "switchboard_events_delivered_total{event=\"ready\"}"),
        Some(1.0)
    );
    assert!(!text.contains("event=\"ping\""), "{text}");
}

#[tokio::test]
async fn metrics_carry_process_build_and_request_latency() {
    let app = App::spawn(Config::default()).await;
    app.get("/healthz").await;
    let response = app.get("/metrics").await;
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(sample(&text, "process_open_fds").unwrap() > 0.0, "{text}");
    assert!(sample(&text, "process_max_fds").unwrap() > 0.0, "{text}");
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 0.0);
    assert!(sample(&text, "process_cpu_seconds_total").is_some());
    let build = format!(
        "switchboard_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &build), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "switchboard_http_request_duration_seconds_count{route=\"/healthz\"}"
        ),
        Some(1.0)
    );
    assert!(text.contains("# TYPE switchboard_delivery_latency_seconds histogram"));

    let openmetrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(
        openmetrics.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(openmetrics.text().await.unwrap().ends_with("# EOF\n"));
}

/// Runs Python's `prometheus_client` parser on `text` (`module` picks the format) and returns
/// each family's name and type.
fn python_parse(module: &str, text: &str) -> Value {
    use std::io::Write;
    let script = format!(
        "import json, sys\n\
         from {module} import text_string_to_metric_families\n\
         print(json.dumps({{f.name: f.type for f in text_string_to_metric_families(sys.stdin.read())}}))"
    );
    // Debian's python3, where `apt-get install python3-prometheus-client` puts the module.
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let mut child = Command::new(python)
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the parser refused the exposition (apt-get install python3-prometheus-client?): {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn prometheus_own_parser_reads_every_family_with_its_type() {
    let app = App::spawn(Config::default()).await;
    let ann = app.helo("ann").await;
    assert!(ann["id"].is_string());
    let text = app.metrics().await;
    let expected = json!({
        "process_cpu_seconds": "counter",
        "process_open_fds": "gauge",
        "process_max_fds": "gauge",
        "process_resident_memory_bytes": "gauge",
        "switchboard_build_info": "gauge",
        "switchboard_sessions": "gauge",
        "switchboard_streams": "gauge",
        "switchboard_events_delivered": "counter",
        "switchboard_heartbeats": "counter",
        "switchboard_mailbox_evictions": "counter",
        "switchboard_mailbox_full": "counter",
        "switchboard_http_requests": "counter",
        "switchboard_delivery_latency_seconds": "histogram",
        "switchboard_http_request_duration_seconds": "histogram",
    });
    for module in [
        "prometheus_client.parser",
        "prometheus_client.openmetrics.parser",
    ] {
        let text = if module.contains("openmetrics") {
            app.client
                .get(format!("{}/metrics", app.base))
                .header("accept", "application/openmetrics-text")
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        } else {
            text.clone()
        };
        let families = python_parse(module, &text);
        for (name, kind) in expected.as_object().unwrap() {
            assert_eq!(&families[name], kind, "{module}: {name} in {families}");
        }
        let unknown: Vec<_> = families
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, kind)| *kind == "unknown" || *kind == "untyped")
            .collect();
        assert!(unknown.is_empty(), "{module}: {unknown:?}");
    }
}
