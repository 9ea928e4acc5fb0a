//! A small async client for the switchboard API: register with `POST /helo` (into rooms, or
//! the server's default, `lobby`), read the session's stream (`GET /events/{id}`, Server-Sent
//! Events, resumable with `Last-Event-ID`), write with `POST /response` and `POST /broadcast`
//! (to a room), join and leave rooms with `PUT`/`DELETE /session/rooms/{room}`, leave with
//! `DELETE /session`. [`Rooms`] keeps a session's rooms and their rosters from its stream.
//!
//! It owns the wire details a Rust user should not repeat: the bearer header, the JSON bodies,
//! the SSE parsing (by `eventsource-stream`) into [`Frame`]s, and the JSON error body
//! `{"error", "message"}` (plus `Retry-After`) as an [`Error`]. It owns no policy: it never
//! retries or reconnects on its own; [`EventStream::last_event_id`] says where to resume.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use serde_json::json;
//! use switchboard_client::{Client, Rooms};
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
//!
//! // Rooms: cat starts in `dev`; ann joins it, says something there, and leaves it.
//! let cat = hub.helo_in("cat", &["dev"]).await?;
//! let mut rooms = Rooms::default();
//! let mut cats = hub.attach(&cat, None).await?;
//! rooms.apply(&cats.next().await.expect("ready")?);
//! assert_eq!(rooms.get("dev").map(|room| room.members), Some(1));
//! assert_eq!(hub.join_room(&ann, "dev").await?, 2);
//! hub.broadcast_to(&ann, "dev", &"hi, dev").await?;
//! hub.leave_room(&ann, "dev").await?;
//! hub.leave(&ann).await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod rooms;
mod stream;

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use rooms::{Room, Rooms};
pub use stream::EventStream;

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
    /// The rooms it registered in (empty from a server without rooms).
    #[serde(default)]
    pub rooms: Vec<String>,
}

/// A session as the others see it: in `GET /clients`, `ready`, `new_user` and `user_left`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct Peer {
    pub id: String,
    pub name: String,
}

/// One event of a session's stream.
/// When a session ends now, as `POST /session/refresh` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct Refreshed {
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
    /// Seconds from now.
    pub expires_in: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The stream's last event id after this event, as a browser's `EventSource.lastEventId`
    /// reports it (`id:` is sticky); `None` until an event with an id arrived. `ready` and
    /// `lagged` carry none of their own.
    pub id: Option<u64>,
    /// The event name: `ready`, `new_user`, `client_response`, `client_broadcast`,
    /// `user_left`, `server_message`, `lagged`, `joined`, `left` or `room_count`.
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

impl Frame {
    /// The room the event is about (`new_user`, `user_left`, `client_broadcast`, `joined`,
    /// `left`, `room_count`, a `server_message` to a room), if it names one.
    pub fn room(&self) -> Option<&str> {
        self.data.get("room").and_then(Value::as_str)
    }
}

#[derive(Deserialize)]
struct RoomJoined {
    members: u64,
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

    /// `{base}{before}/{room}{after}`, the room one path segment whatever it holds (a name the
    /// server refuses then gets its 400 `invalid_room`, not another route).
    fn room_url(&self, before: &str, room: &str, after: &str) -> Result<Url, Error> {
        let mut url = Url::parse(&self.url(before))
            .map_err(|err| Error::Stream(format!("the server's address: {err}")))?;
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(room);
            if !after.is_empty() {
                segments.push(after);
            }
        }
        Ok(url)
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

    /// Registers a session named `name` in `rooms` (`[]`: none, direct messages only); the
    /// other members of each hear `new_user` with the room.
    ///
    /// # Errors
    /// As [`Client::helo`]; also 400 `invalid_room` for a name that breaks the room rule,
    /// 403 `room_forbidden` for a room the server (or the join token) does not allow, 409
    /// `session_room_limit` for more rooms than a session may be in.
    pub async fn helo_in(&self, name: &str, rooms: &[&str]) -> Result<Session, Error> {
        let request = self
            .http
            .post(self.url("/helo"))
            .json(&json!({"name": name, "rooms": rooms}));
        expect_json(request, StatusCode::CREATED).await
    }

