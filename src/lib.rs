//! switchboard: a real-time message hub over Server-Sent Events and plain HTTP POST.
//!
//! Clients register (`POST /helo`), read their own ordered, bounded mailbox as an SSE stream
//! (`GET /events/{id}`), and write to each other (`POST /response`, `POST /broadcast`). A port
//! of the Phoenix LiveView "Registry + PubSub, a process per client" design.
//!
//! # Layout
//! - [`config`]: the flags and their defaults.
//! - [`registry`]: where sessions live: sessions, mailboxes, streams, TTL. Mechanics only, no HTTP.
//! - [`backplane`]: the hub the edge calls: presence (who hears what), over this process alone
//!   or a cluster over Redis.
//! - [`http`]: warp filters and handlers over the registry, the SSE wire format, JSON errors,
//!   and the accept loop with tower-http layers.
//! - [`metrics`]: Prometheus counters both layers record into.
//! - [`shutdown`]: SIGINT/SIGTERM as one future.
#![forbid(unsafe_code)]

mod auth;
pub mod backplane;
pub mod config;
pub mod http;
mod limits;
pub mod metrics;
mod names;
pub mod registry;
pub mod shutdown;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use backplane::Hub;
pub use config::Config;
use http::server::ServeOptions;
use http::{Context, StreamSettings};
use metrics::Metrics;
use registry::{Registry, Settings};

/// Serves the API on `listener` until `shutdown` resolves, then closes every stream (spread over
/// the drain window) and returns once connections have drained or the grace period ends.
///
/// # Errors
/// When the listener's address cannot be read or the Redis URL is invalid.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let max_streams = config.stream_limit();
    let metrics = Arc::new(Metrics::default());
    let registry = Registry::new(
        Settings {
            mailbox_size: config.mailbox_size as usize,
            mailbox_bytes: usize::try_from(config.mailbox_bytes).unwrap_or(usize::MAX),
            max_sessions: config.max_sessions,
            max_streams,
            session_ttl: config.session_ttl,
        },
        metrics,
    );
    let cancel = CancellationToken::new();
    let hub = match &config.redis_url {
        None => Hub::local(registry.clone(), config.presence),
        Some(url) => Hub::cluster(
            registry.clone(),
            config.presence,
            url,
            &config.redis_prefix,
            cancel.clone(),
        )
        .map_err(|err| std::io::Error::other(format!("--redis-url: {err}")))?,
    };
    let expired = hub.clone();
    let reaper = tokio::spawn(registry::reaper::run(
        registry,
        cancel.clone(),
        move |peers| expired.expired(peers),
    ));
    let context = Context {
        hub,
        stream: StreamSettings {
            heartbeat: config.heartbeat,
            retry: config.sse_retry,
            drain_window: config.drain_window,
        },
        shutdown: cancel.clone(),
    };
    let routes = http::routes(context.clone(), config.max_body, config.public_dir.clone());
    info!(
        address = %listener.local_addr()?,
        max_streams,
        open_file_limit = ?Config::open_file_limit(),
        presence = config.presence,
        "listening"
    );
    let options = ServeOptions {
        cors_origins: config.cors_origins.clone(),
        header_timeout: config.header_timeout,
        request_timeout: config.request_timeout,
        write_timeout: config.write_timeout,
        max_connections: config.connection_limit(),
        shutdown_grace: config.shutdown_grace + config.drain_window,
    };
    http::server::run(listener, routes, context, options, shutdown).await;
    let _ = reaper.await;
    info!("stopped");
    Ok(())
}
