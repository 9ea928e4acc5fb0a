//! Server configuration: one [`Config`], parsed once in `main` from flags with `SWITCHBOARD_*`
//! environment fallbacks, then passed by value into `serve`. Nothing else reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipnet::IpNet;

use crate::backplane::HubSettings;
use crate::registry::event::ENVELOPE_OVERHEAD;

mod auth;
mod limits;
mod parse;
mod rooms;
mod sessions;
mod streams;

pub use auth::AuthMode;
pub use parse::{parse_listen, parse_log_filter};
use parse::{parse_origin, parse_proxy};
pub use rooms::{DirectMessages, RoomFlags};
pub use sessions::SessionFlags;
pub use streams::{StreamAuthFlags, UrlTokens};

/// switchboard: clients register with POST /helo, read their events from an SSE stream and
/// message each other with plain HTTP POSTs.
#[derive(Clone, Debug, Parser, PartialEq)]
#[command(version, about)]
pub struct Config {
    /// Address to listen on: `host:port` (`localhost:4000`, `0.0.0.0:4000`, `[::1]:4000`), or
    /// a port alone (`4000`, `:4000`) on the loopback address.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:4000", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// A session with no attached stream for this long is removed (e.g. 30s, 2m).
    #[arg(long, env = "SWITCHBOARD_SESSION_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub session_ttl: Duration,

    /// Interval of the `: ping` comment on quiet streams.
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,

    /// Reconnection delay suggested to clients in the stream's `retry:` line.
    #[arg(long, env = "SWITCHBOARD_SSE_RETRY", default_value = "2s", value_parser = humantime::parse_duration)]
    pub sse_retry: Duration,

    /// Events kept per session for delivery and replay. Unread direct messages are never
    /// evicted: a direct message that would take them past this gets 429; broadcasts and
    /// presence events make room by evicting read events, then the oldest unread broadcasts.
    #[arg(long, env = "SWITCHBOARD_MAILBOX_SIZE", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub mailbox_size: u32,

    /// Bytes of events kept per session (each message plus 256), beside the event count, by the
    /// same rule as `--mailbox-size`. At least 64 KiB, and at least `--max-body` + 256 so that
    /// the largest message fits (checked at start).
    #[arg(long, env = "SWITCHBOARD_MAILBOX_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(64 * 1024..))]
    pub mailbox_bytes: u64,

    /// Most registered sessions; POST /helo answers 503 beyond it.
    #[arg(long, env = "SWITCHBOARD_MAX_SESSIONS", default_value_t = 100_000)]
    pub max_sessions: usize,

    /// Most attached SSE streams; GET /events answers 503 beyond it. Default: the process's
    /// open-file limit minus 512 reserved descriptors.
    #[arg(long, env = "SWITCHBOARD_MAX_STREAMS")]
    pub max_streams: Option<usize>,

    /// Joins (`POST /helo`) per second from one client address; 0 turns the limit off.
    #[arg(long, env = "SWITCHBOARD_HELO_RATE", default_value_t = 50)]
    pub helo_rate: u32,

    /// Joins one address may make at once before `--helo-rate` applies (an office behind one
    /// NAT rejoining after a restart).
    #[arg(long, env = "SWITCHBOARD_HELO_BURST", default_value_t = 500)]
    pub helo_burst: u32,

    /// Messages (`/response` and `/broadcast`) per second from one session; 0 = off.
    #[arg(long, env = "SWITCHBOARD_MESSAGE_RATE", default_value_t = 50)]
    pub message_rate: u32,

    /// Messages one session may send at once before `--message-rate` applies.
    #[arg(long, env = "SWITCHBOARD_MESSAGE_BURST", default_value_t = 200)]
    pub message_burst: u32,

    /// Stream attaches (`GET /events`) one session may make in any 10 s; 0 = off. Only
    /// attaches that succeed count. Each sends the whole roster in `ready`, so a client
    /// re-attaching in a loop would cost the server in proportion to everyone.
    #[arg(long, env = "SWITCHBOARD_SESSION_ATTACHES", default_value_t = 20)]
    pub session_attaches: u32,

    /// Stream attaches per second from one client address; 0 = off.
    #[arg(long, env = "SWITCHBOARD_ADDRESS_ATTACH_RATE", default_value_t = 100)]
    pub address_attach_rate: u32,

