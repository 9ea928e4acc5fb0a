//! Prometheus metrics, rendered by `GET /metrics`.
//!
//! The registry and the HTTP edge both record here; neither knows the exposition format, and
//! this module knows neither of them: delivered events are counted by [`EventKind`], which the
//! stream code maps its events onto. Per-kind counters are created once up front, so the hot
//! path is one atomic add, never a label lookup.
//!
//! Two formats, by the scraper's `Accept` header: the classic Prometheus text format (0.0.4,
//! what `curl` and most tools read) by default, OpenMetrics 1.0 when asked for; each is served
//! with its own content type. Beside our own metrics (`switchboard_*`) come the standard
//! `process_*` ones (CPU, memory, open and maximum file descriptors: each stream holds one) and
//! `switchboard_build_info`.

mod figures;
mod latency;
#[cfg(target_os = "linux")]
mod process;

use std::time::Duration;

pub use figures::Reading;
use latency::Latencies;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry, Unit};

/// Events written to streams, counted locally (by a stream's write, or a fan-out's share) and
/// added to [`Metrics`] at once: a shared counter per delivery is a cache line both cores
/// fight over.
#[derive(Debug, Default)]
pub struct Deliveries {
    counts: [u64; EventKind::ALL.len()],
    latencies: Latencies,
    /// Sends to parked streams: whole, partial.
    sends: [u64; 2],
}

impl Deliveries {
    /// One event of `kind`, `latency` after it was accepted.
    pub fn record(&mut self, kind: EventKind, latency: Duration) {
        self.count(kind);
        self.latencies.record(latency);
    }

    /// One send to a parked stream's socket; `whole` when it took everything.
    pub fn sent(&mut self, whole: bool) {
        self.sends[usize::from(!whole)] += 1;
    }

    /// One event of `kind` that no client sent (`lagged`): no latency to record.
    pub fn count(&mut self, kind: EventKind) {
        self.counts[kind as usize] += 1;
    }
}

/// Adds each of `counts` to its counter (touching only those that counted something), and
/// clears it.
fn add_counts(counters: &[Counter], counts: &mut [u64]) {
    for (counter, count) in counters.iter().zip(counts) {
        if *count > 0 {
            counter.inc_by(std::mem::take(count));
        }
    }
}

/// Content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// Content type of [`Metrics::render_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every kind of event a stream delivers, as metrics count them. The stream code maps its
/// events onto these (the heartbeat is not an event and is counted apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Ready,
    NewUser,
    ClientResponse,
    ClientBroadcast,
    UserLeft,
    ServerMessage,
    Lagged,
    Joined,
    Left,
    RoomCount,
    RefreshRequired,
    Expired,
}

impl EventKind {
    /// Every kind, in label order.
    pub const ALL: [EventKind; 12] = [
        EventKind::Ready,
        EventKind::NewUser,
        EventKind::ClientResponse,
        EventKind::ClientBroadcast,
        EventKind::UserLeft,
        EventKind::ServerMessage,
        EventKind::Lagged,
        EventKind::Joined,
        EventKind::Left,
        EventKind::RoomCount,
        EventKind::RefreshRequired,
        EventKind::Expired,
    ];

    /// The `event` label: the event's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Ready => "ready",
            EventKind::NewUser => "new_user",
            EventKind::ClientResponse => "client_response",
            EventKind::ClientBroadcast => "client_broadcast",
            EventKind::UserLeft => "user_left",
            EventKind::ServerMessage => "server_message",
            EventKind::Lagged => "lagged",
            EventKind::Joined => "joined",
            EventKind::Left => "left",
            EventKind::RoomCount => "room_count",
            EventKind::RefreshRequired => "refresh_required",
            EventKind::Expired => "expired",
        }
    }
}

/// Label set for HTTP requests: the route template (never a concrete id) and the status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Latency buckets in seconds: 100 µs to about 6.5 s, doubling, as the delivery histogram's.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(
        latency::FIRST_BOUND,
        2.0,
        latency::BOUNDED as u16,
    ))
}

/// Registers our metrics under the `switchboard` prefix, and remembers each family's name.
struct Families<'a> {
    registry: &'a mut Registry,
    /// As scraped: `switchboard_` and the name, with the unit (counters without `_total`).
    names: Vec<String>,
}

impl Families<'_> {
    fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.names.push(format!("switchboard_{name}"));
        self.registry.register(name, help, metric);
    }

    /// Registers a latency metric (a histogram of [`latency_buckets`], or a family of them) in
    /// seconds; the registry keeps a clone, which shares the metric's atomics.
    fn register_latency(&mut self, name: &str, help: &str, latency: &(impl Metric + Clone)) {
        self.names.push(format!("switchboard_{name}_seconds"));
        self.registry
            .register_with_unit(name, help, Unit::Seconds, latency.clone());
    }
}

/// The name of every `switchboard_*` family, as scraped (counters without `_total`): what the
/// first scrape must already show (the `process_*` ones are read at each scrape).
pub fn families() -> Vec<String> {
    Metrics::registered().1
}

