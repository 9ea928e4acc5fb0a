//! The server API for the app's backend (`/api/*`, enabled by `--api-key-file`), and the paged
//! session list it shares with `GET /clients`. The operations themselves are the hub's
//! ([`crate::backplane::Target`]); this file checks the key and reads and writes JSON.

use std::convert::Infallible;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::{Reply, Response};

use super::Context;
use super::error::{ApiError, ErrorCode};
use super::filters::{bearer_credential, json_body};
use super::handlers::Message;
use crate::auth::api_key::ApiKey;
use crate::backplane::{Page, PageQuery, Target};
use crate::registry::{RegistryError, SessionId, Token};

/// `/api/publish`, `/api/disconnect` and `/api/sessions`, each behind the key. Boxed: one
/// type for the three, so the whole API's filter type stays small enough to compile quickly.
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
    let sessions = warp::path!("api" / "sessions")
        .and(warp::get().or(warp::head()).unify())
        .and(key)
        .and(with_context)
        .and(page_query())
        .then(sessions);
    publish.or(disconnect).unify().or(sessions).unify().boxed()
}

/// Most sessions one page lists, and the default.
pub(crate) const MAX_PAGE: usize = 1000;

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

/// `?after=<id>&limit=<n>&user=<sub>` of a session list.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
    user: Option<String>,
}

/// A session list's query; 400 `invalid_query` for an id that is not one, a limit outside
/// 1..=[`MAX_PAGE`], or an unknown parameter.
pub(crate) fn page_query() -> impl Filter<Extract = (PageQuery,), Error = warp::Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(|raw: String| async move {
            let invalid = |message: String| {
                warp::Rejection::from(ApiError::bad_request(ErrorCode::InvalidQuery, message))
            };
            let query: ListQuery = serde_urlencoded::from_str(&raw)
                .map_err(|err| invalid(format!("the query is not valid: {err}")))?;
            let after =
                match query.after {
                    None => None,
                    Some(after) => Some(SessionId::parse(&after).ok_or_else(|| {
                        invalid("`after` must be a session id (a UUID)".to_owned())
                    })?),
                };
            let limit = query.limit.unwrap_or(MAX_PAGE);
            if !(1..=MAX_PAGE).contains(&limit) {
                return Err(invalid(format!("`limit` must be 1 to {MAX_PAGE}")));
            }
            Ok(PageQuery {
                after,
                limit,
                user: query.user,
            })
        })
}

/// A page as a JSON array in id order; when more follow, a `Link` to the next page.
pub(crate) fn page_reply(path: &str, query: &PageQuery, page: &Page) -> Response {
    let mut response = warp::reply::json(&page.peers).into_response();
    if let (true, Some(last)) = (page.more, page.peers.last()) {
        let mut pairs = vec![
            ("after", last.id.to_string()),
            ("limit", query.limit.to_string()),
        ];
        if let Some(user) = &query.user {
            pairs.push(("user", user.clone()));
        }
        let next = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        if let Ok(value) = HeaderValue::from_str(&format!("<{path}?{next}>; rel=\"next\"")) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    response
}

/// Who may list sessions on `GET /clients`: a session (its token) or the backend (the key).
pub(crate) async fn may_list(
    context: &Context,
    credential: Option<&str>,
) -> Result<bool, ApiError> {
    let credential = credential.ok_or_else(|| {
        ApiError::unauthorized(
            "listing sessions needs Authorization: Bearer <session token or API key>",
        )
    })?;
    if context
        .api_key
        .as_ref()
        .is_some_and(|key| key.matches(credential))
    {
        return Ok(true);
    }
    let token =
        Token::parse(credential).ok_or_else(|| ApiError::unauthorized("malformed token"))?;
    context.hub.authenticate(&token).await?;
    Ok(false)
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

/// `POST /api/publish`: a `server_message` to a session, a user's sessions, or everyone.
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
