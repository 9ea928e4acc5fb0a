//! The room routes: a session joining and leaving rooms with its token
//! (`PUT`/`DELETE /session/rooms/{room}`), listing a room's members (`GET /rooms/{room}/members`,
//! a member's token or the API key), and the server API's (`/api/rooms...`): moving sessions in
//! and out, and the paged list of rooms. The operations are the hub's; this file reads and
//! writes JSON.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use warp::Filter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::{Reply, Response};

use super::context::Context;
use super::error::{ApiError, ErrorCode};
use super::handlers::full_house;
use super::listing::{self, Lister, MAX_PAGE};
use crate::backplane::PageQuery;
use crate::identity::{RoomName, SessionId};
use crate::registry::{Peer, RegistryError};

/// A room named in a path; 400 `invalid_room` when it breaks the rule.
fn room_of(raw: &str) -> Result<RoomName, ApiError> {
    RoomName::parse(raw).map_err(|e| ApiError::invalid_room("the room in the path", e))
}

#[derive(Serialize)]
struct RoomJoined {
    room: RoomName,
    members: usize,
}

/// `PUT /session/rooms/{room}`: the session joins `room` (200 with the member count, itself
/// included); a room it is in already answers the same and changes nothing.
pub(crate) async fn join(room: String, context: Context, peer: Peer) -> Result<Response, ApiError> {
    let room = room_of(&room)?;
    let members = context
        .hub
        .join_room(&peer, room.clone())
        .await
        .map_err(|err| full_house(err, context.session_ttl))?;
    Ok(warp::reply::json(&RoomJoined { room, members }).into_response())
}

/// `DELETE /session/rooms/{room}`: the session leaves `room` (204); 404 `not_a_member` when
/// it is not in it.
pub(crate) async fn leave(
    room: String,
    context: Context,
    peer: Peer,
) -> Result<Response, ApiError> {
    let room = room_of(&room)?;
    context
        .hub
        .leave_room(&peer, room)
        .await
        .map_err(not_in_it)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Leaving a room one is not in: 404, the room as such a session sees it.
fn not_in_it(err: RegistryError) -> ApiError {
    match err {
        err @ RegistryError::NotAMember(_) => {
            ApiError::from(err).with_status(StatusCode::NOT_FOUND)
        }
        err => ApiError::from(err),
    }
}

/// `GET /rooms/{room}/members`: one page of the room's members, the caller included; for a
/// member's token (metered like `/clients`) or the API key. 403 `not_a_member` otherwise.
pub(crate) async fn members(
    room: String,
    context: Context,
    client: IpAddr,
    credential: Option<String>,
    query: PageQuery,
) -> Result<Response, ApiError> {
    let room = room_of(&room)?;
    if let Lister::Session(peer) = listing::lister(&context, credential.as_deref()).await? {
        context.limits.list(client)?;
        if context
            .hub
            .rooms_of(peer.id)
            .await?
            .binary_search(&room)
            .is_err()
        {
            return Err(RegistryError::NotAMember(room).into());
        }
    }
    room_page(&context, "", &room, &query).await
}

/// `GET /api/rooms/{room}/members`: the same, for the backend.
pub(crate) async fn api_members(
    room: String,
    context: Context,
    query: PageQuery,
) -> Result<Response, ApiError> {
    let room = room_of(&room)?;
    room_page(&context, "/api", &room, &query).await
}

/// One page of `room`'s members, with a `Link` onwards (under `prefix`).
async fn room_page(
    context: &Context,
    prefix: &str,
    room: &RoomName,
    query: &PageQuery,
) -> Result<Response, ApiError> {
    let page = query.select(context.hub.room_members(room).await?);
    let path = format!("{prefix}/rooms/{room}/members");
    Ok(listing::page_reply(&path, query, &page))
}

/// Whom the backend moves in or out of a room: `{"session": id}` or `{"user": sub}`.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Mover {
    Session(SessionId),
    User(String),
}

#[derive(Serialize)]
struct Moved {
    room: RoomName,
    /// The room's members now.
    members: usize,
    /// The sessions this request moved in (or out).
    moved: usize,
}

/// The sessions `mover` names; 404 `unknown_session` for a session that is not registered.
async fn sessions_of(context: &Context, mover: &Mover) -> Result<Vec<Peer>, ApiError> {
    match mover {
        Mover::Session(id) => {
            let peer = context.hub.peer(*id).await?;
            Ok(vec![peer.ok_or_else(|| ApiError::unknown_session(id))?])
        }
        Mover::User(user) => {
            let query = PageQuery {
                limit: usize::MAX,
                user: Some(user.clone()),
                ..PageQuery::default()
            };
            Ok(context.hub.page(&query).await?.peers)
        }
    }
}

