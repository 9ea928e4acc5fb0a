//! `GET /api/stats` (the API key): an SSE stream of figures for the admin console, one `stats`
//! event per instance a second. Each second, when this instance's reporter publishes its
//! figures with the newest of every other instance of the cluster (see `backplane::figures`),
//! the stream writes them, each marked by its `instance` and `state`. The stream ends at
//! shutdown, after this instance's last figures (saying `draining`).

use std::convert::Infallible;
use std::fmt::Write as _;

use bytes::Bytes;
use warp::http::HeaderValue;
use warp::reply::{Reply, Response};

use super::context::Context;
use super::error::ApiError;
use crate::backplane::Report;

/// `GET /api/stats`: the stream; the key was checked by the route. A task of its own follows
/// the figures and ends when the client goes or after the last figures.
pub(crate) async fn stats(context: Context) -> Result<Response, ApiError> {
    let (frames, body) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(1);
    let hub = context.hub;
    tokio::spawn(async move {
        let mut own = hub.watch_figures();
        loop {
            // Nothing is pending once the reporter has read the counters (at start).
            if own.changed().await.is_err() {
                return;
            }
            let report = own.borrow_and_update().clone();
            let (all, last) = match report {
                Report::Pending => continue,
                Report::Figures(all) => (all, false),
                Report::Last(all) => (all, true),
            };
            let mut frame = String::new();
            for figures in all.iter() {
                let _ = write!(frame, "event: stats\ndata: {figures}\n\n");
            }
            // The send fails once the client has gone.
            if frames.send(Ok(Bytes::from(frame))).await.is_err() || last {
                return;
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
