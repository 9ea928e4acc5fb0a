//! The cluster recipe as written: `docs/cluster/nginx.conf` in front of two instances started
//! with the flags of `docs/operations.md`'s commands. Both are read from the files at test time
//! (only ports and the instances' addresses are replaced), so a change to the recipe is tested.
//!
//! Behind nginx every request reaches the instances from 127.0.0.1; the recipe's
//! `--trusted-proxies` and nginx's `X-Forwarded-For` must make two clients two addresses to
//! the per-address limits. The clients bind 127.0.0.2 and 127.0.0.3 (all of 127/8 is loopback).
//!
//! Needs `nginx` (Debian: `apt-get install -y nginx`) and `redis-server`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::{Value, json};
use tokio::time::sleep;

use crate::support::cluster::Cluster;
use crate::support::*;

const RECIPE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");
const NGINX_CONF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cluster/nginx.conf");

/// Where Debian's `nginx` package installs it (often not on a non-root `PATH`).
const NGINX: &str = "/usr/sbin/nginx";

/// The share that makes a second join from one address a refusal on each instance.
const ONE_SESSION_PER_ADDRESS: [&str; 2] = ["--max-sessions-per-address", "1"];

#[tokio::test]
async fn behind_the_recipes_nginx_two_clients_are_two_addresses() {
    let recipe = instance_flags();
    let (refused_a, b_joins) = two_clients_through_nginx("proxy", &recipe).await;
    assert_sessions_share_refusal(&refused_a);
    assert_eq!(
        b_joins.status,
        StatusCode::CREATED,
        "B (127.0.0.3) is not A (127.0.0.2) to the instances: {}",
        b_joins.body
    );
}

/// The control: without `--trusted-proxies` the instances see only nginx, so B is refused as
/// the address A already filled. This shows the test above can see the difference.
#[tokio::test]
async fn without_trusted_proxies_every_client_behind_nginx_is_one_address() {
    let recipe = instance_flags();
    let untrusting = without_flag(&recipe, "--trusted-proxies");
    assert_ne!(untrusting, recipe, "the recipe names --trusted-proxies");
    let (refused_a, b_joins) = two_clients_through_nginx("noproxy", &untrusting).await;
    assert_sessions_share_refusal(&refused_a);
    assert_sessions_share_refusal(&b_joins);
}

/// Starts the recipe's cluster with `flags` (and one session per address) behind the recipe's
/// nginx. Client A joins until it holds one session on each instance, then once more with a
/// forged `X-Forwarded-For`; B then joins once. Returns A's last answer and B's.
async fn two_clients_through_nginx(test: &str, flags: &[String]) -> (Answer, Answer) {
    let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    flags.extend(ONE_SESSION_PER_ADDRESS);
    let instances = vec![flags.as_slice(); upstream_count()];
    let cluster = Cluster::start(test, &instances).await;
    let nginx = Nginx::start(&cluster).await;
    let a = nginx.client_from(IpAddr::from([127, 0, 0, 2]));
    let b = nginx.client_from(IpAddr::from([127, 0, 0, 3]));

    // Round-robin decides which instance takes each join, and each counts its own sessions:
    // once A holds one on every instance, its next join is refused wherever it lands.
    let mut held = 0;
    for attempt in 0..10 * instances.len() {
        let answer = join(a.post(nginx.url("/helo")), &format!("a{attempt}")).await;
        if answer.status == StatusCode::CREATED {
            held += 1;
            if held == instances.len() {
                break;
            }
        } else {
            assert_sessions_share_refusal(&answer);
        }
    }
    assert_eq!(held, instances.len(), "A got one session on each instance");
    // Naming another address does not take A out of its share: nginx replaces the header.
    let forged = a
        .post(nginx.url("/helo"))
        .header("x-forwarded-for", "127.0.0.9");
    let refused_a = join(forged, "a-again").await;
    let b_joins = join(b.post(nginx.url("/helo")), "b").await;
    (refused_a, b_joins)
}

/// An answer read whole while nginx still runs.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

/// `request` (a `POST /helo`) with `{"name": name}`.
async fn join(request: reqwest::RequestBuilder, name: &str) -> Answer {
    let response = send(request.json(&json!({ "name": name }))).await;
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: body_text(response).await,
    }
}

/// A 429 `rate_limited` whose message names the per-address session share, with
/// `Retry-After`.
fn assert_sessions_share_refusal(answer: &Answer) {
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "refused: {}",
        answer.body
    );
    assert_json_content_type(&answer.headers);
    let retry = answer
        .headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry.is_some_and(|secs| secs >= 1),
        "Retry-After in {:?}",
        answer.headers
    );
    let body: Value = serde_json::from_str(&answer.body).expect("a JSON error");
    assert_eq!(body["error"], "rate_limited", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("sessions_per_address") && message.contains("retry in"),
        "names the limit and when to retry: {body}"
    );
}

