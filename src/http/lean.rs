//! `GET /events/{id}` connections served without hyper, to keep idle streams small.
//!
//! A hyper HTTP/1 connection keeps an 8 KiB read buffer and an 8 KiB write buffer for its whole
//! life (hyper's minimum), which made up most of an idle stream's memory (measured with massif:
//! 16 KiB of 20 KiB allocated per stream). An SSE connection reads one request and then only
//! writes, so the accept loop hands connections that start with `GET /events/` to this module:
//! it parses the head with `httparse` into a buffer that is freed at once, attaches with the
//! same handler as the warp route (`handlers::attach`, so authentication, errors and the stream
//! are the same code), writes the response head itself (the stream's headers are
//! `sse::HEADERS`, as on the warp route), and then writes the stream's chunks to the socket
//! batch by batch, straight from [`sse::Stream`]. The body is close-delimited
//! (`Connection: close`), the plainest HTTP/1.1 framing. A client that disconnects is noticed
//! by waiting for the socket to become readable.
//!
//! Once the head is written, the socket is shared with the registry (as its
//! `registry::writer::Writer`): while the stream's task is parked, whoever appends to its
//! mailbox writes the new events to the socket itself, with one send that never waits, so a
//! broadcast to 10,000 streams wakes none of their tasks. The task writes what such a send
//! left, everything it reads itself, and heartbeats.
//!
//! Once the head is written, the connection's task holds only [`Streaming`]: what came before
//! (reading the head, attaching, hyper's connection when the stream came through it) runs in
//! a boxed future that is freed when the stream starts (see `server`). An idle stream's task
//! was 3.2 KB when it kept the largest of those states for the stream's life.
//!
//! A batch's chunks (its own buffer, and any large frame shared with every other recipient) go
//! out in one vectored write, never copied again; a socket that accepts none of them for
//! `write_timeout` is closed, leaving the session and its mailbox for a reconnect.
//!
//! A head it cannot read is answered as hyper answers it (400, or 431 past 8 KiB or 100 header
//! lines) and the connection closed. Everything else (every other route, and a head split
//! before its first bytes decide) goes to hyper, which hands the connection back here when a
//! stream is asked for on it later (`takeover`): every stream is served by [`serve_head`].

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use socket2::SockRef;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{Instrument, debug};
use warp::http::request::Parts;
use warp::http::{StatusCode, Uri};
use warp::reply::Reply;

use super::context::Context;
use super::cors::Origins;
use super::error::ApiError;
use super::filters::{header_text, joined_header, parse_stream_params};
use super::redact::request_span;
use super::route_table::{SECURITY_HEADERS, route_of};
use super::takeover::SharedSocket;
use super::{handlers, sse};
use crate::metrics::Deliveries;
use crate::registry::EventId;
use crate::registry::mailbox::Mailbox;
use crate::registry::writer::{Writer, Written};

/// The prefix that routes a connection here.
pub(crate) const PREFIX: &[u8] = b"GET /events/";

/// Largest request head accepted, and most header lines, on both paths (hyper is given the
/// same), so that the same requests succeed, and the same are refused.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
pub(crate) const MAX_HEADERS: usize = 100;

/// Why no head was read. hyper's answers, so that both paths answer alike: a malformed head
/// is 400, one over [`MAX_HEAD`] or [`MAX_HEADERS`] is 431 (both empty, then close); a
/// connection that is closed or too slow is closed without an answer.
enum NoHead {
    Gone,
    Malformed,
    TooLarge,
}

impl NoHead {
    fn status(&self) -> Option<StatusCode> {
        match self {
            NoHead::Gone => None,
            NoHead::Malformed => Some(StatusCode::BAD_REQUEST),
            NoHead::TooLarge => Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        }
    }
}

/// Whether the bytes a new connection starts with belong here. `None`: not enough bytes yet.
pub(crate) fn claims(start: &[u8]) -> Option<bool> {
    if start.len() >= PREFIX.len() {
        Some(start.starts_with(PREFIX))
    } else if PREFIX.starts_with(start) {
        None
    } else {
        Some(false)
    }
}

