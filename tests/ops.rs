//! Running switchboard as a service: start-up flags and their errors (against the real binary),
//! `/readyz`, `/metrics` as Prometheus' own parser reads it, and the admin console's figures.
//!
//! The metrics format test runs Python's `prometheus_client` parser (Debian:
//! `python3-prometheus-client`; `scripts/test.sh` installs it when missing).

#[path = "ops/console.rs"]
mod console;
#[path = "ops/monitoring.rs"]
mod monitoring;
#[path = "ops/scrape.rs"]
mod scrape;
#[path = "support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{
    Config, Instance, RawStream, WAIT, body_json, body_text, refused, sample, send, spawn_app,
};

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
fn a_mailbox_smaller_than_the_largest_message_stops_the_start() {
    let (code, stderr) = refused(&["--listen", "0", "--max-body", "1048576"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("--mailbox-bytes 1048576 cannot hold one message of --max-body 1048576")
            && stderr.contains("at least 1048832"),
        "{stderr}"
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

#[tokio::test]
async fn listen_takes_a_port_alone_on_the_loopback_address() {
    for form in ["0", ":0", "localhost:0"] {
        let server = Instance::with_args(form, &["--listen", form]).await;
        let (line, _) = server.log_line("listening").await;
        assert!(
            server.authority().starts_with("127.0.0.1:"),
            "{form}: {line}"
        );
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_same_fields_and_redaction() {
    let args = ["--listen", "0", "--log-format", "json", "--log", "debug"];
    let server = Instance::with_args("json", &args).await;
    let (line, _) = server.log_line("\"listening\"").await;
    let listening: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["address"], server.authority(), "{listening}");
    assert!(listening["max_streams"].is_u64(), "{listening}");

    // A token in a query string is redacted from request spans in JSON as in text.
    let response = server.get("/healthz?token=secret").await;
    assert_eq!(response.status(), 200);
    let (line, before) = server.log_line("token=REDACTED").await;
    for line in before.iter().chain([&line]) {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(!line.contains("secret"), "{line}");
    }
}

#[tokio::test]
async fn a_missing_public_dir_is_reported_and_the_built_in_page_served() {
    let args = ["--listen", "0", "--public-dir", "/nonexistent/public"];
    let server = Instance::with_args("no public dir", &args).await;
    let (warning, _) = server.log_line("--public-dir").await;
    assert!(
        warning.contains("WARN") && warning.contains("/nonexistent/public"),
        "{warning}"
    );
    let page = server.get("/").await;
    assert_eq!(page.status(), 200);
    assert_eq!(body_text(page).await, include_str!("../public/index.html"));
}

// ------------------------------------------------------------------ readiness and metrics

#[tokio::test]
async fn readyz_is_ready_on_a_healthy_instance() {
    let app = spawn_app(Config::default()).await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(body_json(response).await, json!({"status": "ready"}));
}

#[tokio::test]
async fn readyz_fails_while_the_backplane_is_down() {
    // Nothing listens on port 1: the instance never gets onto the Redis bus.
    let server = Instance::start("no redis", &["--redis-url", "redis://127.0.0.1:1"]).await;
    let response = server.get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body = body_json(response).await;
    assert_eq!(body["status"], "unavailable");
    assert!(body["reason"].as_str().unwrap().contains("Redis"), "{body}");
}

/// A connection that has sent the first line of `GET path` and waits to finish it.
async fn half_sent(server: &Instance, path: &str) -> TcpStream {
    let mut socket = TcpStream::connect(server.authority()).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: switchboard\r\n");
    socket.write_all(head.as_bytes()).await.unwrap();
    socket
}

/// Ends the head `socket` started and reads the whole answer (the server closes the
/// connection after it, as it does every connection once shutting down).
async fn finish(mut socket: TcpStream) -> String {
    socket
        .write_all(b"Connection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, socket.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .unwrap();
    String::from_utf8(answer).unwrap()
}

#[tokio::test]
async fn readyz_fails_while_draining() {
    let mut server = Instance::start("draining", &["--shutdown-grace", "10s"]).await;
    assert_eq!(server.get("/readyz").await.status(), 200);

    // The listener closes on SIGTERM; requests already on their way are still answered.
    let readyz = half_sent(&server, "/readyz").await;
    let healthz = half_sent(&server, "/healthz").await;
    // Connections are accepted in order: once a later one is answered, both are in.
    let probe = half_sent(&server, "/healthz").await;
    assert!(finish(probe).await.starts_with("HTTP/1.1 200"));

    server.send_sigterm();
    server.log_line("shutting down").await;
    let draining = finish(readyz).await;
    assert!(draining.starts_with("HTTP/1.1 503"), "{draining}");
    let (_, body) = draining.split_once("\r\n\r\n").unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(body).unwrap(),
        json!({"status": "unavailable", "reason": "shutting down"})
    );
    // Liveness is another question: the process still answers.
    let health = finish(healthz).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(server.wait_for_exit(WAIT).await.success());
}

#[tokio::test]
async fn heartbeats_are_counted_apart_from_events() {
    let app = spawn_app(Config {
        heartbeat: Duration::from_millis(50),
        ..Config::default()
    })
    .await;
    let ann = app.helo("ann").await;
    let mut stream = RawStream::new(app.events_response(&ann.id, &ann.token, None).await);
    let first = stream.read_until(0, ": ping").await;
    stream.read_until(first, ": ping").await;

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
    let app = spawn_app(Config::default()).await;
    app.get("/healthz").await;
    // Streams are timed too, to their response head: one attached, one refused.
    let ann = app.helo("ann").await;
    let _stream = app.attach_ready(&ann).await;
    let refused = app.events_response(&ann.id, "not-a-token", None).await;
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    let response = app.get("/metrics").await;
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = body_text(response).await;
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
    let streams = "switchboard_http_request_duration_seconds_count{route=\"/events/{id}\"}";
    assert_eq!(sample(&text, streams), Some(2.0), "{text}");
    assert!(text.contains("# TYPE switchboard_delivery_latency_seconds histogram"));

    let openmetrics = send(
        app.client
            .get(app.url("/metrics"))
            .header("accept", "application/openmetrics-text; version=1.0.0"),
    )
    .await;
    assert_eq!(
        openmetrics.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body_text(openmetrics).await.ends_with("# EOF\n"));
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
    let app = spawn_app(Config::default()).await;
    app.helo("ann").await;
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
        "switchboard_parked_sends": "counter",
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
            let accept = "application/openmetrics-text";
            body_text(send(app.client.get(app.url("/metrics")).header("accept", accept)).await)
                .await
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

#[test]
fn every_flag_error_is_one_line_naming_the_flag() {
    for (args, says) in [
        (&["--nope"][..], "'--nope'"),
        (&["--listen", "localhost"], "--listen"),
        (&["--session-ttl", "soon"], "--session-ttl"),
        (&["--max-body", "0"], "--max-body"),
        (&["--cors-origin", "http://x.example/path"], "has a path"),
        (&["--cors-origin", "x.example"], "--cors-origin"),
        (&["--metrics-listen", "nowhere:x"], "--metrics-listen"),
    ] {
        let (code, stderr) = refused(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.trim_end().lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(says),
            "{args:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn every_refusal_series_is_at_zero_from_the_start() {
    let app = spawn_app(Config::default()).await;
    let text = body_text(app.get("/metrics").await).await;
    for limit in [
        "helo_rate",
        "message_rate",
        "byte_rate",
        "sessions_per_address",
        "streams_per_address",
        "connections_per_address",
    ] {
        let series = format!("switchboard_rate_limited_total{{limit=\"{limit}\"}}");
        assert_eq!(sample(&text, &series), Some(0.0), "{series} in {text}");
    }
    assert_eq!(
        sample(&text, "switchboard_connections_refused_total"),
        Some(0.0)
    );
}

#[tokio::test]
async fn metrics_listen_serves_metrics_there_and_not_on_the_public_port() {
    let port = support::free_port();
    let address = format!("127.0.0.1:{port}");
    let server = Instance::start("metrics", &["--metrics-listen", &address]).await;
    let metrics = send(
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://{address}/metrics")),
    )
    .await;
    assert_eq!(metrics.status(), 200);
    let text = body_text(metrics).await;
    assert!(text.contains("switchboard_build_info"), "{text}");
    assert_eq!(server.get("/metrics").await.status(), 404);
    assert_eq!(server.get("/healthz").await.status(), 200);
}
