//! The figures the admin console shows, read from the counters at one moment: two readings a
//! second apart give the rates and the latency of that second.

use super::latency::{self, BOUNDED};
use super::{EventKind, HttpLabels, Metrics};

/// Requests whose success is a join: a session registered.
const JOINS: &[(&str, u16)] = &[("/helo", 201)];
/// Requests whose success is a message accepted: direct, broadcast, published.
const MESSAGES: &[(&str, u16)] = &[
    ("/response", 202),
    ("/broadcast", 202),
    ("/api/publish", 202),
];

/// Counters as they stood at one reading; each only grows.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    /// Sessions registered.
    pub joins: u64,
    /// Messages accepted (direct, broadcast, published).
    pub messages: u64,
    /// Events written to streams.
    pub deliveries: u64,
    /// `lagged` events written: clients that lost events.
    pub lagged: u64,
    latency: [u64; BOUNDED + 1],
}

impl Reading {
    /// The delivery latency's `q` quantile (ms) over what was delivered since `earlier`.
    pub fn latency_ms_since(&self, earlier: &Reading, q: f64) -> Option<f64> {
        let counts = std::array::from_fn(|k| self.latency[k].saturating_sub(earlier.latency[k]));
        latency::quantile_ms(&counts, q)
    }
}

impl Metrics {
    /// The counters now.
    pub fn reading(&self) -> Reading {
        let requests = |routes: &[(&'static str, u16)]| -> u64 {
            routes
                .iter()
                .map(|&(route, status)| {
                    self.http.get_or_create(&HttpLabels { route, status }).get()
                })
                .sum()
        };
        Reading {
            joins: requests(JOINS),
            messages: requests(MESSAGES),
            deliveries: self.delivered.iter().map(|counter| counter.get()).sum(),
            lagged: self.delivered[EventKind::Lagged as usize].get(),
            latency: self.delivery_latency.counts(),
        }
    }

    /// Requests refused so far by each of `limits` (snake_case names, as `rate_limited` labels
    /// them), then by the full mailbox and the connection slots.
    pub fn refusals(&self, limits: &[&'static str]) -> Vec<(&'static str, u64)> {
        let mut refusals: Vec<(&'static str, u64)> = limits
            .iter()
            .map(|&limit| {
                (
                    limit,
                    self.limited
                        .get_or_create(&super::LimitLabel { limit })
                        .get(),
                )
            })
            .collect();
        refusals.push(("mailbox_full", self.mailbox_full.get()));
        refusals.push(("connections", self.connections_refused.get()));
        refusals
    }
}
