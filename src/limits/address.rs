//! Per-address shares of a capacity (live sessions, attached streams), and the address key
//! every per-address limit counts under.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{LimitKind, Limited};

/// The default per-address share of a capacity of `total`: 10%, at least 1,000. With
/// `--max-sessions` at 100,000 that is 10,000 per address. At 1,000 in all or fewer, one
/// address may use everything, as small and test deployments expect: the share is off (0),
/// so a full house is reported as the server's limit, not as the address's.
pub(crate) fn default_per_address(total: usize) -> usize {
    if total <= 1_000 {
        0
    } else {
        (total / 10).max(1_000)
    }
}

/// The default per-address share of `total` connections: as [`default_per_address`] for large
/// servers, but never off and never more than half, so that one address flooding a small
/// server (a shell's usual 1,024 open files: 960 connections) leaves the other half to
/// everyone else. Idle connections are cheap to open and slow to expire (`--header-timeout`),
/// which makes this the share an attacker reaches first; sessions and streams need a join.
pub(crate) fn default_connection_share(total: usize) -> usize {
    (total / 10).max(1_000).min(total / 2).max(1)
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
    #[cfg(test)]
    pub(crate) fn held_by(&self, address: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(&address_key(address)).copied().unwrap_or(0)
    }

    /// Addresses holding at least one place.
    #[cfg(test)]
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

impl AddressGuard {
    /// A guard that holds no place: for a client no cap counts, and for tests about something
    /// else.
    pub(crate) fn unlimited() -> Self {
        AddressGuard { held: None }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
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
        assert_eq!(
            default_per_address(1_000),
            0,
            "off: one address may fill it"
        );
        assert_eq!(default_per_address(300), 0);
        assert_eq!(default_per_address(1_000_000), 100_000);
    }

    #[test]
    fn connection_share_is_on_at_every_size_and_at_most_half() {
        assert_eq!(default_connection_share(100_000), 10_000);
        assert_eq!(default_connection_share(5_000), 1_000);
        assert_eq!(default_connection_share(1_500), 750);
        assert_eq!(default_connection_share(960), 480, "ulimit -n 1024");
        assert_eq!(default_connection_share(192), 96);
        assert_eq!(default_connection_share(1), 1);
    }
}
