//! How much anyone may ask of the server: request rates (joins per client address; messages
//! and bytes per session) and per-address shares of the session and stream capacity, plus the
//! rule for finding a client's address behind trusted proxies. It owns the counting (and the
//! `/metrics` count of refusals by [`LimitKind::as_str`]); the edge calls [`Limits`] and renders
//! a [`Limited`] as 429 `rate_limited` with `Retry-After`.
//!
//! Rates are GCRA token buckets from `governor`, keyed by address or session. Bytes are counted
//! in cells of 1 KiB (rounded up), so a quota of 1,024 cells per second is 1 MiB/s. Every limit
//! can be turned off with 0, and the defaults are sized for many people behind one address (an
//! office NAT reconnecting all at once after a restart) and for test runs that open hundreds of
//! sessions from 127.0.0.1.
//!
//! Addresses are grouped before they are counted: an IPv6 client usually holds a whole /64, so
//! keying single IPv6 addresses would let it step around every per-address limit.
//!
//! The flags and their defaults are in `config` (and the flag table of `docs/operations.md`).

mod address;
mod attach;
mod forwarded;
mod rate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use std::sync::Arc;

use ipnet::IpNet;

use crate::identity::SessionId;
use crate::metrics::Metrics;

pub(crate) use address::{AddressCap, AddressGuard, default_connection_share, default_per_address};
pub(crate) use attach::{AttachRates, AttachSettings};
pub(crate) use forwarded::client_address;
pub(crate) use rate::{Rate, RateLimits, RateSettings};

/// Which limit refused a request; its [`as_str`](LimitKind::as_str) is the metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LimitKind {
    /// `POST /helo` per client address.
    HeloRate,
    /// `/response` and `/broadcast` per session, counted in requests.
    MessageRate,
    /// `/response` and `/broadcast` per session, counted in body bytes.
    ByteRate,
    /// Live sessions per client address.
    SessionsPerAddress,
    /// Attached streams per client address.
    StreamsPerAddress,
    /// Open connections per socket address (trusted proxies exempt).
    ConnectionsPerAddress,
    /// Successful `GET /events` per session in a window.
    AttachRate,
    /// `GET /events` per client address.
    AttachAddressRate,
    /// `GET /clients` with a session token, per client address.
    ListRate,
}

impl LimitKind {
    /// Every limit, for `/metrics` to list each at 0 from the start.
    pub(crate) const ALL: [LimitKind; 9] = [
        LimitKind::HeloRate,
        LimitKind::MessageRate,
        LimitKind::ByteRate,
        LimitKind::SessionsPerAddress,
        LimitKind::StreamsPerAddress,
        LimitKind::ConnectionsPerAddress,
        LimitKind::AttachRate,
        LimitKind::AttachAddressRate,
        LimitKind::ListRate,
    ];

    /// The snake_case name used in messages and as the `/metrics` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LimitKind::HeloRate => "helo_rate",
            LimitKind::MessageRate => "message_rate",
            LimitKind::ByteRate => "byte_rate",
            LimitKind::SessionsPerAddress => "sessions_per_address",
            LimitKind::StreamsPerAddress => "streams_per_address",
            LimitKind::ConnectionsPerAddress => "connections_per_address",
            LimitKind::AttachRate => "attach_rate",
            LimitKind::AttachAddressRate => "attach_address_rate",
            LimitKind::ListRate => "list_rate",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: which limit, and how long until the same request would pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{limit} limit reached; retry in {} s", self.retry_after_secs())]
pub(crate) struct Limited {
    pub(crate) limit: LimitKind,
    pub(crate) retry_after: Duration,
}

impl Limited {
    /// `retry_after` in whole seconds for the `Retry-After` header: rounded up, at least 1.
    pub(crate) fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// Every limit the edge applies, built once at start from the flags.
pub(crate) struct Limits {
    /// Joins per address, messages and bytes per session.
    pub(crate) rates: RateLimits<SessionId>,
    /// Attaches per session and address, listings per address.
    pub(crate) attaches: AttachRates,
    /// Live sessions per address; the guard lives as long as the session.
    pub(crate) sessions: AddressCap,
    /// Attached streams per address; the guard lives as long as the stream.
    pub(crate) streams: AddressCap,
    /// Open connections per socket peer; the guard lives as long as the connection.
    pub(crate) connections: AddressCap,
    /// Peers whose forwarding headers are believed.
    pub(crate) trusted_proxies: Vec<IpNet>,
    /// Where refusals are counted, by limit.
    pub(crate) metrics: Arc<Metrics>,
}

impl Limits {
    /// The client behind a connection from `peer` (see [`client_address`]).
    pub(crate) fn client(
        &self,
        peer: SocketAddr,
        forwarded_for: Option<&str>,
        forwarded: Option<&str>,
    ) -> IpAddr {
        client_address(peer, forwarded_for, forwarded, &self.trusted_proxies)
    }

