//! The HTTP edge's front door: [`routes`] joins every route's filter into one for the whole
//! API, and nothing else lives here.
//!
//! # Layout
//! - `route_table`: [`ROUTES`] (drives metrics labels, `Allow` and the docs checks) and the
//!   headers every response carries.
//! - `context`: what every handler is given ([`Context`], [`StreamSettings`], `PeerAddr`).
//! - `filters`: extract and validate a request's parts; `message`: a client's `message` body.
//! - `handlers`: one function per client route, calling the hub; `server_api`: the app
//!   backend's routes (`/api/*`); `stats`: its figures stream for the admin console;
//!   `listing`: the paged session list both serve; `rooms`: the room routes of both;
//!   `lifetime`: refreshing sessions' lifetimes, for both.
//! - `stream_auth`: the session cookie and stream tickets (`POST /session/ticket`), so no
//!   secret need stand in a stream's URL.
//! - `sse`: the stream wire format; `lean`: stream connections served without hyper;
//!   `takeover`: a keep-alive connection handed from hyper to `lean`.
//! - `error`: every failure as JSON (its [`error::ErrorCode`] is public, so tests can hold the
//!   docs to it); `redact`: what of a request may be logged; `cors`; `page`: the web client
//!   and the admin console.
//! - `server`: the accept loop with tower-http's layers and graceful shutdown; `plain`: a
//!   connection of the plain listener (`lean` or hyper); `secure`: a connection of the TLS
//!   listener (HTTP/2 or HTTP/1.1); `tls`: its certificate, reloaded.
//!
//! Lower files never import from this one; only what tests need is `pub`.

mod context;
mod cors;
pub mod error;
mod filters;
mod handlers;
mod lean;
mod lifetime;
mod listing;
mod message;
mod page;
mod plain;
mod redact;
mod rooms;
mod route_table;
mod secure;
pub(crate) mod server;
mod server_api;
mod sse;
mod stats;
mod stream_auth;
mod takeover;
pub(crate) mod tls;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use warp::Filter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Reply;

use crate::backplane::Hub;
use crate::identity::Token;

pub use context::{Context, StreamSettings};
use filters::{
    bearer, bearer_credential, client_address, json_body, raw_header, stream_params, with_hub,
};
pub use route_table::ROUTES;
use route_table::{SECURITY_HEADERS, allowed_methods, count_from_zero, route_of};

/// `GET`, and `HEAD` answered as `GET` without the body (hyper leaves the body out).
fn get_or_head() -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::get().or(warp::head()).unify()
}

/// The OpenAPI description, compiled in so the binary serves the one it was built with.
const OPENAPI: &str = include_str!("../../openapi.yaml");

/// `GET /metrics` alone, for `--metrics-listen`'s own address.
pub fn metrics_routes(
    hub: Hub,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    warp::path!("metrics")
        .and(get_or_head())
        .and(with_hub(hub))
        .and(raw_header("accept"))
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
    // Every route's series from the start, before the first request reaches it.
    count_from_zero(&metrics);
    let authenticated = with_hub(hub.clone())
        .and(bearer())
        .and_then(handlers::verify);

    let helo = warp::path!("helo")
        .and(warp::post())
        .and(with_context())
        .and(client_address(Arc::clone(&limits)))
        .and(stream_auth::https(Arc::clone(&limits)))
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
        .and(with_context())
        .and(stream_params())
        .then(handlers::events_head);
    let response = warp::path!("response")
        .and(warp::post())
        .and(with_context())
        .and(authenticated.clone())
        .and(raw_header("idempotency-key"))
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
        .and(stream_auth::https(Arc::clone(&limits)))
        .and(authenticated.clone())
        .then(handlers::delete_session);
    let ticket = warp::path!("session" / "ticket")
        .and(warp::post())
        .and(with_context())
        .and(
            with_hub(hub.clone())
                .and(bearer())
                .and_then(|hub: Hub, token: Token| async move {
                    let peer = handlers::verify(hub, token.clone()).await?;
                    Ok::<_, warp::Rejection>((peer, token))
                })
                .untuple_one(),
        )
        .then(stream_auth::post_ticket);
    let refresh = warp::path!("session" / "refresh")
        .and(warp::post())
        .and(with_context())
        .and(authenticated.clone())
        .and(json_body(max_body))
        .then(lifetime::refresh);
    let join_room = warp::path!("session" / "rooms" / String)
        .and(warp::put())
        .and(with_context())
        .and(authenticated.clone())
        .then(rooms::join);
    let leave_room = warp::path!("session" / "rooms" / String)
        .and(warp::delete())
        .and(with_context())
        .and(authenticated)
        .then(rooms::leave);
    let room_members = warp::path!("rooms" / String / "members")
        .and(get_or_head())
        .and(with_context())
        .and(client_address(Arc::clone(&limits)))
        .and(bearer_credential())
        .and(listing::page_query())
        .then(rooms::members);
    let clients = warp::path!("clients")
        .and(get_or_head())
        .and(with_context())
        .and(client_address(Arc::clone(&limits)))
        .and(bearer_credential())
        .and(listing::page_query())
        .then(handlers::list_clients);
    let server_api = server_api::routes(context_api_key.clone(), with_context(), max_body);
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
        .and(raw_header("accept"))
        .then(handlers::metrics);
    let openapi = warp::path!("openapi.yaml").and(get_or_head()).map(|| {
        warp::reply::with_header(OPENAPI, "content-type", "application/yaml").into_response()
    });
    let admin = page::admin(context_api_key.is_some());
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
        .or(ticket)
        .unify()
        .or(refresh)
        .unify()
        .or(join_room)
        .unify()
        .or(leave_room)
        .unify()
        // Boxed halfway: the chain's type grows with every route, and with it compile time.
        .boxed()
        .or(clients)
        .unify()
        .or(room_members)
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
        .or(admin)
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
