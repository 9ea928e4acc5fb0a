//! switchboard: a real-time message hub over Server-Sent Events and plain HTTP POST.
//!
//! Clients register (`POST /helo`), read their own ordered, bounded mailbox as an SSE stream
//! (`GET /events/{id}`), and write to each other (`POST /response`, `POST /broadcast`). A port
//! of the Phoenix LiveView "Registry + PubSub, a process per client" design.
//!
//! # Layout
//! - [`config`]: the flags and their defaults.
//! - [`identity`]: ids, tokens and display names; the ground floor everyone imports.
//! - [`registry`]: where sessions live: sessions, mailboxes, streams, TTL. Mechanics only, no HTTP.
//! - [`backplane`]: the hub the edge calls: presence (who hears what), over this process alone
//!   or a cluster over Redis.
//! - [`http`]: warp filters and handlers over the registry, the SSE wire format, JSON errors,
//!   and the accept loop with tower-http layers.
//! - [`limits`]: how much anyone may ask: rates per address and session, per-address shares.
//! - [`auth`]: who may join: signed join tokens, the API key.
//! - [`state_file`]: `--state-file`, the sessions kept across a graceful restart.
//! - [`metrics`]: Prometheus counters both layers record into.
//! - [`lifecycle`]: the numbered steps of start and stop, in one place.
//! - [`shutdown`]: SIGINT/SIGTERM as one future.
#![forbid(unsafe_code)]

mod auth;
mod backplane;
mod config;
mod http;
mod identity;
mod lifecycle;
mod limits;
mod metrics;
mod registry;
pub mod shutdown;
pub mod state_file;

use std::future::Future;

use tokio::net::TcpListener;

pub use config::{
    AuthMode, Config, DirectMessages, LogFormat, RoomFlags, SessionFlags, StreamAuthFlags,
    UrlTokens,
};
pub use http::ROUTES;
pub use http::error::ErrorCode;
pub use identity::RoomPattern;
pub use metrics::families as metric_families;
pub use registry::Event;

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
    lifecycle::run(listener, config, shutdown).await
}
