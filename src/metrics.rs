//! Prometheus counters and gauges, rendered by `GET /metrics`.
//!
//! The registry and the HTTP edge both record here; neither knows the exposition format. Per-kind
//! counters are created once up front, so the hot path is one atomic add, never a label lookup.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::registry::Event;

/// Label set for HTTP requests: the route template (never a concrete id) and the status code.
type HttpLabels = Vec<(&'static str, String)>;

/// Every metric switchboard exports.
pub struct Metrics {
    registry: Registry,
    /// Registered sessions.
    pub sessions: Gauge,
    /// SSE streams currently attached.
    pub streams: Gauge,
    /// The stream limit derived from the open-file limit (or set by flag).
    pub stream_limit: Gauge,
    /// Events written to streams, one counter per event name, created up front.
    delivered: Vec<(&'static str, Counter)>,
    /// Unread events evicted from a full mailbox (each becomes part of a `lagged` count).
    pub evictions: Counter,
    /// Direct messages refused with 429 because the recipient's mailbox was full.
    pub mailbox_full: Counter,
    http: Family<HttpLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        let metrics = Metrics {
            sessions: Gauge::default(),
            streams: Gauge::default(),
            stream_limit: Gauge::default(),
            delivered: Vec::new(),
            evictions: Counter::default(),
            mailbox_full: Counter::default(),
            http: Family::default(),
            registry: Registry::default(),
        };
        registry.register("sessions", "Registered sessions", metrics.sessions.clone());
        registry.register("streams", "Attached SSE streams", metrics.streams.clone());
        registry.register(
            "stream_limit",
            "Most SSE streams this process accepts",
            metrics.stream_limit.clone(),
        );
        let events = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        registry.register(
            "events_delivered",
            "Events written to SSE streams, by event name",
            events.clone(),
        );
        // Heartbeat comments are counted as "ping" beside the real events.
        let delivered = Event::NAMES
            .iter()
            .chain(&["ping"])
            .map(|&name| (name, events.get_or_create(&vec![("event", name)]).clone()))
            .collect();
        registry.register(
            "mailbox_evictions",
            "Unread events evicted from full mailboxes",
            metrics.evictions.clone(),
        );
        registry.register(
            "mailbox_full",
            "Direct messages refused because the recipient mailbox was full",
            metrics.mailbox_full.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            metrics.http.clone(),
        );
        Metrics {
            registry,
            delivered,
            ..metrics
        }
    }
}

impl Metrics {
    /// Counts `n` events named `kind` written to a stream.
    pub fn delivered(&self, kind: &str, n: u64) {
        if let Some((_, counter)) = self.delivered.iter().find(|(name, _)| *name == kind) {
            counter.inc_by(n);
        }
    }

    /// Counts one HTTP request; `route` must be a template such as `/events/{id}`.
    pub fn http_request(&self, route: &'static str, status: u16) {
        self.http
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
