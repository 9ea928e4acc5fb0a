//! The local broker: this process alone. What the hub publishes reaches this registry at once,
//! reported through [`BrokerEvents`] as the Redis broker reports what comes back on its bus.

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::task::JoinHandle;

use super::events::BrokerEvents;
use crate::identity::{RoomName, SessionId, Token};
use crate::limits::AddressGuard;
use crate::registry::{
    Departure, Entered, Event, EventId, Joining, Peer, Registry, RegistryError, SendKey,
    Subscription,
};

/// Each room joined with its member count now.
fn sizes(entered: Vec<Entered>) -> Vec<(RoomName, usize)> {
    entered.into_iter().map(|e| (e.room, e.members)).collect()
}

/// This process alone; clone freely.
#[derive(Clone)]
pub(crate) struct Local {
    registry: Registry,
    events: Arc<dyn BrokerEvents>,
    /// One fan-out at a time (see [`Local::fan_out`]).
    fan_outs: Arc<tokio::sync::Mutex<()>>,
}

impl Local {
    pub(crate) fn new(registry: Registry, events: Arc<dyn BrokerEvents>) -> Self {
        Local {
            registry,
            events,
            fan_outs: Arc::default(),
        }
    }

    /// Registers a session, puts it into `rooms` and announces it there. A session the room
    /// limits refuse is removed again before anyone heard of it.
    pub(crate) async fn register(
        &self,
        joining: Joining,
        rooms: Vec<RoomName>,
        place: AddressGuard,
    ) -> Result<(Peer, Token), RegistryError> {
        // Registered first: whoever hears `new_user` can already message it.
        let (peer, token) = self.registry.register(joining, place)?;
        let (registry, joined) = (self.registry.clone(), peer.clone());
        // In the turn: membership changes and their announcements in one order.
        self.fan_out(move |events| match registry.join_rooms(joined.id, &rooms) {
            Ok(entered) => {
                events.joined(&joined, &sizes(entered), None);
                Ok(())
            }
            Err(err) => {
                registry.remove(joined.id);
                Err(err)
            }
        })
        .await?;
        Ok((peer, token))
    }

    /// Puts `peer`'s session into `room`: its stream gets `joined`, the room's other members
    /// hear of it; nothing happens when it is in already. The room's member count.
    pub(crate) async fn join_room(
        &self,
        peer: &Peer,
        room: RoomName,
    ) -> Result<usize, RegistryError> {
        let (registry, peer) = (self.registry.clone(), peer.clone());
        self.fan_out(move |events| {
            let entered = registry.join_rooms(peer.id, std::slice::from_ref(&room))?;
            let members = entered.first().map_or(0, |e| e.members);
            if entered.first().is_some_and(|e| e.new) {
                events.entered(peer.id, (&room, members), &|| registry.room_members(&room));
                events.joined(&peer, &[(room, members)], None);
            }
            Ok(members)
        })
        .await
    }

    /// Takes `peer`'s session out of `room`: its stream gets `left`, the room's other members
    /// hear of it.
    pub(crate) async fn leave_room(
        &self,
        peer: &Peer,
        room: RoomName,
    ) -> Result<(), RegistryError> {
        let (registry, peer) = (self.registry.clone(), peer.clone());
        self.fan_out(move |events| {
            let members = registry.leave_room(peer.id, &room)?;
            events.exited(peer.id, &room);
            events.left(&peer, &[(room, members)], None);
            Ok(())
        })
        .await
    }

    /// This process's registry, for what needs no turn (reading rooms and their members).
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn authenticate(&self, token: &Token) -> Result<Peer, RegistryError> {
        self.registry.authenticate(token)
    }

    /// Whether session `id` may broadcast; `BadToken` when it has left.
    pub(crate) fn may_broadcast(&self, id: SessionId) -> Result<bool, RegistryError> {
        self.registry
            .may_broadcast(id)
            .ok_or(RegistryError::BadToken)
    }

