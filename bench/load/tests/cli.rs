//! `switchboard-load` run for real against a small SSE server in this test (an nchan stand-in:
//! `GET /sub/{channel}` holds an event stream, `POST /pub/{channel}` sends the body to the
//! channel's streams), on loopback: its progress line appears on a terminal only, and the rooms
//! mode steps through its rates, and fanout runs `--phase-cmd` and sums several `--server-pid`s.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Channels = Arc<Mutex<HashMap<String, Vec<TcpStream>>>>;

/// Starts the stand-in server on an ephemeral loopback port; it lives as long as the test.
fn fake_nchan() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let chans: Channels = Arc::default();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let chans = chans.clone();
            std::thread::spawn(move || serve(conn, &chans));
        }
    });
    port
}

/// One connection: requests until it closes or becomes a stream.
fn serve(conn: TcpStream, chans: &Channels) {
    let mut r = BufReader::new(conn.try_clone().expect("clone"));
    let mut w = conn;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let mut len = 0;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let channel = path.rsplit('/').next().unwrap_or("").to_string();
        match method {
            "GET" => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
                if w.write_all(head.as_bytes()).is_ok() {
                    chans
                        .lock()
                        .expect("lock")
                        .entry(channel)
                        .or_default()
                        .push(w);
                }
                return;
            }
            _ => {
                let event = format!("data: {}\n\n", String::from_utf8_lossy(&body));
                let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                let mut map = chans.lock().expect("lock");
                for s in map.entry(channel).or_default() {
                    let _ = s.write_all(chunk.as_bytes());
                }
                drop(map);
                let ok = "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
                if w.write_all(ok.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}

fn load(port: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchboard-load"));
    c.args([
        "--target",
        "nchan",
        "--sub-url",
        &format!("http://127.0.0.1:{port}/sub/{{channel}}"),
        "--pub-url",
        &format!("http://127.0.0.1:{port}/pub/{{channel}}"),
        "--max-secs",
        "60",
    ]);
    c
}

const FANOUT: [&str; 7] = [
    "fanout",
    "--streams",
    "20",
    "--broadcasts",
    "8",
    "--rate",
    "10",
];

/// Runs `cmd` with stderr on a new pseudo-terminal; returns (success, what the terminal got).
fn on_terminal(mut cmd: Command) -> (bool, String) {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::from(pty.slave))
        .spawn()
        .expect("spawn");
    // Our copy of the terminal's other end went to the child: reading ends when it exits.
    drop(cmd);
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(pty.master);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    let ok = wait(&mut child);
    (ok, reader.join().expect("reader"))
}

/// Waits (at most 90 s) for the child; true when it exited 0.
fn wait(child: &mut std::process::Child) -> bool {
    for _ in 0..900 {
        if let Some(s) = child.try_wait().expect("wait") {
            return s.success();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("switchboard-load did not finish within 90 s");
}

#[test]
fn progress_is_drawn_on_a_terminal_only() {
    let port = fake_nchan();

    // stderr a pipe (a log file, CI): the run's notes, but no progress line.
    let out = load(port).args(FANOUT).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed: {err}");
    assert!(
        !err.contains('\r') && !err.contains("\x1b["),
        "progress on a pipe: {err:?}"
    );
    assert!(!err.contains("sent "), "progress on a pipe: {err:?}");
    assert!(err.contains("20/20 streams attached"), "{err:?}");

    // A terminal: the line is redrawn in place and says what is going on.
    let (ok, tty) = on_terminal({
        let mut c = load(port);
        c.args(FANOUT);
        c
    });
    assert!(ok, "run on a terminal failed: {tty}");
    assert!(
        tty.contains("\r\x1b[K[fanout] 20 streams, sent "),
        "{tty:?}"
    );
    assert!(tty.contains("s left"), "{tty:?}");

    // --quiet on a terminal: nothing at all.
    let (ok, quiet) = on_terminal({
        let mut c = load(port);
        c.arg("--quiet").args(FANOUT);
        c
    });
    assert!(ok, "quiet run failed: {quiet}");
    assert!(quiet.trim().is_empty(), "--quiet printed {quiet:?}");
}

#[test]
fn rooms_mode_steps_through_its_rates_per_channel() {
    let port = fake_nchan();
    let out = load(port)
        .args([
            "--json",
            "rooms",
            "--rooms",
            "6",
            "--room-size",
            "3",
            "--rates",
            "20,40",
            "--step-secs",
            "1",
        ])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rooms run failed: {err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    let steps = v["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{v}");
    for s in steps {
        assert_eq!(s["ok"], true, "{s}");
        assert_eq!(s["lost"], 0, "{s}");
        // Every broadcast reached its room's 3 streams, and only those.
        assert_eq!(
            s["expected"].as_u64(),
            s["broadcasts"].as_u64().map(|b| b * 3),
            "{s}"
        );
        assert_eq!(s["received"], s["expected"], "{s}");
    }
    let max = v["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .find(|m| m["name"] == "max_rate_per_s")
        .expect("max_rate_per_s");
    assert_eq!(max["value"], 40.0);
}

#[test]
fn fanout_runs_the_phase_command_around_the_broadcasts_and_sums_several_servers() {
    let port = fake_nchan();
    let dir = std::env::temp_dir().join(format!("load-phases-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let log = dir.join("phases");
    // Two stand-ins for a cluster's instances: their memory is summed.
    let mut sleepers: Vec<_> = (0..2)
        .map(|_| Command::new("sleep").arg("60").spawn().expect("sleep"))
        .collect();
    let pids: Vec<String> = sleepers.iter().map(|c| c.id().to_string()).collect();
    let one_kb = |pid: &str| -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS");
        line.split_whitespace()
            .nth(1)
            .expect("kB")
            .parse()
            .expect("number")
    };
    let out = load(port)
        .arg("--phase-cmd")
        .arg(format!("echo >>{} ", log.display()))
        .args(["--server-pid", &pids.join(","), "--json"])
        .args(FANOUT)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fanout failed: {err}");
    let phases = std::fs::read_to_string(&log).expect("the phase command ran");
    assert_eq!(
        phases.split_whitespace().collect::<Vec<_>>(),
        ["attached", "drained"]
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    let metric = |name: &str| {
        v["metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .find(|m| m["name"] == name)
            .and_then(|m| m["value"].as_f64())
            .unwrap_or_else(|| panic!("no {name} in {v}"))
    };
    let both = one_kb(&pids[0]) + one_kb(&pids[1]);
    let rss = metric("server_rss_kb");
    assert!(
        rss > one_kb(&pids[0]) && (rss - both).abs() <= both * 0.5,
        "{rss} vs {both}"
    );
    assert_eq!(metric("lost"), 0.0);
    for s in &mut sleepers {
        let _ = s.kill();
        let _ = s.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