    /// `session` joins `room` (`PUT /session/rooms/{room}`): its stream gets `joined`, the
    /// room's other members `new_user`. Returns the room's member count, `session` included.
    /// Joining a room it is in already changes nothing.
    ///
    /// # Errors
    /// [`Error::Status`]: 400 `invalid_room`, 403 `room_forbidden`, 409 `session_room_limit`,
    /// 503 `room_limit` (with `retry_after`), 401 once the session is gone.
    pub async fn join_room(&self, session: &Session, room: &str) -> Result<u64, Error> {
        let request = self
            .http
            .put(self.room_url("/session/rooms", room, "")?)
            .bearer_auth(&session.token);
        let joined: RoomJoined = expect_json(request, StatusCode::OK).await?;
        Ok(joined.members)
    }

    /// `session` leaves `room` (`DELETE /session/rooms/{room}`): its stream gets `left`, the
    /// room's other members `user_left`.
    ///
    /// # Errors
    /// [`Error::Status`]: 404 `not_a_member` when it is not in the room, 400 `invalid_room`,
    /// 401 once the session is gone.
    pub async fn leave_room(&self, session: &Session, room: &str) -> Result<(), Error> {
        let request = self
            .http
            .delete(self.room_url("/session/rooms", room, "")?)
            .bearer_auth(&session.token);
        expect(request, StatusCode::NO_CONTENT).await.map(drop)
    }

    /// The first page (up to 1,000, in id order) of `room`'s members, `session` included
    /// (`GET /rooms/{room}/members`).
    ///
    /// # Errors
    /// [`Error::Status`]: 403 `not_a_member` when `session` is not in the room.
    pub async fn room_members(&self, session: &Session, room: &str) -> Result<Vec<Peer>, Error> {
        let request = self
            .http
            .get(self.room_url("/rooms", room, "members")?)
            .bearer_auth(&session.token);
        expect_json(request, StatusCode::OK).await
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

    /// Sends `message` from `from` to every other member of the server's default room,
    /// `lobby` (`POST /broadcast`); returns how many sessions it was delivered to.
    ///
    /// # Errors
    /// As [`Client::send`], without the recipient errors; 403 `not_a_member` when `from` is
    /// not in `lobby`.
    pub async fn broadcast<M: Serialize + ?Sized>(
        &self,
        from: &Session,
        message: &M,
    ) -> Result<u64, Error> {
        self.post_broadcast(from, json!({"message": message})).await
    }

    /// Sends `message` from `from` to every other member of `room` (`POST /broadcast` with
    /// `room`); returns how many sessions it was delivered to.
    ///
    /// # Errors
    /// As [`Client::broadcast`]: 403 `not_a_member` when `from` is not in `room`.
    pub async fn broadcast_to<M: Serialize + ?Sized>(
        &self,
        from: &Session,
        room: &str,
        message: &M,
    ) -> Result<u64, Error> {
        self.post_broadcast(from, json!({"room": room, "message": message}))
            .await
    }

    async fn post_broadcast(&self, from: &Session, body: Value) -> Result<u64, Error> {
        let request = self
            .http
            .post(self.url("/broadcast"))
            .bearer_auth(&from.token)
            .json(&body);
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

    /// Moves `session`'s end to when `join_token` (a new join token for the same user) ends
    /// (`POST /session/refresh`, `--auth jwt`): do it on `refresh_required`.
    ///
    /// # Errors
    /// [`Error::Status`]: 401 `invalid_join_token` (the session is unchanged) or
    /// `session_expired` (too late: join again); 403 `wrong_user` for another user's token.
    pub async fn refresh(&self, session: &Session, join_token: &str) -> Result<Refreshed, Error> {
        let request = self
            .http
            .post(self.url("/session/refresh"))
            .bearer_auth(&session.token)
            .json(&json!({ "join_token": join_token }));
        expect_json(request, StatusCode::OK).await
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
pub(crate) async fn status_error(response: Response) -> Error {
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
