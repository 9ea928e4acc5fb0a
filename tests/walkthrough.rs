//! The README's curl walkthrough, run as written against the real binary: its three terminals'
//! commands in bash (with `jq`), and every line it says they print.

#[path = "support/mod.rs"]
mod support;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use support::{Instance, POLL, WAIT};

const README: &str = include_str!("../README.md");

/// The walkthrough's fenced blocks, in order, as (language, text).
fn blocks() -> Vec<(&'static str, &'static str)> {
    let section = README
        .split("## Walkthrough with curl")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has the walkthrough");
    section
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|block| block.split_once('\n').expect("a fenced block"))
        .collect()
}

/// A command whose output is collected as it arrives.
struct Terminal {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Terminal {
    fn open(script: &str, dir: &std::path::Path) -> Terminal {
        let mut child = Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(dir)
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
        let _ = self.child.kill();
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
    assert_eq!(scripts.len(), 3, "three terminals");
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

    let commands = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &local(scripts[2])])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(commands.status.success(), "{commands:?}");
    assert_eq!(String::from_utf8(commands.stdout).unwrap(), outputs[0]);

    let ids = |text: &str| {
        text.replace("<alice-id>", &field(&dir, "alice.json", "id"))
            .replace("<bob-id>", &field(&dir, "bob.json", "id"))
    };
    alice.wait_for("event: user_left").await;
    alice.wait_for("\"name\":\"bob\"}\n\n").await;
    assert_eq!(alice.text(), ids(outputs[1]));
    // Bob's stream ends on its own when he leaves.
    let mut bob = bob;
    let deadline = Instant::now() + WAIT;
    while bob.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "Bob's stream still open");
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(bob.text(), ids(outputs[2]));

    std::fs::remove_dir_all(&dir).ok();
}
