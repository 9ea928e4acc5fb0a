//! One function per route: typed input in, a reply or an [`ApiError`] out.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::error::ApiError;
use super::filters::StreamParams;
use super::{Context, sse};
use crate::registry::{DisplayName, Peer, Registry, SessionId, Token};

#[derive(Deserialize)]
pub struct HeloRequest {
    name: String,
}

#[derive(Serialize)]
struct HeloResponse<'a> {
    id: SessionId,
    token: String,
    name: &'a str,
}

/// `POST /helo`: register, 201 with the id and the token (the only time it is revealed).
pub async fn helo(registry: Registry, body: HeloRequest) -> Result<Response, ApiError> {
    let name =
        DisplayName::parse(&body.name).map_err(|m| ApiError::bad_request("invalid_name", m))?;
    let (peer, token) = registry.register(name)?;
    let body = HeloResponse {
        id: peer.id,
        token: token.reveal(),
        name: peer.name.as_str(),
    };
    Ok(warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED).into_response())
}

/// `GET /events/{id}`: attach and stream. An id that is not a UUID is simply unknown.
pub async fn events(
    id: String,
    params: StreamParams,
    context: Context,
) -> Result<Response, ApiError> {
    let id = SessionId::parse(&id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_session",
            format!("no session with id {id}"),
        )
    })?;
    let subscription = context
        .registry
        .attach(id, &params.token, params.last_event_id)?;
    Ok(sse::reply(
        subscription,
        context.stream.clone(),
        context.shutdown.clone(),
        context.registry.metrics().clone(),
    ))
}

#[derive(Deserialize)]
pub struct ResponseRequest {
    recipient: String,
    message: Box<RawValue>,
}

#[derive(Serialize)]
struct ResponseAccepted {
    event_id: u64,
}

/// `POST /response`: a direct message into exactly one recipient's stream.
pub async fn post_response(
    registry: Registry,
    from: Token,
    body: ResponseRequest,
) -> Result<Response, ApiError> {
    let recipient = SessionId::parse(&body.recipient).ok_or_else(|| {
        ApiError::bad_request("invalid_body", "recipient must be a session id (a UUID)")
    })?;
    let event_id = registry.deliver(&from, recipient, body.message)?;
    Ok(accepted(&ResponseAccepted { event_id }))
}

#[derive(Deserialize)]
pub struct BroadcastRequest {
    message: Box<RawValue>,
}

#[derive(Serialize)]
struct BroadcastAccepted {
    recipients: usize,
}

/// `POST /broadcast`: one message to every other session.
pub async fn post_broadcast(
    registry: Registry,
    from: Token,
    body: BroadcastRequest,
) -> Result<Response, ApiError> {
    let recipients = registry.broadcast(&from, body.message)?;
    Ok(accepted(&BroadcastAccepted { recipients }))
}

fn accepted(body: &impl Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(body), StatusCode::ACCEPTED).into_response()
}

/// `DELETE /session`: leave now rather than after the TTL.
pub async fn delete_session(registry: Registry, token: Token) -> Result<Response, ApiError> {
    registry.remove(&token)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /clients`: every registered session.
pub async fn list_clients(registry: Registry) -> Result<Response, ApiError> {
    let clients: Vec<Peer> = registry.list();
    Ok(warp::reply::json(&clients).into_response())
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    sessions: usize,
    streams: usize,
    stream_limit: usize,
}

/// `GET /healthz`: liveness plus the numbers an operator asks first, including the stream limit.
pub async fn healthz(registry: Registry) -> Result<Response, ApiError> {
    let (sessions, streams) = registry.counts();
    Ok(warp::reply::json(&Health {
        status: "ok",
        sessions,
        streams,
        stream_limit: registry.settings().max_streams,
    })
    .into_response())
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(registry: Registry) -> Result<Response, ApiError> {
    Ok(warp::reply::with_header(
        registry.metrics().render(),
        "content-type",
        "text/plain; version=0.0.4; charset=utf-8",
    )
    .into_response())
}

/// Rejects a bearer token the registry does not accept, before any body is read.
pub async fn verify(registry: Registry, token: Token) -> Result<Token, warp::Rejection> {
    registry
        .authenticate(&token)
        .map(|_| token)
        .map_err(|err| ApiError::from(err).into())
}
