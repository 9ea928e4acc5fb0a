//! `docs/monitoring/` against a real Prometheus (Debian: `prometheus`, which `scripts/test.sh`
//! installs): it scrapes a real switchboard under traffic, loads the alert rules (which
//! `promtool check rules` checks first), and answers every dashboard panel's and every
//! alert's expression through its query API. A renamed metric or label leaves an expression
//! without a result, and fails here.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Instance, free_port};

const DASHBOARD: &str = include_str!("../../docs/monitoring/switchboard-dashboard.json");
const ALERTS: &str = include_str!("../../docs/monitoring/alerts.yml");
/// Prometheus starting, scraping twice and evaluating the rules: a few seconds; the bound is
/// for a busy machine.
const PROMETHEUS_WAIT: Duration = Duration::from_secs(60);

/// Where `name` is found on `PATH`, or `None` when it is not installed.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// A Prometheus scraping `target` every second as job `switchboard`, with the alert rules,
/// its data in a directory of its own; killed and removed on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    base_url: String,
    client: reqwest::Client,
}

impl Prometheus {
    fn start(binary: &Path, target: &str) -> Prometheus {
        let dir =
            std::env::temp_dir().join(format!("switchboard-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring/alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{rules:?}]\n\
             scrape_configs:\n  - job_name: switchboard\n    static_configs:\n      - targets: [{target:?}]\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("log")).unwrap();
        // Every path explicit: Debian's defaults point into /etc and /var/lib.
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .arg(format!("--web.console.templates={}", dir.display()))
            .arg(format!("--web.console.libraries={}", dir.display()))
            .arg("--log.level=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            dir,
            base_url: format!("http://{address}"),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// `GET /api/v1/{path}`'s `data`, or why not (not up yet, or the query failed).
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let url = format!("{}/api/v1/{path}", self.base_url);
        let url = reqwest::Url::parse_with_params(&url, query).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.get(url).send())
            .await
            .map_err(|_| "no answer in 10 s".to_owned())?
            .map_err(|err| err.to_string())?;
        let body: Value = response.json().await.map_err(|err| err.to_string())?;
        match body["status"].as_str() {
            Some("success") => Ok(body["data"].clone()),
            _ => Err(body.to_string()),
        }
    }

    /// The instant vector `expr` evaluates to now.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("query", &[("query", expr)]).await?;
        if data["resultType"] != "vector" {
            return Err(format!("{expr}: not an instant vector: {data}"));
        }
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Polls (every 200 ms, up to [`PROMETHEUS_WAIT`]) until `ready` holds of `expr`'s result.
    async fn wait_for(&self, what: &str, expr: &str, ready: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + PROMETHEUS_WAIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.query(expr).await {
                Ok(result) if ready(&result) => return,
                Ok(result) => last = format!("{result:?}"),
                Err(err) => last = err,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "{what}: not within {PROMETHEUS_WAIT:?} ({expr}: {last})\n{}",
            self.log()
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every panel's queries in the dashboard (rows' nested panels too), as (panel title, expr),
/// with Grafana's variables filled in as the dashboard's "All" and a scrape every second.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut panels: Vec<&Value> = Vec::new();
    let mut todo: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = todo.pop() {
        todo.extend(panel["panels"].as_array().into_iter().flatten());
        if panel["type"] != "row" {
            panels.push(panel);
        }
    }
    let mut queries = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        let targets = panel["targets"]
            .as_array()
            .expect("every panel has targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("a target's expr");
            let filled = expr
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".+");
            assert!(
                !filled.contains('$'),
                "{title}: a variable the test does not fill: {expr}"
            );
            queries.push((title.to_owned(), filled));
        }
    }
    assert!(queries.len() >= 20, "{queries:?}");
    queries
}

/// Every alert as (name, signal, comparison, threshold): its expression is
/// `<signal> <comparison> <number>`, the comparison outside any parentheses.
fn alerts() -> Vec<(String, String, String, f64)> {
    let rules: Value = serde_norway::from_str(ALERTS).expect("the rules are YAML");
    let mut alerts = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("alerting rules only");
            let expr = rule["expr"].as_str().expect("expr").trim();
            let (signal, comparison, threshold) = split_comparison(expr)
                .unwrap_or_else(|| panic!("{name}: not `<signal> <comparison> <number>`: {expr}"));
            alerts.push((name.to_owned(), signal, comparison, threshold));
        }
    }
    assert!(alerts.len() >= 8, "{alerts:?}");
    alerts
}

