//! The accept loop: tower-http layers around the warp filter, the connection budget and each
//! address's share of it, the hand-off of streams to [`lean`] (on a new connection, or from
//! hyper's through [`takeover`](super::takeover)), and the graceful drain. Kept in one place
//! because warp's own `serve` cannot take tower layers.
//!
//! Refused connections are logged sampled (see [`Sampled`]) and counted in `/metrics`: a flood
//! of them must not become a flood of log lines.
//!
//! A plain connection is served by [`plain`](super::plain); with `--tls-cert` every connection
//! is TLS and goes to [`secure`] instead.
//!
//! Layers, outermost first: mark `Authorization` sensitive (never printed), trace each request
//! with the query's `token` redacted, and CORS when origins are configured (none: same origin
//! only, so no CORS headers at all).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::{Level, info, warn};
use warp::Filter;
use warp::http::{HeaderValue, Request, Response, header};
use warp::reply::Reply;

use super::context::Context;
use super::cors::Origins;
use super::error::ApiError;
use super::lean;
use super::plain::{Deadlines, claimed_by_lean, serve_with_hyper};
use super::redact::request_span;
use super::secure;
use crate::limits::{Limited, Limits};

/// Most refused connections answered at once (see [`Listener::refuse`]).
const REFUSALS_ANSWERED: usize = 64;

/// At most one log line per key (an address, or the whole budget) in this long.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Keys [`Sampled`] remembers; beyond it, new keys are not logged until old ones expire (their
/// refusals are still counted in `/metrics`), so a spread-out flood cannot grow the map.
const SAMPLED_KEYS: usize = 4_096;

/// Log-line sampling: of the events under one key, the first is logged, and the next one
/// after [`LOG_EVERY`] carries the count since. A `std::sync::Mutex`: one map update per
/// refusal, never held across an `.await`.
struct Sampled<K> {
    keys: Mutex<HashMap<K, (Instant, u64)>>,
}

