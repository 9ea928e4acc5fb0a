//! How much anyone may ask of the server: request rates (joins per client address; messages
//! and bytes per session) and per-address shares of the session and stream capacity, plus the
//! rule for finding a client's address behind trusted proxies. It owns the counting only; the
//! edge calls it, renders a [`Limited`] as 429 `rate_limited` (or 503 for the capacity caps)
//! with `Retry-After`, and counts refusals in `/metrics` by [`LimitKind::as_str`].
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
//! # Config
//! | flag | env | default | meaning |
//! | --- | --- | --- | --- |
//! | `--helo-rate N` | `SWITCHBOARD_HELO_RATE` | `50` | joins per second per address; 0 = off |
//! | `--helo-burst N` | `SWITCHBOARD_HELO_BURST` | `500` | joins at once per address before the rate applies |
//! | `--message-rate N` | `SWITCHBOARD_MESSAGE_RATE` | `50` | `/response` + `/broadcast` per second per session; 0 = off |
//! | `--message-burst N` | `SWITCHBOARD_MESSAGE_BURST` | `200` | messages at once per session |
//! | `--byte-rate BYTES` | `SWITCHBOARD_BYTE_RATE` | `1048576` | body bytes per second per session (1 MiB/s); 0 = off |
//! | `--byte-burst BYTES` | `SWITCHBOARD_BYTE_BURST` | `4194304` | body bytes at once per session (4 MiB) |
//! | `--max-sessions-per-address N` | `SWITCHBOARD_MAX_SESSIONS_PER_ADDRESS` | 10% of `--max-sessions`, at least 1,000 | 0 = off |
//! | `--max-streams-per-address N` | `SWITCHBOARD_MAX_STREAMS_PER_ADDRESS` | 10% of `--max-streams`, at least 1,000 | 0 = off |
//! | `--trusted-proxies CIDR,...` | `SWITCHBOARD_TRUSTED_PROXIES` | none | peers whose `X-Forwarded-For` / `Forwarded` is believed |
#![cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "wired into the edge after the refactor (issue 10)"
    )
)]

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use ipnet::IpNet;

/// Bytes per cell of a byte-rate quota.
pub(crate) const BYTES_PER_CELL: u64 = 1024;

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
}

impl LimitKind {
    /// The snake_case name used in messages and as the `/metrics` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LimitKind::HeloRate => "helo_rate",
            LimitKind::MessageRate => "message_rate",
            LimitKind::ByteRate => "byte_rate",
            LimitKind::SessionsPerAddress => "sessions_per_address",
            LimitKind::StreamsPerAddress => "streams_per_address",
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

/// A rate with a burst: `burst` requests at once, refilled at `per_second`. `per_second == 0`
/// turns the limit off; `burst == 0` means a burst of one second's worth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rate {
    pub(crate) per_second: u32,
    pub(crate) burst: u32,
}

impl Rate {
    /// No limit.
    pub(crate) const OFF: Rate = Rate {
        per_second: 0,
        burst: 0,
    };

    fn quota(self) -> Option<Quota> {
        let rate = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst).unwrap_or(rate);
        Some(Quota::per_second(rate).allow_burst(burst))
    }
}

/// The rate limits, one value per flag (see the module's `# Config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateSettings {
    /// Joins per client address.
    pub(crate) helo: Rate,
    /// Messages per session.
    pub(crate) messages: Rate,
    /// Body bytes per second per session; 0 = off.
    pub(crate) bytes_per_second: u64,
    /// Body bytes at once per session.
    pub(crate) byte_burst: u64,
}

impl Default for RateSettings {
    /// Joins: 500 at once then 50/s per address, so an office of hundreds behind one NAT can
    /// all rejoin after a restart. Messages: 200 at once then 50/s per session, well above a
    /// person typing or a game sending 20 updates a second. Bytes: 4 MiB at once then 1 MiB/s.
    fn default() -> Self {
        Self {
            helo: Rate {
                per_second: 50,
                burst: 500,
            },
            messages: Rate {
                per_second: 50,
                burst: 200,
            },
            bytes_per_second: 1024 * 1024,
            byte_burst: 4 * 1024 * 1024,
        }
    }
}

