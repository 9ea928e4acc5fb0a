//! Connections on the TLS listener (`--tls-cert`): the handshake within the head's deadline,
//! then hyper with HTTP/2 or HTTP/1.1, as ALPN agreed, every route (streams included) served
//! by the same tower service as the plain listener's. The lean path (`lean`, `takeover`) is for
//! plain HTTP/1.1 alone: over HTTP/2 one connection carries many streams, so there is no
//! per-stream socket to hand it.
//!
//! The deadlines are the plain listener's: a client that opens a socket and never finishes
//! its handshake is closed at the header timeout; a socket that accepts nothing for the write
//! timeout is closed (as on the plain listener, for every stream on it). The first request
//! (an HTTP/2 stream) must come within the header timeout, the handshake's time included, or
//! the connection is closed ([`idle`]). After it, an HTTP/2 connection is an idle keep-alive
//! connection while it has no open stream: it gets a GOAWAY after the header timeout, as
//! hyper closes an HTTP/1.1 connection that sends no next request within it. Over HTTP/2 a client
//! can also stop reading one stream while it reads the others (its window for that stream
//! stays shut): hyper then stops pulling that stream's body, and events wait in the session's
//! mailbox, bounded as always. Such a stream is reset once a chunk has waited for the client's
//! window for the write timeout ([`watched`]); its session stays, for a reconnect.

use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::TryFutureExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tracing::debug;
use warp::http::{Request, Response};

use super::context::{OverTls, PeerAddr};
use super::lean::{MAX_HEAD, MAX_HEADERS};

/// Most streams open at once on one HTTP/2 connection (hyper's default): tabs of one browser
/// and their requests, with room to spare.
const MAX_STREAMS_PER_CONNECTION: u32 = 200;

tokio::task_local! {
    /// In an HTTP/2 stream's task: when its body handed hyper a chunk that hyper has not yet
    /// sent on (it waits for the client's window); `None` once hyper asks for the next.
    static HANDED: Cell<Option<Instant>>;
}

/// Serves one connection of the TLS listener until it closes, or until `drain` fires: then
/// its requests in flight finish and it closes (a GOAWAY over HTTP/2).
pub(crate) async fn serve<B>(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    routes: &BoxCloneSyncService<Request<Incoming>, Response<B>, Infallible>,
    drain: CancellationToken,
    header_timeout: Duration,
    write_timeout: Duration,
) where
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = tokio::time::Instant::now();
    let mut io = TimeoutStream::new(stream);
    io.set_write_timeout(Some(write_timeout));
    let handshake = acceptor.accept(Box::pin(io));
    let tls = match tokio::time::timeout(header_timeout, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => return debug!(%err, "TLS handshake failed"),
        Err(_) => return debug!("TLS handshake not finished within the header timeout"),
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let routes = BoxCloneSyncService::clone(routes);
    let (open, streams) = watch::channel(0usize);
    let open = Arc::new(open);
    let service = TowerToHyperService::new(tower::service_fn(move |mut request: Request<_>| {
        request.extensions_mut().insert(PeerAddr(peer));
        request.extensions_mut().insert(OverTls);
        let open = Open::new(&open);
        routes
            .clone()
            .oneshot(request)
            .map_ok(|response| response.map(|body| Watched { body, _open: open }))
    }));
    let mut builder = auto::Builder::new(Streams { write_timeout });
    builder
        .http1()
        .timer(TokioTimer::new())
        // Each next request on a keep-alive connection; the first is held to what the
        // handshake left of it by `idle`.
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(MAX_HEAD as u32)
        // A client that answers no ping for the write timeout is gone: its connection closes.
        .keep_alive_interval(write_timeout)
        .keep_alive_timeout(write_timeout);
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let mut connection = pin!(builder.serve_connection(TokioIo::new(tls), service));
    // After the first request, HTTP/1.1's idle deadline is hyper's `header_read_timeout`.
    let first = header_timeout.saturating_sub(started.elapsed());
    let deadline = idle(streams, first, h2.then_some(header_timeout));
    let quiet = tokio::select! {
        ended = connection.as_mut() => return log_end(ended),
        () = drain.cancelled() => false,
        served = deadline => {
            if !served {
                // Not even a request: nothing to say goodbye to.
                return debug!("no request within the header timeout; closing");
            }
            true
        }
    };
    connection.as_mut().graceful_shutdown();
    if !quiet {
        // The drain's own grace period bounds its requests in flight.
        return log_end(connection.await);
    }
    // No stream is open: the GOAWAY's exchange is all that is left to wait for.
    match tokio::time::timeout(header_timeout, connection).await {
        Ok(ended) => log_end(ended),
        Err(_) => debug!("an idle HTTP/2 connection did not close after its GOAWAY; dropping it"),
    }
}

