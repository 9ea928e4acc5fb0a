//! The docs must say what the code does: `openapi.yaml` lists exactly the routes the server
//! serves, names every stream event, and the README documents every flag and event.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;

use clap::CommandFactory;
use serde_json::Value;
use support::{body_json, send, spawn_app};
use switchboard::Config;
use switchboard::http::ROUTES;
use switchboard::registry::Event;

const OPENAPI: &str = include_str!("../openapi.yaml");
const README: &str = include_str!("../README.md");

fn openapi() -> Value {
    serde_norway::from_str(OPENAPI).expect("openapi.yaml is valid YAML")
}

fn documented_routes(spec: &Value) -> BTreeSet<(String, String)> {
    let paths = spec["paths"].as_object().expect("paths is a map");
    paths
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("a path item is a map")
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

#[test]
fn openapi_lists_exactly_the_routes_the_code_declares() {
    let code: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|&(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    let spec = openapi();
    assert_eq!(spec["openapi"], "3.1.0");
    let documented = documented_routes(&spec);
    let missing: Vec<_> = code.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&code).collect();
    assert!(
        missing.is_empty(),
        "served but not in openapi.yaml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "in openapi.yaml but not served: {extra:?}"
    );
}

#[tokio::test]
async fn every_declared_route_is_really_served() {
    let public = std::env::temp_dir().join(format!("switchboard-docs-{}", std::process::id()));
    std::fs::create_dir_all(&public).unwrap();
    std::fs::write(public.join("index.html"), "<!doctype html><title>t</title>").unwrap();
    let app = spawn_app(Config {
        public_dir: public.clone(),
        ..Config::default()
    })
    .await;
    for &(method, template) in ROUTES {
        let path = template.replace("{id}", "0b7e5d2c-1d9e-4b8f-9a77-3f2a1c4e5d6f");
        let request = app.client.request(method.parse().unwrap(), app.url(&path));
        let response = send(request).await;
        let status = response.status();
        let body: Value = match response.headers().get("content-type") {
            Some(t) if t.as_bytes().starts_with(b"application/json") => body_json(response).await,
            _ => Value::Null,
        };
        let code = body["error"].as_str().unwrap_or("");
        assert!(
            !["not_found", "method_not_allowed"].contains(&code),
            "{method} {path} is declared but answered {status} {code}"
        );
    }
    // And an undeclared route is not served.
    let response = app.get("/no-such-route").await;
    assert_eq!(response.status(), 404);
    std::fs::remove_dir_all(public).ok();
}

#[test]
fn openapi_describes_every_stream_event() {
    let spec = openapi();
    let events = &spec["paths"]["/events/{id}"]["get"]["responses"]["200"]["content"]["text/event-stream"]
        ["x-events"];
    let documented: BTreeSet<&str> = events
        .as_object()
        .expect("x-events lists the events")
        .keys()
        .map(String::as_str)
        .collect();
    let code: BTreeSet<&str> = Event::NAMES.into_iter().collect();
    assert_eq!(documented, code);
}

#[test]
fn readme_documents_every_flag_and_event() {
    let command = Config::command();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if ["help", "version"].contains(&long) {
            continue;
        }
        assert!(
            README.contains(&format!("`--{long}")),
            "README's configuration table misses --{long}"
        );
        if let Some(env) = arg.get_env() {
            let env = env.to_str().unwrap();
            assert!(README.contains(env), "README misses the variable {env}");
        }
    }
    for name in Event::NAMES {
        assert!(
            README.contains(&format!("`{name}`")),
            "README misses the event {name}"
        );
    }
}

#[test]
fn readme_opens_with_the_two_commands_ci_runs() {
    let first_block = README
        .split("```")
        .nth(1)
        .expect("README opens with a code block");
    let commands: Vec<&str> = first_block
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(commands, ["cargo run --release", "bash scripts/test.sh"]);
    let ci = include_str!("../.ci/run");
    assert_eq!(
        ci.lines().rfind(|l| !l.starts_with('#')),
        Some(commands[1]),
        ".ci/run must end with the README's test command"
    );
}

#[test]
fn readme_error_table_lists_exactly_the_error_codes() {
    use switchboard::http::error::ErrorCode;

    let section = README
        .split("\n## Errors")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has an Errors section");
    let documented: BTreeSet<&str> = section
        .lines()
        .filter(|line| line.starts_with('|'))
        .skip(2) // the header row and the separator
        .filter_map(|row| row.split('|').nth(2))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .collect();
    let code: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        documented, code,
        "README's error table and ErrorCode differ"
    );
}
