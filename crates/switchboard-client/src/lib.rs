//! A small async client for the switchboard API: register with `POST /helo`, read the session's
//! stream (`GET /events/{id}`, Server-Sent Events, resumable with `Last-Event-ID`), write with
//! `POST /response` and `POST /broadcast`, leave with `DELETE /session`.
//!
//! It owns the wire details a Rust user should not repeat: the bearer header, the JSON bodies,
//! the SSE parsing (by `eventsource-stream`) into [`Frame`]s, and the JSON error body
//! `{"error", "message"}` (plus `Retry-After`) as an [`Error`]. It owns no policy: it never
//! retries or reconnects on its own; [`EventStream::last_event_id`] says where to resume.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use serde_json::json;
//! use switchboard_client::Client;
//!
//! # async fn demo() -> Result<(), switchboard_client::Error> {
//! let hub = Client::new("http://127.0.0.1:4000");
//! let ann = hub.helo("ann").await?;
//! let bob = hub.helo("bob").await?;
//!
//! let mut events = hub.attach(&bob, None).await?;
//! let ready = events.next().await.expect("ready")?; // `ready` lists who is here
//! assert_eq!(ready.event, "ready");
//!
//! let id = hub.send(&ann, &bob.id, &json!({"text": "hi bob"})).await?;
//! let frame = events.next().await.expect("a message")?;
//! assert_eq!((frame.event.as_str(), frame.id), ("client_response", Some(id)));
//!
//! // After a dropped connection, resume where the stream stopped.
//! let resume_after = events.last_event_id();
//! drop(events);
//! let events = hub.attach(&bob, resume_after).await?;
//!
//! hub.broadcast(&ann, &"hello everyone").await?;
//! hub.leave(&ann).await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use eventsource_stream::{Event as RawEvent, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The header a resuming stream sends: the id of the last event it read.
const LAST_EVENT_ID: &str = "Last-Event-ID";

/// A handle on one switchboard server; cheap to clone (the connection pool is shared).
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
}

/// A registered session, as `POST /helo` returned it. The token is the session's secret: it
/// authenticates every call made as this session.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Session {
    pub id: String,
    pub token: String,
    /// The display name as the server stored it.
    pub name: String,
}

/// A session as the others see it: in `GET /clients`, `ready`, `new_user` and `user_left`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct Peer {
    pub id: String,
    pub name: String,
}

/// One event of a session's stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The stream's last event id after this event, as a browser's `EventSource.lastEventId`
    /// reports it (`id:` is sticky); `None` until an event with an id arrived. `ready` and
    /// `lagged` carry none of their own.
    pub id: Option<u64>,
    /// The event name: `ready`, `new_user`, `client_response`, `client_broadcast`,
    /// `user_left` or `lagged`.
    pub event: String,
    /// The event's JSON payload.
    pub data: Value,
}

/// The JSON body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    /// A stable snake_case code, e.g. `unauthorized`, `unknown_session`, `mailbox_full`.
    pub error: String,
    /// Text for humans.
    pub message: String,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No answer: connection refused or reset, or a body that could not be read or decoded.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with another status than the call's success status.
    #[error("{status}: {}", .body.as_ref().map_or("(no JSON error body)", |b| b.message.as_str()))]
    Status {
        status: StatusCode,
        /// The `{"error", "message"}` body, when the answer had one.
        body: Option<ApiError>,
        /// `Retry-After`, sent with 429 (mailbox full) and 503 (sessions or streams at capacity).
        retry_after: Option<Duration>,
    },
    /// The event stream broke off mid-event or carried something that is not SSE.
    #[error("event stream: {0}")]
    Stream(String),
    /// An event's data was not JSON.
    #[error("data of `{event}` is not JSON: {source}")]
    Data {
        event: String,
        source: serde_json::Error,
    },
}

impl Error {
    /// The error code of the server's answer (`"unauthorized"`, ...), if it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Status {
                body: Some(body), ..
            } => Some(&body.error),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct Accepted {
    event_id: Option<u64>,
    recipients: Option<u64>,
}

impl Client {
    /// A client for the server at `base_url` (`http://host:port`, with or without a trailing `/`).
    pub fn new(base_url: impl Into<String>) -> Client {
        Client::with_http(base_url, reqwest::Client::new())
    }

