//! Attaches and roster listings: the two requests whose cost grows with the number of sessions
//! (a `ready` lists every other session when presence is on; `GET /clients` walks them all),
//! so a client repeating either in a loop would spend the server on everyone's behalf.
//!
//! Attaches are counted per address (before anything else, so a flood with wrong tokens is
//! cut short too) and per session. A session is keyed by a fingerprint of the presented token,
//! not by the id in the path: ids are public (every roster shows them), and keying by id would
//! let anyone spend a stranger's attaches with a wrong token. Listings by a session token are
//! counted per address; the backend (with the API key) is not counted.
//!
//! The roster a `ready` carries is still the whole audience; bounding it to what a client can
//! see comes with rooms.

use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{NotUntil, RateLimiter};

use super::address::address_key;
use super::{LimitKind, Limited, Rate};

type Keyed<K> = RateLimiter<K, DashMapStateStore<K>, DefaultClock, NoOpMiddleware>;

/// The rates for attaches and listings, one per flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AttachSettings {
    /// `GET /events` per session.
    pub(crate) per_session: Rate,
    /// `GET /events` per client address.
    pub(crate) per_address: Rate,
    /// `GET /clients` with a session token, per client address.
    pub(crate) lists: Rate,
}

/// The keyed limiters for [`AttachSettings`]; `None` where a rate is off.
pub(crate) struct AttachRates {
    per_session: Option<Keyed<u64>>,
    per_address: Option<Keyed<IpAddr>>,
    lists: Option<Keyed<IpAddr>>,
    /// Seeds the token fingerprints, per process, so nobody can aim at a collision.
    fingerprints: RandomState,
    clock: DefaultClock,
}

impl AttachRates {
    pub(crate) fn new(settings: AttachSettings) -> Self {
        let clock = DefaultClock::default();
        Self {
            per_session: keyed(settings.per_session, &clock),
            per_address: keyed(settings.per_address, &clock),
            lists: keyed(settings.lists, &clock),
            fingerprints: RandomState::new(),
            clock,
        }
    }

    /// Counts an attach from `client` with the token `token` (as presented, unverified).
    ///
    /// # Errors
    /// [`LimitKind::AttachAddressRate`], then [`LimitKind::AttachRate`].
    pub(crate) fn check_attach(&self, client: IpAddr, token: &str) -> Result<(), Limited> {
        if let Some(limiter) = &self.per_address {
            limiter
                .check_key(&address_key(client))
                .map_err(|not_until| self.limited(LimitKind::AttachAddressRate, &not_until))?;
        }
        if let Some(limiter) = &self.per_session {
            let fingerprint = self.fingerprints.hash_one(token);
            limiter
                .check_key(&fingerprint)
                .map_err(|not_until| self.limited(LimitKind::AttachRate, &not_until))?;
        }
        Ok(())
    }

    /// Counts a listing of the sessions by a client at `client`.
    ///
    /// # Errors
    /// [`LimitKind::ListRate`].
    pub(crate) fn check_list(&self, client: IpAddr) -> Result<(), Limited> {
        let Some(limiter) = &self.lists else {
            return Ok(());
        };
        limiter
            .check_key(&address_key(client))
            .map_err(|not_until| self.limited(LimitKind::ListRate, &not_until))
    }

    /// Forgets keys whose buckets are full again.
    pub(crate) fn retain_recent(&self) {
        if let Some(limiter) = &self.per_session {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        for limiter in [self.per_address.as_ref(), self.lists.as_ref()]
            .into_iter()
            .flatten()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    fn limited(
        &self,
        limit: LimitKind,
        not_until: &NotUntil<<DefaultClock as Clock>::Instant>,
    ) -> Limited {
        Limited {
            limit,
            retry_after: not_until.wait_time_from(self.clock.now()),
        }
    }
}

fn keyed<K: Hash + Eq + Clone>(rate: Rate, clock: &DefaultClock) -> Option<Keyed<K>> {
    rate.quota()
        .map(|quota| RateLimiter::dashmap_with_clock(quota, clock.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attaches_are_counted_per_token_and_per_address() {
        let rates = AttachRates::new(AttachSettings {
            per_session: Rate {
                per_second: 1,
                burst: 2,
            },
            per_address: Rate {
                per_second: 1,
                burst: 5,
            },
            lists: Rate::OFF,
        });
        let home: IpAddr = "198.51.100.4".parse().unwrap();
        rates.check_attach(home, "ann.secret").unwrap();
        rates.check_attach(home, "ann.secret").unwrap();
        let refused = rates.check_attach(home, "ann.secret").unwrap_err();
        assert_eq!(refused.limit, LimitKind::AttachRate);
        // A wrong token does not spend ann's attaches.
        rates.check_attach(home, "ann.wrong").unwrap();
        rates.check_attach(home, "bob.secret").unwrap();
        let refused = rates.check_attach(home, "cat.secret").unwrap_err();
        assert_eq!(refused.limit, LimitKind::AttachAddressRate);
        rates.check_list(home).expect("listing is off");
    }
}
