//! The HTTP edge: warp filters over the hub, one [`routes`] filter for the whole API.
//!
//! Filters extract and validate (`filters`), handlers call the hub (`handlers`), `sse`
//! owns the stream wire format, `error` turns every failure into JSON (its [`error::ErrorCode`]
//! is public, so tests can hold the docs to it), `redact` decides what of a request may be
//! logged, `lean` serves stream connections without hyper, and `server` runs the accept loop
//! with tower-http's layers and graceful shutdown. Only what tests need is `pub`.

pub mod error;
mod filters;
mod handlers;
mod lean;
mod page;
mod redact;
pub(crate) mod server;
mod sse;

use std::convert::Infallible;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::reply::Reply;

use crate::backplane::Hub;
use filters::{bearer, json_body, stream_params, with_hub};
pub use sse::StreamSettings;

/// Every route the API serves, as (method, path template). `openapi.yaml` must list exactly
/// these (a test checks both directions), and metrics label requests by these templates.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/helo"),
    ("GET", "/events/{id}"),
    ("POST", "/response"),
    ("POST", "/broadcast"),
    ("DELETE", "/session"),
    ("GET", "/clients"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.yaml"),
    ("GET", "/"),
];

/// The OpenAPI description, compiled in so the binary serves the one it was built with.
const OPENAPI: &str = include_str!("../../openapi.yaml");

/// What the handlers share: the hub, stream timings, and the shutdown signal.
#[derive(Clone)]
pub struct Context {
    pub hub: Hub,
    pub stream: StreamSettings,
    pub shutdown: CancellationToken,
}

/// The route template a concrete path belongs to, for metrics labels.
pub(crate) fn route_of(path: &str) -> &'static str {
    ROUTES
        .iter()
        .map(|&(_, template)| template)
        .find(|template| match template.strip_suffix("{id}") {
            Some(prefix) => path.starts_with(prefix) && !path[prefix.len()..].contains('/'),
            None => *template == path,
        })
        .unwrap_or("static")
}

/// The whole API: routes, the web client (built in, or from `public_dir`), errors as JSON,
/// metrics per request.
pub fn routes(
    context: Context,
    max_body: u64,
    public_dir: impl Into<Option<PathBuf>>,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let hub = context.hub.clone();
    let ready_context = context.clone();
    let metrics = hub.metrics().clone();
    let authenticated = with_hub(hub.clone())
        .and(bearer())
        .and_then(handlers::verify);

    let helo = warp::path!("helo")
        .and(warp::post())
        .and(with_hub(hub.clone()))
        .and(json_body(max_body))
        .then(handlers::helo);
    let events = warp::path!("events" / String)
        .and(warp::get())
        .and(stream_params())
        .and(warp::any().map(move || context.clone()))
        .then(handlers::events);
    let response = warp::path!("response")
        .and(warp::post())
        .and(with_hub(hub.clone()))
        .and(authenticated.clone())
        .and(json_body(max_body))
        .then(handlers::post_response);
    let broadcast = warp::path!("broadcast")
        .and(warp::post())
        .and(with_hub(hub.clone()))
        .and(authenticated.clone())
        .and(json_body(max_body))
        .then(handlers::post_broadcast);
    let delete = warp::path!("session")
        .and(warp::delete())
        .and(with_hub(hub.clone()))
        .and(authenticated)
        .then(handlers::delete_session);
    let clients = warp::path!("clients")
        .and(warp::get())
        .and(with_hub(hub.clone()))
        .then(handlers::list_clients);
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .and(with_hub(hub.clone()))
        .then(handlers::healthz);
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(warp::any().map(move || ready_context.clone()))
        .then(handlers::readyz);
    let metrics_route = warp::path!("metrics")
        .and(warp::get())
        .and(with_hub(hub))
        .and(warp::header::optional::<String>("accept"))
        .then(handlers::metrics);
    let openapi = warp::path!("openapi.yaml").and(warp::get()).map(|| {
        warp::reply::with_header(OPENAPI, "content-type", "application/yaml").into_response()
    });
    let files = page::files(public_dir.into());

    helo.or(events)
        .unify()
        .or(response)
        .unify()
        .or(broadcast)
        .unify()
        .or(delete)
        .unify()
        .or(clients)
        .unify()
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics_route)
        .unify()
        .map(
            |result: Result<warp::reply::Response, error::ApiError>| match result {
                Ok(response) => response,
                Err(error) => error.into_response(),
            },
        )
        .or(openapi)
        .unify()
        .or(files)
        .unify()
        .recover(error::handle_rejection)
        .unify()
        .with(warp::reply::with::header(
            "x-content-type-options",
            "nosniff",
        ))
        .with(warp::log::custom(move |info| {
            let route = route_of(info.path());
            metrics.http_request(route, info.status().as_u16());
            metrics.http_request_duration(route, info.elapsed());
        }))
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn paths_map_to_their_templates() {
        assert_eq!(route_of("/helo"), "/helo");
        assert_eq!(route_of("/events/abc"), "/events/{id}");
        assert_eq!(route_of("/events/abc/def"), "static");
        assert_eq!(route_of("/app.js"), "static");
    }
}