    /// Like [`Client::new`], over a `reqwest::Client` you configured (timeouts, proxies, pool).
    pub fn with_http(base_url: impl Into<String>, http: reqwest::Client) -> Client {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        Client { http, base_url }
    }

    /// The server's address, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Registers a session named `name` (`POST /helo`); the others hear `new_user`.
    ///
    /// # Errors
    /// [`Error::Status`] with 400 `invalid_name` (empty, longer than 64 characters, or with
    /// control characters) or 503 when the server is at capacity; [`Error::Http`] when
    /// unreachable.
    pub async fn helo(&self, name: &str) -> Result<Session, Error> {
        let request = self
            .http
            .post(self.url("/helo"))
            .json(&json!({"name": name}));
        expect_json(request, StatusCode::CREATED).await
    }

    /// Opens `session`'s event stream (`GET /events/{id}`). It starts with `ready`; given
    /// `last_event_id`, the server first replays what came after it (`lagged` first if some of
    /// it was evicted). Attaching again takes the stream over: the older one ends.
    ///
    /// # Errors
    /// [`Error::Status`]: 401 for a bad token, 404 `unknown_session` once the session is gone,
    /// 503 when the server holds as many streams as it may.
    pub async fn attach(
        &self,
        session: &Session,
        last_event_id: Option<u64>,
    ) -> Result<EventStream, Error> {
        let mut request = self
            .http
            .get(self.url(&format!("/events/{}", session.id)))
            .bearer_auth(&session.token);
        if let Some(last) = last_event_id {
            request = request.header(LAST_EVENT_ID, last.to_string());
        }
        EventStream::from_response(request.send().await?).await
    }

    /// Sends `message` (any JSON) from `from` to the session `to` (`POST /response`); returns
    /// the event id it has in the recipient's stream.
    ///
    /// # Errors
    /// [`Error::Status`]: 401 for a bad token, 404 `unknown_recipient`, 429 `mailbox_full`
    /// with `retry_after`, 413 when the body is larger than the server accepts.
    pub async fn send<M: Serialize + ?Sized>(
        &self,
        from: &Session,
        to: &str,
        message: &M,
    ) -> Result<u64, Error> {
        self.send_keyed(from, to, message, None).await
    }

    /// [`Client::send`] with an `Idempotency-Key`: sending the same message with the same
    /// `key` again (after a timeout or a 5xx) returns the first attempt's event id, and the
    /// recipient gets it once.
    ///
    /// # Errors
    /// As [`Client::send`]; 422 `idempotency_key_reused` when `key` came with another
    /// message before, 400 `invalid_idempotency_key` when it is not 1 to 128 visible ASCII
    /// characters.
    pub async fn send_once<M: Serialize + ?Sized>(
        &self,
        from: &Session,
        to: &str,
        message: &M,
        key: &str,
    ) -> Result<u64, Error> {
        self.send_keyed(from, to, message, Some(key)).await
    }