type Keyed<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The keyed rate limiters: joins by address, messages and bytes by session (`S`, the
/// session id). Cheap to check from many tasks at once (`governor` keeps each key's state in
/// one atomic); share it behind an `Arc`.
pub(crate) struct RateLimits<S: Hash + Eq + Clone, C: Clock = DefaultClock> {
    helo: Option<Keyed<IpAddr, C>>,
    messages: Option<Keyed<S, C>>,
    bytes: Option<(Keyed<S, C>, NonZeroU32)>,
    clock: C,
}

impl<S: Hash + Eq + Clone> RateLimits<S> {
    /// The limiters for `settings` on the real clock.
    pub(crate) fn new(settings: RateSettings) -> Self {
        Self::with_clock(settings, DefaultClock::default())
    }
}

impl<S: Hash + Eq + Clone, C: Clock + Clone> RateLimits<S, C> {
    /// The limiters for `settings` on `clock` (tests pass a fake one).
    pub(crate) fn with_clock(settings: RateSettings, clock: C) -> Self {
        let byte_rate = Rate {
            per_second: cells(settings.bytes_per_second),
            burst: cells(settings.byte_burst),
        };
        Self {
            helo: settings.helo.quota().map(|q| keyed(q, &clock)),
            messages: settings.messages.quota().map(|q| keyed(q, &clock)),
            bytes: byte_rate
                .quota()
                .map(|q| (keyed(q, &clock), q.burst_size())),
            clock,
        }
    }

    /// Counts a join from `address` (the [`client_address`]).
    ///
    /// # Errors
    /// [`LimitKind::HeloRate`] when the address has used its burst.
    pub(crate) fn check_helo(&self, address: IpAddr) -> Result<(), Limited> {
        let Some(limiter) = &self.helo else {
            return Ok(());
        };
        limiter
            .check_key(&address_key(address))
            .map_err(|not_until| self.limited(LimitKind::HeloRate, &not_until))
    }

    /// Counts one message of `body_bytes` from `session`, against the message rate and then
    /// the byte rate (so a refusal by bytes has still used one message). A body larger than
    /// the whole byte burst costs the whole burst rather than being refused for ever.
    ///
    /// # Errors
    /// [`LimitKind::MessageRate`] or [`LimitKind::ByteRate`].
    pub(crate) fn check_message(&self, session: &S, body_bytes: usize) -> Result<(), Limited> {
        if let Some(limiter) = &self.messages {
            limiter
                .check_key(session)
                .map_err(|not_until| self.limited(LimitKind::MessageRate, &not_until))?;
        }
        if let Some((limiter, burst)) = &self.bytes {
            let wanted =
                u32::try_from((body_bytes as u64).div_ceil(BYTES_PER_CELL)).unwrap_or(u32::MAX);
            let n = NonZeroU32::new(wanted)
                .unwrap_or(NonZeroU32::MIN)
                .min(*burst);
            match limiter.check_key_n(session, n) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => return Err(self.limited(LimitKind::ByteRate, &not_until)),
                Err(_) => unreachable!("n is capped at the burst size"),
            }
        }
        Ok(())
    }

    /// Forgets keys whose buckets are full again (indistinguishable from a fresh key), so
    /// memory follows the recently active addresses and sessions, not all that ever came.
    /// Call it periodically, e.g. from the reaper.
    pub(crate) fn retain_recent(&self) {
        if let Some(limiter) = &self.helo {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        for limiter in [self.messages.as_ref(), self.bytes.as_ref().map(|(l, _)| l)]
            .into_iter()
            .flatten()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many keys the limiters hold (addresses plus sessions, a session counted once per
    /// limiter); for tests and a memory gauge.
    pub(crate) fn tracked_keys(&self) -> usize {
        self.helo.as_ref().map_or(0, |l| l.len())
            + self.messages.as_ref().map_or(0, |l| l.len())
            + self.bytes.as_ref().map_or(0, |(l, _)| l.len())
    }

    fn limited(&self, limit: LimitKind, not_until: &governor::NotUntil<C::Instant>) -> Limited {
        Limited {
            limit,
            retry_after: not_until.wait_time_from(self.clock.now()),
        }
    }
}

fn keyed<K: Hash + Eq + Clone, C: Clock + Clone>(quota: Quota, clock: &C) -> Keyed<K, C> {
    RateLimiter::dashmap_with_clock(quota, clock.clone())
}

/// Bytes as 1 KiB cells, rounded up, saturating at `u32::MAX` cells (4 TiB).
fn cells(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(BYTES_PER_CELL)).unwrap_or(u32::MAX)
}

/// The default per-address share of a capacity of `total`: 10%, at least 1,000, never more
/// than `total`. With `--max-sessions` at 100,000 that is 10,000 per address; below 1,000 in
/// all, one address may use everything, as small and test deployments expect.
pub(crate) fn default_per_address(total: usize) -> usize {
    (total / 10).max(1_000).min(total)
}

/// Live sessions or streams per client address, capped. Each admitted one holds an
/// [`AddressGuard`]; dropping it frees the place, so the count cannot drift from the sessions
/// or streams that exist, and addresses with nothing left are forgotten.
///
/// A `std::sync::Mutex` guards the map: it is held for one hash-map update and never across
/// an `.await`, and joins and attaches are far rarer than messages.
#[derive(Clone)]
pub(crate) struct AddressCap {
    limit: LimitKind,
    max: usize,
    retry_after: Duration,
    counts: Counts,
}

/// Places held per address key; addresses at zero are removed.
type Counts = Arc<Mutex<HashMap<IpAddr, usize>>>;

impl AddressCap {
    /// A cap of `max` per address (0 = off). `retry_after` is the hint sent when full: for
    /// sessions the session TTL (an abandoned one is reaped by then), for streams a few
    /// seconds.
    pub(crate) fn new(limit: LimitKind, max: usize, retry_after: Duration) -> Self {
        Self {
            limit,
            max,
            retry_after,
            counts: Arc::default(),
        }
    }

    /// Takes one place for `address`.
    ///
    /// # Errors
    /// [`Limited`] naming this cap when the address already holds `max`.
    pub(crate) fn acquire(&self, address: IpAddr) -> Result<AddressGuard, Limited> {
        if self.max == 0 {
            return Ok(AddressGuard { held: None });
        }
        let key = address_key(address);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(key).or_insert(0);
        if *count >= self.max {
            return Err(Limited {
                limit: self.limit,
                retry_after: self.retry_after,
            });
        }
        *count += 1;
        Ok(AddressGuard {
            held: Some((Arc::clone(&self.counts), key)),
        })
    }

    /// Places held by `address` now.
    pub(crate) fn held_by(&self, address: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(&address_key(address)).copied().unwrap_or(0)
    }

    /// Addresses holding at least one place.
    pub(crate) fn addresses(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One place under an [`AddressCap`], given back on drop.
#[derive(Debug)]
#[must_use = "the place is given back as soon as the guard is dropped"]
pub(crate) struct AddressGuard {
    held: Option<(Counts, IpAddr)>,
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        let Some((counts, key)) = self.held.take() else {
            return;
        };
        let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&key);
            }
        }
    }
}