/// `PUT /api/rooms/{room}/members`: the backend puts a session (or every session of a user)
/// into `room`, whatever `--allow-rooms` and their join tokens say; each gets `joined`
/// in-band.
pub(crate) async fn api_join(
    room: String,
    context: Context,
    mover: Mover,
) -> Result<Response, ApiError> {
    move_members(room, context, mover, Way::In).await
}

/// `DELETE /api/rooms/{room}/members`: the backend takes a session (or every session of a
/// user) out of `room`; each gets `left` in-band. A session that is not in it is 404
/// `not_a_member`; a user's sessions that are not are skipped.
pub(crate) async fn api_leave(
    room: String,
    context: Context,
    mover: Mover,
) -> Result<Response, ApiError> {
    move_members(room, context, mover, Way::Out).await
}

/// Which way the server API moves sessions.
#[derive(Clone, Copy)]
enum Way {
    In,
    Out,
}

/// Moves the sessions `mover` names into or out of `room`, and answers how many moved and how
/// many members the room has now. A session that left the hub meanwhile is skipped.
async fn move_members(
    room: String,
    context: Context,
    mover: Mover,
    way: Way,
) -> Result<Response, ApiError> {
    let room = room_of(&room)?;
    let mut moved = 0;
    for peer in sessions_of(&context, &mover).await? {
        let outcome = match way {
            Way::In => context.hub.put_in_room(&peer, room.clone()).await.map(drop),
            Way::Out => context.hub.leave_room(&peer, room.clone()).await,
        };
        match outcome {
            Ok(()) => moved += 1,
            Err(err @ RegistryError::NotAMember(_)) if matches!(mover, Mover::Session(_)) => {
                return Err(not_in_it(err));
            }
            Err(RegistryError::NotAMember(_) | RegistryError::BadToken) => {}
            Err(err) => return Err(full_house(err, context.session_ttl)),
        }
    }
    let members = context.hub.room_size(&room).await?;
    Ok(warp::reply::json(&Moved {
        room,
        members,
        moved,
    })
    .into_response())
}

/// `?after=<room>&limit=<n>` of the room list.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RoomListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// One page of the room list: rooms after `after` (by name), at most `limit`.
pub(crate) struct RoomQuery {
    after: Option<RoomName>,
    limit: usize,
}

/// The room list's query; 400 `invalid_query` for a bad room, a limit outside
/// 1..=[`MAX_PAGE`], or an unknown parameter.
pub(crate) fn room_query() -> impl Filter<Extract = (RoomQuery,), Error = warp::Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(|raw: String| async move {
            let invalid = |message: String| {
                warp::Rejection::from(ApiError::bad_request(ErrorCode::InvalidQuery, message))
            };
            let query: RoomListQuery = serde_urlencoded::from_str(&raw)
                .map_err(|err| invalid(format!("the query is not valid: {err}")))?;
            let after = match query.after {
                None => None,
                Some(after) => {
                    Some(RoomName::parse(&after).map_err(|err| invalid(format!("`after` {err}")))?)
                }
            };
            let limit = query.limit.unwrap_or(MAX_PAGE);
            if !(1..=MAX_PAGE).contains(&limit) {
                return Err(invalid(format!("`limit` must be 1 to {MAX_PAGE}")));
            }
            Ok(RoomQuery { after, limit })
        })
}

#[derive(Serialize)]
struct RoomListed {
    room: RoomName,
    members: usize,
}

/// `GET /api/rooms`: one page of the rooms with members, by name, each with its count; a
/// `Link` to the next page when more follow.
pub(crate) async fn api_rooms(context: Context, query: RoomQuery) -> Result<Response, ApiError> {
    let mut rooms: Vec<(RoomName, usize)> = context
        .hub
        .rooms()
        .await?
        .into_iter()
        .filter(|(room, _)| query.after.as_ref().is_none_or(|after| room > after))
        .collect();
    rooms.sort_unstable();
    let more = rooms.len() > query.limit;
    rooms.truncate(query.limit);
    let listed: Vec<RoomListed> = rooms
        .into_iter()
        .map(|(room, members)| RoomListed { room, members })
        .collect();
    let next = listed.last().filter(|_| more).map(|last| last.room.clone());
    let mut response = warp::reply::json(&listed).into_response();
    if let Some(last) = next {
        let link = format!(
            "</api/rooms?after={last}&limit={}>; rel=\"next\"",
            query.limit
        );
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}