    async fn send_keyed<M: Serialize + ?Sized>(
        &self,
        from: &Session,
        to: &str,
        message: &M,
        key: Option<&str>,
    ) -> Result<u64, Error> {
        let body = json!({"recipient": to, "message": message});
        let mut request = self
            .http
            .post(self.url("/response"))
            .bearer_auth(&from.token)
            .json(&body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let accepted: Accepted = expect_json(request, StatusCode::ACCEPTED).await?;
        accepted.event_id.ok_or_else(|| missing("event_id"))
    }

    /// Sends `message` from `from` to every other session (`POST /broadcast`); returns how many
    /// sessions it was delivered to.
    ///
    /// # Errors
    /// As [`Client::send`], without the recipient errors.
    pub async fn broadcast<M: Serialize + ?Sized>(
        &self,
        from: &Session,
        message: &M,
    ) -> Result<u64, Error> {
        let request = self
            .http
            .post(self.url("/broadcast"))
            .bearer_auth(&from.token)
            .json(&json!({"message": message}));
        let accepted: Accepted = expect_json(request, StatusCode::ACCEPTED).await?;
        accepted.recipients.ok_or_else(|| missing("recipients"))
    }

    /// Ends `session` (`DELETE /session`): its stream closes and the others hear `user_left`.
    ///
    /// # Errors
    /// [`Error::Status`] 401 when the session is already gone or the token is wrong.
    pub async fn leave(&self, session: &Session) -> Result<(), Error> {
        let request = self
            .http
            .delete(self.url("/session"))
            .bearer_auth(&session.token);
        expect(request, StatusCode::NO_CONTENT).await.map(drop)
    }

    /// The first page (up to 1,000, in id order) of the sessions registered on the server (or
    /// on the whole cluster), `GET /clients`, as `session` may see them.
    ///
    /// # Errors
    /// [`Error::Http`] when unreachable; [`Error::Status`] 401 when the session is gone, 503
    /// when a cluster instance has lost Redis.
    pub async fn clients(&self, session: &Session) -> Result<Vec<Peer>, Error> {
        let request = self
            .http
            .get(self.url("/clients"))
            .bearer_auth(&session.token);
        expect_json(request, StatusCode::OK).await
    }
}

fn missing(field: &str) -> Error {
    Error::Stream(format!("the answer has no `{field}`"))
}

/// Sends `request`; the response if its status is `success`, else the server's error.
async fn expect(request: RequestBuilder, success: StatusCode) -> Result<Response, Error> {
    let response = request.send().await?;
    if response.status() == success {
        Ok(response)
    } else {
        Err(status_error(response).await)
    }
}

async fn expect_json<T: DeserializeOwned>(
    request: RequestBuilder,
    success: StatusCode,
) -> Result<T, Error> {
    Ok(expect(request, success).await?.json().await?)
}

/// The [`Error::Status`] for an unexpected answer, with its JSON error body if it has one.
async fn status_error(response: Response) -> Error {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_secs);
    let body = response.json::<ApiError>().await.ok();
    Error::Status {
        status,
        body,
        retry_after,
    }
}

type RawEvents =
    Pin<Box<dyn Stream<Item = Result<RawEvent, EventStreamError<reqwest::Error>>> + Send>>;

/// An attached session's stream: a [`Stream`] of [`Frame`]s that ends when the server closes
/// it (takeover, `DELETE /session`, expiry, shutdown). Comments (the keep-alive) are skipped.
pub struct EventStream {
    headers: HeaderMap,
    events: RawEvents,
    last_event_id: Option<u64>,
}

impl EventStream {
    /// Wraps the answer to `GET /events/{id}` made by other means.
    ///
    /// # Errors
    /// [`Error::Status`] unless the answer is `200`.
    pub async fn from_response(response: Response) -> Result<EventStream, Error> {
        if response.status() != StatusCode::OK {
            return Err(status_error(response).await);
        }
        Ok(EventStream {
            headers: response.headers().clone(),
            events: Box::pin(response.bytes_stream().eventsource()),
            last_event_id: None,
        })
    }

    /// The answer's headers (`content-type: text/event-stream`, `cache-control`, ...).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The id of the last event read, to pass to [`Client::attach`] when resuming.
    pub fn last_event_id(&self) -> Option<u64> {
        self.last_event_id
    }
}

impl Stream for EventStream {
    type Item = Result<Frame, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let raw = match self.events.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(EventStreamError::Transport(err)))) => {
                return Poll::Ready(Some(Err(Error::Http(err))));
            }
            Poll::Ready(Some(Err(err))) => {
                return Poll::Ready(Some(Err(Error::Stream(err.to_string()))));
            }
            Poll::Ready(Some(Ok(raw))) => raw,
        };
        let id = if raw.id.is_empty() {
            None
        } else {
            match raw.id.parse() {
                Ok(id) => Some(id),
                Err(_) => {
                    let err = Error::Stream(format!("event id {:?} is not a number", raw.id));
                    return Poll::Ready(Some(Err(err)));
                }
            }
        };
        if id.is_some() {
            self.last_event_id = id;
        }
        let frame = serde_json::from_str(&raw.data)
            .map(|data| Frame {
                id,
                event: raw.event.clone(),
                data,
            })
            .map_err(|source| Error::Data {
                event: raw.event,
                source,
            });
        Poll::Ready(Some(frame))
    }
}
