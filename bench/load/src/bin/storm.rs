//! `switchboard-storm`: a reconnect storm after a deploy, timed (driven by `bench/storm.sh`).
//!
//! Each of `--clients` clients registers (`POST /helo`) on one of `--instances`, spread as a
//! balancer would (round robin), in rooms of `--room-size` (so each `ready` carries a roster),
//! and attaches its stream at once, read up to `ready`. Once all are attached it writes `--ready-file` and waits: the script
//! then stops or restarts an instance, whose streams end. Each client whose stream ended
//! reconnects at once with the same token to the next instance (after `--retry-ms` when
//! refused), as an `EventSource` behind a balancer would. When every client is attached again
//! and no stream ended for `--quiet` seconds, it prints one JSON line: how many streams
//! ended, how long until the last was back (from the first end), and each one's time to
//! reconnect (p50, p99, max). Loopback only; one process (the open-file cap is ~20,000).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "A reconnect storm after a deploy: how long until every client is back")]
struct Cli {
    /// The instances (loopback `host:port`), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    instances: Vec<SocketAddr>,
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Members per room; each client is in one room.
    #[arg(long, default_value_t = 10)]
    room_size: usize,
    /// Helo calls and first attaches at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Pause after a refused attach before trying the next instance.
    #[arg(long, default_value_t = 200)]
    retry_ms: u64,
    /// Written once every client is attached: the signal to start the deploy.
    #[arg(long)]
    ready_file: PathBuf,
    /// Seconds with every client attached and no stream ended that end the run.
    #[arg(long, default_value_t = 3)]
    quiet: u64,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, default_value_t = 900)]
    max_secs: u64,
}

/// Tries of a helo before a client gives up.
const HELO_TRIES: u32 = 20;

/// What the clients report, shared.
#[derive(Default)]
struct Tally {
    attached: AtomicUsize,
    ended: AtomicUsize,
    refused: AtomicUsize,
    /// Sessions gone on a reattach (401, 404): lost by the deploy.
    lost: AtomicUsize,
    /// Clients whose helo failed every try.
    unregistered: AtomicUsize,
    /// When the first stream ended and the last came back, and each one's time to come back.
    storm: Mutex<Storm>,
}

#[derive(Default)]
struct Storm {
    first_end: Option<Instant>,
    last_end: Option<Instant>,
    last_back: Option<Instant>,
    back_after: Vec<Duration>,
}

/// One HTTP/1.1 exchange's head: status, `Content-Length` if any, and the reader positioned
/// at the body.
async fn request(
    addr: SocketAddr,
    head: String,
    body: &str,
) -> std::io::Result<(u16, Option<usize>, BufReader<TcpStream>)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = None;
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok();
        }
    }
    Ok((status, length, reader))
}

/// The next chunk of a chunked body; `None` at its end.
async fn chunk(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
        .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
    if size == 0 {
        return Ok(None);
    }
    let mut data = vec![0; size + 2];
    reader.read_exact(&mut data).await?;
    data.truncate(size);
    Ok(Some(data))
}

/// `POST /helo` into `room`: the session's id and token.
async fn helo(addr: SocketAddr, name: &str, room: &str) -> Result<(String, String), String> {
    let body = json!({"name": name, "rooms": [room]}).to_string();
    let head = format!(
        "POST /helo HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (status, length, mut reader) = request(addr, head, &body)
        .await
        .map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    match length {
        Some(length) => {
            rest.resize(length, 0);
            reader
                .read_exact(&mut rest)
                .await
                .map_err(|e| e.to_string())?;
        }
        None => {
            while let Some(data) = chunk(&mut reader).await.map_err(|e| e.to_string())? {
                rest.extend_from_slice(&data);
            }
        }
    }
    let text = String::from_utf8_lossy(&rest);
    let json_start = text.find('{').ok_or(format!("helo: {status} {text}"))?;
    let json_end = text.rfind('}').ok_or(format!("helo: {status} {text}"))?;
    let session: Value =
        serde_json::from_str(&text[json_start..=json_end]).map_err(|e| e.to_string())?;
    match (status, session["id"].as_str(), session["token"].as_str()) {
        (201, Some(id), Some(token)) => Ok((id.to_owned(), token.to_owned())),
        _ => Err(format!("helo: {status} {text}")),
    }
}

/// How an attach went.
enum Attach {
    /// Streaming, read past `ready`.
    Ready(BufReader<TcpStream>),
    /// Refused for now (503, a connection refused): try again.
    Refused,
    /// The session is gone (401, 404): it was lost.
    Lost(u16),
}

async fn attach(addr: SocketAddr, id: &str, token: &str) -> Attach {
    let head = format!(
        "GET /events/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Accept: text/event-stream\r\n\r\n"
    );
    let Ok((status, _, mut reader)) = request(addr, head, "").await else {
        return Attach::Refused;
    };
    match status {
        200 => {}
        401 | 404 => return Attach::Lost(status),
        _ => return Attach::Refused,
    }
    // The body is close-delimited (switchboard's stream path writes no chunked framing).
    let mut text = Vec::new();
    let mut buf = [0; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return Attach::Refused,
            Ok(n) => text.extend_from_slice(&buf[..n]),
        }
        let seen = String::from_utf8_lossy(&text);
        if let Some(at) = seen
            .find("event: ready")
            .or_else(|| seen.find("event:ready"))
            && seen[at..].contains("\n\n")
        {
            return Attach::Ready(reader);
        }
    }
}