    /// Attaches one address may make at once before `--address-attach-rate` applies (an office
    /// behind one NAT reconnecting after a restart).
    #[arg(long, env = "SWITCHBOARD_ADDRESS_ATTACH_BURST", default_value_t = 1000)]
    pub address_attach_burst: u32,

    /// `GET /clients` with a session token per second from one client address (each walks
    /// every session); the backend's API key is not counted. 0 = off.
    #[arg(long, env = "SWITCHBOARD_LIST_RATE", default_value_t = 10)]
    pub list_rate: u32,

    /// Listings one address may make at once before `--list-rate` applies.
    #[arg(long, env = "SWITCHBOARD_LIST_BURST", default_value_t = 100)]
    pub list_burst: u32,

    /// Message body bytes per second from one session (counted in KiB); 0 = off.
    #[arg(long, env = "SWITCHBOARD_BYTE_RATE", default_value_t = 1024 * 1024)]
    pub byte_rate: u64,

    /// Message body bytes one session may send at once before `--byte-rate` applies.
    #[arg(long, env = "SWITCHBOARD_BYTE_BURST", default_value_t = 4 * 1024 * 1024)]
    pub byte_burst: u64,

    /// Most live sessions from one client address; 0 = off. Default: a tenth of
    /// `--max-sessions`, at least 1,000; off up to 1,000 sessions.
    #[arg(long, env = "SWITCHBOARD_MAX_SESSIONS_PER_ADDRESS")]
    pub max_sessions_per_address: Option<usize>,

    /// Most attached streams from one client address; 0 = off. Default: a tenth of the
    /// stream limit, at least 1,000; off up to 1,000 streams.
    #[arg(long, env = "SWITCHBOARD_MAX_STREAMS_PER_ADDRESS")]
    pub max_streams_per_address: Option<usize>,

    /// Most open connections from one socket address (trusted proxies not counted); 0 = off.
    /// Default: a tenth of the connection limit, at least 1,000 and at most half of it.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,

    /// Proxies (addresses or CIDR blocks, comma-separated) whose `X-Forwarded-For` or
    /// `Forwarded` header names the client. Default: none, the socket's peer is the client.
    #[arg(long, env = "SWITCHBOARD_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_proxy)]
    pub trusted_proxies: Vec<IpNet>,

    /// Who may join: `open` (anyone, under any name) or `jwt` (`POST /helo` needs a token
    /// signed by the app's backend, which names the user).
    #[arg(long, env = "SWITCHBOARD_AUTH", value_enum, default_value_t = AuthMode::Open)]
    pub auth: AuthMode,

    /// `--auth jwt` with HS256: the shared secret, at least 32 bytes (surrounding whitespace
    /// trimmed). Exactly one of this and `--jwt-public-key-file`.
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// `--auth jwt` with a PEM public key (RSA: RS256, EC P-256/P-384: ES256/ES384, Ed25519:
    /// EdDSA); tokens must be signed with the matching private key.
    #[arg(long, env = "SWITCHBOARD_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// When set, a join token's `aud` must be present and contain this value.
    #[arg(long, env = "SWITCHBOARD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// When set, a join token's `iss` must be present and equal this value.
    #[arg(long, env = "SWITCHBOARD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Clock skew allowed on a join token's `exp`, `nbf` and `iat`.
    #[arg(long, env = "SWITCHBOARD_JWT_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,

    /// Enables the server API (`/api/*`) for the app's backend: the file holds its bearer key
    /// (at least 16 bytes; surrounding whitespace trimmed). Without it the API answers 404.
    #[arg(long, env = "SWITCHBOARD_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Largest request body accepted, in bytes (413 beyond); at least 1.
    #[arg(long, env = "SWITCHBOARD_MAX_BODY", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_body: u64,