/// `expr` split at its last comparison outside parentheses, when a number follows it.
fn split_comparison(expr: &str) -> Option<(String, String, f64)> {
    let bytes = expr.as_bytes();
    let mut depth = 0i32;
    let mut found = None;
    for (i, &byte) in bytes.iter().enumerate() {
        match byte {
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            b'>' | b'<' | b'=' | b'!' if depth == 0 && found.is_none_or(|(_, end)| i >= end) => {
                let end = if bytes.get(i + 1) == Some(&b'=') {
                    i + 2
                } else {
                    i + 1
                };
                found = Some((i, end));
            }
            _ => {}
        }
    }
    let (start, end) = found?;
    let threshold = expr[end..].trim().parse().ok()?;
    Some((
        expr[..start].trim().to_owned(),
        expr[start..end].to_owned(),
        threshold,
    ))
}

/// Some of everything the dashboard shows: joins, streams, a direct message, a broadcast.
async fn traffic(server: &Instance) {
    let ann = server.helo("ann").await;
    let bob = server.helo("bob").await;
    let mut ann_stream = server.attach_ready(&ann).await;
    let mut bob_stream = server.attach_ready(&bob).await;
    server
        .hub
        .send(&ann, &bob.id, &json!("hello bob"))
        .await
        .unwrap();
    while bob_stream.next().await.event != "client_response" {}
    server
        .hub
        .broadcast(&bob, &json!("hello all"))
        .await
        .unwrap();
    while ann_stream.next().await.event != "client_broadcast" {}
}

#[tokio::test]
async fn the_dashboard_and_alerts_answer_against_a_real_prometheus() {
    let (Some(prometheus), Some(promtool)) = (tool("prometheus"), tool("promtool")) else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "prometheus and promtool are missing (Debian: apt-get install prometheus; scripts/test.sh does)"
        );
        eprintln!(
            "SKIPPED the_dashboard_and_alerts_answer_against_a_real_prometheus: prometheus or \
             promtool not installed (apt-get install prometheus; scripts/test.sh installs it)"
        );
        return;
    };
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring/alerts.yml");
    let checked = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool runs");
    assert!(
        checked.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let server = Instance::start("monitored", &[]).await;
    let prometheus = Prometheus::start(&prometheus, server.authority());
    // One scrape before the traffic, one after: every rate() has two samples to go on.
    prometheus
        .wait_for("first scrape", "up{job=\"switchboard\"} == 1", |r| {
            !r.is_empty()
        })
        .await;
    traffic(&server).await;
    let delivered = "switchboard_events_delivered_total{event=\"client_broadcast\"} > 0";
    prometheus
        .wait_for("a scrape after the traffic", delivered, |r| !r.is_empty())
        .await;

    let mut empty = Vec::new();
    for (title, expr) in dashboard_queries() {
        match prometheus.query(&expr).await {
            Ok(result) if !result.is_empty() => {}
            Ok(_) => empty.push(format!("panel {title:?}: no result for {expr}")),
            Err(err) => empty.push(format!("panel {title:?}: {err}")),
        }
    }
    for (name, signal, comparison, threshold) in alerts() {
        // `bool` keeps every series, 0 or 1: the whole expression, whether it fires or not.
        let expr = format!("{signal} {comparison} bool {threshold}");
        match prometheus.query(&expr).await {
            Ok(result) if !result.is_empty() => {}
            Ok(_) => empty.push(format!("alert {name}: no result for {expr}")),
            Err(err) => empty.push(format!("alert {name}: {err}")),
        }
    }
    assert!(empty.is_empty(), "{}", empty.join("\n"));
    // The directed traffic shows as a rate, not only as series at 0.
    let messages =
        "sum(rate(switchboard_http_requests_total{route=\"/response\",status=\"202\"}[1m])) > 0";
    assert!(!prometheus.query(messages).await.unwrap().is_empty());

    // Prometheus loaded the rules itself and evaluates every one without an error.
    let deadline = Instant::now() + PROMETHEUS_WAIT;
    loop {
        let data = prometheus.api("rules", &[]).await.unwrap();
        let rules: Vec<&Value> = data["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|group| group["rules"].as_array().unwrap())
            .collect();
        assert_eq!(rules.len(), alerts().len(), "{data}");
        let unhealthy: Vec<_> = rules.iter().filter(|rule| rule["health"] != "ok").collect();
        if unhealthy.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rules not evaluated well: {unhealthy:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
