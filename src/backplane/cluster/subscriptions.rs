//! The room channels this instance reads: those of the rooms its sessions are in, and those an
//! operation is about to put a session into (a *hold*), on the one pub/sub connection that
//! also reads the bus and this instance's own channel (so one order covers all three, see the
//! [module doc](super); with rooms sharded, the connection reads each shard, and each room's
//! numbers stand in for the order).
//!
//! A channel is subscribed before a session here may need it, and Redis has confirmed the
//! subscription before the operation that needs it publishes anything: a helo subscribes its
//! rooms before its `join`, a pull before its `handover`, a `prepare` before the `enter` or the
//! `handoff` it prepares. A room's channel is left once no session here is in it and no hold
//! keeps it ([`Subscriptions::tidy`], every liveness tick): reading a room longer than needed
//! costs reads, never a message.
//!
//! The subscription state and the calls that change it are behind one async lock, so a tidy
//! never leaves a channel that an operation has just been told is read. Each change is told
//! to the [peer directory](super::peers), which keeps the members of the rooms read here only.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tracing::warn;

use super::channels::{listen, unlisten};
use super::keys::{Keys, unavailable};
use super::peers::Peers;
use super::sequence::{Missed, Sequence};
use super::transport::Sink;
use crate::identity::RoomName;
use crate::registry::RegistryError;

/// The room channels read here.
pub(super) struct Subscriptions {
    keys: Keys,
    /// Told which rooms are read, under the lock below: it keeps their members only.
    peers: Arc<Peers>,
    /// Told where each room's counter stands when its channel is subscribed.
    sequence: Arc<Sequence>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Subscribes and unsubscribes on the current pub/sub connection; `None` while there is none.
    sink: Option<Sink>,
    /// The rooms whose channels the current connection reads.
    rooms: HashSet<RoomName>,
    /// Rooms to read until the instant, whether or not a session here is in them.
    holds: HashMap<RoomName, Instant>,
}

impl Subscriptions {
    pub(super) fn new(keys: Keys, peers: Arc<Peers>, sequence: Arc<Sequence>) -> Self {
        Subscriptions {
            keys,
            peers,
            sequence,
            state: Mutex::new(State::default()),
        }
    }

    /// Subscribes `sink` to the channels of `rooms`, telling the peer directory first (what
    /// comes once Redis confirmed is kept); it forgets them again if that failed.
    async fn listen(&self, sink: &mut Sink, rooms: &[RoomName]) -> redis::RedisResult<()> {
        self.peers.reading(rooms);
        let channels: Vec<String> = rooms.iter().map(|room| self.keys.room(room)).collect();
        let listened = listen(sink, &channels).await;
        if listened.is_err() {
            self.peers.stopped(rooms);
        }
        listened
    }

