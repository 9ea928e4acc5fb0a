//! Attaches and roster listings: the two requests whose cost grows with the number of sessions
//! (a `ready` lists every other session when presence is on; `GET /clients` walks them all),
//! so a client repeating either in a loop would spend the server on everyone's behalf.
//!
//! Attaches are counted per address before anything else (so a flood with wrong tokens is
//! cut short too), and per session in a window of [`WINDOW`]: only attaches that succeeded
//! count, so a wrong token cannot spend a stranger's (ids are public: every roster shows
//! them), and a client retrying through 503s while its session moves is not refused for it.
//! Listings by a session token are counted per address; the backend (with the API key) is
//! not counted.
//!
//! The roster a `ready` carries is still the whole audience; bounding it to what a client can
//! see comes with rooms.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{NotUntil, RateLimiter};

use super::address::address_key;
use super::{LimitKind, Limited, Rate};
use crate::identity::SessionId;

/// The window `--session-attaches` counts in.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

type Keyed<K> = RateLimiter<K, DashMapStateStore<K>, DefaultClock, NoOpMiddleware>;

/// The rates for attaches and listings, one per flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AttachSettings {
    /// Successful `GET /events` per session in [`WINDOW`]; 0 = off.
    pub(crate) per_session: u32,
    /// `GET /events` per client address.
    pub(crate) per_address: Rate,
    /// `GET /clients` with a session token, per client address.
    pub(crate) lists: Rate,
}

/// The keyed limiters for [`AttachSettings`]; `None` where a rate is off.
pub(crate) struct AttachRates {
    per_session: u32,
    /// Per session: when its window began, and its attaches since. A `std::sync::Mutex`: one
    /// map update per attach, never held across an `.await`.
    windows: Mutex<HashMap<SessionId, (Instant, u32)>>,
    per_address: Option<Keyed<IpAddr>>,
    lists: Option<Keyed<IpAddr>>,
    clock: DefaultClock,
}

impl AttachRates {
    pub(crate) fn new(settings: AttachSettings) -> Self {
        let clock = DefaultClock::default();
        Self {
            per_session: settings.per_session,
            windows: Mutex::default(),
            per_address: keyed(settings.per_address, &clock),
            lists: keyed(settings.lists, &clock),
            clock,
        }
    }

    /// Counts an attempt to attach `session` from `client`, and checks (without counting)
    /// that the session has attaches left in its window.
    ///
    /// # Errors
    /// [`LimitKind::AttachAddressRate`], then [`LimitKind::AttachRate`].
    pub(crate) fn check_attach(&self, client: IpAddr, session: SessionId) -> Result<(), Limited> {
        if let Some(limiter) = &self.per_address {
            limiter
                .check_key(&address_key(client))
                .map_err(|not_until| self.limited(LimitKind::AttachAddressRate, &not_until))?;
        }
        if self.per_session == 0 {
            return Ok(());
        }
        let windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        match windows.get(&session) {
            Some((began, count)) if *count >= self.per_session && began.elapsed() < WINDOW => {
                Err(Limited {
                    limit: LimitKind::AttachRate,
                    retry_after: WINDOW.saturating_sub(began.elapsed()),
                })
            }
            _ => Ok(()),
        }
    }

    /// Counts a successful attach of `session`.
    pub(crate) fn attached(&self, session: SessionId) {
        if self.per_session == 0 {
            return;
        }
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let (began, count) = windows.entry(session).or_insert((now, 0));
        if now.duration_since(*began) >= WINDOW {
            (*began, *count) = (now, 0);
        }
        *count += 1;
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
        self.windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, (began, _)| began.elapsed() < WINDOW);
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
    fn only_successful_attaches_count_per_session_and_every_try_per_address() {
        let rates = AttachRates::new(AttachSettings {
            per_session: 2,
            per_address: Rate {
                per_second: 1,
                burst: 5,
            },
            lists: Rate::OFF,
        });
        let home: IpAddr = "198.51.100.4".parse().unwrap();
        let (ann, bob) = (SessionId::random(), SessionId::random());
        // Tries that fail (a wrong token, a 503) leave the session's attaches alone.
        rates.check_attach(home, ann).unwrap();
        rates.check_attach(home, ann).unwrap();
        rates.attached(ann);
        rates.check_attach(home, ann).unwrap();
        rates.attached(ann);
        let refused = rates.check_attach(home, ann).unwrap_err();
        assert_eq!(refused.limit, LimitKind::AttachRate);
        assert!(refused.retry_after <= WINDOW);
        // Four tries of ann's and this one: the address's five.
        rates.check_attach(home, bob).unwrap();
        let refused = rates.check_attach(home, bob).unwrap_err();
        assert_eq!(refused.limit, LimitKind::AttachAddressRate);
        rates.check_list(home).expect("listing is off");
    }
}
