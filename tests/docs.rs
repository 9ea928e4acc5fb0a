//! The docs must say what the code does: `openapi.yaml` lists exactly the routes the server
//! serves, names every stream event, `docs/operations.md` documents every flag, the README
//! every event, and `docs/api.md` every error code.

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use support::{send, spawn_app};
use switchboard::{Config, Event, ROUTES};

const OPENAPI: &str = include_str!("../openapi.yaml");
const README: &str = include_str!("../README.md");
const OPERATIONS: &str = include_str!("../docs/operations.md");
const API: &str = include_str!("../docs/api.md");

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

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// A server with every route on: the page from a directory, the server API with its key.
async fn full_server(label: &str) -> (support::TestApp, std::path::PathBuf) {
    let public =
        std::env::temp_dir().join(format!("switchboard-docs-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&public).unwrap();
    std::fs::write(public.join("index.html"), "<!doctype html><title>t</title>").unwrap();
    let app = spawn_app(Config {
        public_dir: Some(public.clone()),
        api_key_file: Some(support::api_key_file()),
        ..Config::default()
    })
    .await;
    (app, public)
}

/// The router itself is asked: every path and method `openapi.yaml` lists is served (neither
/// 404 nor 405, with a real session, so no answer is "not found" for want of one), every other
/// method on those paths is 405, an unlisted path is 404, and the route table the metrics and
/// `Allow` use lists exactly the same routes.
#[tokio::test]
async fn openapi_lists_exactly_the_routes_the_router_serves() {
    let spec = openapi();
    assert_eq!(spec["openapi"], "3.1.0");
    let documented = documented_routes(&spec);
    let (app, public) = full_server("routes").await;
    let session = app.helo("docs").await;
    let request = |method: &str, path: &str| {
        let path = path.replace("{id}", &session.id);
        let request = app.client.request(method.parse().unwrap(), app.url(&path));
        if path.starts_with("/api/") {
            request.bearer_auth(support::TEST_API_KEY)
        } else {
            request.bearer_auth(&session.token)
        }
    };
    let mut wrong = Vec::new();
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    // DELETE /session ends the session the other probes use: it goes last.
    let mut probes: Vec<(&str, &String)> = paths
        .iter()
        .flat_map(|&path| METHODS.iter().map(move |&m| (m, path)))
        .collect();
    probes.sort_by_key(|&(m, p)| (m == "DELETE" && p == "/session", m, p));
    for (method, path) in probes {
        let listed = documented.contains(&(method.to_owned(), path.clone()));
        let status = send(request(method, path)).await.status().as_u16();
        let served = status != 404 && status != 405;
        if listed && !served {
            wrong.push(format!(
                "{method} {path}: in openapi.yaml, but answered {status}"
            ));
        }
        if !listed && status != 405 {
            wrong.push(format!(
                "{method} {path}: not in openapi.yaml, but answered {status}, not 405"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "openapi.yaml and the router differ:\n{}",
        wrong.join("\n")
    );
    assert_eq!(app.get("/no-such-route").await.status(), 404);

    let table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|&(m, p, _)| (m.to_owned(), p.to_owned()))
        .collect();
    assert_eq!(
        table, documented,
        "the route table (ROUTES) and openapi.yaml differ"
    );
    std::fs::remove_dir_all(public).ok();
}

/// The statuses the route table counts from 0 (see `ROUTES`) are exactly the responses
/// `openapi.yaml` documents for each route, beside `default`: a dashboard's series are the
/// documented answers, and a documented answer has its series from the start.
#[test]
fn the_route_table_counts_exactly_the_documented_statuses() {
    let spec = openapi();
    let mut wrong = Vec::new();
    for &(method, path, statuses) in ROUTES {
        let responses = spec["paths"][path][method.to_lowercase()]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path}: no responses in openapi.yaml"));
        let documented: BTreeSet<u16> = responses
            .keys()
            .filter(|status| *status != "default")
            .map(|status| status.parse().expect("a status code"))
            .collect();
        let counted: BTreeSet<u16> = statuses.iter().copied().collect();
        if documented != counted {
            wrong.push(format!(
                "{method} {path}: openapi.yaml {documented:?}, ROUTES {counted:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The schema a local `$ref` points to.
fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => spec
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{reference} resolves")),
        None => schema,
    }
}

#[test]
fn openapi_models_every_stream_event_as_a_schema_generators_read() {
    let spec = openapi();
    let stream = &spec["paths"]["/events/{id}"]["get"]["responses"]["200"]["content"]["text/event-stream"]
        ["schema"];
    assert_eq!(stream["type"], "array", "one item per SSE frame");
    let event = resolve(&spec, &stream["items"]);
    let variants = event["oneOf"]
        .as_array()
        .expect("items are a oneOf of the events");
    let mut documented = BTreeSet::new();
    for variant in variants {
        let variant = resolve(&spec, variant);
        let name = variant["properties"]["event"]["const"]
            .as_str()
            .expect("each event names itself with a const");
        assert!(
            variant["properties"]["data"]["$ref"].is_string(),
            "{name} has a data schema"
        );
        assert_eq!(
            event["discriminator"]["mapping"][name].as_str(),
            variant_ref(variants, name, &spec),
            "the discriminator maps {name}"
        );
        documented.insert(name);
    }
    let code: BTreeSet<&str> = Event::NAMES.into_iter().collect();
    assert_eq!(documented, code);
}

/// A validator for one schema of `openapi.yaml`'s components, its `$ref`s resolved inside the
/// document (OpenAPI 3.1's schemas are JSON Schema 2020-12), formats such as `uuid` checked.
fn validator(spec: &Value, component: &str) -> jsonschema::Validator {
    let mut root = spec.clone();
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema".into();
    root["$ref"] = format!("#/components/schemas/{component}").into();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("openapi.yaml's {component} is a valid schema: {e}"))
}

/// The frames of a stream's text as `{"event", "id"?, "data"}`, the shape of `StreamEvent`.
fn frames(text: &str) -> Vec<Value> {
    // Only whole frames: what follows the last blank line may still be arriving.
    let whole = &text[..text.rfind("\n\n").map_or(0, |end| end + 2)];
    whole
        .split("\n\n")
        .filter(|frame| frame.contains("event: "))
        .map(|frame| {
            let mut item = serde_json::Map::new();
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    item.insert("event".into(), name.into());
                } else if let Some(id) = line.strip_prefix("id: ") {
                    item.insert("id".into(), id.parse::<u64>().expect("a numeric id").into());
                } else if let Some(line) = line.strip_prefix("data: ") {
                    data.push_str(line);
                }
            }
            let data: Value = serde_json::from_str(&data).expect("data is JSON");
            item.insert("data".into(), data);
            Value::Object(item)
        })
        .collect()
}

/// Every event the server sends, as it sends it, is valid against its schema in
/// `openapi.yaml`: a scene in which every kind of event happens (a tiny mailbox, so that one
/// stream resumes with `lagged`), each frame checked against `StreamEvent`.
#[tokio::test]
async fn every_event_the_server_sends_matches_its_openapi_schema() {
    let spec = openapi();
    let stream_event = validator(&spec, "StreamEvent");
    // Each event's own schema too, by the discriminator: its errors name the field.
    let mapping = spec["components"]["schemas"]["StreamEvent"]["discriminator"]["mapping"]
        .as_object()
        .expect("StreamEvent has a discriminator mapping");
    let variants: BTreeMap<&str, jsonschema::Validator> = mapping
        .iter()
        .map(|(name, reference)| {
            let component = reference.as_str().unwrap().rsplit('/').next().unwrap();
            (name.as_str(), validator(&spec, component))
        })
        .collect();
    let app = spawn_app(Config {
        mailbox_size: 2,
        api_key_file: Some(support::api_key_file()),
        ..Config::default()
    })
    .await;
    let bob = app.helo("bob").await;
    let alice = app.helo("alice").await; // bob's mailbox: new_user
    let mut alices =
        support::RawStream::new(app.events_response(&alice.id, &alice.token, None).await);
    alices.read_until(0, "event: ready").await;
    app.helo("carol").await; // alice's stream: new_user
    for n in 0..3 {
        app.broadcast_ok(&alice, json!({ "n": n })).await; // bob's mailbox overflows
    }
    let mut bobs = support::RawStream::new(app.events_response(&bob.id, &bob.token, None).await);
    bobs.read_until(0, "event: lagged").await;
    app.respond(&bob, &alice, json!("hello alice")).await;
    app.broadcast_ok(&bob, json!({ "text": "hi all" })).await;
    let publish = send(
        app.client
            .post(app.url("/api/publish"))
            .bearer_auth(support::TEST_API_KEY)
            .json(&json!({ "to": { "session": alice.id }, "message": { "text": "from the backend" } })),
    )
    .await;
    assert_eq!(publish.status(), 202);
    assert_eq!(app.delete(&bob.token).await.status(), 204);
    alices.read_until(0, "event: user_left").await;

    // Rooms: joined, a room above the presence limit counted, left.
    let rooms = spawn_app(Config {
        rooms: switchboard::RoomFlags {
            room_presence_limit: 1,
            ..switchboard::RoomFlags::default()
        },
        ..Config::default()
    })
    .await;
    let dora = rooms.helo("dora").await;
    let mut doras =
        support::RawStream::new(rooms.events_response(&dora.id, &dora.token, None).await);
    doras.read_until(0, "event: ready").await;
    let room = |method: &str, who: &support::Session| {
        let url = rooms.url("/session/rooms/dev");
        rooms
            .client
            .request(method.parse().unwrap(), url)
            .bearer_auth(who.token.clone())
    };
    assert_eq!(send(room("PUT", &dora)).await.status(), 200);
    doras.read_until(0, "event: joined").await;
    let eli = rooms.helo("eli").await;
    assert_eq!(send(room("PUT", &eli)).await.status(), 200);
    doras.read_until(0, "event: room_count").await;
    assert_eq!(send(room("DELETE", &dora)).await.status(), 204);
    doras.read_until(0, "event: left").await;

    // A lifetime: warned, then ended by --max-session-age.
    let aging = spawn_app(Config {
        sessions: switchboard::SessionFlags {
            max_session_age: Some(std::time::Duration::from_secs(2)),
        },
        ..Config::default()
    })
    .await;
    let finn = aging.helo("finn").await;
    let mut finns =
        support::RawStream::new(aging.events_response(&finn.id, &finn.token, None).await);
    let warned = finns.read_until(0, "event: refresh_required").await;
    let expired = finns.read_until(warned, "event: expired").await;
    finns.read_until(expired, "\n\n").await;

    let mut seen = BTreeSet::new();
    let every_frame = frames(&alices.text)
        .into_iter()
        .chain(frames(&bobs.text))
        .chain(frames(&doras.text))
        .chain(frames(&finns.text));
    for frame in every_frame {
        let name = frame["event"].as_str().unwrap();
        let variant = variants
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in openapi.yaml's StreamEvent"));
        let errors: Vec<String> = variant
            .iter_errors(&frame)
            .map(|e| format!("{e} (at {})", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{frame} does not match openapi.yaml: {errors:?}"
        );
        assert!(
            stream_event.is_valid(&frame),
            "{frame} is not one StreamEvent"
        );
        seen.insert(frame["event"].as_str().unwrap().to_owned());
    }
    let every: BTreeSet<String> = Event::NAMES.iter().map(|n| n.to_string()).collect();
    assert_eq!(seen, every, "the scene shows every kind of event");
}

/// The `$ref` of the `oneOf` variant whose `event` is `name`.
fn variant_ref<'a>(variants: &'a [Value], name: &str, spec: &Value) -> Option<&'a str> {
    variants
        .iter()
        .find(|v| resolve(spec, v)["properties"]["event"]["const"] == name)
        .and_then(|v| v["$ref"].as_str())
}

#[test]
fn openapi_has_a_default_error_and_a_relative_server() {
    let spec = openapi();
    assert_eq!(spec["servers"][0]["url"], "/");
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let default = resolve(&spec, &op["responses"]["default"]);
            assert_eq!(
                default["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/Error",
                "{method} {path} has a default error response"
            );
        }
    }
}

/// A flag as `switchboard --help` of the built binary states it: its default (`None` when it
/// has none) and its environment variable.
#[derive(Debug, PartialEq)]
struct Flag {
    default: Option<String>,
    env: Option<String>,
}

/// Every flag of the built binary, from its `--help`.
fn flags_of_the_binary() -> BTreeMap<String, Flag> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--help")
        .env_clear()
        .output()
        .expect("switchboard --help runs");
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8(output.stdout).unwrap();
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed
            .strip_prefix("--")
            .filter(|_| line.starts_with("  "))
        {
            let name = rest.split([' ', '=', '<']).next().unwrap().to_owned();
            if ["help", "version"].contains(&name.as_str()) {
                current = None;
                continue;
            }
            flags.insert(
                name.clone(),
                Flag {
                    default: None,
                    env: None,
                },
            );
            current = Some(name);
        } else if let Some(name) = &current {
            let flag = flags.get_mut(name).unwrap();
            if let Some(value) = trimmed.strip_prefix("[default: ") {
                flag.default = Some(value.trim_end_matches(']').to_owned());
            } else if let Some(value) = trimmed.strip_prefix("[env: ") {
                let var = value.split('=').next().unwrap();
                flag.env = Some(var.trim_end_matches(']').to_owned());
            }
        }
    }
    assert!(flags.len() > 20, "--help parsed: {flags:?}");
    flags
}

