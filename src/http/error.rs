//! Errors become JSON here, and only here: `{"error": "<snake_case code>", "message": "<text>"}`.
//!
//! [`ErrorCode`] is the one list of `error` codes the API answers with; nothing else spells one.
//! Handlers return `Result<_, ApiError>`; domain errors convert through `From<RegistryError>`,
//! the one place that picks their status codes. Rejections (a filter that did not match or could
//! not extract its input) are mapped by [`handle_rejection`].

use std::convert::Infallible;
use std::fmt::Display;
use std::time::Duration;

use serde::Serialize;
use warp::http::{StatusCode, header};
use warp::reject::Reject;
use warp::reply::{Reply, Response};

use crate::auth::AuthError;
use crate::identity::RoomError;
use crate::limits::Limited;
use crate::registry::RegistryError;

/// Defines [`ErrorCode`] and its wire spellings from one list, so they cannot drift apart.
macro_rules! error_codes {
    ($($variant:ident => $wire:literal,)*) => {
        /// Every machine-readable `error` code the API answers with. The error table of
        /// `docs/api.md` lists exactly these (a test checks it).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order of `docs/api.md`'s error table (by status).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire spelling (snake_case), e.g. `"unknown_session"`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $wire,)*
                }
            }
        }
    };
}

error_codes! {
    InvalidBody => "invalid_body",
    InvalidName => "invalid_name",
    InvalidRoom => "invalid_room",
    InvalidLastEventId => "invalid_last_event_id",
    InvalidQuery => "invalid_query",
    InvalidIdempotencyKey => "invalid_idempotency_key",
    IdempotencyKeyReused => "idempotency_key_reused",
    Unauthorized => "unauthorized",
    SessionExpired => "session_expired",
    InvalidJoinToken => "invalid_join_token",
    Forbidden => "forbidden",
    WrongUser => "wrong_user",
    RoomForbidden => "room_forbidden",
    NotAMember => "not_a_member",
    NoSharedRoom => "no_shared_room",
    UnknownSession => "unknown_session",
    UnknownRecipient => "unknown_recipient",
    NotFound => "not_found",
    MethodNotAllowed => "method_not_allowed",
    RequestTimeout => "request_timeout",
    SessionRoomLimit => "session_room_limit",
    LengthRequired => "length_required",
    PayloadTooLarge => "payload_too_large",
    UnsupportedMediaType => "unsupported_media_type",
    MailboxFull => "mailbox_full",
    RateLimited => "rate_limited",
    Internal => "internal",
    SessionLimit => "session_limit",
    StreamLimit => "stream_limit",
    RoomLimit => "room_limit",
    BackplaneUnavailable => "backplane_unavailable",
    BackplaneRecovering => "backplane_recovering",
}

impl Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error response: status, machine-readable code, human-readable message.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub(crate) fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 for a path no route serves.
    pub(crate) fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such route")
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// 408 for a request whose body did not arrive within the request deadline.
    pub(crate) fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            "the request did not complete in time",
        )
    }

    /// The same error with a `Retry-After` hint of `after` (whole seconds, at least 1).
    pub(crate) fn retry_after(self, after: Duration) -> Self {
        ApiError {
            retry_after_secs: Some(after.as_secs_f64().ceil().max(1.0) as u64),
            ..self
        }
    }

    /// 400 `invalid_room`: `what` breaks the room rule.
    pub(crate) fn invalid_room(what: &str, broken: RoomError) -> Self {
        Self::bad_request(ErrorCode::InvalidRoom, format!("{what} {broken}"))
    }

    /// The same error with another status (the one code answers differently by route).
    pub(crate) fn with_status(self, status: StatusCode) -> Self {
        ApiError { status, ..self }
    }

    /// 404 for a session id that is not registered (or not even a session id).
    pub(crate) fn unknown_session(id: impl Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownSession,
            format!("no session with id {id}"),
        )
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: self.code.as_str(),
            message: &self.message,
        };
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), self.status).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        let message = err.to_string();
        match err {
            RegistryError::UnknownSession(id) => ApiError::unknown_session(id),
            RegistryError::UnknownRecipient(_) => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorCode::UnknownRecipient, message)
            }
            RegistryError::BadToken => ApiError::unauthorized(message),
            RegistryError::SessionExpired(_) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::SessionExpired,
                format!("{message}; join again with POST /helo"),
            ),
            RegistryError::BroadcastDenied => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
            }
            RegistryError::RoomForbidden(_) => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::RoomForbidden, message)
            }
            RegistryError::NotAMember(_) => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::NotAMember, message)
            }
            RegistryError::NoSharedRoom => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::NoSharedRoom, message)
            }
            // Waiting does not help: the session must leave a room first.
            RegistryError::SessionRoomLimit(_) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::SessionRoomLimit, message)
            }
            // Rooms close as their members leave; a full house of them says when to retry.
            RegistryError::RoomLimit(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::RoomLimit,
                message,
            ),
            RegistryError::MailboxFull { retry_after } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::MailboxFull,
                message,
            )
            .retry_after(retry_after),
            RegistryError::KeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::IdempotencyKeyReused,
                message,
            ),
            RegistryError::SessionLimit(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::SessionLimit,
                message,
            ),
            RegistryError::ResumePointAhead { .. } => ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidLastEventId,
                message,
            ),
            RegistryError::StreamLimit(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StreamLimit,
                message,
            ),
            RegistryError::Unavailable(_) => {
                tracing::warn!(%message, "request failed: backplane unavailable");
                // Long enough for a stopping instance's sessions to reach their new homes.
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::BackplaneUnavailable,
                    message,
                )
                .retry_after(Duration::from_secs(1))
            }
            // Not "gone": a client that retries finds the session once the cluster recovered.
            RegistryError::Recovering { retry_after, .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::BackplaneRecovering,
                message,
            )
            .retry_after(retry_after),
        }
    }
}

/// A refused join token: 401 `unauthorized`, the message led by the machine-usable reason
/// (`expired: token has expired`).
impl From<AuthError> for ApiError {
    fn from(refusal: AuthError) -> Self {
        ApiError::unauthorized(format!("{}: {refusal}", refusal.reason()))
    }
}

impl From<Limited> for ApiError {
    fn from(refusal: Limited) -> Self {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            refusal.to_string(),
        )
        .retry_after(refusal.retry_after)
    }
}

/// A filter could not extract what a route needs; carries the response to give.
#[derive(Debug)]
pub(crate) struct Rejected(pub(crate) ApiError);

impl Reject for Rejected {}

impl From<ApiError> for warp::Rejection {
    fn from(err: ApiError) -> Self {
        warp::reject::custom(Rejected(err))
    }
}

/// Maps every rejection to an [`ApiError`], most specific first: our own extraction errors,
/// then warp's, then "no route". Anything unexpected is logged and becomes a bare 500.
pub(crate) async fn handle_rejection(rejection: warp::Rejection) -> Result<Response, Infallible> {
    use warp::reject::{LengthRequired, MethodNotAllowed, PayloadTooLarge};

    let error = if let Some(Rejected(err)) = rejection.find::<Rejected>() {
        err.clone()
    } else if rejection.find::<PayloadTooLarge>().is_some() {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "the request body is larger than the server accepts",
        )
    } else if rejection.find::<LengthRequired>().is_some() {
        ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            ErrorCode::LengthRequired,
            "send the body with a Content-Length header",
        )
    } else if rejection.is_not_found() {
        ApiError::no_route()
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            "this route does not accept that method",
        )
    } else {
        tracing::error!(?rejection, "unhandled rejection");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal server error",
        )
    };
    Ok(error.into_response())
}
