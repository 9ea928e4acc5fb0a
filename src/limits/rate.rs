//! Request rates: joins per client address, messages and body bytes per session, as GCRA
//! token buckets from `governor` keyed by address or session.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use super::address::address_key;
use super::{LimitKind, Limited};

/// Bytes per cell of a byte-rate quota.
pub(crate) const BYTES_PER_CELL: u64 = 1024;
/// A rate with a burst: `burst` requests at once, refilled at `per_second`. `per_second == 0`
/// turns the limit off; `burst == 0` means a burst of one second's worth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rate {
    pub(crate) per_second: u32,
    pub(crate) burst: u32,
}

impl Rate {
    /// No limit.
    #[cfg(test)]
    pub(crate) const OFF: Rate = Rate {
        per_second: 0,
        burst: 0,
    };

    pub(super) fn quota(self) -> Option<Quota> {
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
    /// limiter).
    #[cfg(test)]
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
}