/// docs/operations.md's flag table: flag → its default cell.
fn documented_flags() -> BTreeMap<String, String> {
    let mut rows = BTreeMap::new();
    for row in OPERATIONS.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let name = cells[0].trim_start_matches("| `--").trim_end_matches('`');
        let duplicate = rows.insert(name.to_owned(), cells[1].trim().to_owned());
        assert!(duplicate.is_none(), "--{name} is in the table twice");
    }
    rows
}

/// The docs' flag table and the binary agree both ways: every flag of the binary is in the
/// table, every flag in the table is in the binary, and each default is the same (a flag
/// without a fixed default is described in words, never shown as a value).
#[test]
fn operations_flag_table_matches_the_binary_both_ways() {
    let code = flags_of_the_binary();
    let docs = documented_flags();
    let mut wrong = Vec::new();
    for (name, flag) in &code {
        let Some(cell) = docs.get(name) else {
            wrong.push(format!("--{name} is a flag but not in docs/operations.md"));
            continue;
        };
        let literal = cell
            .strip_prefix('`')
            .and_then(|c| c.strip_suffix('`'))
            .filter(|c| !c.contains('`'));
        match (&flag.default, literal) {
            (Some(default), Some(shown)) if default == shown => {}
            (None, None) => {}
            (default, _) => wrong.push(format!(
                "--{name}: the binary's default is {default:?}, the docs say {cell}"
            )),
        }
        // The variable follows the rule the docs state, or the docs name it.
        let env = flag.env.as_deref().unwrap_or("none");
        let ruled = format!("SWITCHBOARD_{}", name.to_uppercase().replace('-', "_"));
        if env != ruled && !OPERATIONS.contains(env) {
            wrong.push(format!(
                "--{name}: its variable {env} is not in docs/operations.md"
            ));
        }
    }
    for name in docs.keys().filter(|n| !code.contains_key(*n)) {
        wrong.push(format!("--{name} is in docs/operations.md but not a flag"));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every flag a doc mentions in running text (`--name ...`) exists.
#[test]
fn docs_mention_only_flags_that_exist() {
    let code = flags_of_the_binary();
    for (file, text) in [
        ("README.md", README),
        ("docs/operations.md", OPERATIONS),
        ("docs/api.md", API),
    ] {
        let prose: String = text.split("```").step_by(2).collect();
        for span in prose.split('`').skip(1).step_by(2) {
            let Some(rest) = span.strip_prefix("--") else {
                continue;
            };
            let name = rest.split([' ', '=']).next().unwrap();
            assert!(
                code.contains_key(name),
                "{file} mentions --{name}, which is no flag"
            );
        }
    }
}

#[test]
fn readme_documents_every_event() {
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
fn error_table_lists_exactly_the_error_codes() {
    use switchboard::ErrorCode;

    let section = API
        .split("\n## Errors")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/api.md has an Errors section");
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
        "docs/api.md's error table and ErrorCode differ"
    );
}

/// The README's Rust example is a whole program, compiled with the tests as the client
/// crate's example `hello`.
#[test]
fn readme_rust_example_is_the_compiled_example() {
    let readme = README
        .split("```rust\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README has a Rust example");
    let example = include_str!("../crates/switchboard-client/examples/hello.rs");
    let code = example
        .split_once("\n\n")
        .map(|(_, code)| code)
        .expect("the example's doc, then its code");
    assert_eq!(
        readme, code,
        "README's Rust example and examples/hello.rs differ"
    );
}

/// The README stays a ten-minute read; the rest lives in docs/.
#[test]
fn readme_is_at_most_300_lines() {
    let lines = README.lines().count();
    assert!(lines <= 300, "README.md has {lines} lines");
}

/// The cluster recipe's instances trust the nginx in front of them, and only for the header
/// that nginx sets itself: otherwise every user would count as nginx's one address.
#[test]
fn cluster_recipe_trusts_its_proxy() {
    let recipe = OPERATIONS
        .split("\n## Running several instances\n")
        .nth(1)
        .and_then(|section| section.split("```sh\n").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("docs/operations.md has the cluster recipe");
    let instances: Vec<&str> = recipe
        .split("./target/release/switchboard ")
        .skip(1)
        .map(|command| command.split('&').next().unwrap())
        .collect();
    assert_eq!(instances.len(), 2, "{recipe}");
    let nginx = include_str!("../docs/cluster/nginx.conf");
    for command in instances {
        let listen = command.split_whitespace().nth(1).expect("--listen ADDRESS");
        assert!(
            nginx.contains(&format!("server {listen};")),
            "nginx forwards to {listen}"
        );
        // nginx reaches a loopback upstream from 127.0.0.1.
        assert!(listen.starts_with("127.0.0.1:"), "{command}");
        assert!(command.contains("--trusted-proxies 127.0.0.1"), "{command}");
    }
    assert!(nginx.contains("proxy_set_header X-Forwarded-For $remote_addr;"));
}

/// Every relative link of the Markdown docs points at a file that exists, and every `#anchor`
/// at a heading of that file (as GitHub names them).
#[test]
fn markdown_links_resolve() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = [
        "README.md",
        "BENCHMARKS.md",
        "docs/operations.md",
        "docs/api.md",
        "docs/ARCHITECTURE.md",
        "bench/results/HISTORY.md",
    ];
    let anchors = |path: &std::path::Path| -> BTreeSet<String> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix('#'))
            .map(|heading| {
                heading
                    .trim_start_matches('#')
                    .trim()
                    .to_lowercase()
                    .chars()
                    .filter(|c| c.is_alphanumeric() || [' ', '-', '_'].contains(c))
                    .map(|c| if c == ' ' { '-' } else { c })
                    .collect()
            })
            .collect()
    };
    let mut broken = Vec::new();
    for doc in docs {
        let path = root.join(doc);
        let text = std::fs::read_to_string(&path).unwrap();
        let prose: String = text.split("```").step_by(2).collect();
        for link in prose.split("](").skip(1) {
            let target = link.split(')').next().unwrap();
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let file = if file.is_empty() {
                path.clone()
            } else {
                path.parent().unwrap().join(file)
            };
            if !file.exists() {
                broken.push(format!("{doc}: {target} (no such file)"));
            } else if !anchor.is_empty() && !anchors(&file).contains(anchor) {
                broken.push(format!("{doc}: {target} (no such heading)"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
