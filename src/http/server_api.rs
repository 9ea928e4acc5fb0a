//! The server API for the app's backend (`/api/*`, enabled by `--api-key-file`). The
//! operations themselves are the hub's ([`crate::backplane::Target`]); this file checks the key
//! and reads and writes JSON. Its session list is `listing`'s, shared with `GET /clients`; its
//! room routes are `rooms`'s.

use std::convert::Infallible;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::context::Context;
use super::error::ApiError;
use super::filters::{bearer_credential, json_body};
use super::lifetime;
use super::listing::{page_query, page_reply};
use super::message::Message;
use super::rooms;
use super::stats;
use crate::auth::api_key::ApiKey;
use crate::backplane::{PageQuery, Target};
use crate::registry::RegistryError;

/// `/api/publish`, `/api/disconnect`, `/api/refresh`, `/api/sessions`, `/api/stats` and `/api/rooms...`, each behind the
/// key. Boxed: one type for all, so the whole API's filter type stays small enough to compile
/// quickly.
pub(crate) fn routes(
    key: Option<Arc<ApiKey>>,
    with_context: impl Filter<Extract = (Context,), Error = Infallible> + Clone + Send + Sync + 'static,
    max_body: u64,
) -> BoxedFilter<(Result<Response, ApiError>,)> {
    let key = backend_key(key);
    let publish = warp::path!("api" / "publish")
        .and(warp::post())
        .and(key.clone())
        .and(with_context.clone())
        .and(json_body(max_body))
        .then(publish);
    let disconnect = warp::path!("api" / "disconnect")
        .and(warp::post())
        .and(key.clone())
        .and(with_context.clone())
        .and(json_body(max_body))
        .then(disconnect);
    let refresh = warp::path!("api" / "refresh")
        .and(warp::post())
        .and(key.clone())
        .and(with_context.clone())
        .and(json_body(max_body))
        .then(lifetime::api_refresh);
    let sessions = warp::path!("api" / "sessions")
        .and(warp::get().or(warp::head()).unify())
        .and(key.clone())
        .and(with_context.clone())
        .and(page_query())
        .then(sessions);
    let stats = warp::path!("api" / "stats")
        .and(warp::get())
        .and(key.clone())
        .and(with_context.clone())
        .then(stats::stats);
    let rooms = warp::path!("api" / "rooms")
        .and(warp::get().or(warp::head()).unify())
        .and(key.clone())
        .and(with_context.clone())
        .and(rooms::room_query())
        .then(rooms::api_rooms);
    let members = warp::path!("api" / "rooms" / String / "members");
    let list_members = members
        .and(warp::get().or(warp::head()).unify())
        .and(key.clone())
        .and(with_context.clone())
        .and(page_query())
        .then(rooms::api_members);
    let put_members = members
        .and(warp::put())
        .and(key.clone())
        .and(with_context.clone())
        .and(json_body(max_body))
        .then(rooms::api_join);
    let delete_members = members
        .and(warp::delete())
        .and(key)
        .and(with_context)
        .and(json_body(max_body))
        .then(rooms::api_leave);
    publish
        .or(disconnect)
        .unify()
        .or(refresh)
        .unify()
        .or(sessions)
        .unify()
        .or(stats)
        .unify()
        .or(rooms)
        .unify()
        .or(list_members)
        .unify()
        .or(put_members)
        .unify()
        .or(delete_members)
        .unify()
        .boxed()
}

/// Passes requests bearing the API key. Without `--api-key-file` the API does not exist (404),
/// so a scan cannot tell it from any other missing path; a wrong or missing key is 401.
pub(crate) fn backend_key(
    key: Option<Arc<ApiKey>>,
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    bearer_credential()
        .and_then(move |presented: Option<String>| {
            let key = key.clone();
            async move {
                let Some(key) = key else {
                    return Err(warp::Rejection::from(ApiError::no_route()));
                };
                if presented.is_some_and(|presented| key.matches(&presented)) {
                    Ok(())
                } else {
                    Err(ApiError::unauthorized(
                        "the server API needs Authorization: Bearer <API key>",
                    )
                    .into())
                }
            }
        })
        .untuple_one()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishRequest {
    to: Target,
    message: Message,
}

#[derive(Serialize)]
struct PublishAccepted {
    recipients: usize,
    refused: usize,
}

/// `POST /api/publish`: a `server_message` to a session, a user's sessions, a room's members,
/// or everyone.
pub(crate) async fn publish(context: Context, body: PublishRequest) -> Result<Response, ApiError> {
    let published = context
        .hub
        .publish(&body.to, body.message.into_inner())
        .await
        .map_err(unknown_session_or)?;
    let body = PublishAccepted {
        recipients: published.recipients,
        refused: published.refused,
    };
    Ok(warp::reply::with_status(warp::reply::json(&body), StatusCode::ACCEPTED).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DisconnectRequest {
    to: Target,
}

#[derive(Serialize)]
struct Disconnected {
    disconnected: usize,
}

/// `POST /api/disconnect`: end a session, a user's sessions, or every session.
pub(crate) async fn disconnect(
    context: Context,
    body: DisconnectRequest,
) -> Result<Response, ApiError> {
    let disconnected = context.hub.disconnect(&body.to).await?;
    Ok(warp::reply::json(&Disconnected { disconnected }).into_response())
}

/// `GET /api/sessions`: one page of sessions, optionally one user's.
pub(crate) async fn sessions(context: Context, query: PageQuery) -> Result<Response, ApiError> {
    let page = context.hub.page(&query).await?;
    Ok(page_reply("/api/sessions", &query, &page))
}

/// The server API names sessions, not recipients: an unknown one is `unknown_session`.
fn unknown_session_or(err: RegistryError) -> ApiError {
    match err {
        RegistryError::UnknownRecipient(id) => ApiError::unknown_session(id),
        err => ApiError::from(err),
    }
}