    pub(crate) fn attach(
        &self,
        id: SessionId,
        token: &Token,
        last_event_id: Option<EventId>,
    ) -> Result<Subscription, RegistryError> {
        self.registry.attach(id, token, last_event_id)
    }

    pub(crate) fn deliver(
        &self,
        to: SessionId,
        event: Event,
        key: Option<SendKey>,
    ) -> Result<EventId, RegistryError> {
        self.events.direct(to, event, key).map(|(id, _)| id)
    }

    /// A broadcast from `from` into `room`; how many other members got it.
    pub(crate) async fn broadcast(
        &self,
        from: &Peer,
        room: RoomName,
        message: Box<RawValue>,
    ) -> usize {
        let from = from.clone();
        self.fan_out(move |events| events.broadcast(&from, &room, message, None))
            .await
    }

    /// A server message to every session, or to every member of `room`; how many got it.
    pub(crate) async fn announce(&self, message: Box<RawValue>, room: Option<RoomName>) -> usize {
        self.fan_out(move |events| events.announced(message, room.as_ref(), None))
            .await
    }

    /// Sends `room_count` into the rooms above the presence limit whose count changed (in its
    /// turn, so in order with the joins and leaves around it).
    pub(crate) async fn count_rooms(&self) {
        if !self.events.counts_due() {
            return; // most seconds: no turn taken
        }
        let registry = self.registry.clone();
        self.fan_out(move |events| {
            for (room, members) in events.due_counts(&|room| registry.room_size(room)) {
                events.count_to((&room, members), &registry.room_member_ids(&room));
            }
        })
        .await;
    }

    pub(crate) fn peer(&self, id: SessionId) -> Option<Peer> {
        self.registry.peer(id)
    }

    /// Removes `peer`'s session, then announces its leave in its rooms if it was here.
    pub(crate) async fn remove(&self, peer: &Peer) {
        if let Some(left) = self.registry.remove(peer.id) {
            let registry = self.registry.clone();
            self.fan_out(move |events| events.left(&left.peer, &left.sizes(&registry), None))
                .await;
        }
    }

    pub(crate) fn list(&self) -> Vec<Peer> {
        self.registry.list()
    }

    /// Announces the leave of sessions the reaper removed.
    pub(crate) fn expired(&self, departed: Vec<Departure>) {
        // Not awaited: the reaper goes on; the announcement runs in its turn.
        let registry = self.registry.clone();
        drop(self.spawn_fan_out(move |events| {
            for left in &departed {
                events.left(&left.peer, &left.sizes(&registry), None);
            }
        }));
    }

    /// Runs `job`, a fan-out into a room's or every mailbox here (O(sessions): 20 ms at
    /// 30,000 sessions), with any membership change it makes,
    /// when no other fan-out of this broker is running, and waits for it.
    ///
    /// Fan-outs wait for their turn without holding a thread, then run on a runtime worker.
    /// Waiting on the registry's fan-out lock instead, a flood of joins held every worker and
    /// stalled every other request (`/response` p99 from 1 ms to 0.85 s at 30,000 sessions);
    /// now at most one worker is busy fanning out. Not on the blocking pool: woken from
    /// outside the runtime, each of thousands of streams is scheduled remotely, which cut
    /// saturated fanout to a fifth. Spawned, so that a join whose client went away is still
    /// announced.
    async fn fan_out<T: Send + 'static>(
        &self,
        job: impl FnOnce(&dyn BrokerEvents) -> T + Send + 'static,
    ) -> T {
        self.spawn_fan_out(job)
            .await
            .expect("a fan-out panicked (reported above)")
    }

    /// Starts `job` in its turn (see [`Local::fan_out`]) without waiting for it.
    fn spawn_fan_out<T: Send + 'static>(
        &self,
        job: impl FnOnce(&dyn BrokerEvents) -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let events = Arc::clone(&self.events);
        let turn = Arc::clone(&self.fan_outs).lock_owned();
        tokio::spawn(async move {
            let _turn = turn.await;
            job(events.as_ref())
        })
    }
}
