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
//! - [`limits`]: how much anyone may ask: rates per address and session, per-address shares.
//! - [`auth`]: who may join: signed join tokens, the API key.
//! - [`state_file`]: `--state-file`, the sessions kept across a graceful restart.
//! - [`metrics`]: Prometheus counters both layers record into.
//! - [`shutdown`]: SIGINT/SIGTERM as one future.
#![forbid(unsafe_code)]

mod auth;
mod backplane;
mod config;
mod http;
mod limits;
mod metrics;
mod names;
mod registry;
pub mod shutdown;
pub mod state_file;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use auth::JoinPolicy;
use backplane::Hub;
pub use config::{AuthMode, Config, LogFormat};
pub use http::ROUTES;
pub use http::error::ErrorCode;
use http::server::ServeOptions;
use http::{Context, StreamSettings};
use metrics::Metrics;
pub use registry::Event;
use registry::{Registry, Settings};

/// Serves the API on `listener` until `shutdown` resolves, then closes every stream (spread over
/// the drain window) and returns once connections have drained or the grace period ends.
///
/// With `config.state_file`, the sessions saved there are restored before anything is served,
/// and every session is written back once the streams have closed.
///
/// # Errors
/// When `--auth` and the `--jwt-*` flags do not make a join policy (e.g. `jwt` without a
/// readable key), the listener's address cannot be read, the Redis URL is invalid, the state
/// file cannot be read (or is combined with a Redis URL), or it cannot be written at the end.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    config.check_mailbox().map_err(std::io::Error::other)?;
    let join = config.join_policy().map_err(std::io::Error::other)?;
    let api_key = config.api_key().map_err(std::io::Error::other)?;
    let address = listener.local_addr()?;
    match &join {
        JoinPolicy::Open if !address.ip().is_loopback() => warn!(
            %address,
            "--auth open: anyone who can reach this address may join under any name; use --auth jwt to admit only your app's users"
        ),
        JoinPolicy::Open => {}
        JoinPolicy::Jwt(verifier) => {
            info!(algorithm = ?verifier.algorithm(), "joins need a token (--auth jwt)");
        }
    }
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
        Arc::clone(&metrics),
    );
    if let Some(path) = &config.state_file {
        if config.redis_url.is_some() {
            return Err(std::io::Error::other(
                "--state-file is for a single instance; a cluster (--redis-url) hands its sessions to the other instances when one stops",
            ));
        }
        let loaded = state_file::load(&registry, path).map_err(std::io::Error::other)?;
        info!(
            path = %path.display(),
            restored = loaded.restored,
            dropped = loaded.dropped,
            "state loaded"
        );
    }
    let cancel = CancellationToken::new();
    // The bus outlives the edge: requests still being answered during the shutdown wait for
    // replies on it, and the hand-off travels on it.
    let bus = CancellationToken::new();
    let hub = match &config.redis_url {
        None => Hub::local(registry.clone(), config.presence),
        Some(url) => Hub::cluster(
            registry.clone(),
            config.presence,
            url,
            &config.redis_prefix,
            bus.clone(),
        )
        .map_err(|err| std::io::Error::other(format!("--redis-url: {err}")))?,
    };
    let expired = hub.clone();
    let reaper = tokio::spawn(registry::reaper::run(
        registry.clone(),
        cancel.clone(),
        move |peers| expired.expired(peers),
    ));
    let limits = Arc::new(config.limits(Arc::clone(&metrics)));
    tokio::spawn(forget_idle_limits(Arc::clone(&limits), cancel.clone()));
    let context = Context {
        hub,
        limits,
        join: Arc::new(join),
        api_key: api_key.map(Arc::new),
        session_ttl: config.session_ttl,
        stream: StreamSettings {
            heartbeat: config.heartbeat,
            retry: config.sse_retry,
            drain_window: config.drain_window,
        },
        shutdown: cancel.clone(),
    };
    if let Some(address) = config.metrics_listen {
        let metrics_listener = TcpListener::bind(address).await.map_err(|err| {
            std::io::Error::other(format!(
                "cannot listen on {address} (--metrics-listen): {err}"
            ))
        })?;
        info!(address = %metrics_listener.local_addr()?, "metrics on their own address");
        let server = warp::serve(http::metrics_routes(context.hub.clone()))
            .incoming(metrics_listener)
            .run();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = server => {}
                () = stop.cancelled() => {}
            }
        });
    }
    let routes = http::routes(
        context.clone(),
        config.max_body,
        config.public_dir.clone(),
        config.metrics_listen.is_none(),
    );
    info!(
        %address,
        max_streams,
        open_file_limit = ?Config::open_file_limit(),
        presence = config.presence,
        auth = ?config.auth,
        "listening"
    );
    let options = ServeOptions {
        cors_origins: config.cors_origins.clone(),
        header_timeout: config.header_timeout,
        request_timeout: config.request_timeout,
        write_timeout: config.write_timeout,
        max_connections: config.connection_limit(),
        shutdown_grace: config.shutdown_grace + config.drain_window,
        drain_window: config.drain_window,
    };
    http::server::run(listener, routes, context, options, shutdown).await;
    bus.cancel();
    let _ = reaper.await;
    if let Some(path) = &config.state_file {
        let saved = state_file::save(&registry, path).map_err(std::io::Error::other)?;
        info!(path = %path.display(), sessions = saved, "state saved");
    }
    info!("stopped");
    Ok(())
}

/// Every minute, drops the rate limiters' memory of clients that have gone quiet, so it
/// follows the active clients rather than every address that ever came.
async fn forget_idle_limits(limits: Arc<limits::Limits>, cancel: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => limits.forget_idle(),
            () = cancel.cancelled() => return,
        }
    }
}