/// The address a limit counts `address` under: IPv4 as is (also when mapped into IPv6),
/// IPv6 by its /64 network.
pub(crate) fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(network))
        }
        v4 => v4,
    }
}

/// The client's address: the socket peer's, unless the peer is one of the `trusted` proxies;
/// then the proxies' record is read from the right (the hop nearest to us) and the first
/// address that is not a trusted proxy is the client.
///
/// `forwarded_for` is `X-Forwarded-For` and `forwarded` is RFC 7239 `Forwarded`, each with
/// repeated header lines joined by `,`. `X-Forwarded-For` is used when present, else
/// `Forwarded`: configure the proxy to set one and drop a client-sent one. An entry that
/// is not an address (`unknown`, an obfuscated name, garbage) ends the walk at the proxy that
/// wrote it, since nothing left of it can be believed; when every hop is trusted the
/// left-most is the client.
pub(crate) fn client_address(
    peer: SocketAddr,
    forwarded_for: Option<&str>,
    forwarded: Option<&str>,
    trusted: &[IpNet],
) -> IpAddr {
    let peer = peer.ip().to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    if let Some(list) = forwarded_for {
        walk_hops(peer, list.split(',').map(parse_hop), is_trusted)
    } else if let Some(header) = forwarded {
        let hops = rfc7239::parse(header).map(|element| {
            let node = element.ok()?.forwarded_for?;
            node.ip().copied()
        });
        walk_hops(peer, hops, is_trusted)
    } else {
        peer
    }
}