/// One client: attaches, holds its stream until it ends, and comes back, until the run ends.
async fn client(cli: Arc<Cli>, tally: Arc<Tally>, n: usize, start: Arc<Semaphore>) {
    let instances = &cli.instances;
    let mut next = n % instances.len();
    let mut ended: Option<Instant> = None;
    // Only the first helo and attach are paced; a storm comes all at once.
    let mut permit = Some(start.acquire_owned().await.expect("never closed"));
    let room = format!("storm{}", n / cli.room_size.max(1));
    // A refused helo (503 on a loaded box) is tried again, as an app would.
    let mut tries = 0;
    let (id, token) = loop {
        match helo(instances[next], &format!("c{n}"), &room).await {
            Ok(session) => break session,
            Err(err) if tries < HELO_TRIES => {
                tries += 1;
                if tries == 1 {
                    eprintln!("client {n}: {err}; trying again");
                }
                tokio::time::sleep(Duration::from_millis(cli.retry_ms)).await;
            }
            Err(err) => {
                eprintln!("client {n}: {err}; giving up");
                tally.unregistered.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    };
    loop {
        let reader = match attach(instances[next], &id, &token).await {
            Attach::Ready(reader) => reader,
            Attach::Refused => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                next = (next + 1) % instances.len();
                tokio::time::sleep(Duration::from_millis(cli.retry_ms)).await;
                continue;
            }
            Attach::Lost(status) => {
                eprintln!("client {n}: its session is gone ({status})");
                tally.lost.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        tally.attached.fetch_add(1, Ordering::Relaxed);
        if let Some(ended) = ended.take() {
            let mut storm = tally.storm.lock().unwrap();
            storm.back_after.push(ended.elapsed());
            storm.last_back = Some(Instant::now());
        }
        permit.take();
        let mut reader = reader;
        let mut buf = [0; 4096];
        while let Ok(1..) = reader.read(&mut buf).await {}
        tally.attached.fetch_sub(1, Ordering::Relaxed);
        tally.ended.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        ended = Some(now);
        {
            let mut storm = tally.storm.lock().unwrap();
            storm.first_end.get_or_insert(now);
            storm.last_end = Some(now);
        }
        next = (next + 1) % instances.len();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at].as_secs_f64() * 1000.0
}

async fn run(cli: Arc<Cli>) -> Result<Value, String> {
    if cli.instances.iter().any(|a| !a.ip().is_loopback()) {
        return Err("loopback instances only".into());
    }
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(cli.concurrency));
    let tally = Arc::new(Tally::default());
    for n in 0..cli.clients {
        let client = client(Arc::clone(&cli), Arc::clone(&tally), n, Arc::clone(&gate));
        tokio::spawn(client);
    }
    let deadline = started + Duration::from_secs(cli.max_secs);
    let everyone = |tally: &Tally| {
        tally.attached.load(Ordering::Relaxed)
            + tally.lost.load(Ordering::Relaxed)
            + tally.unregistered.load(Ordering::Relaxed)
            >= cli.clients
    };
    while !everyone(&tally) {
        if Instant::now() > deadline {
            return Err("not every client attached in time".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let attached = started.elapsed();
    eprintln!(
        "{} clients registered and attached in {attached:.1?}",
        cli.clients
    );
    std::fs::write(&cli.ready_file, "attached\n").map_err(|e| e.to_string())?;
    loop {
        if Instant::now() > deadline {
            return Err("the storm did not settle in time".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let quiet = {
            let storm = tally.storm.lock().unwrap();
            storm
                .last_end
                .is_some_and(|at| at.elapsed() >= Duration::from_secs(cli.quiet))
        };
        if quiet && everyone(&tally) {
            break;
        }
    }
    let storm = tally.storm.lock().unwrap();
    let mut back = storm.back_after.clone();
    back.sort();
    let span = match (storm.first_end, storm.last_back) {
        (Some(first), Some(last)) => last.saturating_duration_since(first).as_secs_f64(),
        _ => 0.0,
    };
    Ok(json!({
        "clients": cli.clients,
        "room_size": cli.room_size,
        "instances": cli.instances.len(),
        "attach_s": attached.as_secs_f64(),
        "ended": tally.ended.load(Ordering::Relaxed),
        "refused": tally.refused.load(Ordering::Relaxed),
        "lost": tally.lost.load(Ordering::Relaxed),
        "unregistered": tally.unregistered.load(Ordering::Relaxed),
        "all_back_s": span,
        "back_p50_ms": percentile(&back, 0.5),
        "back_p99_ms": percentile(&back, 0.99),
        "back_max_ms": percentile(&back, 1.0),
    }))
}

fn main() {
    let cli = Arc::new(Cli::parse());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(run(cli)) {
        Ok(result) => {
            println!("{result}");
            std::process::exit(0);
        }
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(1);
        }
    }
}
