//! Extraction filters: turn headers, query strings and bodies into typed values or reject with
//! an [`ApiError`]. Handlers only ever see the typed values.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use warp::Filter;
use warp::http::{HeaderMap, HeaderValue, StatusCode};

use super::context::PeerAddr;
use super::error::{ApiError, ErrorCode};
use super::stream_auth;
use crate::backplane::Hub;
use crate::identity::Token;
use crate::limits::Limits;
use crate::registry::EventId;

/// Hands each request a clone of the hub handle.
pub(crate) fn with_hub(hub: Hub) -> impl Filter<Extract = (Hub,), Error = Infallible> + Clone {
    warp::any().map(move || hub.clone())
}

/// The client's address: the connection's peer, or who trusted proxies say they forward for
/// (see [`Limits::client`]). Repeated forwarding headers are joined in order, as one list.
pub(crate) fn client_address(
    limits: Arc<Limits>,
) -> impl Filter<Extract = (IpAddr,), Error = Infallible> + Clone {
    warp::ext::optional::<PeerAddr>()
        .and(warp::header::headers_cloned())
        .map(move |peer: Option<PeerAddr>, headers: HeaderMap| {
            // Every connection gets its peer from the accept loop; an unspecified address
            // only stands in for it in warp's own test harness.
            let peer = peer.map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |PeerAddr(peer)| peer);
            let joined =
                |name: &str| joined_header(headers.get_all(name).iter().map(HeaderValue::as_bytes));
            limits.client(
                peer,
                joined("x-forwarded-for").as_deref(),
                joined("forwarded").as_deref(),
            )
        })
}

/// Every line of a repeated header, joined with `,` (RFC 9110 list semantics); `None` when
/// absent. Lines that are not text are left out.
pub(crate) fn joined_header<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let lines: Vec<&str> = lines.filter_map(header_text).collect();
    (!lines.is_empty()).then(|| lines.join(","))
}

/// A JSON body of at most `limit` bytes, sent as `application/json`, deserialised into `T`.
///
/// Rejects with 415 for another (or no) content type, 413 above the limit, 411 without a
/// `Content-Length`, and 400 `invalid_body` with serde's explanation when it does not parse.
pub(crate) fn json_body<T: DeserializeOwned + Send>(
    limit: u64,
) -> impl Filter<Extract = (T,), Error = warp::Rejection> + Clone {
    raw_header("content-type")
        .and_then(|content_type: Option<HeaderValue>| async move {
            let is_json = content_type
                .as_ref()
                .and_then(|value| header_text(value.as_bytes()))
                .and_then(|value| value.parse::<mime::Mime>().ok())
                .is_some_and(|mime| mime.essence_str() == "application/json");
            if is_json {
                Ok(())
            } else {
                Err(warp::Rejection::from(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    ErrorCode::UnsupportedMediaType,
                    "send the body as Content-Type: application/json",
                )))
            }
        })
        .untuple_one()
        .and(warp::body::content_length_limit(limit))
        // The body stopped short (the client half-closed or reset its socket): its fault, so a
        // 400, not warp's private `BodyReadError` falling through to a 500.
        .and(warp::body::bytes().or_else(|_| async {
            Err(warp::Rejection::from(ApiError::bad_request(
                ErrorCode::InvalidBody,
                "the body ended before its Content-Length",
            )))
        }))
        .and_then(|body: Bytes| async move {
            // serde would also accept a struct written as an array; the contract says object.
            if body.trim_ascii_start().first() != Some(&b'{') {
                return Err(warp::Rejection::from(ApiError::bad_request(
                    ErrorCode::InvalidBody,
                    "the body must be a JSON object",
                )));
            }
            serde_json::from_slice(&body).map_err(|err| {
                warp::Rejection::from(ApiError::bad_request(
                    ErrorCode::InvalidBody,
                    format!("the body is not valid: {err}"),
                ))
            })
        })
}

/// Passes GET and HEAD; anything else is "no such route" rather than "wrong method", so that
/// `POST /nope` is a 404 even though static files are served from every path. `/` itself is
/// a route of the table (the page), so another method there is 405, like on any route.
pub(crate) fn get_or_not_found() -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::method()
        .and(warp::path::full())
        .and_then(
            |method: warp::http::Method, path: warp::path::FullPath| async move {
                if method == warp::http::Method::GET || method == warp::http::Method::HEAD {
                    Ok(())
                } else if path.as_str() == "/" {
                    Err(warp::Rejection::from(ApiError::new(
                        StatusCode::METHOD_NOT_ALLOWED,
                        ErrorCode::MethodNotAllowed,
                        "this route does not accept that method",
                    )))
                } else {
                    Err(warp::reject::not_found())
                }
            },
        )
        .untuple_one()
}

fn parse_bearer(value: &str) -> Result<Token, ApiError> {
    let credentials = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| ApiError::unauthorized("use Authorization: Bearer <token>"))?;
    Token::parse(credentials.trim()).ok_or_else(|| ApiError::unauthorized("malformed token"))
}

/// A header's value as sent, or `None` when absent. warp's typed header filters reject a
/// value that is not visible ASCII with an error that would become a 500; we decide instead.
pub(crate) fn raw_header(
    name: &'static str,
) -> impl Filter<Extract = (Option<HeaderValue>,), Error = Infallible> + Clone {
    warp::header::value(name)
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
}

