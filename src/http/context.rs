//! What every handler is given: the [`Context`] (the hub, the limits, who may join, stream
//! timings, the shutdown signal), the [`StreamSettings`] every stream shares, and the
//! [`PeerAddr`] the accept loop puts into each request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::JoinPolicy;
use crate::auth::api_key::ApiKey;
use crate::auth::ticket::Tickets;
use crate::backplane::Hub;
use crate::limits::Limits;

/// Timings every stream shares.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    pub heartbeat: Duration,
    pub retry: Duration,
    pub drain_window: Duration,
}

/// What the handlers share: the hub, the limits, who may join, stream timings, and the
/// shutdown signal.
#[derive(Clone)]
pub struct Context {
    pub hub: Hub,
    pub(crate) limits: Arc<Limits>,
    pub(crate) join: Arc<JoinPolicy>,
    /// The server API's key; `None`: the API is off (404).
    pub(crate) api_key: Option<Arc<ApiKey>>,
    pub stream: StreamSettings,
    /// What a full house tells clients to wait: an abandoned session is gone after one TTL.
    pub session_ttl: Duration,
    /// The stream tickets issued here (`POST /session/ticket`).
    pub(crate) tickets: Arc<Tickets>,
    /// Whether `?token=` may open a stream (`--url-tokens`).
    pub(crate) url_tokens: bool,
    pub shutdown: CancellationToken,
}

/// The socket peer of the connection a request came on, put into every request's extensions
/// by the accept loop (warp's own `addr::remote` only works with warp's server).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

/// Marks a request that came over the TLS listener (so the session cookie is `Secure`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct OverTls;