fn log_end<E: std::fmt::Display>(ended: Result<(), E>) {
    if let Err(err) = ended {
        debug!(%err, "TLS connection ended");
    }
}

/// Resolves once the connection has opened no request (an HTTP/2 stream) for `first` from now:
/// `false`, it never had one; or, with `again`, once it has had none open for `again` at any
/// later time: `true`.
async fn idle(
    mut streams: watch::Receiver<usize>,
    first: Duration,
    again: Option<Duration>,
) -> bool {
    let mut wait = first;
    let mut served = false;
    loop {
        // The sender lives as long as the connection's service: an error is its end.
        if streams.wait_for(|open| *open == 0).await.is_err() {
            return std::future::pending().await;
        }
        let opened = tokio::time::timeout(wait, streams.wait_for(|open| *open > 0)).await;
        match (opened.map(|seen| seen.is_ok()), again) {
            (Err(_), _) => return served,
            (Ok(true), Some(again)) => (wait, served) = (again, true),
            (Ok(_), _) => return std::future::pending().await,
        }
    }
}

/// One request of a connection, counted open from its head until its response body is
/// dropped (sent, or reset), which is when an HTTP/2 stream ends.
struct Open(Arc<watch::Sender<usize>>);

impl Open {
    fn new(open: &Arc<watch::Sender<usize>>) -> Open {
        open.send_modify(|open| *open += 1);
        Open(Arc::clone(open))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.send_modify(|open| *open -= 1);
    }
}

/// The executor of a connection's HTTP/2 streams: each runs on a task of its own, [`watched`].
#[derive(Clone, Copy)]
struct Streams {
    write_timeout: Duration,
}

impl<F> hyper::rt::Executor<F> for Streams
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        tokio::spawn(HANDED.scope(Cell::new(None), watched(stream, self.write_timeout)));
    }
}

/// Runs an HTTP/2 stream until it ends, or until a chunk of its body has waited for the
/// client's window for `write_timeout`: then the stream is dropped, which resets it.
async fn watched(stream: impl Future<Output = ()>, write_timeout: Duration) {
    let mut stream = pin!(stream);
    // Allocated only for a stream that once had to wait.
    let mut alarm: Option<Pin<Box<Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if stream.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let Some(handed) = HANDED.with(Cell::get) else {
            return Poll::Pending;
        };
        let due = handed + write_timeout;
        let alarm = alarm.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if alarm.deadline() != due {
            alarm.as_mut().reset(due);
        }
        if alarm.as_mut().poll(cx).is_ready() {
            debug!("client read nothing of a stream within the write timeout; resetting it");
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await;
}

/// A response body that tells its HTTP/2 stream's task when a chunk waits (see [`HANDED`]);
/// outside such a task (HTTP/1.1) only the body. It holds its request's place among the
/// connection's open streams.
struct Watched<B> {
    body: B,
    _open: Open,
}

impl<B: Body + Unpin> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        // Asked again: the previous chunk went on.
        let _ = HANDED.try_with(|handed| handed.set(None));
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && frame.is_data()
        {
            let _ = HANDED.try_with(|handed| handed.set(Some(Instant::now())));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