fn walk_hops(
    mut client: IpAddr,
    hops: impl DoubleEndedIterator<Item = Option<IpAddr>>,
    is_trusted: impl Fn(&IpAddr) -> bool,
) -> IpAddr {
    for hop in hops.rev() {
        let Some(hop) = hop else { break };
        client = hop.to_canonical();
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`[v6]:port`, `v4:port`).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn limits(settings: RateSettings) -> (RateLimits<u32, FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RateLimits::with_clock(settings, clock.clone()), clock)
    }

    const OFF: RateSettings = RateSettings {
        helo: Rate::OFF,
        messages: Rate::OFF,
        bytes_per_second: 0,
        byte_burst: 0,
    };

    #[test]
    fn helo_rate_allows_the_burst_then_says_when_to_retry() {
        let (limits, clock) = limits(RateSettings {
            helo: Rate {
                per_second: 2,
                burst: 3,
            },
            ..OFF
        });
        let office = ip("203.0.113.7");
        for _ in 0..3 {
            limits.check_helo(office).expect("within the burst");
        }
        let refused = limits.check_helo(office).unwrap_err();
        assert_eq!(refused.limit, LimitKind::HeloRate);
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        assert_eq!(refused.retry_after_secs(), 1);
        // Other addresses are unaffected.
        limits.check_helo(ip("203.0.113.8")).expect("own bucket");
        clock.advance(Duration::from_millis(500));
        limits.check_helo(office).expect("one cell refilled");
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let (limits, _clock) = limits(RateSettings {
            helo: Rate {
                per_second: 1,
                burst: 1,
            },
            ..OFF
        });
        limits.check_helo(ip("2001:db8:1:2::1")).unwrap();
        assert!(limits.check_helo(ip("2001:db8:1:2:ffff::9")).is_err());
        limits
            .check_helo(ip("2001:db8:1:3::1"))
            .expect("another /64");
        assert_eq!(address_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn message_rate_is_per_session() {
        let (limits, clock) = limits(RateSettings {
            messages: Rate {
                per_second: 10,
                burst: 2,
            },
            ..OFF
        });
        limits.check_message(&1, 10).unwrap();
        limits.check_message(&1, 10).unwrap();
        let refused = limits.check_message(&1, 10).unwrap_err();
        assert_eq!(refused.limit, LimitKind::MessageRate);
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        limits.check_message(&2, 10).expect("another session");
        clock.advance(Duration::from_millis(100));
        limits.check_message(&1, 10).unwrap();
    }

    #[test]
    fn byte_rate_counts_kibibytes_and_caps_one_message_at_the_burst() {
        let (limits, clock) = limits(RateSettings {
            bytes_per_second: 4 * 1024,
            byte_burst: 8 * 1024,
            ..OFF
        });
        limits.check_message(&1, 6 * 1024).unwrap();
        limits
            .check_message(&1, 1)
            .expect("1 byte costs one 1 KiB cell");
        limits.check_message(&1, 1024).expect("the 8th KiB");
        let refused = limits.check_message(&1, 1024).unwrap_err();
        assert_eq!(refused.limit, LimitKind::ByteRate);
        assert_eq!(refused.retry_after, Duration::from_millis(250));
        // A body larger than the burst waits for a full bucket instead of failing for ever.
        clock.advance(Duration::from_secs(2));
        limits
            .check_message(&2, 1024 * 1024)
            .expect("costs the whole burst");
        assert!(limits.check_message(&2, 1).is_err());
    }

    #[test]
    fn zero_turns_each_rate_off() {
        let (limits, _clock) = limits(OFF);
        for _ in 0..10_000 {
            limits.check_helo(ip("127.0.0.1")).unwrap();
            limits.check_message(&1, 1 << 20).unwrap();
        }
        assert_eq!(limits.tracked_keys(), 0);
    }

    #[test]
    fn defaults_let_hundreds_join_from_one_address() {
        let limits = RateLimits::<u32>::new(RateSettings::default());
        for _ in 0..500 {
            limits
                .check_helo(ip("127.0.0.1"))
                .expect("a test run's worth of joins");
        }
    }

    #[test]
    fn retain_recent_forgets_idle_keys() {
        let (limits, clock) = limits(RateSettings {
            helo: Rate {
                per_second: 10,
                burst: 10,
            },
            messages: Rate {
                per_second: 10,
                burst: 10,
            },
            bytes_per_second: 1024,
            byte_burst: 1024,
        });
        for n in 0..100u8 {
            limits.check_helo(IpAddr::from([10, 0, 0, n])).unwrap();
            limits.check_message(&u32::from(n), 10).unwrap();
        }
        assert_eq!(limits.tracked_keys(), 300);
        limits.retain_recent();
        assert_eq!(
            limits.tracked_keys(),
            300,
            "buckets not yet refilled are kept"
        );
        clock.advance(Duration::from_secs(2));
        limits.retain_recent();
        assert_eq!(limits.tracked_keys(), 0);
    }

    #[test]
    fn address_cap_refuses_beyond_max_and_frees_on_drop() {
        let cap = AddressCap::new(LimitKind::SessionsPerAddress, 2, Duration::from_secs(30));
        let home = ip("198.51.100.4");
        let first = cap.acquire(home).unwrap();
        let second = cap.acquire(home).unwrap();
        let refused = cap.acquire(home).unwrap_err();
        assert_eq!(
            refused,
            Limited {
                limit: LimitKind::SessionsPerAddress,
                retry_after: Duration::from_secs(30)
            }
        );
        let _elsewhere = cap.acquire(ip("198.51.100.5")).expect("own count");
        assert_eq!(cap.held_by(home), 2);
        drop(first);
        let _third = cap.acquire(home).expect("a place was freed");
        drop(second);
        drop(_third);
        assert_eq!(cap.held_by(home), 0);
        assert_eq!(cap.addresses(), 1, "empty addresses are forgotten");
    }

    #[test]
    fn address_cap_of_zero_is_off() {
        let cap = AddressCap::new(LimitKind::StreamsPerAddress, 0, Duration::from_secs(2));
        let guards: Vec<_> = (0..5_000)
            .map(|_| cap.acquire(ip("127.0.0.1")).unwrap())
            .collect();
        assert_eq!(guards.len(), 5_000);
        assert_eq!(cap.addresses(), 0);
    }

    #[test]
    fn default_share_is_a_tenth_with_a_floor() {
        assert_eq!(default_per_address(100_000), 10_000);
        assert_eq!(default_per_address(5_000), 1_000);
        assert_eq!(default_per_address(300), 300);
        assert_eq!(default_per_address(1_000_000), 100_000);
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn peer(text: &str) -> SocketAddr {
        SocketAddr::new(ip(text), 40_000)
    }

    #[test]
    fn headers_from_untrusted_peers_are_ignored() {
        let trusted = nets(&["10.0.0.0/8"]);
        let spoofed = Some("1.2.3.4");
        assert_eq!(
            client_address(peer("203.0.113.9"), spoofed, spoofed, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(peer("10.0.0.2"), None, None, &[]),
            ip("10.0.0.2"),
            "no proxies configured"
        );
    }

    #[test]
    fn right_most_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        let proxy = peer("10.0.0.2");
        // The client prepended a lie; our proxies appended the truth on the right.
        let xff = "6.6.6.6, 198.51.100.20, 10.1.1.1";
        assert_eq!(
            client_address(proxy, Some(xff), None, &trusted),
            ip("198.51.100.20")
        );
        assert_eq!(
            client_address(
                proxy,
                Some("[2001:db8::5]:443, 198.51.100.20:5000"),
                None,
                &trusted
            ),
            ip("198.51.100.20")
        );
        assert_eq!(
            client_address(proxy, Some("10.2.2.2, 10.3.3.3"), None, &trusted),
            ip("10.2.2.2"),
            "all trusted: the left-most"
        );
        assert_eq!(
            client_address(proxy, Some("198.51.100.20, garbage"), None, &trusted),
            ip("10.0.0.2"),
            "an unreadable hop ends the walk at the proxy that wrote it"
        );
        assert_eq!(
            client_address(
                SocketAddr::new(ip("::ffff:10.0.0.2"), 1),
                Some("192.0.2.1"),
                None,
                &trusted
            ),
            ip("192.0.2.1"),
            "an IPv4-mapped peer is matched as IPv4"
        );
    }

    #[test]
    fn forwarded_header_is_read_when_x_forwarded_for_is_absent() {
        let trusted = nets(&["10.0.0.0/8"]);
        let proxy = peer("10.0.0.2");
        let forwarded = r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, for=10.9.9.9"#;
        assert_eq!(
            client_address(proxy, None, Some(forwarded), &trusted),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            client_address(proxy, None, Some("for=unknown"), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_address(proxy, Some("192.0.2.1"), Some("for=6.6.6.6"), &trusted),
            ip("192.0.2.1"),
            "X-Forwarded-For wins"
        );
    }
}