/// Every metric switchboard exports.
pub struct Metrics {
    registry: Registry,
    /// Registered sessions.
    pub sessions: Gauge,
    /// SSE streams currently attached.
    pub streams: Gauge,
    /// The stream limit derived from the open-file limit (or set by flag).
    pub stream_limit: Gauge,
    /// 1 while this instance is on its backplane: always when alone; in a cluster, while it
    /// reads the Redis bus (set by the broker).
    pub backplane_up: Gauge,
    /// 1 from the shutdown signal on: the instance drains and stops (set by `lifecycle`).
    pub draining: Gauge,
    /// Unread events a full mailbox lost, evicted or dropped on arrival (each becomes part of a
    /// `lagged` count).
    pub evictions: Counter,
    /// Direct messages refused with 429 because the recipient's mailbox was full.
    pub mailbox_full: Counter,
    /// `: ping` comments written to quiet streams (not events: no id, no data).
    pub heartbeats: Counter,
    /// Events written to streams, indexed by [`EventKind`] (`kind as usize`).
    delivered: [Counter; EventKind::ALL.len()],
    /// From the moment an event was accepted to the moment its stream wrote it.
    delivery_latency: latency::Histogram,
    http: Family<HttpLabels, Counter>,
    http_latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    /// Requests refused by a rate limit or a per-address cap, by the limit's name.
    limited: Family<LimitLabel, Counter>,
    /// Cluster messages this instance read from Redis, by channel (`bus`, `room`, `instance`).
    bus_received: Family<ChannelLabel, Counter>,
    /// Cluster messages (or fields of them) this version did not understand, by reason.
    bus_ignored: Family<ReasonLabel, Counter>,
    /// Sessions of dead cluster instances this instance adopted.
    pub sessions_adopted: Counter,
    /// Sessions ended at the end of their lifetime (join token, `--max-session-age`, server).
    pub sessions_expired: Counter,
    /// Session lifetimes moved by `POST /session/refresh` or `POST /api/refresh`.
    pub session_refreshes: Counter,
    /// Connections closed on accept because every connection slot was taken.
    pub connections_refused: Counter,
    /// Sends to parked streams' sockets (see `registry::writer`): that took everything, and
    /// that left a rest to the stream's task (its client reads slower than events come).
    parked_sends: [Counter; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::registered().0
    }
}

impl Metrics {
    /// Every metric, registered; and each family's name (see [`families`]).
    fn registered() -> (Metrics, Vec<String>) {
        let mut root = Registry::default();
        #[cfg(target_os = "linux")]
        root.register_collector(Box::new(process::Collector));
        let events = Family::<EventLabel, Counter>::default();
        // Each kind's counter is the family's own (a clone shares the atomic), looked up once.
        let delivered = EventKind::ALL.map(|kind| {
            events
                .get_or_create(&EventLabel { event: kind.name() })
                .clone()
        });
        let sends = Family::<OutcomeLabel, Counter>::default();
        let parked_sends = ["whole", "partial"]
            .map(|outcome| sends.get_or_create(&OutcomeLabel { outcome }).clone());
        let metrics = Metrics {
            sessions: Gauge::default(),
            streams: Gauge::default(),
            stream_limit: Gauge::default(),
            backplane_up: Gauge::default(),
            draining: Gauge::default(),
            evictions: Counter::default(),
            mailbox_full: Counter::default(),
            heartbeats: Counter::default(),
            delivered,
            delivery_latency: latency::Histogram::default(),
            http: Family::default(),
            http_latency: Family::new_with_constructor(latency_buckets as fn() -> Histogram),
            limited: Family::default(),
            bus_received: {
                let channels = Family::default();
                for channel in ["bus", "room", "instance"] {
                    let _ = channels.get_or_create(&ChannelLabel { channel });
                }
                channels
            },
            bus_ignored: {
                let reasons = Family::default();
                for reason in ["unknown_kind", "unknown_field", "malformed"] {
                    let _ = reasons.get_or_create(&ReasonLabel { reason });
                }
                reasons
            },
            sessions_adopted: Counter::default(),
            sessions_expired: Counter::default(),
            session_refreshes: Counter::default(),
            connections_refused: Counter::default(),
            parked_sends,
            registry: Registry::default(),
        };
        let mut registry = Families {
            registry: root.sub_registry_with_prefix("switchboard"),
            names: Vec::new(),
        };
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running version; always 1", build);
        registry.register("sessions", "Registered sessions", metrics.sessions.clone());
        registry.register("streams", "Attached SSE streams", metrics.streams.clone());
        registry.register(
            "stream_limit",
            "Most SSE streams this process accepts",
            metrics.stream_limit.clone(),
        );
        registry.register(
            "backplane_up",
            "1 while this instance is on its backplane (alone: always; in a cluster: while it \
             reads the Redis bus), else 0",
            metrics.backplane_up.clone(),
        );
        registry.register(
            "draining",
            "1 once this instance is shutting down (draining its sessions and streams), else 0",
            metrics.draining.clone(),
        );
        registry.register(
            "events_delivered",
            "Events written to SSE streams, by event name",
            events,
        );
        registry.register(
            "heartbeats",
            "Keep-alive comments written to quiet SSE streams",
            metrics.heartbeats.clone(),
        );
        registry.register_latency(
            "delivery_latency",
            "From accepting an event to writing it to its stream",
            &metrics.delivery_latency,
        );
        registry.register(
            "parked_sends",
            "Sends of new events to idle streams' sockets, by outcome: whole, or partial (the \
             rest left to the stream, whose client reads slower than events come)",
            sends,
        );
        registry.register(
            "mailbox_evictions",
            "Unread events lost to full mailboxes (evicted, or dropped on arrival)",
            metrics.evictions.clone(),
        );
        registry.register(
            "mailbox_full",
            "Direct messages refused because the recipient mailbox was full",
            metrics.mailbox_full.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit or a per-address cap, by limit",
            metrics.limited.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed on accept because every connection slot was taken (the \
             open-file limit less 64); refusals by an address's share are in rate_limited",
            metrics.connections_refused.clone(),
        );
        registry.register(
            "bus_messages_received",
            "Cluster messages read from Redis, by channel: bus (every instance), room (the \
             instances with members in the room) or instance (this one)",
            metrics.bus_received.clone(),
        );
        registry.register(
            "bus_messages_ignored",
            "Cluster messages or fields this version did not understand (a newer instance's), \
             by reason: unknown_kind and malformed ignored, unknown_field applied without it",
            metrics.bus_ignored.clone(),
        );
        registry.register(
            "sessions_adopted",
            "Sessions of dead cluster instances adopted here, with their ids and tokens",
            metrics.sessions_adopted.clone(),
        );
        registry.register(
            "sessions_expired",
            "Sessions ended at the end of their lifetime (join token exp, --max-session-age, \
             or the server API)",
            metrics.sessions_expired.clone(),
        );
        registry.register(
            "session_refreshes",
            "Session lifetimes moved by POST /session/refresh or POST /api/refresh",
            metrics.session_refreshes.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            metrics.http.clone(),
        );
        registry.register_latency(
            "http_request_duration",
            "Time to answer an HTTP request (to the response head, for streams), by route",
            &metrics.http_latency,
        );
        let families = registry.names;
        let metrics = Metrics {
            registry: root,
            ..metrics
        };
        (metrics, families)
    }
}

