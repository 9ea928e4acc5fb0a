//! One event to every session here, or to every member of a room here: a broadcast, or a
//! presence event (the hub decides which). Whatever the room, fan-outs take the one fan-out
//! lock, so every mailbox gets them in one order.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::event::{self, Envelope, Event, Peer};
use super::session::{Session, Then};
use super::{Registry, State};
use crate::identity::{RoomName, SessionId};

/// Whom a fan-out reaches: every session here, or the members of one room.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reach<'a> {
    Everyone,
    Room(&'a RoomName),
    /// The members of a room here who are among these sessions.
    Among(&'a RoomName, &'a HashSet<SessionId>),
}

impl State {
    /// Every session, in their order, shared until the next join or leave (its `audience`).
    fn audience(&mut self) -> Arc<[Arc<Session>]> {
        let State {
            sessions, audience, ..
        } = self;
        Arc::clone(audience.get_or_insert_with(|| sessions.values().cloned().collect()))
    }
}

impl Registry {
    /// Sends a `client_broadcast` from `from` to every other member of `room` here (or only to
    /// `only`) and returns how many received it. Never waits: a full mailbox makes room or
    /// drops it, and its reader is told (see [`mailbox`](super::mailbox)).
    pub(crate) fn broadcast(
        &self,
        from: &Peer,
        room: &RoomName,
        message: Box<RawValue>,
        only: Option<SessionId>,
    ) -> usize {
        let event = Event::ClientBroadcast(event::Broadcast {
            from: from.id,
            from_name: from.name.clone(),
            room: room.clone(),
            message,
        });
        self.fan_out(event, Reach::Room(room), Some(from.id), only)
    }

    /// Appends `event` (a broadcast or presence event) to every mailbox `to` reaches here but
    /// `except`'s (or only to `only`'s, if it is reached and not `except`), making room or
    /// dropping it where full; returns the count. One envelope is shared by all of them, under
    /// one hold of the registry lock.
    pub(crate) fn fan_out(
        &self,
        event: Event,
        to: Reach<'_>,
        except: Option<SessionId>,
        only: Option<SessionId>,
    ) -> usize {
        debug_assert!(
            !event.is_addressed(),
            "addressed events go through deliver_event"
        );
        let envelope = Envelope::new(event);
        let metrics = &self.shared.metrics;
        let order = self.fan_out_lock();
        let targets: Arc<[Arc<Session>]> = {
            let mut state = self.lock();
            match (only, to) {
                (Some(id), Reach::Everyone) => {
                    state.sessions.get(&id).into_iter().cloned().collect()
                }
                (Some(id), Reach::Room(room)) => state
                    .sessions
                    .get(&id)
                    .filter(|s| s.lock().rooms.binary_search(room).is_ok())
                    .into_iter()
                    .cloned()
                    .collect(),
                (None, Reach::Everyone) => state.audience(),
                (None, Reach::Room(room)) => state.room_audience(room),
                (_, Reach::Among(room, ids)) => state
                    .room_audience(room)
                    .iter()
                    .filter(|s| ids.contains(&s.peer.id) && only.is_none_or(|id| id == s.peer.id))
                    .cloned()
                    .collect(),
            }
        };
        let mut recipients = 0;
        let mut wakes = Vec::new();
        let mut writes = Vec::with_capacity(targets.len());
        for session in targets.iter().filter(|s| Some(s.peer.id) != except) {
            // Only direct messages are ever refused, so the result is always Ok. A session
            // removed since the copy gets the event into a mailbox nobody reads: harmless.
            match session.push_unwoken(&envelope, metrics) {
                Ok((_, Then::Wake(wake))) => wakes.push(wake),
                Ok((_, Then::Write)) => writes.push(Arc::clone(session)),
                Ok((_, Then::Nothing)) | Err(_) => {}
            }
            recipients += 1;
        }
        drop(order);
        // Woken only now: a stream woken mid-way would run on the other core at once and
        // write this one event alone, while the events behind it wait for the fan-out.
        for wake in wakes {
            wake.notify_one();
        }
        self.shared.outbox.write(writes);
        recipients
    }
}
