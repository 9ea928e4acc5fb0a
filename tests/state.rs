//! `--state-file` on the real binary: a graceful restart keeps sessions, tokens and event ids;
//! a file that cannot be used stops the start with a message; without the flag nothing is
//! written.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::json;
use support::{Instance, POLL, Session, SessionExt, SseEvent, SseReader, WAIT};

/// A fresh empty directory under the system's temporary one, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("switchboard-state-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).expect("creating a temporary directory");
        TempDir(dir)
    }

    fn entries(&self) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the binary with `args` and returns its output once it exits (bounded by [`WAIT`]).
fn run_to_exit(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting switchboard");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("polling").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("switchboard {args:?} still running after {WAIT:?}");
        }
        std::thread::sleep(POLL);
    }
    child.wait_with_output().expect("reading its output")
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

#[tokio::test]
async fn a_graceful_restart_keeps_tokens_and_replays_missed_events_with_their_ids() {
    let dir = TempDir::new();
    let state = dir.0.join("state.json");
    let args = ["--state-file", path_arg(&state)];
    let mut before = Instance::start("before", &args).await;
    let ann = before.helo("ann").await;
    let mut stream = before.attach_ready(&ann).await;
    let bob = before.helo("bob").await;
    stream.expect_new_user(&bob).await;
    let seen = before.respond(&bob, &ann, json!("one")).await;
    stream
        .expect_response(seen, &bob, &ann, &json!("one"))
        .await;
    // Sent before the restart, never read by ann.
    let two = before.respond(&bob, &ann, json!("two")).await;
    let three = before.respond(&bob, &ann, json!("three")).await;

    assert!(before.terminate().await.success(), "a clean exit");
    // Whatever the old stream still held unread, it ends.
    stream.until_end().await;
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).expect("the state file was written"))
            .expect("the state file is JSON");
    assert_eq!(saved["version"], 1);
    assert_eq!(saved["sessions"].as_array().unwrap().len(), 2);
    let text = saved.to_string();
    assert!(
        !text.contains(&ann.token) && !text.contains(&bob.token),
        "tokens are stored as hashes only"
    );

    let after = Instance::start("after", &args).await;
    assert!(!state.exists(), "the file is consumed at start");
    assert_eq!(
        after.client_ids().await,
        [ann.id.clone(), bob.id.clone()].into()
    );
    let mut resumed = after.attach(&ann, Some(seen)).await;
    let ready = resumed.ready().await;
    assert_eq!(ready["id"], ann.id.as_str());
    resumed
        .expect_response(two, &bob, &ann, &json!("two"))
        .await;
    resumed
        .expect_response(three, &bob, &ann, &json!("three"))
        .await;
    // bob's token still works, and ids continue where they were.
    let four = after.respond(&bob, &ann, json!("four")).await;
    assert_eq!(four, three + 1);
    resumed
        .expect_response(four, &bob, &ann, &json!("four"))
        .await;
    // Nothing more came between: a later message is the next event.
    let five = after.respond(&bob, &ann, json!("five")).await;
    resumed
        .expect_response(five, &bob, &ann, &json!("five"))
        .await;
}

/// A new single-use stream ticket for `session` (`POST /session/ticket` with its token).
async fn ticket(server: &Instance, session: &Session) -> String {
    let response = support::send(
        server
            .client
            .post(server.url("/session/ticket"))
            .bearer_auth(&session.token),
    )
    .await;
    assert_eq!(response.status(), 201, "a ticket for {}", session.name);
    let body = support::body_json(response).await;
    body["ticket"].as_str().expect("a ticket").to_owned()
}

/// `session`'s stream opened with a new ticket and no other credential, as an `EventSource`
/// on another origin opens it, resuming after `last` (its `Last-Event-ID`).
async fn ticket_stream(server: &Instance, session: &Session, last: Option<u64>) -> SseReader {
    let ticket = ticket(server, session).await;
    let url = server.url(&format!("/events/{}?ticket={ticket}", session.id));
    let mut request = server.client.get(url);
    if let Some(last) = last {
        request = request.header("Last-Event-ID", last.to_string());
    }
    let response = support::send(request).await;
    assert_eq!(response.status(), 200, "{}'s ticket stream", session.name);
    let mut stream = SseReader::new(response).await;
    stream.ready().await;
    stream
}

/// The `client_response` frames among `frames`, as (event id, message).
fn responses(frames: &[SseEvent]) -> Vec<(u64, String)> {
    let responses = frames.iter().filter(|f| f.event == "client_response");
    let pair = |f: &SseEvent| {
        (
            f.id.unwrap(),
            f.data["message"].as_str().unwrap().to_owned(),
        )
    };
    responses.map(pair).collect()
}

