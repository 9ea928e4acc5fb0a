//! Errors become JSON here, and only here: `{"error": "<snake_case code>", "message": "<text>"}`.
//!
//! Handlers return `Result<_, ApiError>`; domain errors convert through `From<RegistryError>`,
//! the one place that picks their status codes. Rejections (a filter that did not match or could
//! not extract its input) are mapped by [`handle_rejection`].

use std::convert::Infallible;

use serde::Serialize;
use warp::http::{StatusCode, header};
use warp::reject::Reject;
use warp::reply::{Reply, Response};

use crate::registry::RegistryError;

/// An error response: status, machine-readable code, human-readable message.
#[derive(Clone, Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 for a path no route serves.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
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
            error: self.code,
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
            RegistryError::UnknownSession(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_session", message)
            }
            RegistryError::UnknownRecipient(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_recipient", message)
            }
            RegistryError::BadToken => ApiError::unauthorized(message),
            RegistryError::MailboxFull { retry_after } => ApiError {
                retry_after_secs: Some(retry_after.as_secs().max(1)),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "mailbox_full", message)
            },
            RegistryError::SessionLimit(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "session_limit", message)
            }
            RegistryError::StreamLimit(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stream_limit", message)
            }
            RegistryError::Unavailable(_) => {
                tracing::warn!(%message, "request failed: backplane unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "backplane_unavailable",
                    message,
                )
            }
        }
    }
}

/// A filter could not extract what a route needs; carries the response to give.
#[derive(Debug)]
pub struct Rejected(pub ApiError);

impl Reject for Rejected {}

impl From<ApiError> for warp::Rejection {
    fn from(err: ApiError) -> Self {
        warp::reject::custom(Rejected(err))
    }
}

/// Maps every rejection to an [`ApiError`], most specific first: our own extraction errors,
/// then warp's, then "no route". Anything unexpected is logged and becomes a bare 500.
pub async fn handle_rejection(rejection: warp::Rejection) -> Result<Response, Infallible> {
    use warp::reject::{LengthRequired, MethodNotAllowed, PayloadTooLarge};

    let error = if let Some(Rejected(err)) = rejection.find::<Rejected>() {
        err.clone()
    } else if rejection.find::<PayloadTooLarge>().is_some() {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the server accepts",
        )
    } else if rejection.find::<LengthRequired>().is_some() {
        ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "send the body with a Content-Length header",
        )
    } else if rejection.is_not_found() {
        ApiError::no_route()
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not accept that method",
        )
    } else {
        tracing::error!(?rejection, "unhandled rejection");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    };
    Ok(error.into_response())
}
