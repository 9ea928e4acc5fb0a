//! The README's recipes, run as written against the real binary: the curl walkthrough's three
//! terminals in bash (with `jq`) and every line it says they print, then the recipes that start
//! servers of their own (access control, server API), pasted in order into one shell.
//!
//! Every `curl` runs with a `--max-time` (a shell function put before each script), and every
//! script is bounded as a whole.

#[path = "support/mod.rs"]
mod support;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Instance, POLL, WAIT};

const README: &str = include_str!("../README.md");

/// Put before every script: no `curl` may wait longer than this, however the README calls it
/// (a later `--max-time` of the README's own still wins).
const CURL_BOUND: &str = "curl() { command curl --max-time 60 \"$@\"; }\n";

/// The longest a whole script may run.
const SCRIPT_BOUND: Duration = Duration::from_secs(90);

/// The fenced blocks of the README's section `heading`, in order, as (language, text).
fn blocks_of(heading: &str) -> Vec<(&'static str, &'static str)> {
    let section = README
        .split(&format!("\n{heading}\n"))
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or_else(|| panic!("README has a section {heading:?}"));
    section
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|block| block.split_once('\n').expect("a fenced block"))
        .collect()
}

/// The walkthrough's fenced blocks, in order, as (language, text).
fn blocks() -> Vec<(&'static str, &'static str)> {
    blocks_of("## Walkthrough with curl")
}

