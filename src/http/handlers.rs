//! One function per route: typed input in, a reply or an [`ApiError`] out.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warp::http::{HeaderValue, StatusCode};
use warp::reply::{Reply, Response};

use super::context::Context;
use super::error::{ApiError, ErrorCode};
use super::filters::{StreamParams, header_text};
use super::listing::{self, Lister};
use super::message::Message;
use super::{sse, stream_auth};
use crate::backplane::{Hub, PageQuery};
use crate::identity::{DisplayName, NameError, RoomName, SessionId, Token, check_user};
use crate::registry::lifetime::instant_of_unix;
use crate::registry::sent::MAX_KEY_LEN;
use crate::registry::{Joining, Peer, RegistryError, SendKey};

/// The body of `POST /helo`. `name` is required by an open server; with `--auth jwt` the
/// token's `name` claim names the session and a `name` sent here is ignored. `rooms` absent
/// means `["lobby"]`; empty, no room (direct messages only).
#[derive(Deserialize)]
pub(crate) struct HeloRequest {
    name: Option<String>,
    rooms: Option<Vec<String>>,
}

#[derive(Serialize)]
struct HeloResponse<'a> {
    id: SessionId,
    token: String,
    name: &'a str,
    rooms: &'a [RoomName],
}

/// `POST /helo`: register, 201 with the id and the token (the only time it is revealed), and
/// the session cookie that opens the stream from this origin (see `stream_auth`).
/// The client's join rate and session share are checked first, so refused joins cost nothing;
/// then the join policy: an open server takes the body's name, a JWT server the token's claims.
pub(crate) async fn helo(
    context: Context,
    client: IpAddr,
    https: bool,
    credential: Option<String>,
    body: HeloRequest,
) -> Result<Response, ApiError> {
    let place = context.limits.join(client)?;
    let rooms = match body.rooms {
        None => vec![RoomName::lobby()],
        Some(rooms) => rooms
            .iter()
            .enumerate()
            .map(|(n, room)| {
                RoomName::parse(room)
                    .map_err(|e| ApiError::invalid_room(&format!("`rooms[{n}]`"), e))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let rooms: Vec<RoomName> = rooms
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let joining = match context.join.admit(credential.as_deref())? {
        None => {
            let name = body.name.ok_or_else(|| {
                ApiError::bad_request(ErrorCode::InvalidBody, "the body lacks `name`")
            })?;
            let name = DisplayName::parse(&name).map_err(|m| invalid_name("`name`", m))?;
            Joining::from(name)
        }
        Some(claims) => {
            let name = DisplayName::parse(&claims.name)
                .map_err(|m| invalid_name("the token's `name`", m))?;
            // Shown to everyone as `user`, so held to the same characters as a name.
            check_user(&claims.sub).map_err(|m| invalid_name("the token's `sub`", m))?;
            Joining {
                name,
                user: Some(claims.sub),
                may_broadcast: claims.broadcast,
                may_join: Some(claims.rooms),
                expires: Some(instant_of_unix(claims.valid_until)),
            }
        }
    };
    let (peer, token) = context
        .hub
        .register(joining, rooms.clone(), place)
        .await
        .map_err(|err| full_house(err, context.session_ttl))?;
    let body = HeloResponse {
        id: peer.id,
        token: token.reveal(),
        name: peer.name.as_str(),
        rooms: &rooms,
    };
    let reply = warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED);
    Ok(stream_auth::with_cookie(
        reply.into_response(),
        stream_auth::set_cookie(peer.id, &token, https),
    ))
}

/// 400 `invalid_name`: `what` (the body's name, or a token claim shown to others) breaks the
/// name rule.
fn invalid_name(what: &str, broken: NameError) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidName, format!("{what} {broken}"))
}