    /// Reads the channels of `rooms` (`lobby`'s is the bus, always read) for at least `hold`;
    /// returns once Redis has confirmed it, so that what is published afterwards on them is
    /// read here.
    ///
    /// # Errors
    /// `Unavailable` when there is no pub/sub connection, or the subscription failed.
    pub(super) async fn ensure(
        &self,
        rooms: &[RoomName],
        hold: Duration,
    ) -> Result<(), RegistryError> {
        let until = Instant::now() + hold;
        let mut state = self.state.lock().await;
        let mut missing = Vec::new();
        for room in rooms.iter().filter(|room| !room.is_lobby()) {
            let held = state.holds.entry(room.clone()).or_insert(until);
            *held = (*held).max(until);
            if !state.rooms.contains(room) && !missing.contains(room) {
                missing.push(room.clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let sink = state
            .sink
            .as_mut()
            .ok_or_else(|| unavailable("not subscribed to Redis"))?;
        self.listen(sink, &missing).await.map_err(unavailable)?;
        state.rooms.extend(missing.iter().cloned());
        self.read_from_now(&missing).await.map_err(unavailable)
    }

    /// Tells the sequence where the counters of `rooms`, whose channels were just subscribed,
    /// stand: what they numbered so far was published before anything this instance does
    /// next, so a session created here starts after it (see [`sequence`](super::sequence)).
    async fn read_from_now(&self, rooms: &[RoomName]) -> redis::RedisResult<()> {
        let at = self.sequence.counters(rooms).await?;
        self.sequence.reading(rooms, &at);
        Ok(())
    }

    /// Starts counting from where every line read here stands (see [`Sequence::catch_up`]),
    /// with no channel subscribed or left meanwhile; what each missed since the last message
    /// applied.
    ///
    /// # Errors
    /// `Unavailable` when Redis cannot be reached.
    pub(super) async fn catch_up(&self) -> Result<Missed, RegistryError> {
        let state = self.state.lock().await;
        let rooms: Vec<RoomName> = state.rooms.iter().cloned().collect();
        self.sequence.catch_up(&rooms).await
    }

    /// A new pub/sub connection, subscribed to the bus and this instance's channel: subscribes
    /// it to the channels of `rooms` (those of the sessions here) and of the live holds.
    ///
    /// # Errors
    /// When the subscription failed; the connection is then not kept.
    pub(super) async fn connected(
        &self,
        mut sink: Sink,
        rooms: Vec<RoomName>,
    ) -> redis::RedisResult<()> {
        let mut state = self.state.lock().await;
        let wanted = wanted(&mut state.holds, rooms);
        if !wanted.is_empty() {
            let rooms: Vec<RoomName> = wanted.iter().cloned().collect();
            self.listen(&mut sink, &rooms).await?;
        }
        state.rooms = wanted;
        state.sink = Some(sink);
        Ok(())
    }

    /// The connection is gone: nothing is read until the next one.
    pub(super) async fn disconnected(&self) {
        let mut state = self.state.lock().await;
        state.sink = None;
        let rooms: Vec<RoomName> = state.rooms.drain().collect();
        self.peers.stopped(&rooms);
    }

    /// Makes the channels read those of `rooms` (the rooms with a session here) and of the
    /// live holds: leaves the others, and the peer directory forgets their members; reads any
    /// of those not read yet (a session that arrived from an instance of an older protocol,
    /// which prepared nothing).
    pub(super) async fn tidy(&self, rooms: Vec<RoomName>) {
        let mut state = self.state.lock().await;
        let wanted = wanted(&mut state.holds, rooms);
        let State { sink, rooms, .. } = &mut *state;
        let Some(sink) = sink.as_mut() else { return };
        let left: Vec<RoomName> = rooms.difference(&wanted).cloned().collect();
        let joined: Vec<RoomName> = wanted.difference(rooms).cloned().collect();
        if !left.is_empty() {
            let channels: Vec<String> = left.iter().map(|room| self.keys.room(room)).collect();
            match unlisten(sink, &channels).await {
                Ok(()) => {
                    rooms.retain(|room| !left.contains(room));
                    self.peers.stopped(&left);
                    self.sequence.not_reading(&left);
                }
                Err(err) => warn!(error = %err, "could not leave room channels"),
            }
        }
        if !joined.is_empty() {
            match self.listen(sink, &joined).await {
                Ok(()) => {
                    rooms.extend(joined.iter().cloned());
                    if let Err(err) = self.read_from_now(&joined).await {
                        warn!(error = %err, "could not read where room counters stand");
                    }
                }
                Err(err) => warn!(error = %err, "could not read room channels"),
            }
        }
    }

    /// The rooms whose channels are read now, sorted.
    #[cfg(test)]
    async fn read(&self) -> Vec<RoomName> {
        let mut rooms: Vec<RoomName> = self.state.lock().await.rooms.iter().cloned().collect();
        rooms.sort();
        rooms
    }
}

/// `rooms` and the rooms held until later than now, but `lobby`; drops the expired holds.
fn wanted(holds: &mut HashMap<RoomName, Instant>, rooms: Vec<RoomName>) -> HashSet<RoomName> {
    let now = Instant::now();
    holds.retain(|_, until| *until > now);
    rooms
        .into_iter()
        .chain(holds.keys().cloned())
        .filter(|room| !room.is_lobby())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(names: &[&str]) -> Vec<RoomName> {
        names.iter().map(|n| RoomName::parse(n).unwrap()).collect()
    }

    #[tokio::test]
    async fn without_a_connection_nothing_is_read_and_holds_outlive_their_sessions() {
        // Never connected: nothing here reaches Redis.
        let conn = super::super::transport::Target::parse("redis://127.0.0.1:1")
            .and_then(|target| target.connect_lazily())
            .unwrap();
        let sequence = Arc::new(Sequence::new(conn, Keys::new("t")));
        let subscriptions = Subscriptions::new(Keys::new("t"), Arc::default(), sequence);
        let refused = subscriptions
            .ensure(&rooms(&["dev"]), Duration::from_secs(60))
            .await;
        assert!(matches!(refused, Err(RegistryError::Unavailable(_))));
        // The lobby rides the bus: nothing to subscribe, so nothing to refuse.
        let lobby = subscriptions
            .ensure(&rooms(&["lobby"]), Duration::from_secs(60))
            .await;
        assert!(lobby.is_ok());
        subscriptions.tidy(rooms(&["ops"])).await;
        assert!(subscriptions.read().await.is_empty());

        let mut holds = HashMap::new();
        holds.insert(
            RoomName::parse("dev").unwrap(),
            Instant::now() + Duration::from_secs(60),
        );
        holds.insert(
            RoomName::parse("old").unwrap(),
            Instant::now() - Duration::from_secs(1),
        );
        let mut wanted: Vec<RoomName> = wanted(&mut holds, rooms(&["ops", "lobby"]))
            .into_iter()
            .collect();
        wanted.sort();
        assert_eq!(wanted, rooms(&["dev", "ops"]));
        assert_eq!(holds.len(), 1, "an expired hold is dropped");
    }
}