#[tokio::test]
async fn a_ticket_stream_resumes_across_a_restart_with_nothing_lost_or_twice() {
    let dir = TempDir::new();
    let state = dir.0.join("state.json");
    // No `?token=`: tickets are the only credential a URL may carry.
    let args = ["--state-file", path_arg(&state), "--url-tokens", "off"];
    let mut before = Instance::start("before", &args).await;
    let ann = before.helo("ann").await;
    let bob = before.helo("bob").await;
    let mut stream = ticket_stream(&before, &ann, None).await;
    let mut sent = Vec::new();
    for text in ["one", "two", "three"] {
        sent.push((
            before.respond(&bob, &ann, json!(text)).await,
            text.to_owned(),
        ));
    }
    // The first is read (after bob's `new_user`); the others are read before the stream
    // ends, or left to the replay.
    let mut read = Vec::new();
    while responses(&read).is_empty() {
        read.push(stream.next().await);
    }
    assert!(before.terminate().await.success(), "a clean exit");
    read.extend(stream.until_end().await);
    let mut read = responses(&read);
    let last = read.last().map(|&(id, _)| id);

    let after = Instance::start("after", &args).await;
    // Tickets live in the process that issued them: a new one, from the kept token.
    let mut resumed = ticket_stream(&after, &ann, last).await;
    for text in ["four", "five"] {
        sent.push((
            after.respond(&bob, &ann, json!(text)).await,
            text.to_owned(),
        ));
    }
    let final_id = sent.last().unwrap().0;
    while read.last().map(|&(id, _)| id) != Some(final_id) {
        read.extend(responses(&[resumed.next().await]));
    }
    assert_eq!(read, sent, "every message once, in order, with its id");
}

#[tokio::test]
async fn a_restart_keeps_each_sessions_rooms() {
    let dir = TempDir::new();
    let state = dir.0.join("state.json");
    let args = ["--state-file", path_arg(&state)];
    let mut before = Instance::start("before", &args).await;
    let ann = before.helo_in("ann", json!(["dev"])).await;
    let bob = before.helo_in("bob", json!(["dev", "ops"])).await;
    before.join_room(&ann, "ops").await;
    let response = before
        .room_request(reqwest::Method::DELETE, &ann, "dev")
        .await;
    assert_eq!(response.status(), 204);
    assert!(before.terminate().await.success(), "a clean exit");

    let after = Instance::start("after", &args).await;
    let mut stream = after.attach(&ann, None).await;
    let ready = stream.ready().await;
    assert_eq!(ready["rooms"], json!({"ops": [bob.peer()]}));
    let body = json!({"room": "ops", "message": "back"}).to_string();
    let response = after.post_raw("/broadcast", Some(&bob.token), &body).await;
    assert_eq!(response.status(), 202);
    // What waited in the mailbox first: bob's join, then ann's own joined and left.
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(stream.next().await.event);
    }
    assert_eq!(seen, ["new_user", "joined", "left", "client_broadcast"]);
}

#[tokio::test]
async fn a_restart_keeps_a_join_tokens_user_and_broadcast_permission() {
    use support::jwt::{SECRET, claims, hs256, join, secret_file, with};

    let dir = TempDir::new();
    let state = dir.0.join("state.json");
    let secret = secret_file(&dir.0);
    let args = [
        "--state-file",
        path_arg(&state),
        "--auth",
        "jwt",
        "--jwt-secret-file",
        path_arg(&secret),
    ];
    let mut before = Instance::start("before", &args).await;
    let muted = with(claims("quiet"), json!({ "broadcast": false }));
    let quiet = join(&before, &hs256(SECRET, &muted)).await;
    let loud = join(&before, &hs256(SECRET, &claims("loud"))).await;
    assert!(before.terminate().await.success(), "a clean exit");

    let after = Instance::start("after", &args).await;
    let list = support::body_json(after.get_as_backend("/clients").await).await;
    let mut users: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|peer| {
            (
                peer["name"].as_str().unwrap(),
                peer["user"].as_str().unwrap(),
            )
        })
        .collect();
    users.sort_unstable();
    assert_eq!(users, [("loud", "user-loud"), ("quiet", "user-quiet")]);
    support::assert_error(
        after.broadcast(&quiet, "hello all").await,
        reqwest::StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(after.broadcast_ok(&loud, "hello all").await, 1);
}

#[tokio::test]
async fn a_wrong_token_is_still_refused_after_a_restart() {
    let dir = TempDir::new();
    let state = dir.0.join("state.json");
    let args = ["--state-file", path_arg(&state)];
    let mut before = Instance::start("before", &args).await;
    let ann = before.helo("ann").await;
    let bob = before.helo("bob").await;
    assert!(before.terminate().await.success());

    let after = Instance::start("after", &args).await;
    let refused = after.events_response(&ann.id, &bob.token, None).await;
    assert_eq!(refused.status(), 401);
    let ok = after.events_response(&ann.id, &ann.token, None).await;
    assert_eq!(ok.status(), 200);
}