/// `HEAD /events/{id}`: what `GET` would answer, without attaching (a `HEAD` must not take
/// over the session's stream). 200 with the stream's headers when the token is the session's.
pub(crate) async fn events_head(
    id: String,
    context: Context,
    params: StreamParams,
) -> Result<Response, ApiError> {
    let id = SessionId::parse(&id).ok_or_else(|| ApiError::unknown_session(&id))?;
    let token = stream_auth::token(&context, params.credential, false)?;
    let peer = context.hub.authenticate(&token).await?;
    if peer.id != id {
        return Err(ApiError::unauthorized(
            "the token is not valid for this session",
        ));
    }
    Ok(
        warp::reply::with_header(StatusCode::OK, "content-type", "text/event-stream")
            .into_response(),
    )
}

/// `GET /events/{id}`: attach and stream. An id that is not a UUID is simply unknown.
pub(crate) async fn events(
    id: String,
    params: StreamParams,
    client: IpAddr,
    context: Context,
) -> Result<Response, ApiError> {
    attach(id, params, client, context)
        .await
        .map(sse::Stream::into_response)
}

/// Attaches a stream to session `id`: what `GET /events/{id}` answers on either path.
pub(crate) async fn attach(
    id: String,
    params: StreamParams,
    client: IpAddr,
    context: Context,
) -> Result<sse::Stream, ApiError> {
    let id = SessionId::parse(&id).ok_or_else(|| ApiError::unknown_session(&id))?;
    let token = stream_auth::token(&context, params.credential, true)?;
    let place = context.limits.attach(client, id)?;
    let subscription = context
        .hub
        .attach(id, &token, params.last_event_id)
        .await
        .map_err(|err| full_house(err, context.stream.retry))?;
    context.limits.attached(id);
    Ok(sse::Stream::new(
        place,
        subscription,
        context.stream.clone(),
        context.hub.metrics().clone(),
    ))
}

#[derive(Deserialize)]
pub(crate) struct ResponseRequest {
    recipient: String,
    message: Message,
}

#[derive(Serialize)]
struct ResponseAccepted {
    event_id: u64,
}

/// `POST /response`: a direct message into exactly one recipient's stream; with an
/// `Idempotency-Key`, a retry of one the recipient already got answers its event id again.
pub(crate) async fn post_response(
    context: Context,
    from: Peer,
    key: Option<HeaderValue>,
    body: ResponseRequest,
) -> Result<Response, ApiError> {
    context.limits.message(&from.id, body.message.get().len())?;
    let recipient = SessionId::parse(&body.recipient).ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::InvalidBody,
            "recipient must be a session id (a UUID)",
        )
    })?;
    let key = key
        .map(|key| {
            let key = header_text(key.as_bytes());
            key.and_then(|key| SendKey::new(from.id, key, body.message.get()))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        ErrorCode::InvalidIdempotencyKey,
                        format!(
                            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
                        ),
                    )
                })
        })
        .transpose()?;
    let event_id = context
        .hub
        .deliver(&from, recipient, body.message.into_inner(), key)
        .await?;
    Ok(accepted(&ResponseAccepted { event_id }))
}

#[derive(Deserialize)]
pub(crate) struct BroadcastRequest {
    message: Message,
    /// The room to broadcast into; absent: `lobby`.
    room: Option<String>,
}

#[derive(Serialize)]
struct BroadcastAccepted {
    recipients: usize,
}

/// `POST /broadcast`: one message to every other member of a room the sender is in.
pub(crate) async fn post_broadcast(
    context: Context,
    from: Peer,
    body: BroadcastRequest,
) -> Result<Response, ApiError> {
    let room = match body.room {
        None => RoomName::lobby(),
        Some(room) => RoomName::parse(&room).map_err(|e| ApiError::invalid_room("`room`", e))?,
    };
    context.limits.message(&from.id, body.message.get().len())?;
    let recipients = context
        .hub
        .broadcast(&from, room, body.message.into_inner())
        .await?;
    Ok(accepted(&BroadcastAccepted { recipients }))
}

