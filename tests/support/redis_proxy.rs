//! A fault-injecting TCP proxy in front of Redis ([`RedisProxy`]): it passes bytes both ways,
//! and once [armed](RedisProxy::hold_publishes_to) it holds back what a client sends from its
//! first `PUBLISH` to one channel on, until [released](RedisProxy::release). An instance whose
//! `--redis-url` points at the proxy then sees its message to that channel delayed, as on a
//! slow network, without the test writing any bus message itself. [Cut](RedisProxy::cut), it
//! closes every connection and refuses new ones until [mended](RedisProxy::mend): the
//! instance is cut off from Redis while it runs, and Redis sees its subscription end.
//!
//! Commands are read as RESP arrays of bulk strings (what clients send), only as far as
//! needed: where each ends, its name, its first argument.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::WAIT;

/// What the proxy does with what clients send.
#[derive(Clone, Debug, PartialEq)]
enum Mode {
    /// Passes everything.
    Pass,
    /// Holds each connection's bytes from its first `PUBLISH` to this channel on;
    /// `held` once one did.
    Hold { channel: Vec<u8>, held: bool },
}

/// A proxy on an ephemeral loopback port to the Redis on `127.0.0.1:<port>`; stops on drop.
pub struct RedisProxy {
    pub port: u16,
    mode: Arc<watch::Sender<Mode>>,
    /// True while cut: no connection passes.
    cut: Arc<watch::Sender<bool>>,
    task: JoinHandle<()>,
}

impl RedisProxy {
    /// Starts passing connections through to the Redis on `127.0.0.1:<redis_port>`.
    pub async fn start(redis_port: u16) -> RedisProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(watch::Sender::new(Mode::Pass));
        let cut = Arc::new(watch::Sender::new(false));
        let task = tokio::spawn({
            let (mode, cut) = (Arc::clone(&mode), Arc::clone(&cut));
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let mode = Arc::clone(&mode);
                    let mut cuts = cut.subscribe();
                    if *cuts.borrow_and_update() {
                        continue; // closed at once
                    }
                    tokio::spawn(async move {
                        if let Ok(redis) = TcpStream::connect(("127.0.0.1", redis_port)).await {
                            tokio::select! {
                                () = relay(client, redis, &mode) => {}
                                _ = cuts.wait_for(|cut| *cut) => {}
                            }
                        }
                    });
                }
            }
        });
        RedisProxy {
            port,
            mode,
            cut,
            task,
        }
    }

    /// Closes every connection through the proxy, and each new one at once, until
    /// [`RedisProxy::mend`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Passes connections again.
    pub fn mend(&self) {
        self.cut.send_replace(false);
    }

    /// `redis://127.0.0.1:<port>`, for `--redis-url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// From now on, holds each connection's bytes from its first `PUBLISH` to `channel` on.
    pub fn hold_publishes_to(&self, channel: &str) {
        self.mode.send_replace(Mode::Hold {
            channel: channel.as_bytes().to_vec(),
            held: false,
        });
    }

    /// Waits (at most [`WAIT`]) until a connection's `PUBLISH` to the channel is held.
    pub async fn held(&self) {
        let mut mode = self.mode.subscribe();
        let held = mode.wait_for(|m| matches!(m, Mode::Hold { held: true, .. }));
        timeout(WAIT, held)
            .await
            .expect("a PUBLISH to the channel held within the wait")
            .expect("the proxy runs");
    }

    /// Sends what was held, in order, and passes everything from now on.
    pub fn release(&self) {
        self.mode.send_replace(Mode::Pass);
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Relays one connection until either side closes; what was held and read from the client
/// before it closed still reaches Redis on release.
async fn relay(client: TcpStream, redis: TcpStream, mode: &watch::Sender<Mode>) {
    let (mut client_in, mut client_out) = client.into_split();
    let (mut redis_in, mut redis_out) = redis.into_split();
    // Aborted when the relay is dropped (cut): both sockets close at once.
    let mut replies = AbortOnDrop(tokio::spawn(async move {
        let _ = tokio::io::copy(&mut redis_in, &mut client_out).await;
    }));
    let mut modes = mode.subscribe();
    // Read from the client, not yet sent: a command's incomplete start, or all that is held.
    let mut pending = Vec::new();
    let mut holding = false;
    let mut chunk = [0u8; 16 * 1024];
    let mut open = true;
    while open || holding {
        tokio::select! {
            read = client_in.read(&mut chunk), if open => match read {
                Ok(0) | Err(_) => open = false,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            },
            changed = modes.changed(), if holding => if changed.is_err() { break },
        }
        let current = modes.borrow_and_update().clone();
        let send = match current {
            Mode::Pass => {
                holding = false;
                pending.len()
            }
            Mode::Hold { .. } if holding => 0,
            Mode::Hold { channel, .. } => {
                let (send, found) = before_publish_to(&pending, &channel);
                if found {
                    holding = true;
                    mode.send_modify(|m| {
                        if let Mode::Hold { held, .. } = m {
                            *held = true;
                        }
                    });
                }
                send
            }
        };
        if send > 0 {
            if redis_out.write_all(&pending[..send]).await.is_err() {
                break;
            }
            pending.drain(..send);
        }
    }
    let _ = redis_out.shutdown().await;
    let _ = (&mut replies.0).await;
}

/// A task that ends with its handle.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How many bytes of `bytes` come before the first `PUBLISH` to `channel`, or before the
/// first incomplete command; and whether that `PUBLISH` was found. Bytes that are not a RESP
/// array are passed as they are.
fn before_publish_to(bytes: &[u8], channel: &[u8]) -> (usize, bool) {
    let mut at = 0;
    loop {
        match command(&bytes[at..]) {
            Parsed::Incomplete => return (at, false),
            Parsed::NotArray => return (bytes.len(), false),
            Parsed::Command { len, name, first } => {
                if name.eq_ignore_ascii_case(b"PUBLISH") && first == Some(channel) {
                    return (at, true);
                }
                at += len;
            }
        }
    }
}

/// One command read from the start of a client's bytes.
enum Parsed<'a> {
    Incomplete,
    NotArray,
    /// Its length in bytes, its name and its first argument.
    Command {
        len: usize,
        name: &'a [u8],
        first: Option<&'a [u8]>,
    },
}

