//! What the limit flags derive: the stream and connection limits from the open-file limit,
//! and the rate limits and per-address caps the hub and the edge enforce.

use std::sync::Arc;

use super::Config;
use crate::limits::{
    AddressCap, AttachRates, AttachSettings, LimitKind, Limits, Rate, RateLimits, RateSettings,
    default_connection_share, default_per_address,
};
use crate::metrics::Metrics;

/// File descriptors kept back from the stream limit for the listener, the runtime, static files
/// and short-lived API requests, so that a full house of streams still leaves room to answer 503.
pub const RESERVED_FDS: u64 = 512;

impl Config {
    /// The process's soft open-file limit, when it can be read.
    pub fn open_file_limit() -> Option<u64> {
        rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _hard)| soft)
    }

    /// Most streams to accept: `max_streams` if set, else the open-file limit less
    /// [`RESERVED_FDS`] (each stream holds one socket).
    pub fn stream_limit(&self) -> usize {
        self.max_streams.unwrap_or_else(|| {
            let fds = Self::open_file_limit().unwrap_or(1024);
            usize::try_from(fds.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX)
        })
    }

    /// The rate limits and per-address caps these flags ask for.
    pub(crate) fn limits(&self, metrics: Arc<Metrics>) -> Limits {
        // Every series at 0 from the start, so a dashboard has one before the first refusal.
        for kind in LimitKind::ALL {
            metrics.limited_series(kind.as_str());
        }
        let share = |flag: Option<usize>, total| flag.unwrap_or_else(|| default_per_address(total));
        Limits {
            rates: RateLimits::new(RateSettings {
                helo: Rate {
                    per_second: self.helo_rate,
                    burst: self.helo_burst,
                },
                messages: Rate {
                    per_second: self.message_rate,
                    burst: self.message_burst,
                },
                bytes_per_second: self.byte_rate,
                byte_burst: self.byte_burst,
            }),
            attaches: AttachRates::new(AttachSettings {
                per_session: self.session_attaches,
                per_address: Rate {
                    per_second: self.address_attach_rate,
                    burst: self.address_attach_burst,
                },
                lists: Rate {
                    per_second: self.list_rate,
                    burst: self.list_burst,
                },
            }),
            // An abandoned session frees its place within one TTL; a stream at once.
            sessions: AddressCap::new(
                LimitKind::SessionsPerAddress,
                share(self.max_sessions_per_address, self.max_sessions),
                self.session_ttl,
            ),
            streams: AddressCap::new(
                LimitKind::StreamsPerAddress,
                share(self.max_streams_per_address, self.stream_limit()),
                self.sse_retry,
            ),
            // Connections come and go; the client's own reconnect delay is a fair wait.
            connections: AddressCap::new(
                LimitKind::ConnectionsPerAddress,
                self.max_connections_per_address
                    .unwrap_or_else(|| default_connection_share(self.connection_limit())),
                self.sse_retry,
            ),
            trusted_proxies: self.trusted_proxies.clone(),
            metrics,
        }
    }

    /// Most connections of any kind: the open-file limit less a few for the process itself.
    pub fn connection_limit(&self) -> usize {
        let fds = Self::open_file_limit().unwrap_or(1024);
        usize::try_from(fds.saturating_sub(64).max(1)).unwrap_or(usize::MAX)
    }
}
