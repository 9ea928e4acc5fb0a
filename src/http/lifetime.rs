//! The lifetime routes: `POST /session/refresh` (a session brings a new join token) and
//! `POST /api/refresh` (the app's backend moves or ends sessions' lifetimes). What a lifetime
//! is, and how a session is warned and ended, is `registry::lifetime`'s.

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::context::Context;
use super::error::{ApiError, ErrorCode};
use crate::auth::AuthError;
use crate::backplane::Target;
use crate::registry::Peer;
use crate::registry::lifetime::{instant_of_unix, unix_of_instant};

/// The body of `POST /session/refresh`: a new join token for the session's user.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshRequest {
    join_token: String,
}

/// When the session ends now: seconds since the epoch, and seconds from now.
#[derive(Serialize)]
struct Refreshed {
    expires_at: u64,
    expires_in: u64,
}

/// `POST /session/refresh`: the session (its token as Bearer) now ends when the new join
/// token does (its `exp` plus the leeway, held to `--max-session-age`), and is warned again
/// ahead of it.
pub(crate) async fn refresh(
    context: Context,
    peer: Peer,
    body: RefreshRequest,
) -> Result<Response, ApiError> {
    let claims = match context.join.admit(Some(&body.join_token)) {
        Ok(Some(claims)) => claims,
        Ok(None) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "this server runs --auth open: there are no join tokens to refresh with \
                 (sessions end at --max-session-age, or when POST /api/refresh says)",
            ));
        }
        Err(refusal) => return Err(invalid_join_token(&refusal)),
    };
    if peer.user.as_deref() != Some(claims.sub.as_str()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::WrongUser,
            "the join token is for another user (its `sub`) than this session's",
        ));
    }
    let ends = context
        .hub
        .refresh(&peer, instant_of_unix(claims.valid_until))
        .await?;
    let left = ends.saturating_duration_since(Instant::now());
    let body = Refreshed {
        expires_at: unix_of_instant(ends),
        expires_in: left.as_secs() + u64::from(left.subsec_nanos() > 0),
    };
    Ok(warp::reply::json(&body).into_response())
}

/// 401 `invalid_join_token`: the new join token was refused; the message leads with the
/// machine-usable reason (`expired: token has expired`). The session itself is unchanged.
fn invalid_join_token(refusal: &AuthError) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidJoinToken,
        format!(
            "{}: {refusal}; the session is unchanged, refresh with a valid join token",
            refusal.reason()
        ),
    )
}

/// The body of `POST /api/refresh`: whose sessions, and when they end now.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApiRefreshRequest {
    to: Target,
    /// Seconds since the epoch; one already past ends the sessions now.
    expires_at: u64,
}

#[derive(Serialize)]
struct ApiRefreshed {
    refreshed: usize,
}

/// `POST /api/refresh`: the sessions `to` names end at `expires_at` (not held to
/// `--max-session-age`), warned ahead of it; a time already past ends them now, with
/// `expired`.
pub(crate) async fn api_refresh(
    context: Context,
    body: ApiRefreshRequest,
) -> Result<Response, ApiError> {
    let refreshed = context
        .hub
        .refresh_sessions(&body.to, instant_of_unix(body.expires_at))
        .await?;
    Ok(warp::reply::json(&ApiRefreshed { refreshed }).into_response())
}