/// Reads `*<n>\r\n` then `n` times `$<len>\r\n<len bytes>\r\n`.
fn command(bytes: &[u8]) -> Parsed<'_> {
    /// The number after `prefix` up to `\r\n` at `at`, and where the next line starts.
    fn header(bytes: &[u8], at: usize, prefix: u8) -> Option<Result<(usize, usize), ()>> {
        let line = &bytes[at.min(bytes.len())..];
        let end = line.windows(2).position(|w| w == b"\r\n")?;
        if line.first() != Some(&prefix) {
            return Some(Err(()));
        }
        let n = std::str::from_utf8(&line[1..end])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or(());
        Some(n.map(|n| (n, at + end + 2)))
    }
    let (count, mut at) = match header(bytes, 0, b'*') {
        None if bytes.first().is_some_and(|&b| b != b'*') => return Parsed::NotArray,
        None => return Parsed::Incomplete,
        Some(Err(())) => return Parsed::NotArray,
        Some(Ok(parsed)) => parsed,
    };
    let mut args: Vec<&[u8]> = Vec::new();
    for _ in 0..count {
        let (len, start) = match header(bytes, at, b'$') {
            None => return Parsed::Incomplete,
            Some(Err(())) => return Parsed::NotArray,
            Some(Ok(parsed)) => parsed,
        };
        if bytes.len() < start + len + 2 {
            return Parsed::Incomplete;
        }
        if args.len() < 2 {
            args.push(&bytes[start..start + len]);
        }
        at = start + len + 2;
    }
    match args.first() {
        Some(name) => Parsed::Command {
            len: at,
            name,
            first: args.get(1).copied(),
        },
        None => Parsed::NotArray,
    }
}
