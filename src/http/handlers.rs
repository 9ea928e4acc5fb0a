//! One function per route: typed input in, a reply or an [`ApiError`] out.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::error::{ApiError, ErrorCode};
use super::filters::StreamParams;
use super::{Context, sse};
use crate::backplane::Hub;
use crate::registry::{DisplayName, Peer, SessionId, Token};

#[derive(Deserialize)]
pub(crate) struct HeloRequest {
    name: String,
}

#[derive(Serialize)]
struct HeloResponse<'a> {
    id: SessionId,
    token: String,
    name: &'a str,
}

/// `POST /helo`: register, 201 with the id and the token (the only time it is revealed).
pub(crate) async fn helo(hub: Hub, body: HeloRequest) -> Result<Response, ApiError> {
    let name = DisplayName::parse(&body.name)
        .map_err(|m| ApiError::bad_request(ErrorCode::InvalidName, m))?;
    let (peer, token) = hub.register(name).await?;
    let body = HeloResponse {
        id: peer.id,
        token: token.reveal(),
        name: peer.name.as_str(),
    };
    Ok(warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED).into_response())
}

/// `GET /events/{id}`: attach and stream. An id that is not a UUID is simply unknown.
pub(crate) async fn events(
    id: String,
    params: StreamParams,
    context: Context,
) -> Result<Response, ApiError> {
    let id = SessionId::parse(&id).ok_or_else(|| ApiError::unknown_session(&id))?;
    let subscription = context
        .hub
        .attach(id, &params.token, params.last_event_id)
        .await?;
    Ok(sse::reply(
        subscription,
        context.stream.clone(),
        context.shutdown.clone(),
        context.hub.metrics().clone(),
    ))
}

#[derive(Deserialize)]
pub(crate) struct ResponseRequest {
    recipient: String,
    message: Box<RawValue>,
}

#[derive(Serialize)]
struct ResponseAccepted {
    event_id: u64,
}

/// `POST /response`: a direct message into exactly one recipient's stream.
pub(crate) async fn post_response(
    hub: Hub,
    from: Peer,
    body: ResponseRequest,
) -> Result<Response, ApiError> {
    let recipient = SessionId::parse(&body.recipient).ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::InvalidBody,
            "recipient must be a session id (a UUID)",
        )
    })?;
    let event_id = hub.deliver(&from, recipient, body.message).await?;
    Ok(accepted(&ResponseAccepted { event_id }))
}

#[derive(Deserialize)]
pub(crate) struct BroadcastRequest {
    message: Box<RawValue>,
}

#[derive(Serialize)]
struct BroadcastAccepted {
    recipients: usize,
}

/// `POST /broadcast`: one message to every other session.
pub(crate) async fn post_broadcast(
    hub: Hub,
    from: Peer,
    body: BroadcastRequest,
) -> Result<Response, ApiError> {
    let recipients = hub.broadcast(&from, body.message).await?;
    Ok(accepted(&BroadcastAccepted { recipients }))
}

fn accepted(body: &impl Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(body), StatusCode::ACCEPTED).into_response()
}

/// `DELETE /session`: leave now rather than after the TTL.
pub(crate) async fn delete_session(hub: Hub, peer: Peer) -> Result<Response, ApiError> {
    hub.remove(&peer).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /clients`: every registered session.
pub(crate) async fn list_clients(hub: Hub) -> Result<Response, ApiError> {
    let clients: Vec<Peer> = hub.list().await?;
    Ok(warp::reply::json(&clients).into_response())
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
pub(crate) async fn metrics(hub: Hub, accept: Option<String>) -> Result<Response, ApiError> {
    let metrics = hub.metrics();
    let openmetrics = accept.is_some_and(|accept| accept.contains("application/openmetrics-text"));
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