#[test]
fn an_unreadable_state_file_stops_the_start_with_a_message() {
    let dir = TempDir::new();
    let state = dir.0.join("state.json");
    for (content, expected) in [
        ("not json at all", "is not a switchboard state file"),
        (
            r#"{"version": 99, "saved_at": 0, "sessions": []}"#,
            "has version 99",
        ),
        (
            r#"{"version": 1, "sessions": "nope"}"#,
            "is not a switchboard state file",
        ),
    ] {
        std::fs::write(&state, content).unwrap();
        let output = run_to_exit(&["--state-file", path_arg(&state)]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{content}: {stderr}");
        assert!(
            stderr.contains(expected) && stderr.contains(path_arg(&state)),
            "{content}: {stderr}"
        );
        assert_eq!(
            std::fs::read_to_string(&state).unwrap(),
            content,
            "a refused file is left as it was"
        );
    }
}

#[test]
fn a_state_file_is_refused_in_cluster_mode() {
    let output = run_to_exit(&[
        "--state-file",
        "state.json",
        "--redis-url",
        "redis://127.0.0.1:1/",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--state-file") && stderr.contains("--redis-url"),
        "{stderr}"
    );
}

#[tokio::test]
async fn without_the_flag_nothing_is_written() {
    let dir = TempDir::new();
    let mut server = Instance::start_in("memory", &dir.0, &[]).await;
    let ann = server.helo("ann").await;
    let _stream = server.attach_ready(&ann).await;
    assert!(server.terminate().await.success());
    assert!(dir.entries().is_empty(), "wrote {:?}", dir.entries());
}

#[tokio::test]
async fn a_first_start_with_a_state_file_starts_empty_and_writes_it_at_the_end() {
    let dir = TempDir::new();
    let state = dir.0.join("state.json");
    let mut server = Instance::start("first", &["--state-file", path_arg(&state)]).await;
    assert!(server.client_ids().await.is_empty());
    assert!(server.terminate().await.success());
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(saved["sessions"], json!([]));
    assert_eq!(dir.entries(), ["state.json"], "no temporary file left");
}

/// The permission bits of `path` (not following a link).
#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn the_state_file_is_private_and_a_link_planted_at_its_temporary_name_is_not_followed() {
    let dir = TempDir::new();
    let state = dir.0.join("state.json");
    let victim = dir.0.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let mut temporary = state.clone().into_os_string();
    temporary.push(".tmp");
    std::os::unix::fs::symlink(&victim, &temporary).unwrap();

    let mut server = Instance::start("private", &["--state-file", path_arg(&state)]).await;
    let _ann = server.helo("ann").await;
    assert!(server.terminate().await.success());

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let written = std::fs::symlink_metadata(&state).unwrap();
    assert!(written.file_type().is_file(), "{:?}", written.file_type());
    assert_eq!(mode(&state), 0o600);
    let mut entries = dir.entries();
    entries.sort_unstable();
    assert_eq!(
        entries,
        ["state.json", "victim"],
        "the planted link is gone"
    );
}

#[cfg(unix)]
#[test]
fn a_state_file_readable_by_others_is_tightened_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;

    let dir = TempDir::new();
    let state = dir.0.join("state.json");
    // Unusable, so the start stops and leaves it in place to look at.
    std::fs::write(&state, r#"{"version": 99}"#).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = run_to_exit(&["--state-file", path_arg(&state)]);
    assert!(!output.status.success());
    assert_eq!(mode(&state), 0o600);
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(
        log.contains("WARN") && log.contains("readable by others") && log.contains("644"),
        "{log}"
    );
}

#[tokio::test]
async fn a_restart_keeps_each_sessions_end() {
    let dir = TempDir::new();
    let state = dir.0.join("state.json");
    let args = ["--state-file", path_arg(&state), "--max-session-age", "4s"];
    let mut before = Instance::start("before", &args).await;
    let ann = before.helo("ann").await;
    assert!(before.terminate().await.success(), "a clean exit");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).expect("the state file was written"))
            .expect("the state file is JSON");
    let lifetime = &saved["sessions"][0]["snapshot"]["lifetime"];
    assert_eq!(lifetime["bound"], "max_session_age", "{saved}");

    // Started again with no age limit: only the kept end can end it.
    let after = Instance::start("after", &["--state-file", path_arg(&state)]).await;
    let mut stream = after.attach_ready(&ann).await;
    stream.next_named("refresh_required").await;
    let expired = stream.next_named("expired").await;
    assert_eq!(expired.data, json!({ "reason": "max_session_age" }));
    stream.expect_end().await;
}