    /// Origins allowed to call the API from another site (CORS), comma-separated. Default:
    /// none, i.e. same origin only.
    /// Each origin is trimmed and must be a plain origin such as `https://a.example`; `*` is
    /// refused (tokens travel in headers, so "any origin" is never what a deployment wants).
    #[arg(
        long = "cors-origin",
        env = "SWITCHBOARD_CORS_ORIGINS",
        value_delimiter = ',',
        value_parser = parse_origin
    )]
    pub cors_origins: Vec<String>,

    /// Longest wait for a new connection's first byte and its whole request head (both the
    /// stream path and hyper's), and for the next request on an idle keep-alive connection
    /// (over HTTP/2: the next stream on a connection with none open).
    #[arg(long, env = "SWITCHBOARD_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// Longest time from a request's head to its response, body included: a stalled or
    /// trickled body gets 408 and the connection is closed.
    #[arg(long, env = "SWITCHBOARD_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// A connection whose socket accepts nothing for this long (a client that stopped reading)
    /// is closed; a stream's session and mailbox stay, so the client resumes on reconnect.
    #[arg(long, env = "SWITCHBOARD_WRITE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,

    /// Announce joins and leaves (`new_user`, `user_left`) and list the roster in `ready`.
    /// Turn off for very large audiences: with it on, N clients joining cost O(N²) events.
    #[arg(long, env = "SWITCHBOARD_PRESENCE", default_value_t = true, action = clap::ArgAction::Set)]
    pub presence: bool,

    /// The room flags (`--room-presence-limit`, `--allow-rooms`, ...).
    #[command(flatten)]
    pub rooms: RoomFlags,

    /// The stream credential flags (`--url-tokens`, `--ticket-ttl`).
    #[command(flatten)]
    pub streams: StreamAuthFlags,

    /// The session lifetime flags (`--max-session-age`).
    #[command(flatten)]
    pub sessions: SessionFlags,

    /// Serve the web client at `/` from this directory instead of the copy built into the
    /// binary (for working on the page without rebuilding).
    #[arg(long, env = "SWITCHBOARD_PUBLIC_DIR")]
    pub public_dir: Option<PathBuf>,

    /// On shutdown, streams close at random moments within this window, so clients do not all
    /// reconnect at once.
    #[arg(long, env = "SWITCHBOARD_DRAIN_WINDOW", default_value = "1s", value_parser = humantime::parse_duration)]
    pub drain_window: Duration,

    /// Longest wait for open connections after shutdown begins.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Keep sessions across a graceful restart (single instance): on shutdown every session,
    /// its mailbox and its TTL are written to this file, and loaded (then removed) at start.
    /// An unreadable file or an unknown version stops the start. Not with `--redis-url` (a
    /// cluster instance hands its sessions to the others when it stops).
    #[arg(long, env = "SWITCHBOARD_STATE_FILE", conflicts_with = "redis_url")]
    pub state_file: Option<PathBuf>,

    /// Serve HTTPS (HTTP/2 and HTTP/1.1) with this PEM certificate chain; needs `--tls-key`.
    /// Reloaded on SIGHUP and when the files change (a pair that does not load is not used).
    #[arg(long, env = "SWITCHBOARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "SWITCHBOARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Redis URL (`redis://host:port/db`, `rediss://` for TLS) for cluster mode: several
    /// instances acting as one hub; or a Redis Cluster's seed nodes, comma-separated
    /// (`redis+cluster://h1:7000,h2:7001`, `rediss+cluster://` for TLS). Without it everything
    /// stays in this process and no Redis is needed.
    #[arg(long, env = "SWITCHBOARD_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel, so several clusters can share one Redis.
    #[arg(long, env = "SWITCHBOARD_REDIS_PREFIX", default_value = "switchboard")]
    pub redis_prefix: String,

    /// On a Redis Cluster, give each room (but `lobby`) a slot of its own, so that a
    /// deployment's room traffic spreads over the shards; off, everything of the deployment is
    /// in one slot, as before this flag. Every instance of a deployment must agree: switch it
    /// with every instance stopped. No effect on one Redis server.
    #[arg(long, env = "SWITCHBOARD_REDIS_SHARD_ROOMS", default_value_t = true, action = clap::ArgAction::Set)]
    pub redis_shard_rooms: bool,

    /// Serve `GET /metrics` on this address (same forms as `--listen`) instead of the public
    /// one, which then answers 404 there: metrics stay on an internal network.
    #[arg(long, env = "SWITCHBOARD_METRICS_LISTEN", value_parser = parse_listen)]
    pub metrics_listen: Option<SocketAddr>,

    /// Log filter, in `tracing_subscriber::EnvFilter` syntax (e.g. `info`, `switchboard=debug`).
    #[arg(long, env = "SWITCHBOARD_LOG", default_value = "info", value_parser = parse_log_filter)]
    pub log: String,

    /// Log line format: `text` for people, `json` for one JSON object per line.
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `tracing`'s human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the same fields (and the same redactions) as `text`.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            session_ttl: Duration::from_secs(30),
            heartbeat: Duration::from_secs(15),
            sse_retry: Duration::from_secs(2),
            mailbox_size: 256,
            mailbox_bytes: 1024 * 1024,
            max_sessions: 100_000,
            max_streams: None,
            helo_rate: 50,
            helo_burst: 500,
            message_rate: 50,
            message_burst: 200,
            byte_rate: 1024 * 1024,
            byte_burst: 4 * 1024 * 1024,
            session_attaches: 20,
            address_attach_rate: 100,
            address_attach_burst: 1000,
            list_rate: 10,
            list_burst: 100,
            max_sessions_per_address: None,
            max_streams_per_address: None,
            max_connections_per_address: None,
            trusted_proxies: Vec::new(),
            auth: AuthMode::Open,
            jwt_secret_file: None,
            jwt_public_key_file: None,
            jwt_audience: None,
            jwt_issuer: None,
            jwt_leeway: Duration::from_secs(30),
            api_key_file: None,
            max_body: 64 * 1024,
            cors_origins: Vec::new(),
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            presence: true,
            rooms: RoomFlags::default(),
            sessions: SessionFlags::default(),
            streams: StreamAuthFlags::default(),
            public_dir: None,
            drain_window: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
            state_file: None,
            tls_cert: None,
            tls_key: None,
            redis_url: None,
            redis_prefix: "switchboard".to_owned(),
            redis_shard_rooms: true,
            metrics_listen: None,
            log: "info".to_owned(),
            log_format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Whether the largest message a client may send fits a mailbox: otherwise every such
    /// direct message would be refused with 429 for ever, which a client can only retry.
    ///
    /// # Errors
    /// One line naming both flags and the smallest `--mailbox-bytes` that works.
    pub(crate) fn check_mailbox(&self) -> Result<(), String> {
        let largest = self.max_body + ENVELOPE_OVERHEAD as u64;
        if self.mailbox_bytes < largest {
            return Err(format!(
                "--mailbox-bytes {} cannot hold one message of --max-body {} (plus {ENVELOPE_OVERHEAD} for its envelope): raise it to at least {largest}, or lower --max-body",
                self.mailbox_bytes, self.max_body
            ));
        }
        Ok(())
    }

    /// Whether `--redis-prefix` can tag a Redis Cluster's keys: there every key and channel of
    /// the deployment carries the hash tag `{<prefix>}`, which Redis ignores when it is empty
    /// (the keys would scatter over every slot, and the scripts fail) and a brace would cut.
    ///
    /// # Errors
    /// One line naming the flag.
    pub(crate) fn check_redis_prefix(&self) -> Result<(), String> {
        // The schemes of a Redis Cluster's seed list (see the cluster transport).
        let cluster = self.redis_url.as_deref().is_some_and(|url| {
            url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://")
        });
        if cluster && (self.redis_prefix.is_empty() || self.redis_prefix.contains(['{', '}'])) {
            return Err(format!(
                "--redis-prefix {:?} cannot tag the keys of a Redis Cluster: give a prefix that is not empty and has no braces",
                self.redis_prefix
            ));
        }
        Ok(())
    }

    /// What the hub decides: presence, and who may be in which room and message whom.
    pub fn hub_settings(&self) -> HubSettings {
        self.rooms.hub_settings(self.presence)
    }

    /// The files of `--tls-cert` and `--tls-key`, when HTTPS is asked for.
    ///
    /// # Errors
    /// One line naming the missing flag, when only one of them is given.
    pub(crate) fn tls_files(&self) -> Result<Option<(PathBuf, PathBuf)>, String> {
        let missing = |flag: &str, needs: &str| Err(format!("{flag} needs {needs} (see --help)"));
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some((cert.clone(), key.clone()))),
            (None, None) => Ok(None),
            (Some(_), None) => missing("--tls-cert", "--tls-key, the certificate's private key"),
            (None, Some(_)) => missing("--tls-key", "--tls-cert, the certificate it signs for"),
        }
    }
}

#[cfg(test)]
mod tests;
