//! The HTTP edge: warp filters over the hub, one [`routes`] filter for the whole API.
//!
//! Filters extract and validate (`filters`), handlers call the hub (`handlers`), `sse`
//! owns the stream wire format, `error` turns every failure into JSON (its [`error::ErrorCode`]
//! is public, so tests can hold the docs to it), `redact` decides what of a request may be
//! logged, `lean` serves stream connections without hyper, and `server` runs the accept loop
//! with tower-http's layers and graceful shutdown. Only what tests need is `pub`.

mod backend;
mod cors;
pub mod error;
mod filters;
mod handlers;
mod lean;
mod page;
mod redact;
pub(crate) mod server;
mod sse;
mod takeover;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Reply;

use crate::auth::JoinPolicy;
use crate::auth::api_key::ApiKey;
use crate::backplane::Hub;
use crate::limits::Limits;
use filters::{bearer, bearer_credential, client_address, json_body, stream_params, with_hub};
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
    ("POST", "/api/publish"),
    ("POST", "/api/disconnect"),
    ("GET", "/api/sessions"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.yaml"),
    ("GET", "/"),
];

/// Headers on every response, from both connection paths: no MIME sniffing, the page's code
/// only from this origin (no inline code), never framed, and no `Referer` leaked onwards.
pub(crate) const SECURITY_HEADERS: [(&str, &str); 3] = [
    ("x-content-type-options", "nosniff"),
    (
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
];

/// The `Allow` value for a path: the methods its route serves (`HEAD` with every `GET`).
pub(crate) fn allowed_methods(path: &str) -> String {
    let template = route_of(path);
    let methods: Vec<&str> = ROUTES
        .iter()
        .filter(|&&(_, t)| t == template)
        .flat_map(|&(method, _)| match method {
            "GET" => vec!["GET", "HEAD"],
            other => vec![other],
        })
        .collect();
    methods.join(", ")
}

/// `GET`, and `HEAD` answered as `GET` without the body (hyper leaves the body out).
fn get_or_head() -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::get().or(warp::head()).unify()
}

/// The OpenAPI description, compiled in so the binary serves the one it was built with.
const OPENAPI: &str = include_str!("../../openapi.yaml");

/// What the handlers share: the hub, the limits, who may join, stream timings, and the
/// shutdown signal.
#[derive(Clone)]
pub struct Context {
    pub hub: Hub,
    pub(crate) limits: Arc<Limits>,
    pub(crate) join: Arc<JoinPolicy>,
    /// The server API's key; `None`: the API is off (404).
    pub(crate) api_key: Option<Arc<ApiKey>>,
    pub stream: StreamSettings,
    /// What a full house tells clients to wait: an abandoned session is gone after one TTL.
    pub session_ttl: Duration,
    pub shutdown: CancellationToken,
}

/// The socket peer of the connection a request came on, put into every request's extensions
/// by the accept loop (warp's own `addr::remote` only works with warp's server).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

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

/// `GET /metrics` alone, for `--metrics-listen`'s own address.
pub fn metrics_routes(
    hub: Hub,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    warp::path!("metrics")
        .and(get_or_head())
        .and(with_hub(hub))
        .and(warp::header::optional::<String>("accept"))
        .then(handlers::metrics)
        .map(
            |result: Result<warp::reply::Response, error::ApiError>| match result {
                Ok(response) => response,
                Err(error) => error.into_response(),
            },
        )
        .recover(error::handle_rejection)
        .unify()
}

/// The whole API: routes, the web client (built in, or from `public_dir`), errors as JSON,
/// metrics per request. Without `public_metrics` (`--metrics-listen` serves them elsewhere),
/// `/metrics` is not found here.
pub fn routes(
    context: Context,
    max_body: u64,
    public_dir: impl Into<Option<PathBuf>>,
    public_metrics: bool,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let hub = context.hub.clone();
    let limits = Arc::clone(&context.limits);
    let context_api_key = context.api_key.clone();
    let with_context = move || {
        let context = context.clone();
        warp::any().map(move || context.clone())
    };
    let metrics = hub.metrics().clone();
    let authenticated = with_hub(hub.clone())
        .and(bearer())
        .and_then(handlers::verify);

    let helo = warp::path!("helo")
        .and(warp::post())
        .and(with_context())
        .and(client_address(Arc::clone(&limits)))
        .and(bearer_credential())
        .and(json_body(max_body))
        .then(handlers::helo);
    let events = warp::path!("events" / String)
        .and(warp::get())
        .and(stream_params())
        .and(client_address(Arc::clone(&limits)))
        .and(with_context())
        .then(handlers::events);
    let events_head = warp::path!("events" / String)
        .and(warp::head())
        .and(with_hub(hub.clone()))
        .and(stream_params())
        .then(handlers::events_head);
    let response = warp::path!("response")
        .and(warp::post())
        .and(with_context())
        .and(authenticated.clone())
        .and(warp::header::optional::<String>("idempotency-key"))
        .and(json_body(max_body))
        .then(handlers::post_response);
    let broadcast = warp::path!("broadcast")
        .and(warp::post())
        .and(with_context())
        .and(authenticated.clone())
        .and(json_body(max_body))
        .then(handlers::post_broadcast);
    let delete = warp::path!("session")
        .and(warp::delete())
        .and(with_hub(hub.clone()))
        .and(authenticated)
        .then(handlers::delete_session);
    let clients = warp::path!("clients")
        .and(get_or_head())
        .and(with_context())
        .and(client_address(Arc::clone(&limits)))
        .and(bearer_credential())
        .and(backend::page_query())
        .then(handlers::list_clients);
    let server_api = backend::routes(context_api_key, with_context(), max_body);
    let healthz = warp::path!("healthz")
        .and(get_or_head())
        .and(with_hub(hub.clone()))
        .then(handlers::healthz);
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_context())
        .then(handlers::readyz);
    let metrics_route = warp::path!("metrics")
        .and(warp::any().and_then(move || async move {
            if public_metrics {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        }))
        .untuple_one()
        .and(get_or_head())
        .and(with_hub(hub))
        .and(warp::header::optional::<String>("accept"))
        .then(handlers::metrics);
    let openapi = warp::path!("openapi.yaml").and(get_or_head()).map(|| {
        warp::reply::with_header(OPENAPI, "content-type", "application/yaml").into_response()
    });
    let files = page::files(public_dir.into());

    let api = helo
        .or(events)
        .unify()
        .or(events_head)
        .unify()
        .or(response)
        .unify()
        .or(broadcast)
        .unify()
        .or(delete)
        .unify()
        // Boxed halfway: the chain's type grows with every route, and with it compile time.
        .boxed()
        .or(clients)
        .unify()
        .or(server_api)
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
        .unify();
    warp::path::full()
        .and(api)
        .map(
            |path: warp::path::FullPath, mut response: warp::reply::Response| {
                let headers = response.headers_mut();
                for (name, value) in SECURITY_HEADERS {
                    headers.insert(name, HeaderValue::from_static(value));
                }
                if response.status() == StatusCode::METHOD_NOT_ALLOWED
                    && let Ok(allow) = HeaderValue::from_str(&allowed_methods(path.as_str()))
                {
                    response.headers_mut().insert(header::ALLOW, allow);
                }
                response
            },
        )
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
