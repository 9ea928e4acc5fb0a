//! The figures the admin console shows (`GET /api/stats`), as each instance reports its own.
//!
//! One task an instance ([`Hub::report_figures`]) reads the counters once a second and
//! publishes the figures of that second twice: in a cluster to the broker, where the other
//! instances read them, and to this instance's consoles (a watch channel,
//! [`Hub::watch_figures`]), together with the newest figures of every other instance, read once
//! for all of them and only while a console watches. So a console open on any instance sees
//! every instance, each marked by its id and its state, and the cluster's figures are read once
//! a second per instance whatever the number of consoles. They never travel on the bus, and an
//! instance that dies is forgotten when its figures expire.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Hub;
use crate::limits::LimitKind;
use crate::metrics::Reading;

/// How often the figures are read.
const PERIOD: Duration = Duration::from_secs(1);
/// The largest rooms listed.
const TOP_ROOMS: usize = 10;

/// What this instance's reporter published last: figures as JSON (`openapi.yaml`'s `Stats`),
/// this instance's first, then every other live instance's.
#[derive(Clone, Debug, Default)]
pub enum Report {
    /// Nothing yet: the reporter has not read the counters.
    #[default]
    Pending,
    /// The figures of the last second.
    Figures(Arc<[Arc<str>]>),
    /// The figures read as the instance stopped (its state `draining`): the last there will be.
    Last(Arc<[Arc<str>]>),
}

/// One instance's figures, as `openapi.yaml`'s `Stats` describes them.
#[derive(Serialize)]
struct Figures {
    instance: String,
    /// `ready`, `unready` (its backplane is down) or `draining`.
    state: &'static str,
    sessions: usize,
    streams: usize,
    stream_limit: usize,
    /// How many rooms have members, and the largest of them, largest first (empty while no
    /// console watches this instance: see `Hub::figures`).
    room_count: usize,
    rooms: Vec<RoomSize>,
    joins_per_second: f64,
    messages_per_second: f64,
    deliveries_per_second: f64,
    /// Delivery latency over the last second (ms, a bucket's upper bound); `null` when
    /// nothing was delivered, or past the last bucket.
    latency_p50_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
    /// `lagged` events sent since start: each a client that lost events.
    lagged: u64,
    /// Requests refused since start, by limit.
    refusals: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct RoomSize {
    room: String,
    members: usize,
}

impl Hub {
    /// Reads this instance's figures once a second and publishes them (see the module doc),
    /// until `cancel` fires; then publishes the last ones (their state `draining`), which the
    /// other instances see until they expire, and ends. Rates and the latency are those of the
    /// second before each reading.
    pub(crate) async fn report_figures(self, cancel: CancellationToken) {
        let mut previous = self.metrics().reading();
        let mut interval = tokio::time::interval(PERIOD);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = interval.tick() => false,
                () = cancel.cancelled() => true,
            };
            let now = self.metrics().reading();
            let watched = self.here.figures.receiver_count() > 0;
            let figures = self.figures(&previous, &now, watched).await;
            previous = now;
            let json: Arc<str> = serde_json::to_string(&figures).unwrap_or_default().into();
            // Redis down: the other consoles lose this instance, whose own says `unready`. The
            // last figures, saying `draining`, are left to expire rather than removed: a drain
            // often takes less than a period, and the other consoles should see it.
            if let Err(err) = self.broker.report_figures(&json).await {
                debug!(error = %err, "could not report this instance's figures");
            }
            let all = self.with_elsewhere(json, watched).await;
            self.here.figures.send_replace(if stopping {
                Report::Last(all)
            } else {
                Report::Figures(all)
            });
            if stopping {
                return;
            }
        }
    }

    /// `own` followed by every other live instance's figures, read only while a console
    /// watches (two reads of Redis a second); alone when Redis is down, its state says why.
    async fn with_elsewhere(&self, own: Arc<str>, watched: bool) -> Arc<[Arc<str>]> {
        let elsewhere = if watched {
            self.broker.figures_elsewhere().await.unwrap_or_default()
        } else {
            Vec::new()
        };
        std::iter::once(own).chain(elsewhere).collect()
    }

    /// The figures as the reporter publishes them, the newest marked unseen. Published before
    /// the first console watched, they hold this instance's alone: the next second has all.
    pub fn watch_figures(&self) -> watch::Receiver<Report> {
        let mut figures = self.here.figures.subscribe();
        figures.mark_changed();
        figures
    }

    /// The figures now, with rates since `previous` (a period ago; the first ones are 0). The
    /// largest rooms only while a console watches this instance: in a cluster they are the
    /// whole hub's, a read of every room's count, which each console takes from the instance
    /// it watches; otherwise only how many rooms there are (one `HLEN`).
    async fn figures(&self, previous: &Reading, now: &Reading, watched: bool) -> Figures {
        let metrics = self.metrics();
        let stats = self.stats();
        let state = if metrics.draining.get() == 1 {
            "draining"
        } else if metrics.backplane_up.get() == 1 {
            "ready"
        } else {
            "unready"
        };
        // A backplane that cannot list its rooms shows none: the state says why.
        let (room_count, mut rooms) = if watched {
            let rooms = self.rooms().await.unwrap_or_default();
            (rooms.len(), rooms)
        } else {
            let count = self.broker.room_count().await.unwrap_or_default();
            (count, Vec::new())
        };
        rooms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_str().cmp(b.0.as_str())));
        let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / PERIOD.as_secs_f64();
        let limits = LimitKind::ALL.map(LimitKind::as_str);
        Figures {
            instance: self
                .instance()
                .map_or_else(|| "local".to_owned(), |id| id.to_string()),
            state,
            sessions: stats.sessions,
            streams: stats.streams,
            stream_limit: stats.stream_limit,
            room_count,
            rooms: rooms
                .into_iter()
                .take(TOP_ROOMS)
                .map(|(room, members)| RoomSize {
                    room: room.as_str().to_owned(),
                    members,
                })
                .collect(),
            joins_per_second: rate(now.joins, previous.joins),
            messages_per_second: rate(now.messages, previous.messages),
            deliveries_per_second: rate(now.deliveries, previous.deliveries),
            latency_p50_ms: now
                .latency_ms_since(previous, 0.5)
                .filter(|ms| ms.is_finite()),
            latency_p99_ms: now
                .latency_ms_since(previous, 0.99)
                .filter(|ms| ms.is_finite()),
            lagged: now.lagged,
            refusals: metrics
                .refusals(&limits)
                .into_iter()
                .map(|(limit, count)| (limit.to_owned(), count.into()))
                .collect(),
        }
    }
}