impl<K> Default for Sampled<K> {
    fn default() -> Self {
        Sampled {
            keys: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq> Sampled<K> {
    /// Notes one event under `key`; `Some(n)` when a line is due, `n` events since the last.
    fn note(&self, key: K) -> Option<u64> {
        let now = Instant::now();
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((since, count)) = keys.get_mut(&key) {
            *count += 1;
            if now.duration_since(*since) < LOG_EVERY {
                return None;
            }
            let due = *count;
            (*since, *count) = (now, 0);
            return Some(due);
        }
        if keys.len() >= SAMPLED_KEYS {
            keys.retain(|_, (since, _)| now.duration_since(*since) < LOG_EVERY);
            if keys.len() >= SAMPLED_KEYS {
                return None;
            }
        }
        keys.insert(key, (now, 0));
        Some(1)
    }
}

/// Options for [`run`].
pub(crate) struct ServeOptions {
    pub(crate) cors_origins: Vec<String>,
    /// Connections beyond this are closed on accept, keeping file descriptors for streams
    /// already open (and the registry's 503 for streams beyond its own limit).
    pub(crate) max_connections: usize,
    /// Deadline for a connection's first byte and request head, and for an idle keep-alive.
    pub(crate) header_timeout: Duration,
    /// Deadline from a request's head to its response (the body is read within it).
    pub(crate) request_timeout: Duration,
    /// A connection whose socket accepts no bytes for this long is closed.
    pub(crate) write_timeout: Duration,
    /// How long to wait for connections to finish after `shutdown` before giving up on them.
    pub(crate) shutdown_grace: Duration,
    /// How long idle keep-alive connections are kept after `shutdown` (`--drain-window`): a
    /// request that arrives on one is answered (and its connection then closed) rather than
    /// meeting a reset.
    pub(crate) drain_window: Duration,
    /// `--tls-cert`: every connection is TLS, served by [`secure`].
    pub(crate) tls: Option<TlsAcceptor>,
}

/// The listening socket and what every accepted connection takes from it (as mini-redis'
/// `Listener`): a permit from the connection budget, and a place in the task tracker.
struct Listener {
    listener: TcpListener,
    /// One permit per open connection. The permit moves into the connection's task and is
    /// released when that task ends, however it ends; a connection that finds none left is
    /// closed at once rather than queued, so the clients already connected keep their sockets.
    budget: Arc<Semaphore>,
    /// The budget's size, for the log line when it runs out.
    max_connections: usize,
    /// Each address's share of the budget, so that one client cannot take every slot.
    limits: Arc<Limits>,
    /// Refusals being answered. Answering costs a descriptor for up to a second, so beyond
    /// these few a refused connection is closed unanswered. On the TLS listener none is: an
    /// answer would need a handshake, the very work a flood wants the server to do.
    answering: Option<Arc<Semaphore>>,
    /// Refusals by address's share, for their log lines.
    over_share: Sampled<IpAddr>,
    /// Refusals for want of any slot, and failed accepts, for their log lines.
    over_budget: Sampled<&'static str>,
    /// Every connection task, so that shutdown can wait for them to finish.
    tracker: TaskTracker,
}

impl Listener {
    /// Accepts connections for ever, handing each one with a permit to `serve` on its own task.
    async fn run<F, Fut>(&self, serve: F)
    where
        F: Fn(TcpStream, SocketAddr) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        loop {
            let (stream, peer) = self.accept().await;
            let place = match self.limits.connect(peer.ip()) {
                Ok(place) => place,
                Err(refusal) => {
                    self.refuse(stream, peer.ip(), refusal);
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&self.budget).try_acquire_owned() else {
                self.limits.metrics.connections_refused.inc();
                if let Some(refused) = self.over_budget.note("budget") {
                    warn!(
                        limit = self.max_connections,
                        refused,
                        "connection limit reached; closing new connections (logged once per 10 s)"
                    );
                }
                continue;
            };
            let _ = stream.set_nodelay(true);
            let connection = serve(stream, peer);
            // `map`, not an `async move` block that awaits `connection`: such a block stores
            // the captured future and the awaited one side by side (rust-lang/rust#62958),
            // which doubled what every open connection's task holds (3.3 -> 6.6 KB).
            self.tracker
                .spawn(connection.map(move |()| drop((permit, place))));
        }
    }

    /// Answers a connection over its address's share with 429 naming the limit and when to
    /// retry (a reset would tell the client nothing), when few others are being answered.
    fn refuse(&self, mut stream: TcpStream, peer: IpAddr, refusal: Limited) {
        if let Some(refused) = self.over_share.note(peer) {
            warn!(
                %peer,
                refused,
                %refusal,
                "an address is over its connection share; refusing (logged once per 10 s per address)"
            );
        }
        let Some(Ok(answering)) = self
            .answering
            .as_ref()
            .map(|a| Arc::clone(a).try_acquire_owned())
        else {
            return;
        };
        self.tracker.spawn(async move {
            lean::refuse(&mut stream, ApiError::from(refusal).into_response()).await;
            drop(answering);
        });
    }

    /// The next connection. EMFILE and friends: back off briefly instead of spinning.
    async fn accept(&self) -> (TcpStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok(accepted) => return accepted,
                Err(err) => {
                    if let Some(failed) = self.over_budget.note("accept") {
                        warn!(error = %err, failed, "accept failed (logged once per 10 s)");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Serves `filter` on `listener` (and `GET /events/` connections through [`lean`] with
/// `context`) until `shutdown` resolves, then stops accepting: the listener closes, and every
/// answer from then on says `Connection: close`. Returns the connections still open, for the
/// caller to wait on once their streams are told to end (see `lifecycle`).
pub(crate) async fn run<F>(
    listener: TcpListener,
    filter: F,
    context: Context,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Connections
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    // hyper keeps a connection's in-flight request future inline for the connection's whole
    // life. warp's combined filter future is several KiB; boxing it (outermost layer) means
    // the allocation is freed once the response has started, which for an SSE stream is
    // almost at once: idle streams then cost what they hold, not what routing needed.
    let (header_timeout, request_timeout, write_timeout) = (
        options.header_timeout,
        options.request_timeout,
        options.write_timeout,
    );
    let closing = Arc::new(AtomicBool::new(false));
    let origins = Origins::new(&options.cors_origins);
    let service = ServiceBuilder::new()
        .layer(BoxCloneSyncService::layer())
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<Incoming>| {
                    request_span(request.method(), request.uri())
                })
                // A 5xx here is a refusal (a full server, a backplane outage, each logged
                // where it is decided) or a fault logged where it happened: not an ERROR
                // line of its own for every refused request.
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .option_layer(origins.layer())
        .map_response({
            let closing = Arc::clone(&closing);
            move |mut response: Response<_>| {
                // Stopping: each client learns it with its next answer, and opens its next
                // connection elsewhere.
                if closing.load(Ordering::Relaxed) {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        })
        .map_future(move |answer| async move {
            // A body that stalls or trickles would otherwise hold its connection for ever.
            tokio::time::timeout(request_timeout, answer)
                .await
                .unwrap_or_else(|_| Ok(ApiError::request_timeout().into_response()))
        })
        .service(warp::service(filter));

    let graceful = GracefulShutdown::new();
    let listener = Listener {
        listener,
        budget: Arc::new(Semaphore::new(options.max_connections)),
        max_connections: options.max_connections,
        limits: Arc::clone(&context.limits),
        answering: options
            .tls
            .is_none()
            .then(|| Arc::new(Semaphore::new(REFUSALS_ANSWERED))),
        over_share: Sampled::default(),
        over_budget: Sampled::default(),
        tracker: TaskTracker::new(),
    };
    // Shared, and cloned only for connections that go to hyper: a clone is a boxed copy of
    // every layer and route (about 1.3 KiB) that a stream connection would hold for its life.
    let service = Arc::new(service);
    let graceful_ref = &graceful;
    // What the TLS listener's connections watch instead of `graceful` (see `secure`).
    let drain = CancellationToken::new();
    let drain_ref = &drain;
    let shared_context = context;
    let tls = options.tls.clone();
    let serve = move |stream: TcpStream, peer: SocketAddr| {
        let service = Arc::clone(&service);
        let context = shared_context.clone();
        let origins = origins.clone();
        let listener = match &tls {
            Some(acceptor) => Side::Tls(acceptor.clone(), drain_ref.clone()),
            None => Side::Plain(graceful_ref.watcher()),
        };
        // Two phases: everything up to a stream's first byte runs boxed, and the allocation is
        // freed once the stream starts; the task then holds only the stream's own state
        // ([`lean::Streaming`], a few hundred bytes), for as long as the stream lives. Inline,
        // the task kept the largest state of any phase, and the arguments of every call on the
        // way to the stream twice (argument and local): 3.2 KB per idle stream.
        let preamble = Box::pin(async move {
            let watcher = match listener {
                Side::Plain(watcher) => watcher,
                Side::Tls(acceptor, drain) => {
                    // Boxed: inline, its state would size every plain connection's preamble too.
                    let secure = secure::serve(
                        stream,
                        peer,
                        acceptor,
                        service.as_ref(),
                        drain,
                        header_timeout,
                        write_timeout,
                    );
                    Box::pin(secure).await;
                    return None;
                }
            };
            // The first byte has the same deadline as the head: a connection that sends
            // nothing must not hold its permit for ever.
            let started = tokio::time::Instant::now();
            let Ok(lean) = tokio::time::timeout(header_timeout, claimed_by_lean(&stream)).await
            else {
                return None;
            };
            let first_head = header_timeout.saturating_sub(started.elapsed());
            let (stream, head) = if lean {
                let mut stream = stream;
                let head = lean::read_request(&mut stream, first_head).await?;
                (stream, head)
            } else {
                // Boxed: hyper's state is held only until a stream takes the connection over,
                // and a stream is then the same size whichever way it came.
                let hyper = serve_with_hyper(
                    stream,
                    peer,
                    service.as_ref(),
                    watcher,
                    Deadlines {
                        first_head,
                        idle: header_timeout,
                        write: write_timeout,
                    },
                );
                let (stream, request) = Box::pin(hyper).await?;
                let head = lean::Head::copied_from(request)?;
                (stream, head)
            };
            // Boxed: the preamble's allocation is sized by its largest step, and a TLS or
            // keep-alive connection holds it for its whole life; attaching is the largest.
            Box::pin(lean::serve_head(
                stream,
                head,
                peer,
                context,
                &origins,
                write_timeout,
            ))
            .await
        });
        preamble.then(|mut streaming| async move {
            if let Some(streaming) = streaming.as_mut() {
                streaming.run().await;
            }
        })
    };
    tokio::select! {
        () = listener.run(serve) => {}
        () = shutdown => {}
    }

    // Closed now, not when this function returns: a connection the kernel queued for a socket
    // nobody accepts from would wait out the whole shutdown, then be reset.
    let Listener {
        tracker,
        listener: socket,
        ..
    } = listener;
    drop(socket);
    closing.store(true, Ordering::Relaxed);
    tracker.close();
    info!("shutting down: listener closed, closing streams");
    Connections {
        tracker,
        graceful,
        drain,
        drain_window: options.drain_window,
        shutdown_grace: options.shutdown_grace,
    }
}

/// A connection's listener, and what tells the connection that the server is stopping:
/// hyper's watcher on the plain listener; on the TLS listener a token, since those
/// connections also close themselves when idle (see `secure`).
enum Side {
    Plain(Watcher),
    Tls(TlsAcceptor, CancellationToken),
}

/// The connections open when the edge stopped accepting.
pub(crate) struct Connections {
    /// Every connection task; closed: no new one joins.
    tracker: TaskTracker,
    /// hyper's side of the plain listener's connections.
    graceful: GracefulShutdown,
    /// The same for the TLS listener's.
    drain: CancellationToken,
    drain_window: Duration,
    shutdown_grace: Duration,
}

impl Connections {
    /// Waits for every connection to finish, for at most the grace period: streams once told
    /// to end, idle keep-alive connections after the drain window.
    pub(crate) async fn finished(self) {
        let Connections {
            tracker,
            graceful,
            drain,
            drain_window,
            shutdown_grace,
        } = self;
        let drained = async {
            // Idle keep-alive connections stay for the drain window, answering with
            // `Connection: close`: closing one just as its client sends a request would reset it.
            let _ = tokio::time::timeout(drain_window, tracker.wait()).await;
            drain.cancel();
            graceful.shutdown().await;
            tracker.wait().await;
        };
        if tokio::time::timeout(shutdown_grace, drained).await.is_err() {
            warn!("connections still open after the shutdown grace period; leaving them");
        }
    }
}