/// What the request head says, copied out so the read buffer can be freed.
pub(crate) struct Head {
    uri: Uri,
    authorization: Option<Vec<u8>>,
    cookie: Option<Vec<u8>>,
    last_event_id: Option<Vec<u8>>,
    origin: Option<Vec<u8>>,
    forwarded_for: Option<String>,
    forwarded: Option<String>,
}

/// Reads the request head, at most [`MAX_HEAD`] bytes, within `timeout`.
async fn read_head(stream: &mut TcpStream, timeout: Duration) -> Result<Head, NoHead> {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        loop {
            stream.readable().await.map_err(|_| NoHead::Gone)?;
            let mut chunk = [0u8; 1024];
            match stream.try_read(&mut chunk) {
                Ok(0) => return Err(NoHead::Gone),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return Err(NoHead::Gone),
            }
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&buf) {
                Ok(httparse::Status::Complete(_)) => {
                    let find = |name: &str| {
                        request
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| h.value.to_vec())
                    };
                    let joined = |name: &str| {
                        joined_header(
                            request
                                .headers
                                .iter()
                                .filter(|h| h.name.eq_ignore_ascii_case(name))
                                .map(|h| h.value),
                        )
                    };
                    let uri = request.path.and_then(|path| path.parse().ok());
                    return Ok(Head {
                        uri: uri.ok_or(NoHead::Malformed)?,
                        authorization: find("authorization"),
                        cookie: find("cookie"),
                        last_event_id: find("last-event-id"),
                        origin: find("origin"),
                        forwarded_for: joined("x-forwarded-for"),
                        forwarded: joined("forwarded"),
                    });
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                    return Err(NoHead::TooLarge);
                }
                Err(_) => return Err(NoHead::Malformed),
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(NoHead::Gone))
}

