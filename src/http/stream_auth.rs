//! How a stream proves its session without a secret in its URL: the session cookie that
//! `POST /helo` sets (same origin) and the single-use tickets of `POST /session/ticket` (other
//! origins), beside the `Authorization` header and the old `?token=`.
//!
//! The cookie is `HttpOnly` (the page's code never reads it), `SameSite=Strict` (a cross-site
//! page cannot make the browser send it) and scoped to the one session's stream path
//! (`/events/{id}`): each tab's session has its own, and no other route ever sees one, so it
//! authenticates nothing but a stream. Every write keeps `Authorization: Bearer`, so a page on
//! another site gains nothing from the cookie (no CSRF surface).

use std::convert::Infallible;
use std::sync::Arc;

use serde::Serialize;
use warp::Filter;
use warp::http::{HeaderMap, HeaderValue, StatusCode, header};
use warp::reply::{Reply, Response};

use super::context::{Context, OverTls, PeerAddr};
use super::error::ApiError;
use super::filters::{StreamCredential, header_text};
use crate::identity::{SessionId, Token};
use crate::limits::Limits;
use crate::registry::Peer;

/// The session cookie's name.
const COOKIE: &str = "switchboard_session";

/// The session cookie's value in a `Cookie` header, if there.
pub(crate) fn cookie_token(header: &[u8]) -> Option<String> {
    header_text(header)?
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim_matches('"').to_owned())
}

/// The `Set-Cookie` that lets the browser's `EventSource` open `id`'s stream by itself.
/// `Secure` when the request came over HTTPS (only then: a browser on `http://` would drop a
/// `Secure` cookie).
pub(crate) fn set_cookie(id: SessionId, token: &Token, https: bool) -> HeaderValue {
    cookie(id, &token.reveal(), "", https)
}

/// The `Set-Cookie` that removes `id`'s session cookie.
pub(crate) fn clear_cookie(id: SessionId, https: bool) -> HeaderValue {
    cookie(id, "", "; Max-Age=0", https)
}

fn cookie(id: SessionId, value: &str, extra: &str, https: bool) -> HeaderValue {
    let secure = if https { "; Secure" } else { "" };
    let text =
        format!("{COOKIE}={value}; Path=/events/{id}; HttpOnly; SameSite=Strict{extra}{secure}");
    HeaderValue::from_str(&text).expect("a cookie of visible ASCII")
}

/// Whether the request came over HTTPS: on the TLS listener (`--tls-cert`), or a trusted
/// proxy (`--trusted-proxies`) says so in `X-Forwarded-Proto`.
pub(crate) fn https(
    limits: Arc<Limits>,
) -> impl Filter<Extract = (bool,), Error = Infallible> + Clone {
    warp::ext::optional::<PeerAddr>()
        .and(warp::ext::optional::<OverTls>())
        .and(warp::header::headers_cloned())
        .map(
            move |peer: Option<PeerAddr>, tls: Option<OverTls>, headers: HeaderMap| {
                let trusted = peer.is_some_and(|PeerAddr(peer)| limits.trusts(peer.ip()));
                let proto = headers
                    .get("x-forwarded-proto")
                    .and_then(|value| header_text(value.as_bytes()));
                tls.is_some()
                    || trusted
                        && proto.is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
            },
        )
}

/// The session token a stream's credential stands for; `spend`: a `GET` uses up a ticket, a
/// `HEAD` does not.
///
/// # Errors
/// 401: a `?token=` with `--url-tokens off`, or a ticket that is unknown, used or expired.
pub(crate) fn token(
    context: &Context,
    credential: StreamCredential,
    spend: bool,
) -> Result<Token, ApiError> {
    match credential {
        StreamCredential::Token(token) => Ok(token),
        StreamCredential::UrlToken(_) if !context.url_tokens => Err(ApiError::unauthorized(
            "tokens in URLs are turned off (--url-tokens off): open the stream with the session cookie from POST /helo, a ?ticket= from POST /session/ticket, or Authorization: Bearer",
        )),
        StreamCredential::UrlToken(token) => Ok(token),
        StreamCredential::Ticket(ticket) => context
            .tickets
            .redeem(&ticket, spend)
            .map_err(|refused| ApiError::unauthorized(refused.reason())),
    }
}

#[derive(Serialize)]
struct Ticket {
    ticket: String,
    expires_in: u64,
}

/// `POST /session/ticket`: a single-use stream ticket for the caller's session. Issuing one
/// counts as a message against the session's rate, which bounds the tickets held.
pub(crate) async fn post_ticket(
    context: Context,
    peer: Peer,
    token: Token,
) -> Result<Response, ApiError> {
    context.limits.message(&peer.id, 0)?;
    let body = Ticket {
        ticket: context.tickets.issue(token),
        expires_in: context.tickets.ttl().as_secs(),
    };
    Ok(warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED).into_response())
}

/// Adds `cookie` to `response` as `Set-Cookie`.
pub(crate) fn with_cookie(mut response: Response, cookie: HeaderValue) -> Response {
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}
