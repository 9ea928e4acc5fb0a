//! A connection of the plain listener (no `--tls-cert`), as [`secure`](super::secure) is one of
//! the TLS listener: whether [`lean`] claims it from its first bytes, and otherwise hyper
//! serving it until a client asks for a stream, which then moves to `lean` (see
//! [`takeover`](super::takeover)).
//!
//! Its own file because it is about one connection, while `server` owns what every connection
//! shares (the budget, the tower layers, the drain) and picks this path or `secure` for each.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio_io_timeout::TimeoutStream;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use warp::http::request::Parts;
use warp::http::{Request, Response};

use super::context::PeerAddr;
use super::lean;
use super::takeover::{SharedSocket, Takeover};

/// The deadlines of a connection hyper serves.
pub(crate) struct Deadlines {
    /// For the first request's head: what is left of the header timeout after its first byte.
    pub(crate) first_head: Duration,
    /// For each next request's head, from the end of the previous answer (the header timeout).
    pub(crate) idle: Duration,
    /// For the socket to accept a byte.
    pub(crate) write: Duration,
}

/// Serves `stream` with hyper and the routes until it closes, or until its client asks for a
/// stream: then the socket and that request, for `lean` to answer (see `takeover`).
pub(crate) async fn serve_with_hyper<B>(
    stream: TcpStream,
    peer: SocketAddr,
    routes: &BoxCloneSyncService<Request<Incoming>, Response<B>, Infallible>,
    watcher: Watcher,
    deadlines: Deadlines,
) -> Option<(TcpStream, Parts)>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (takeover, handed) = Takeover::new();
    let routes = BoxCloneSyncService::clone(routes);
    let asked = Arc::new(AtomicBool::new(false));
    let service = TowerToHyperService::new(tower::service_fn({
        let asked = Arc::clone(&asked);
        move |request: Request<Incoming>| {
            asked.store(true, Ordering::Relaxed);
            match takeover.take(request) {
                Some(mut request) => {
                    request.extensions_mut().insert(PeerAddr(peer));
                    Either::Left(routes.clone().oneshot(request))
                }
                // The connection is dropped before this would ever answer.
                None => Either::Right(std::future::pending()),
            }
        }
    }));
    let socket = Arc::new(stream);
    // A client that stops reading (a large answer it never takes) holds its connection only
    // until the socket has accepted nothing for the write timeout, as on the stream path.
    // Reads get no deadline here beyond those for a head.
    let mut io = TimeoutStream::new(SharedSocket(Arc::clone(&socket)));
    io.set_write_timeout(Some(deadlines.write));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // Every wait for a head, the next one on a keep-alive connection included, gets the
        // whole header timeout; the first is held to what is left of it by `first_head`.
        .header_read_timeout(deadlines.idle)
        // hyper's buffer limit is also its head limit, the stream path's. At its minimum
        // (hyper's default lets a connection queue ~400 KiB of response before it stops
        // pulling the body), a slow reader stops pulling at once.
        .max_buf_size(lean::MAX_HEAD)
        .max_headers(lean::MAX_HEADERS)
        .serve_connection(TokioIo::new(Box::pin(io)), service);
    let connection = watcher.watch(connection);
    let first_head = async {
        tokio::time::sleep(deadlines.first_head).await;
        if asked.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    let request = tokio::select! {
        _ = connection => return None,
        () = first_head => return None,
        Ok(request) = handed => request,
    };
    // hyper's connection is gone (dropped when the select ended): the socket is ours alone.
    let stream = Arc::try_unwrap(socket).ok()?;
    Some((stream, request))
}

/// Whether a new connection starts with `GET /events/` (see `lean`). Requests arrive in one
/// packet in practice; a head split before the prefix is decided goes to hyper, which serves
/// `/events` as well, only with larger buffers.
pub(crate) async fn claimed_by_lean(stream: &TcpStream) -> bool {
    let mut start = [0u8; lean::PREFIX.len()];
    for _ in 0..4 {
        match stream.peek(&mut start).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => match lean::claims(&start[..n]) {
                Some(answer) => return answer,
                None => tokio::time::sleep(Duration::from_millis(5)).await,
            },
        }
    }
    false
}
