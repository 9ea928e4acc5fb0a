//! A stream opened as a browser opens it (`idle --shared-connection`): `POST /helo`, then the
//! EventSource's `GET /events/{id}` on the same keep-alive connection, instead of a new one.

use std::io;
use std::net::Ipv4Addr;

use super::control::helo;
use super::state::{State, events_path};
use crate::http::{Endpoint, HttpConn, SseStart};
use crate::proto::session_name;

/// Registers the session of stream `slot` over a new connection from `src`, keeps it in
/// `st.sessions[slot]` (for cleanup), and sends its `GET /events/…` on that connection.
pub(super) async fn helo_then_events(
    st: &State,
    ep: &Endpoint,
    slot: usize,
    src: Ipv4Addr,
) -> io::Result<SseStart> {
    let mut conn = HttpConn::open(ep, Some(src)).await?;
    let session = helo(&mut conn, &session_name(st.job.first + slot), None)
        .await
        .map_err(io::Error::other)?;
    let path = events_path(&session);
    st.sessions.borrow_mut()[slot] = Some(session);
    conn.into_sse(&path).await
}
