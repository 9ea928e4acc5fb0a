//! Paged session lists, shared by `GET /clients` (for sessions) and `GET /api/sessions` (for
//! the app's backend): the query, who may list, and the page as JSON with a `Link` onwards.

use serde::Deserialize;
use warp::Filter;
use warp::http::{HeaderValue, header};
use warp::reply::{Reply, Response};

use super::context::Context;
use super::error::{ApiError, ErrorCode};
use crate::backplane::{Page, PageQuery};
use crate::identity::{SessionId, Token};
use crate::registry::Peer;

/// Most sessions one page lists, and the default.
pub(crate) const MAX_PAGE: usize = 1000;

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

/// Who lists sessions (`GET /clients`, `GET /rooms/{room}/members`).
pub(crate) enum Lister {
    /// The app's backend (the API key): sees everyone, and is not metered.
    Backend,
    /// A session (its token): sees the rooms it is in.
    Session(Peer),
}

/// Who is listing: a session (its token) or the backend (the key).
///
/// # Errors
/// 401 without a credential, or with one that is neither.
pub(crate) async fn lister(
    context: &Context,
    credential: Option<&str>,
) -> Result<Lister, ApiError> {
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
        return Ok(Lister::Backend);
    }
    let token =
        Token::parse(credential).ok_or_else(|| ApiError::unauthorized("malformed token"))?;
    Ok(Lister::Session(context.hub.authenticate(&token).await?))
}
