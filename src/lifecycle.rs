//! The life of a server, start to stop, in numbered steps: the one place that orders them.
//!
//! Start:
//! 1. check the configuration (join policy, API key, mailbox against body size, the TLS
//!    certificate);
//! 2. build the registry, restoring the sessions of `--state-file`;
//! 3. build the hub over its broker: this process alone, or the cluster over Redis;
//! 4. start the background tasks: the reaper, the rate limiters' forgetting, the room counts,
//!    the figures for the admin console, the TLS certificate's reload;
//! 5. accept connections until the shutdown trigger fires (and `/metrics` on
//!    `--metrics-listen`'s own address, when set, until Stop 6).
//!
//! Stop:
//! 1. stop accepting: the edge closes its listener, and answers on open connections say
//!    `Connection: close`; `switchboard_draining` is 1 from here on;
//! 2. drain the sessions homed here to the other instances (in a cluster; alone they stay);
//! 3. cancel the background tasks;
//! 4. close every stream, each after writing what it holds;
//! 5. flush: wait for the open connections to finish, within the grace period;
//! 6. stop the bus: the cluster's tasks end, and with them its subscription;
//! 7. save the state file.
//!
//! The bus outlives the edge: requests still being answered during the shutdown wait for
//! replies on it, and the drain travels on it.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::JoinPolicy;
use crate::auth::ticket::Tickets;
use crate::backplane::Hub;
use crate::config::{Config, UrlTokens};
use crate::http::server::ServeOptions;
use crate::http::tls::{self, Certificates};
use crate::http::{self, Context, StreamSettings};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::registry::{self, Registry, Settings};
use crate::state_file;

/// Runs a server on `listener` from start to stop (see the module doc); `serve`'s body.
pub(crate) async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    // Start 1: the configuration.
    config.check_mailbox().map_err(std::io::Error::other)?;
    config.check_redis_prefix().map_err(std::io::Error::other)?;
    let join = config.join_policy().map_err(std::io::Error::other)?;
    let api_key = config.api_key().map_err(std::io::Error::other)?;
    let certificates = match config.tls_files().map_err(std::io::Error::other)? {
        Some((cert, key)) => Some(Arc::new(
            Certificates::load(cert, key).map_err(std::io::Error::other)?,
        )),
        None => None,
    };
    let tls = certificates
        .as_ref()
        .map(Certificates::acceptor)
        .transpose()
        .map_err(std::io::Error::other)?;
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

    // Start 2: the registry, and the sessions kept across a restart.
    let registry = Registry::new(
        Settings {
            mailbox_size: config.mailbox_size as usize,
            mailbox_bytes: usize::try_from(config.mailbox_bytes).unwrap_or(usize::MAX),
            max_sessions: config.max_sessions,
            max_streams,
            session_ttl: config.session_ttl,
            max_rooms_per_session: config.rooms.max_rooms_per_session as usize,
            max_rooms: usize::try_from(config.rooms.max_rooms).unwrap_or(usize::MAX),
            max_session_age: config.sessions.max_session_age,
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

    // Start 3: the hub. The bus has a token of its own: it stops last but one (Stop 6).
    let cancel = CancellationToken::new();
    let bus = CancellationToken::new();
    let hub = match &config.redis_url {
        None => Hub::local(registry.clone(), config.hub_settings()),
        Some(url) => Hub::cluster(
            registry.clone(),
            config.hub_settings(),
            url,
            &config.redis_prefix,
            config.redis_shard_rooms,
            bus.clone(),
        )
        .map_err(|err| std::io::Error::other(format!("--redis-url: {err}")))?,
    };

    // Start 4: the background tasks, which end at Stop 3.
    let expired = hub.clone();
    let reaper = tokio::spawn(registry::reaper::run(
        registry.clone(),
        cancel.clone(),
        move |departed| expired.expired(departed),
    ));
    let limits = Arc::new(config.limits(Arc::clone(&metrics)));
    tokio::spawn(forget_idle_limits(Arc::clone(&limits), cancel.clone()));
    tokio::spawn(count_rooms(hub.clone(), cancel.clone()));
    tokio::spawn(hub.clone().report_figures(cancel.clone()));
    if let Some(certificates) = certificates {
        tokio::spawn(tls::watch(certificates, cancel.clone())?);
    }

    // Start 5: the edge, until `shutdown`.
    let context = Context {
        hub: hub.clone(),
        limits,
        join: Arc::new(join),
        api_key: api_key.map(Arc::new),
        session_ttl: config.session_ttl,
        tickets: Arc::new(Tickets::new(config.streams.ticket_ttl)),
        url_tokens: config.streams.url_tokens == UrlTokens::On,
        stream: StreamSettings {
            heartbeat: config.heartbeat,
            retry: config.sse_retry,
            drain_window: config.drain_window,
        },
        shutdown: cancel.clone(),
    };
    if let Some(address) = config.metrics_listen {
        // Until the bus stops (Stop 6): a scraper sees the whole drain.
        serve_metrics(address, hub.clone(), bus.clone()).await?;
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
        tls = tls.is_some(),
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
        tls,
    };
    // Stop 1: returns once `shutdown` fired and the edge stopped accepting.
    let connections = http::server::run(listener, routes, context, options, shutdown).await;
    metrics.draining.set(1);
    // Stop 2: before the background tasks stop; the drain travels on the bus.
    hub.drain().await;
    // Stop 3.
    cancel.cancel();
    // Stop 4.
    hub.close_streams();
    // Stop 5.
    connections.finished().await;
    // Stop 6.
    bus.cancel();
    let _ = reaper.await;
    // Stop 7.
    if let Some(path) = &config.state_file {
        let saved = state_file::save(&registry, path).map_err(std::io::Error::other)?;
        info!(path = %path.display(), sessions = saved, "state saved");
    }
    info!("stopped");
    Ok(())
}

/// `--metrics-listen`: `/metrics` alone on its own address, until `cancel` fires (Stop 6).
///
/// # Errors
/// When the address cannot be bound.
async fn serve_metrics(
    address: std::net::SocketAddr,
    hub: Hub,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(address).await.map_err(|err| {
        std::io::Error::other(format!(
            "cannot listen on {address} (--metrics-listen): {err}"
        ))
    })?;
    info!(address = %listener.local_addr()?, "metrics on their own address");
    let server = warp::serve(http::metrics_routes(hub))
        .incoming(listener)
        .run();
    tokio::spawn(async move {
        tokio::select! {
            () = server => {}
            () = cancel.cancelled() => {}
        }
    });
    Ok(())
}

/// Every minute, drops the rate limiters' memory of clients that have gone quiet, so it
/// follows the active clients rather than every address that ever came.
async fn forget_idle_limits(limits: Arc<Limits>, cancel: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => limits.forget_idle(),
            () = cancel.cancelled() => return,
        }
    }
}

/// Tells the members of rooms above `--room-presence-limit` their count, once a second while
/// it changes (see `backplane::presence`), until `cancel` fires.
async fn count_rooms(hub: Hub, cancel: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => hub.count_rooms().await,
            () = cancel.cancelled() => return,
        }
    }
}