/// Writes `response`, a refusal, and closes without a reset: the rest of what the client sent
/// is read and dropped (briefly), so the answer is not lost to an RST. A head that could not be
/// read gets hyper's empty answer; a connection over its address's share gets the API's JSON.
pub(crate) async fn refuse(stream: &mut TcpStream, response: warp::reply::Response) {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut head = format!("HTTP/1.1 {}\r\n", parts.status);
    for (name, value) in &parts.headers {
        if let Ok(value) = value.to_str() {
            let _ = write!(head, "{name}: {value}\r\n");
        }
    }
    let _ = write!(
        head,
        "connection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    if stream.write_all(head.as_bytes()).await.is_err()
        || stream.write_all(&body).await.is_err()
        || stream.shutdown().await.is_err()
    {
        return;
    }
    let drain = async {
        // On the heap: a buffer held across an await would size every stream's task.
        let mut sink = vec![0u8; 4096];
        let mut left = 64 * 1024;
        while left > 0 {
            match tokio::io::AsyncReadExt::read(stream, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n.min(left),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Reads the request head of a new `GET /events/...` connection; a head that cannot be read
/// is answered as hyper answers it, and `None`.
pub(crate) async fn read_request(stream: &mut TcpStream, header_timeout: Duration) -> Option<Head> {
    match read_head(stream, header_timeout).await {
        Ok(head) => Some(head),
        Err(refused) => {
            if let Some(status) = refused.status() {
                refuse(stream, status.into_response()).await;
            }
            None
        }
    }
}

impl Head {
    /// What `request` says, copied: hyper's header values and target are slices of its read
    /// buffer (8 KiB), which a stream holding them would keep for its whole life.
    pub(crate) fn copied_from(request: Parts) -> Option<Head> {
        let headers = &request.headers;
        let find = |name: &str| headers.get(name).map(|v| v.as_bytes().to_vec());
        let joined = |name: &str| joined_header(headers.get_all(name).iter().map(|v| v.as_bytes()));
        Some(Head {
            uri: request.uri.path_and_query()?.as_str().parse().ok()?,
            authorization: find("authorization"),
            cookie: find("cookie"),
            last_event_id: find("last-event-id"),
            origin: find("origin"),
            forwarded_for: joined("x-forwarded-for"),
            forwarded: joined("forwarded"),
        })
    }
}

/// Answers a stream request read from `stream` (by [`read_request`] or hyper): the stream to
/// run once its head is written, or `None` when nothing more goes to the client.
pub(crate) async fn serve_head(
    stream: TcpStream,
    head: Head,
    peer: SocketAddr,
    context: Context,
    origins: &Origins,
    write_timeout: Duration,
) -> Option<Streaming> {
    let span = request_span(&"GET", &head.uri);
    let client = context.limits.client(
        peer,
        head.forwarded_for.as_deref(),
        head.forwarded.as_deref(),
    );
    // Shared with the registry, which writes to it while the stream is parked.
    let mut socket = SharedSocket(Arc::new(stream));
    let opened = open(&mut socket, head, client, context, origins)
        .instrument(span.clone())
        .await;
    match opened {
        Some(events) => Some(Streaming {
            socket,
            events,
            pending: Chunks::default(),
            write_timeout,
            span,
        }),
        None => {
            debug!(parent: &span, "stream connection closed");
            let _ = socket.shutdown().await;
            None
        }
    }
}

/// One stream once its head is written: all that its connection's task holds for the
/// stream's life (the task runs it in place of what came before, see `server`), so kept to
/// what writing needs.
pub(crate) struct Streaming {
    socket: SharedSocket,
    events: sse::Stream,
    /// Chunks taken from `events` and not yet written.
    pending: Chunks,
    write_timeout: Duration,
    span: tracing::Span,
}

impl Streaming {
    /// Writes the events to the client as they come, until the stream ends, the client goes,
    /// or it reads nothing for the write timeout; then closes the connection.
    pub(crate) async fn run(&mut self) {
        let span = self.span.clone();
        self.write_events().instrument(span).await;
        debug!(parent: &self.span, "stream connection closed");
        let _ = self.socket.shutdown().await;
    }

    async fn write_events(&mut self) {
        loop {
            tokio::select! {
                chunks = self.events.next() => match chunks {
                    Some(chunks) => chunks.for_each(|chunk| self.pending.push(chunk)),
                    None => break,
                },
                // The client only ever sends its request: readable means it closed, or sent
                // bytes after it, which no real client does: the stream is closed either way
                // (reading them 64 at a time cost 2.2 s of CPU per 200 MB).
                () = client_gone(&self.socket.0) => break,
            }
            let write = self.socket.write_all_buf(&mut self.pending);
            match tokio::time::timeout(self.write_timeout, write).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    debug!("client read nothing within the write timeout; closing its stream");
                    // Closed with a reset: a graceful close would leave the unsent queue (up
                    // to the kernel's send buffer, megabytes) held for a client that reads
                    // nothing.
                    let _ = self.socket.0.set_zero_linger();
                    break;
                }
            }
        }
    }
}

/// Attaches the stream and writes the response head, or the refusal whole: the stream's
/// events once its head is out, `None` when nothing more goes to the client.
async fn open(
    socket: &mut SharedSocket,
    head: Head,
    client: IpAddr,
    context: Context,
    origins: &Origins,
) -> Option<sse::Stream> {
    let started = std::time::Instant::now();
    // Inline: this runs in a box of its own (`server`), freed once the stream starts.
    let attached = attach(&head, client, context.clone()).await;
    let status = match &attached {
        Ok(_) => StatusCode::OK,
        Err(refusal) => refusal.status(),
    };
    // As the edge's log filter records every other request: to the response head.
    debug!(status = status.as_u16(), "answered");
    let (metrics, route) = (context.hub.metrics(), route_of(head.uri.path()));
    metrics.http_request(route, status.as_u16());
    metrics.http_request_duration(route, started.elapsed());
    let allowed = head
        .origin
        .as_deref()
        .and_then(header_text)
        .filter(|origin| origins.allows(origin.as_bytes()));
    let mut out = String::with_capacity(256);
    let _ = write!(out, "HTTP/1.1 {status}\r\n");
    let mut header = |name: &str, value: &str| {
        let _ = write!(out, "{name}: {value}\r\n");
    };
    match &attached {
        Ok(_) => {
            for (name, value) in sse::HEADERS {
                header(name, value);
            }
        }
        Err(refusal) => {
            for (name, value) in refusal.headers() {
                if let Ok(value) = value.to_str() {
                    header(name.as_str(), value);
                }
            }
        }
    }
    for (name, value) in SECURITY_HEADERS {
        header(name, value);
    }
    header("connection", "close");
    if let Some(origin) = allowed {
        header("access-control-allow-origin", origin);
        header("vary", "origin");
    }
    let events = match attached {
        Ok(events) => events,
        Err(refusal) => {
            let bytes = match refusal.into_body().collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => Bytes::new(),
            };
            let _ = write!(out, "content-length: {}\r\n\r\n", bytes.len());
            let _ = socket.write_all_buf(&mut out.as_bytes().chain(bytes)).await;
            return None;
        }
    };
    out.push_str("\r\n");
    socket.write_all(out.as_bytes()).await.ok()?;
    events.write_directly(Arc::clone(&socket.0) as Arc<dyn Writer>);
    Some(events)
}

/// A stream's socket, as the registry writes to it while the stream is parked: a send that
/// never waits. The task's own `Arc` is the writer, with no wrapper: one pointer fewer to
/// follow per stream and write.
impl Writer for TcpStream {
    fn write(&self, mailbox: &mut Mailbox, cursor: EventId, tally: &mut Deliveries) -> Written {
        // Straight to the socket, past tokio's readiness record: reading that (one more cache
        // miss per stream) was 7% of a 10,000-stream fan-out. A write that would block clears
        // nothing tokio relies on: the task's own write finds the socket full and waits.
        let socket = SockRef::from(self);
        sse::write_now(mailbox, cursor, tally, |slices| match slices {
            // send(2) where one buffer holds it all: writev's extra work showed in profiles.
            [one] => socket.send(one),
            slices => socket.send_vectored(slices),
        })
    }
}

/// Chunks waiting for one vectored write, in order; each is a shared `Bytes`, never copied.
#[derive(Default)]
struct Chunks {
    queue: VecDeque<Bytes>,
    remaining: usize,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.remaining += chunk.len();
            self.queue.push_back(chunk);
        }
    }
}