/// The flags of the recipe's `switchboard` commands (the fenced `sh` block of "Running several
/// instances"), without `--listen` and `--redis-url`, which the test chooses. Every command
/// must have the same flags.
fn instance_flags() -> Vec<String> {
    let text = std::fs::read_to_string(RECIPE).expect("reading docs/operations.md");
    let section = text
        .split_once("## Running several instances")
        .expect("operations.md has the cluster recipe")
        .1;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the recipe's sh block")
        .0;
    let commands: Vec<Vec<String>> = block
        .replace("\\\n", " ")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("./target/release/switchboard "))
        .map(|command| {
            let words = command.split_whitespace().filter(|w| *w != "&");
            let flags: Vec<String> = words.map(str::to_owned).collect();
            without_flag(&without_flag(&flags, "--listen"), "--redis-url")
        })
        .collect();
    assert_eq!(
        commands.len(),
        upstream_count(),
        "the recipe starts one instance per upstream server of nginx.conf"
    );
    assert!(
        commands.windows(2).all(|pair| pair[0] == pair[1]),
        "every instance has the same flags: {commands:?}"
    );
    commands.into_iter().next().unwrap()
}

/// `flags` without `flag` and its value.
fn without_flag(flags: &[String], flag: &str) -> Vec<String> {
    let mut kept = Vec::new();
    let mut words = flags.iter();
    while let Some(word) = words.next() {
        if word == flag {
            words.next();
        } else if !word.starts_with(&format!("{flag}=")) {
            kept.push(word.clone());
        }
    }
    kept
}

fn nginx_conf() -> String {
    std::fs::read_to_string(NGINX_CONF).expect("reading docs/cluster/nginx.conf")
}

/// The `server` lines of nginx.conf's `upstream` block.
fn upstream_count() -> usize {
    upstream_lines(&nginx_conf()).count()
}

fn upstream_lines(conf: &str) -> impl Iterator<Item = usize> + '_ {
    let mut in_upstream = false;
    conf.lines().enumerate().filter_map(move |(i, line)| {
        let line = line.trim();
        if line.starts_with("upstream ") {
            in_upstream = true;
        } else if line.starts_with('}') {
            in_upstream = false;
        } else if in_upstream && line.starts_with("server ") {
            return Some(i);
        }
        None
    })
}

/// nginx.conf with its `listen` on `port` and its upstream servers at `upstreams`, in order;
/// every other line as the recipe has it.
fn derived_conf(port: u16, upstreams: &[String]) -> String {
    let conf = nginx_conf();
    let servers: Vec<usize> = upstream_lines(&conf).collect();
    assert_eq!(servers.len(), upstreams.len(), "one upstream per instance");
    let mut listens = 0;
    let lines = conf.lines().enumerate().map(|(i, line)| {
        let indent = &line[..line.len() - line.trim_start().len()];
        if let Some(at) = servers.iter().position(|&s| s == i) {
            format!("{indent}server {};", upstreams[at])
        } else if line.trim_start().starts_with("listen ") {
            listens += 1;
            format!("{indent}listen 127.0.0.1:{port};")
        } else {
            line.to_owned()
        }
    });
    let derived = lines.collect::<Vec<_>>().join("\n");
    assert_eq!(listens, 1, "nginx.conf listens once");
    derived
}

/// nginx as the recipe runs it (`nginx -p <dir> -c nginx.conf`, in the foreground), with the
/// derived config in a directory of its own, so its pid file, logs and temporary files land
/// there. Its process group (master and workers) is killed on drop.
struct Nginx {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Nginx {
    /// Starts nginx in front of `cluster`'s instances and waits until `/healthz` answers 200
    /// through it.
    async fn start(cluster: &Cluster) -> Nginx {
        let upstreams: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| node.base_url.trim_start_matches("http://").to_owned())
            .collect();
        let dir = std::env::temp_dir().join(format!(
            "switchboard-nginx-{}-{}",
            cluster.prefix,
            free_port()
        ));
        std::fs::create_dir_all(dir.join("tmp")).expect("creating nginx's directory");
        let port = free_port();
        std::fs::write(dir.join("nginx.conf"), derived_conf(port, &upstreams))
            .expect("writing nginx.conf");
        let child = spawn_nginx(&dir);
        let mut nginx = Nginx { port, dir, child };
        nginx.wait_until_it_proxies().await;
        nginx
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// An HTTP client whose connections come from `address`.
    fn client_from(&self, address: IpAddr) -> reqwest::Client {
        reqwest::Client::builder()
            .local_address(address)
            .connect_timeout(WAIT)
            .no_proxy()
            .build()
            .unwrap()
    }

    async fn wait_until_it_proxies(&mut self) {
        let probe = self.client_from(IpAddr::from([127, 0, 0, 1]));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("nginx exited ({exit}): {}", self.errors());
            }
            let answer = tokio::time::timeout(WAIT, probe.get(self.url("/healthz")).send()).await;
            if let Ok(Ok(response)) = answer
                && response.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nginx never proxied /healthz: {}",
                self.errors()
            );
            sleep(POLL).await;
        }
    }

    /// What nginx logged, for a failure message.
    fn errors(&self) -> String {
        ["startup.log", "error.log"]
            .map(|log| std::fs::read_to_string(self.dir.join(log)).unwrap_or_default())
            .join("\n")
    }
}

fn spawn_nginx(dir: &Path) -> Child {
    use std::os::unix::process::CommandExt;

    let program = if Path::new(NGINX).exists() {
        NGINX
    } else {
        "nginx"
    };
    let spawned = Command::new(program)
        .arg("-p")
        .arg(dir)
        .args(["-c", "nginx.conf"])
        // Errors before the config is read go here instead of the system's log.
        .arg("-e")
        .arg(dir.join("startup.log"))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            panic!("nginx is not installed; this test needs it: apt-get install -y nginx")
        }
        Err(err) => panic!("cannot run {program}: {err}"),
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGKILL to the group: the master would leave its workers serving if it died alone.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