    /// Whether `peer` is a trusted proxy, whose forwarding headers are believed.
    pub(crate) fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }

    /// Admits a join from `client`: its rate, then a place under the session cap, which the
    /// new session holds.
    ///
    /// # Errors
    /// [`LimitKind::HeloRate`] or [`LimitKind::SessionsPerAddress`].
    pub(crate) fn join(&self, client: IpAddr) -> Result<AddressGuard, Limited> {
        self.counted(
            self.rates
                .check_helo(client)
                .and_then(|()| self.sessions.acquire(client)),
        )
    }

    /// Admits a stream of `session` from `client`: the attach limits, then a place under the
    /// stream cap, held by the stream. Call [`Limits::attached`] once it is attached.
    ///
    /// # Errors
    /// [`LimitKind::AttachAddressRate`], [`LimitKind::AttachRate`] or
    /// [`LimitKind::StreamsPerAddress`].
    pub(crate) fn attach(
        &self,
        client: IpAddr,
        session: SessionId,
    ) -> Result<AddressGuard, Limited> {
        self.counted(
            self.attaches
                .check_attach(client, session)
                .and_then(|()| self.streams.acquire(client)),
        )
    }

    /// Counts a stream of `session` that attached (tries that failed are not counted).
    pub(crate) fn attached(&self, session: SessionId) {
        self.attaches.attached(session);
    }

    /// Admits a listing of the sessions by a session at `client`.
    ///
    /// # Errors
    /// [`LimitKind::ListRate`].
    pub(crate) fn list(&self, client: IpAddr) -> Result<(), Limited> {
        self.counted(self.attaches.check_list(client))
    }

    /// Admits a connection from `peer`, before anything is read from it: a place under the
    /// connection cap, held by the connection. Counted by the socket's address, since no
    /// header has arrived yet; a trusted proxy, which carries many clients, is not counted.
    ///
    /// # Errors
    /// [`LimitKind::ConnectionsPerAddress`].
    pub(crate) fn connect(&self, peer: IpAddr) -> Result<AddressGuard, Limited> {
        if self.trusts(peer) {
            return Ok(AddressGuard::unlimited());
        }
        self.counted(self.connections.acquire(peer))
    }

    /// Admits one message of `bytes` from `session`.
    ///
    /// # Errors
    /// [`LimitKind::MessageRate`] or [`LimitKind::ByteRate`].
    pub(crate) fn message(&self, session: &SessionId, bytes: usize) -> Result<(), Limited> {
        self.counted(self.rates.check_message(session, bytes))
    }

    fn counted<T>(&self, outcome: Result<T, Limited>) -> Result<T, Limited> {
        if let Err(refusal) = &outcome {
            self.metrics.limited(refusal.limit.as_str());
        }
        outcome
    }

    /// Forgets rate-limit keys that are back to a full bucket; call it now and then.
    pub(crate) fn forget_idle(&self) {
        self.rates.retain_recent();
        self.attaches.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_count_by_socket_address_and_trusted_proxies_are_not_counted() {
        let config = crate::config::Config {
            max_connections_per_address: Some(1),
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            ..crate::config::Config::default()
        };
        let limits = config.limits(Arc::new(Metrics::default()));
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let held = limits.connect(client).unwrap();
        let refused = limits.connect(client).unwrap_err();
        assert_eq!(refused.limit, LimitKind::ConnectionsPerAddress);
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let _many: Vec<_> = (0..3).map(|_| limits.connect(proxy).unwrap()).collect();
        drop(held);
        assert!(
            limits.connect(client).is_ok(),
            "a closed connection frees its place"
        );
    }
}