impl Buf for Chunks {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.queue.front().map_or(&[], |chunk| chunk)
    }

    fn chunks_vectored<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slice, chunk) in slices.iter_mut().zip(&self.queue) {
            *slice = IoSlice::new(chunk);
            filled += 1;
        }
        filled
    }

    fn advance(&mut self, mut count: usize) {
        self.remaining -= count;
        while count > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if count < front.len() {
                front.advance(count);
                return;
            }
            count -= front.len();
            self.queue.pop_front();
        }
    }
}

/// Resolves when the socket is readable: the client closed it or sent bytes after its request.
/// Polled on the socket's own readiness, with no future of tokio's to hold (`readable()`'s is
/// 176 bytes, in every idle stream's task).
async fn client_gone(stream: &TcpStream) {
    std::future::poll_fn(|cx| {
        loop {
            if ready!(stream.poll_read_ready(cx)).is_err() {
                return Poll::Ready(());
            }
            // Readiness may be stale; only a read that does not block tells (and clears it).
            match stream.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => return Poll::Ready(()),
            }
        }
    })
    .await;
}

/// What the warp route does: `handlers::attach`, or the refusal its error maps to.
async fn attach(
    head: &Head,
    client: IpAddr,
    context: Context,
) -> Result<sse::Stream, warp::reply::Response> {
    let id = head
        .uri
        .path()
        .strip_prefix("/events/")
        .filter(|id| !id.is_empty() && !id.contains('/'));
    let Some(id) = id else {
        return Err(ApiError::no_route().into_response());
    };
    let params = parse_stream_params(
        head.authorization.as_deref(),
        head.cookie.as_deref(),
        head.last_event_id.as_deref(),
        head.uri.query(),
    )
    .map_err(Reply::into_response)?;
    handlers::attach(id.to_owned(), params, client, context)
        .await
        .map_err(Reply::into_response)
}