/// A command whose output is collected as it arrives.
struct Terminal {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Terminal {
    fn open(script: &str, dir: &std::path::Path) -> Terminal {
        let mut child = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &format!("{CURL_BOUND}{script}")])
            .current_dir(dir)
            // A group of its own, so that what it started in the background ends with it.
            .process_group(0)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("bash runs");
        let output = Arc::new(Mutex::new(String::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Terminal { child, output }
    }

    fn text(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for the script to end by itself, within [`SCRIPT_BOUND`]; its exit status.
    async fn finish(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + SCRIPT_BOUND;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {SCRIPT_BOUND:?}:\n{}",
                self.text()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the output contains `needle`.
    async fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in:\n{}",
                self.text()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // The whole group: bash and whatever it left running in the background.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

fn field(dir: &std::path::Path, file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value[key].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_readme_walkthrough_prints_what_it_says() {
    let blocks = blocks();
    let scripts: Vec<&str> = blocks
        .iter()
        .filter(|(lang, _)| *lang == "sh")
        .map(|(_, text)| *text)
        .collect();
    let outputs: Vec<&str> = blocks
        .iter()
        .filter(|(lang, _)| *lang == "text")
        .map(|(_, text)| *text)
        .collect();
    assert_eq!(scripts.len(), 4, "three terminals, then rooms in the third");
    assert!(scripts[0].starts_with("# Terminal 1"));
    assert_eq!(outputs.len(), 3, "terminal 3's answers and both streams");

    // The real binary on an ephemeral port, with no heartbeat inside the test's time.
    let server = Instance::start("walkthrough", &["--heartbeat", "1h"]).await;
    let local = |script: &str| script.replace("localhost:4000", server.authority());

    let dir = std::env::temp_dir().join(format!("switchboard-walkthrough-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let alice = Terminal::open(&local(scripts[0]), &dir);
    alice.wait_for("event: ready").await;
    let bob = Terminal::open(&local(scripts[1]), &dir);
    bob.wait_for("event: ready").await;
    alice.wait_for("event: new_user").await;

    let mut commands = Terminal::open(&local(scripts[2]), &dir);
    let status = commands.finish().await;
    assert!(status.success(), "{status}: {}", commands.text());
    assert_eq!(commands.text(), outputs[0]);

    let ids = |text: &str| {
        text.replace("<alice-id>", &field(&dir, "alice.json", "id"))
            .replace("<bob-id>", &field(&dir, "bob.json", "id"))
    };
    alice.wait_for("event: user_left").await;
    alice
        .wait_for("\"name\":\"bob\",\"room\":\"lobby\"}\n\n")
        .await;
    assert_eq!(alice.text(), ids(outputs[1]));
    // Bob's stream ends on its own when he leaves.
    let mut bob = bob;
    let deadline = Instant::now() + WAIT;
    while bob.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "Bob's stream still open");
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(bob.text(), ids(outputs[2]));

    // Rooms: what the README says the fourth script prints, and what Alice's stream gets.
    let mut rooms = Terminal::open(&local(scripts[3]), &dir);
    let status = rooms.finish().await;
    assert!(status.success(), "{status}: {}", rooms.text());
    let said = "It prints `{\"room\":\"dev\",\"members\":2}` and `{\"recipients\":1}`";
    assert!(README.contains(said));
    assert_eq!(
        rooms.text(),
        "{\"room\":\"dev\",\"members\":2}\n{\"recipients\":1}"
    );
    alice.wait_for("\"message\":\"standup\"}\n\n").await;
    let carol = field(&dir, "carol.json", "id");
    let added = alice.text()[ids(outputs[1]).len()..].to_owned();
    let joined = format!(
        "id: 4\nevent: joined\n\
         data: {{\"room\":\"dev\",\"clients\":[{{\"id\":\"{carol}\",\"name\":\"carol\"}}],\"members\":2}}\n\n"
    );
    let broadcast = format!(
        "id: 5\nevent: client_broadcast\n\
         data: {{\"from\":\"{carol}\",\"from_name\":\"carol\",\"room\":\"dev\",\"message\":\"standup\"}}\n\n"
    );
    assert_eq!(added, format!("{joined}{broadcast}"));

    std::fs::remove_dir_all(&dir).ok();
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_readme_recipes_run_as_pasted_in_order() {
    let scripts: Vec<&str> = ["## Access control", "## Server API"]
        .into_iter()
        .flat_map(blocks_of)
        .filter(|(lang, _)| *lang == "sh")
        .map(|(_, text)| text)
        .collect();
    assert_eq!(scripts.len(), 2, "the JWT recipe and the server API's");
    // As pasted into one shell, one after the other; `cargo run --release --` is the binary
    // the tests built, started a second late as cargo would (so a recipe that does not wait
    // for its server fails), and the README's ports are free ones.
    let mut pasted = scripts.concat();
    // The first command's server still holds port 4000 while these run.
    assert!(
        !pasted.contains("4000"),
        "a recipe uses the first server's port"
    );
    for port in ["4100", "4200"] {
        assert!(
            pasted.contains(&format!("localhost:{port}")),
            "a server on {port}"
        );
        pasted = pasted.replace(port, &free_port().to_string());
    }
    let script = format!(
        "trap 'kill $(jobs -p) 2>/dev/null' EXIT\n\
         cargo() {{ [ \"$1 $2 $3\" = 'run --release --' ] || return 99; shift 3; sleep 1; exec {} \"$@\"; }}\n\
         {pasted}",
        env!("CARGO_BIN_EXE_switchboard")
    );
    let dir = std::env::temp_dir().join(format!("switchboard-recipes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut shell = Terminal::open(&script, &dir);
    let status = shell.finish().await;
    let output = shell.text();
    assert!(status.success(), "{status}: {output}");

    // What the README says they print (between the servers' log lines).
    let lines: Vec<&str> = output.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(lines.len(), 2, "{output}");
    let joined: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(joined["name"], "Ada", "{output}");
    assert!(
        joined["id"].is_string() && joined["token"].is_string(),
        "{output}"
    );
    assert_eq!(joined["rooms"], serde_json::json!(["lobby"]), "{output}");
    assert!(README.contains(
        "It prints `{\"id\":\"…\",\"token\":\"…\",\"name\":\"Ada\",\"rooms\":[\"lobby\"]}`"
    ));
    assert_eq!(lines[1], r#"{"recipients":0,"refused":0}"#);
    assert!(README.contains(&format!("It prints `{}`", lines[1])));
    // Nothing was written where the recipes ran.
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "files left in the checkout"
    );
    std::fs::remove_dir_all(&dir).ok();
}
