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

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::{Value, json};

use crate::support::cluster::Cluster;
use crate::support::nginx::{Nginx, upstream_count};
use crate::support::*;

const RECIPE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");
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
    let upstreams: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| node.base_url.trim_start_matches("http://").to_owned())
        .collect();
    let nginx = Nginx::start(&cluster.prefix, &upstreams).await;
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
