//! The accept loop: tower-http layers around the warp filter, connection limits, the hand-off
//! of `GET /events/` connections to [`lean`], and the graceful drain. Kept in one place because
//! warp's own `serve` cannot take tower layers.
//!
//! Layers, outermost first: mark `Authorization` sensitive (never printed), trace each request
//! with the query's `token` redacted, and CORS when origins are configured (none: same origin
//! only, so no CORS headers at all).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower::util::BoxCloneService;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use tracing::{info, warn};
use warp::Filter;
use warp::http::{HeaderName, HeaderValue, Method, Request, Uri, header};
use warp::reply::Reply;

use super::{Context, lean};

/// hyper's per-connection buffer limit (its minimum).
const MAX_BUF: usize = 8 * 1024;

/// The URI with any `token` query parameter's value replaced, for logs and traces.
pub fn redact(uri: &Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("token", _)) => "token=REDACTED".to_owned(),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{}?{}", uri.path(), query.join("&"))
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
            ]),
    )
}

/// Options for [`run`].
pub struct ServeOptions {
    pub cors_origins: Vec<String>,
    /// Connections beyond this are closed on accept, keeping file descriptors for streams
    /// already open (and the registry's 503 for streams beyond its own limit).
    pub max_connections: usize,
    /// How long to wait for connections to finish after `shutdown` before giving up on them.
    pub shutdown_grace: Duration,
}

/// Serves `filter` on `listener` (and `GET /events/` connections through [`lean`] with
/// `context`) until `shutdown` resolves, then cancels `context.shutdown` (every SSE stream and
/// background task watches it) and drains open connections for at most the grace period.
pub async fn run<F>(
    listener: TcpListener,
    filter: F,
    context: Context,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    // hyper keeps a connection's in-flight request future inline for the connection's whole
    // life. warp's combined filter future is several KiB; boxing it (outermost layer) means
    // the allocation is freed once the response has started, which for an SSE stream is
    // almost at once: idle streams then cost what they hold, not what routing needed.
    let service = ServiceBuilder::new()
        .layer(BoxCloneService::layer())
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<Incoming>| {
                tracing::debug_span!("http", method = %request.method(), uri = %redact(request.uri()))
            }),
        )
        .option_layer(cors(&options.cors_origins))
        .service(warp::service(filter));

    let origins: Arc<[String]> = options.cors_origins.clone().into();
    let open = Arc::new(AtomicUsize::new(0));
    let graceful = GracefulShutdown::new();
    let tracker = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if open.load(Ordering::Relaxed) >= options.max_connections {
            warn!(
                limit = options.max_connections,
                "connection limit reached; closing new connection"
            );
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let guard = ConnectionGuard::new(&open);
        let service = TowerToHyperService::new(service.clone());
        let watcher = graceful.watcher();
        let context = context.clone();
        let origins = Arc::clone(&origins);
        tracker.spawn(async move {
            let _guard = guard;
            if claimed_by_lean(&stream).await {
                return lean::serve(stream, context, &origins).await;
            }
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                // hyper's default lets a connection queue ~400 KiB of response before it
                // stops pulling the body; with thousands of streams that is unbounded in
                // practice. At the minimum, a slow reader stops pulling at once and its
                // events wait in its bounded mailbox, where overflow is counted as `lagged`.
                .max_buf_size(MAX_BUF)
                .serve_connection(TokioIo::new(stream), service);
            let _ = watcher.watch(connection).await;
        });
    }

    drop(listener);
    info!("shutting down: listener closed, closing streams");
    context.shutdown.cancel();
    tracker.close();
    let drained = async {
        graceful.shutdown().await;
        tracker.wait().await;
    };
    if tokio::time::timeout(options.shutdown_grace, drained)
        .await
        .is_err()
    {
        warn!("connections still open after the shutdown grace period; leaving them");
    }
}

/// Whether a new connection starts with `GET /events/` (see `lean`). Requests arrive in one
/// packet in practice; a head split before the prefix is decided goes to hyper, which serves
/// `/events` as well, only with larger buffers.
async fn claimed_by_lean(stream: &TcpStream) -> bool {
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

/// Counts a connection as open for as long as it lives.
struct ConnectionGuard(Arc<AtomicUsize>);

impl ConnectionGuard {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(Arc::clone(open))
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_queries_are_redacted() {
        let uri: Uri = "/events/x?last_event_id=3&token=secret.abc"
            .parse()
            .unwrap();
        assert_eq!(redact(&uri), "/events/x?last_event_id=3&token=REDACTED");
        let uri: Uri = "/clients".parse().unwrap();
        assert_eq!(redact(&uri), "/clients");
    }
}