/// A registry error as an answer; a full house (503) says when a place may be free again.
pub(crate) fn full_house(err: RegistryError, retry: Duration) -> ApiError {
    let full = matches!(
        err,
        RegistryError::SessionLimit(_)
            | RegistryError::StreamLimit(_)
            | RegistryError::RoomLimit(_)
    );
    let error = ApiError::from(err);
    if full {
        error.retry_after(retry)
    } else {
        error
    }
}

fn accepted(body: &impl Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(body), StatusCode::ACCEPTED).into_response()
}

/// `DELETE /session`: leave now rather than after the TTL.
pub(crate) async fn delete_session(
    hub: Hub,
    https: bool,
    peer: Peer,
) -> Result<Response, ApiError> {
    hub.remove(&peer).await?;
    Ok(stream_auth::with_cookie(
        StatusCode::NO_CONTENT.into_response(),
        stream_auth::clear_cookie(peer.id, https),
    ))
}

/// `GET /clients`: one page of the sessions: for a session, those it shares a room with
/// (itself included); for the backend, all.
pub(crate) async fn list_clients(
    context: Context,
    client: IpAddr,
    credential: Option<String>,
    query: PageQuery,
) -> Result<Response, ApiError> {
    let page = match listing::lister(&context, credential.as_deref()).await? {
        Lister::Backend => context.hub.page(&query).await?,
        Lister::Session(peer) => {
            // Each listing walks the caller's rooms; the backend's are not counted.
            context.limits.list(client)?;
            context.hub.page_for(peer.id, &query).await?
        }
    };
    Ok(listing::page_reply("/clients", &query, &page))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    sessions: usize,
    streams: usize,
    stream_limit: usize,
}

/// `GET /healthz`: 200 when this instance can serve (in cluster mode: a probe went through
/// Redis and came back), 503 with the reason otherwise; with the numbers an operator asks
/// first, including the stream limit.
pub(crate) async fn healthz(hub: Hub) -> Result<Response, ApiError> {
    let stats = hub.stats();
    let health = hub.health().await;
    let status = if health.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if health.is_ok() { "ok" } else { "unavailable" },
        reason: health.err(),
        sessions: stats.sessions,
        streams: stats.streams,
        stream_limit: stats.stream_limit,
    };
    Ok(warp::reply::with_status(warp::reply::json(&body), status).into_response())
}

/// `GET /metrics`: the classic Prometheus text format, or OpenMetrics when the scraper's
/// `Accept` asks for it (as Prometheus does), each with its own content type.
pub(crate) async fn metrics(hub: Hub, accept: Option<HeaderValue>) -> Result<Response, ApiError> {
    let metrics = hub.metrics();
    // An `Accept` that is not text asks for nothing we know: the classic format.
    let openmetrics = accept
        .as_ref()
        .and_then(|accept| header_text(accept.as_bytes()))
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let (body, content_type) = if openmetrics {
        (
            metrics.render_openmetrics(),
            crate::metrics::OPENMETRICS_CONTENT_TYPE,
        )
    } else {
        (metrics.render(), crate::metrics::CONTENT_TYPE)
    };
    Ok(warp::reply::with_header(body, "content-type", content_type).into_response())
}

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// `GET /readyz`: whether a load balancer should send new clients here. 503 while shutting
/// down (streams are being closed) and while the backplane is unreachable; 200 otherwise.
/// `/healthz` answers the same numbers for people; this answers only the question.
pub(crate) async fn readyz(context: Context) -> Result<Response, ApiError> {
    let reason = if context.shutdown.is_cancelled() {
        Some("shutting down".to_owned())
    } else {
        context.hub.health().await.err()
    };
    let (status, code) = match reason {
        None => (StatusCode::OK, "ready"),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    let body = Readiness {
        status: code,
        reason,
    };
    Ok(warp::reply::with_status(warp::reply::json(&body), status).into_response())
}

/// The session a bearer token proves, checked before any body is read.
pub(crate) async fn verify(hub: Hub, token: Token) -> Result<Peer, warp::Rejection> {
    hub.authenticate(&token)
        .await
        .map_err(|err| ApiError::from(err).into())
}