impl Metrics {
    /// Counts `n` events of `kind` written to a stream.
    pub fn delivered(&self, kind: EventKind, n: u64) {
        self.delivered[kind as usize].inc_by(n);
    }

    /// Adds what `tally` counted (and clears it): one atomic add per kind and bucket it
    /// touched, not one per event.
    pub fn add_deliveries(&self, tally: &mut Deliveries) {
        add_counts(&self.delivered, &mut tally.counts);
        add_counts(&self.parked_sends, &mut tally.sends);
        self.delivery_latency
            .add(&std::mem::take(&mut tally.latencies));
    }

    /// Counts one HTTP request; `route` must be a template such as `/events/{id}`.
    pub fn http_request(&self, route: &'static str, status: u16) {
        self.http.get_or_create(&HttpLabels { route, status }).inc();
    }

    /// Creates `route`'s request series for each of `statuses`, and its duration histogram, at 0.
    pub fn http_series(&self, route: &'static str, statuses: &[u16]) {
        for &status in statuses {
            let _ = self.http.get_or_create(&HttpLabels { route, status });
        }
        let _ = self.http_latency.get_or_create(&RouteLabel { route });
    }

    /// Counts one cluster message (or its fields) not understood, for `reason`.
    pub fn bus_ignored(&self, reason: &'static str) {
        self.bus_ignored
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts one cluster message read from `channel` (`bus`, `room` or `instance`).
    pub fn bus_received(&self, channel: &'static str) {
        self.bus_received
            .get_or_create(&ChannelLabel { channel })
            .inc();
    }

    /// Creates `limit`'s refusal series at 0, so it is scraped before the first refusal.
    pub fn limited_series(&self, limit: &'static str) {
        let _ = self.limited.get_or_create(&LimitLabel { limit });
    }

    /// Counts one request refused by `limit` (a limit's snake_case name).
    pub fn limited(&self, limit: &'static str) {
        self.limited.get_or_create(&LimitLabel { limit }).inc();
    }

    /// Records how long a request to `route` (a template) took to answer.
    pub fn http_request_duration(&self, route: &'static str, elapsed: Duration) {
        self.http_latency
            .get_or_create(&RouteLabel { route })
            .observe(elapsed.as_secs_f64());
    }

    /// Every metric in the classic Prometheus text format (0.0.4), served as [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Every metric in OpenMetrics 1.0 text, served as [`OPENMETRICS_CONTENT_TYPE`].
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
