//! Connections on the TLS listener (`--tls-cert`): the handshake within the head's deadline,
//! then hyper with HTTP/2 or HTTP/1.1, as ALPN agreed, every route (streams included) served
//! by the same tower service as the plain listener's. The lean path (`lean`, `takeover`) is for
//! plain HTTP/1.1 alone: over HTTP/2 one connection carries many streams, so there is no
//! per-stream socket to hand it.
//!
//! The deadlines are the plain listener's: a client that opens a socket and never finishes
//! its handshake is closed at the header timeout; a socket that accepts nothing for the write
//! timeout is closed (as on the plain listener, for every stream on it). Over HTTP/2 a client
//! can also stop reading one stream while it reads the others (its window for that stream
//! stays shut): hyper then stops pulling that stream's body, and events wait in the session's
//! mailbox, bounded as always. Such a stream is reset once a chunk has waited for the client's
//! window for the write timeout ([`watched`]); its session stays, for a reconnect.

use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::TryFutureExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tracing::debug;
use warp::http::{Request, Response};

use super::context::PeerAddr;
use super::lean::{MAX_HEAD, MAX_HEADERS};

/// Most streams open at once on one HTTP/2 connection (hyper's default): tabs of one browser
/// and their requests, with room to spare.
const MAX_STREAMS_PER_CONNECTION: u32 = 200;

tokio::task_local! {
    /// In an HTTP/2 stream's task: when its body handed hyper a chunk that hyper has not yet
    /// sent on (it waits for the client's window); `None` once hyper asks for the next.
    static HANDED: Cell<Option<Instant>>;
}

/// Serves one connection of the TLS listener until it closes.
pub(crate) async fn serve<B>(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    routes: &BoxCloneSyncService<Request<Incoming>, Response<B>, Infallible>,
    watcher: Watcher,
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
    let service = TowerToHyperService::new(tower::service_fn(move |mut request: Request<_>| {
        request.extensions_mut().insert(PeerAddr(peer));
        routes
            .clone()
            .oneshot(request)
            .map_ok(|response| response.map(Watched))
    }));
    let mut builder = auto::Builder::new(Streams { write_timeout });
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout.saturating_sub(started.elapsed()))
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
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    if let Err(err) = watcher.watch(connection).await {
        debug!(%err, "TLS connection ended");
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
/// outside such a task (HTTP/1.1) only the body.
struct Watched<B>(B);

impl<B: Body + Unpin> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        // Asked again: the previous chunk went on.
        let _ = HANDED.try_with(|handed| handed.set(None));
        let frame = ready!(Pin::new(&mut self.0).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && frame.is_data()
        {
            let _ = HANDED.try_with(|handed| handed.set(Some(Instant::now())));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}