/// A header value as text, when it is text (visible ASCII, spaces and tabs), as
/// `HeaderValue::to_str` decides; both connection paths use this.
pub(crate) fn header_text(value: &[u8]) -> Option<&str> {
    HeaderValue::from_bytes(value).ok()?;
    std::str::from_utf8(value).ok().filter(|_| {
        value
            .iter()
            .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    })
}

fn parse_authorization(value: &[u8]) -> Result<Token, ApiError> {
    let text = header_text(value).ok_or_else(|| ApiError::unauthorized("malformed token"))?;
    parse_bearer(text)
}

/// The token from `Authorization: Bearer <token>`; 401 when missing or malformed.
pub(crate) fn bearer() -> impl Filter<Extract = (Token,), Error = warp::Rejection> + Clone {
    raw_header("authorization").and_then(|value: Option<HeaderValue>| async move {
        let value = value.ok_or_else(|| {
            ApiError::unauthorized("missing Authorization: Bearer <token> header")
        })?;
        parse_authorization(value.as_bytes()).map_err(warp::Rejection::from)
    })
}

/// The credential after `Bearer ` in `Authorization`, if any. Never rejects: whether one is
/// needed, and of which kind, is the route's call (the join policy, the API key, a session
/// token). Another scheme, or a value that is not text, counts as no credential.
pub(crate) fn bearer_credential()
-> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone {
    raw_header("authorization").map(|value: Option<HeaderValue>| {
        let value = value?;
        let text = header_text(value.as_bytes())?;
        Some(text.strip_prefix("Bearer ")?.trim().to_owned())
    })
}

#[derive(Deserialize, Default)]
struct StreamQuery {
    token: Option<String>,
    ticket: Option<String>,
    last_event_id: Option<String>,
}

/// What proves a stream request's right to the session, as it came; `stream_auth::token`
/// turns it into the session token (or refuses it).
pub(crate) enum StreamCredential {
    /// `Authorization: Bearer` or the session cookie: never in a URL.
    Token(Token),
    /// `?token=`: in the URL, refused with `--url-tokens off`.
    UrlToken(Token),
    /// `?ticket=`: single use, short-lived.
    Ticket(String),
}

/// What `GET /events/{id}` needs beyond the path: the credential and where to resume.
pub(crate) struct StreamParams {
    pub(crate) credential: StreamCredential,
    pub(crate) last_event_id: Option<EventId>,
}

/// The credential, first found of: the `Authorization` header, `?ticket=`, `?token=` (an
/// explicit one wins over the cookie, which the browser sends by itself), the session cookie;
/// and the resume point from the `Last-Event-ID` header or `?last_event_id=`.
///
/// # Errors
/// 401 without a credential or with a malformed one, 400 for a resume point that is not an
/// event id (header values that are not text included).
pub(crate) fn parse_stream_params(
    authorization: Option<&[u8]>,
    cookie: Option<&[u8]>,
    last_event_id: Option<&[u8]>,
    query: Option<&str>,
) -> Result<StreamParams, ApiError> {
    // An undecodable query is treated as absent: the request then lacks a token (401).
    let query: StreamQuery = serde_urlencoded::from_str(query.unwrap_or("")).unwrap_or_default();
    let malformed = || ApiError::unauthorized("malformed token");
    let credential = if let Some(value) = authorization {
        StreamCredential::Token(parse_authorization(value)?)
    } else if let Some(ticket) = query.ticket {
        StreamCredential::Ticket(ticket)
    } else if let Some(token) = query.token {
        StreamCredential::UrlToken(Token::parse(&token).ok_or_else(malformed)?)
    } else if let Some(token) = cookie.and_then(stream_auth::cookie_token) {
        StreamCredential::Token(Token::parse(&token).ok_or_else(malformed)?)
    } else {
        return Err(ApiError::unauthorized(
            "missing credential: send the session cookie from POST /helo, ?ticket= from POST /session/ticket, or Authorization: Bearer <token>",
        ));
    };
    let invalid_last_event_id = || {
        ApiError::bad_request(
            ErrorCode::InvalidLastEventId,
            "Last-Event-ID must be an event id from this stream",
        )
    };
    let last_event_id = match last_event_id {
        Some(bytes) => Some(
            header_text(bytes)
                .ok_or_else(invalid_last_event_id)?
                .to_owned(),
        ),
        None => query.last_event_id,
    };
    let last_event_id = match last_event_id {
        None => None,
        Some(text) if text.trim().is_empty() => None,
        Some(text) => Some(
            text.trim()
                .parse::<EventId>()
                .map_err(|_| invalid_last_event_id())?,
        ),
    };
    Ok(StreamParams {
        credential,
        last_event_id,
    })
}

/// [`parse_stream_params`] as a filter.
pub(crate) fn stream_params()
-> impl Filter<Extract = (StreamParams,), Error = warp::Rejection> + Clone {
    raw_header("authorization")
        .and(raw_header("cookie"))
        .and(raw_header("last-event-id"))
        .and(
            warp::query::raw()
                .map(Some)
                .or(warp::any().map(|| None))
                .unify(),
        )
        .and_then(
            |authorization: Option<HeaderValue>,
             cookie: Option<HeaderValue>,
             last: Option<HeaderValue>,
             query: Option<String>| async move {
                parse_stream_params(
                    authorization.as_ref().map(HeaderValue::as_bytes),
                    cookie.as_ref().map(HeaderValue::as_bytes),
                    last.as_ref().map(HeaderValue::as_bytes),
                    query.as_deref(),
                )
                .map_err(warp::Rejection::from)
            },
        )
}
