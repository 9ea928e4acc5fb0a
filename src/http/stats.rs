//! `GET /api/stats` (the API key): an SSE stream of this instance's figures, one `stats` event
//! a second, for the admin console. Rates and the delivery latency are those of the last
//! second: each stream keeps its previous reading of the counters. The stream ends at
//! shutdown, after an event saying `draining`.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use warp::http::HeaderValue;
use warp::reply::{Reply, Response};

use super::context::Context;
use super::error::ApiError;
use crate::limits::LimitKind;
use crate::metrics::Reading;

/// How often a figure is sent.
const PERIOD: Duration = Duration::from_secs(1);
/// The largest rooms listed.
const TOP_ROOMS: usize = 10;

/// One `stats` event: this instance's figures.
#[derive(Serialize)]
struct Figures {
    instance: String,
    /// `ready`, `unready` (its backplane is down) or `draining`.
    state: &'static str,
    sessions: usize,
    streams: usize,
    stream_limit: usize,
    /// How many rooms have members, and the largest of them, largest first.
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

/// `GET /api/stats`: the stream; the key was checked by the route. A task of its own reads the
/// figures (listing rooms may wait on Redis) and ends when the client goes or at shutdown.
pub(crate) async fn stats(context: Context) -> Result<Response, ApiError> {
    let (frames, body) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(1);
    tokio::spawn(async move {
        let mut previous = context.hub.metrics().reading();
        let mut interval = tokio::time::interval(PERIOD);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = interval.tick() => false,
                () = context.shutdown.cancelled() => true,
            };
            let now = context.hub.metrics().reading();
            let figures = figures(&context, &previous, &now).await;
            previous = now;
            let data = serde_json::to_string(&figures).unwrap_or_default();
            let frame = Bytes::from(format!("event: stats\ndata: {data}\n\n"));
            // The send fails once the client has gone; at shutdown, `draining` was the last.
            if frames.send(Ok(frame)).await.is_err() || stopping {
                break;
            }
        }
    });
    let body = tokio_stream::wrappers::ReceiverStream::new(body);
    let mut response = warp::reply::stream(body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-store"),
        ("x-accel-buffering", "no"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Ok(response)
}

/// The figures now, with rates since `previous` (a second ago; the first event's are 0).
async fn figures(context: &Context, previous: &Reading, now: &Reading) -> Figures {
    let hub = &context.hub;
    let metrics = hub.metrics();
    let stats = hub.stats();
    let state = if metrics.draining.get() == 1 {
        "draining"
    } else if metrics.backplane_up.get() == 1 {
        "ready"
    } else {
        "unready"
    };
    // A backplane that cannot list its rooms shows none: the state says why.
    let mut rooms = hub.rooms().await.unwrap_or_default();
    rooms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_str().cmp(b.0.as_str())));
    let room_count = rooms.len();
    let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / PERIOD.as_secs_f64();
    let limits = LimitKind::ALL.map(LimitKind::as_str);
    Figures {
        instance: hub
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
