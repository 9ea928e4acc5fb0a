//! The names of everything the cluster keeps in Redis (the table in the [module doc](super)),
//! built from `--redis-prefix` in one place, and the error every Redis failure becomes.

use std::time::Duration;

use uuid::Uuid;

use crate::identity::{RoomName, SessionId};
use crate::registry::RegistryError;

/// Suffix of the pub/sub channel every instance subscribes to.
pub const BUS: &str = "bus";
/// Suffix (then `:<instance uuid>`) of each instance's own pub/sub channel.
pub const TO: &str = "to";
/// Suffix (then `:<room>`) of a room's pub/sub channel, read by the instances that home one of
/// its members (`lobby`'s traffic rides the bus: see [`rooms`](super::rooms)).
pub const ROOM: &str = "room";
/// Suffix of the directory hash: session id → entry JSON.
pub const SESSIONS: &str = "sessions";
/// Suffix of the room counts hash: room name → members in the cluster.
pub const ROOMS: &str = "rooms";
/// Suffix (then `:<instance uuid>`) of each instance's liveness key.
pub const INSTANCE: &str = "instance";
/// Suffix of the set of the instances that list themselves (protocol 2 since issue 13), each
/// with its liveness key: the live instances are read from it, not from a keyspace scan.
pub const INSTANCES: &str = "instances";
/// Suffix (then `:<instance uuid>`) of the key beside the liveness key that gives an
/// instance's wire protocol; instances older than protocol 2 write none.
pub const PROTOCOL: &str = "protocol";
/// Suffix of the counter that numbers the bus's messages that put events into mailboxes
/// (`lobby`'s traffic and server messages to everyone); then `:<room>`, of the counter that
/// numbers those of a room but `lobby`.
pub const SEQ: &str = "seq";
/// With rooms sharded (on a Redis Cluster, `--redis-shard-rooms`): suffix of a room's hash
/// `{<prefix>:<room>}:starts`, in the room's own slot, holding each member's starting point on
/// the room's counter (field `<session id>`) and what the room gave a session that left it
/// (field `<session id>:done`), and how many members it has (field `#`, which a broadcast
/// reports): see [`sequence`](super::sequence).
pub const STARTS: &str = "starts";
/// Suffix of the counter that numbers the server messages to everyone.
pub const EVERYONE: &str = "everyone";
/// Suffix (then `:<session id>`) of a session's counts: `direct`, `own`, `done`, and its
/// starting points `base`, `all` and `r:<room>` (see [`sequence`](super::sequence)).
pub const COUNTS: &str = "counts";
/// Suffix (then `:<session id>`) of the expiring key that remembers a session which ended at
/// its lifetime, so that every instance refuses its token as expired (see
/// [`ended`](super::ended)).
pub const ENDED: &str = "ended";
/// Suffix of the key saying Redis holds the cluster's state: written by the first instance
/// to register, never expiring; missing after Redis restarted empty.
pub const STATE: &str = "state";
/// Suffix of the key that lives while the instances re-register their sessions after Redis
/// restarted empty (see [`restart`](super::restart)).
pub const RECOVERING: &str = "recovering";
/// Suffix (then `:<instance uuid>`) of the key an instance writes once it re-registered the
/// sessions it homes.
pub const REGISTERED: &str = "registered";
/// Suffix (then `:<instance uuid>`) of each instance's newest figures for the admin console.
pub const STATS: &str = "stats";
/// Suffix (then `:<instance uuid>`) of the set of that instance's sessions a survivor adopted,
/// kept until it re-registers (it may only have been cut off) or for a day.
pub const ADOPTED: &str = "adopted";
/// How long an instance's liveness key outlives its last refresh.
pub const LIVENESS: Duration = Duration::from_secs(3);

/// The keys and channels under one prefix.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    prefix: String,
    /// With rooms sharded: the bare prefix, which each room's hash tag starts with.
    rooms: Option<String>,
}

impl Keys {
    /// Every key and channel under `prefix` (on a Redis Cluster, one hash tag: `{<prefix>}`).
    pub(super) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            rooms: None,
        }
    }

    /// On a Redis Cluster with rooms sharded: the deployment's keys in the slot of `{<prefix>}`,
    /// each room's channel, counter and starting points (but `lobby`'s) in the slot of
    /// `{<prefix>:<room>}`.
    pub(super) fn sharded(prefix: &str) -> Self {
        Keys {
            prefix: format!("{{{prefix}}}"),
            rooms: Some(prefix.to_owned()),
        }
    }

    /// Whether each room but `lobby` has a slot of its own.
    pub(super) fn is_sharded(&self) -> bool {
        self.rooms.is_some()
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    /// `room`'s key `suffix` in the room's own slot, with rooms sharded (never `lobby`'s).
    fn in_room_slot(&self, room: &RoomName, suffix: &str) -> Option<String> {
        let prefix = self.rooms.as_ref().filter(|_| !room.is_lobby())?;
        Some(format!("{{{prefix}:{room}}}:{suffix}"))
    }

    /// The hash of the starting points on `room`'s counter, with rooms sharded (see
    /// [`STARTS`]); `None` when they are in each session's counts.
    pub(super) fn starts(&self, room: &RoomName) -> Option<String> {
        self.in_room_slot(room, STARTS)
    }

    /// The channel every instance reads.
    pub(super) fn bus(&self) -> String {
        self.key(BUS)
    }

    /// The channel of `instance`'s own messages.
    pub(super) fn channel_of(&self, instance: Uuid) -> String {
        self.key(&format!("{TO}:{instance}"))
    }

    /// The channel of `room`'s traffic; `lobby`'s is the bus.
    pub(super) fn room(&self, room: &RoomName) -> String {
        if let Some(channel) = self.in_room_slot(room, ROOM) {
            channel
        } else if room.is_lobby() {
            self.bus()
        } else {
            self.key(&format!("{ROOM}:{room}"))
        }
    }

    /// The room a room channel carries, if `channel` is one.
    pub(super) fn room_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        if let Some(prefix) = &self.rooms {
            return channel
                .strip_prefix('{')?
                .strip_prefix(prefix.as_str())?
                .strip_prefix(':')?
                .strip_suffix(ROOM)?
                .strip_suffix("}:");
        }
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(':')?
            .strip_prefix(ROOM)?
            .strip_prefix(':')
    }

    /// The directory hash.
    pub(super) fn sessions(&self) -> String {
        self.key(SESSIONS)
    }

    /// The room counts hash.
    pub(super) fn rooms(&self) -> String {
        self.key(ROOMS)
    }

    /// `instance`'s liveness key.
    pub(super) fn instance(&self, instance: Uuid) -> String {
        self.key(&format!("{INSTANCE}:{instance}"))
    }

    /// The pattern every instance's own channel matches.
    pub(super) fn channels(&self) -> String {
        self.key(&format!("{TO}:*"))
    }

    /// The key remembering that session `id` ended at its lifetime.
    pub(super) fn ended(&self, id: SessionId) -> String {
        self.key(&format!("{ENDED}:{id}"))
    }

    /// The key saying Redis holds the cluster's state.
    pub(super) fn state(&self) -> String {
        self.key(STATE)
    }

    /// The key that lives while the instances re-register after Redis lost its state.
    pub(super) fn recovering(&self) -> String {
        self.key(RECOVERING)
    }

    /// The key `instance` writes once it re-registered its sessions.
    pub(super) fn registered(&self, instance: Uuid) -> String {
        self.key(&format!("{REGISTERED}:{instance}"))
    }

    /// The sessions adopted from `instance`.
    pub(super) fn adopted(&self, instance: Uuid) -> String {
        self.key(&format!("{ADOPTED}:{instance}"))
    }

    /// `instance`'s protocol key.
    pub(super) fn protocol(&self, instance: Uuid) -> String {
        self.key(&format!("{PROTOCOL}:{instance}"))
    }

    /// The set of the instances that list themselves.
    pub(super) fn listed(&self) -> String {
        self.key(INSTANCES)
    }

    /// The pattern every liveness key matches.
    pub(super) fn instances(&self) -> String {
        self.key(&format!("{INSTANCE}:*"))
    }

    /// `instance`'s newest figures.
    pub(super) fn stats(&self, instance: Uuid) -> String {
        self.key(&format!("{STATS}:{instance}"))
    }

    /// The bus's counter, which is `lobby`'s.
    pub(super) fn seq(&self) -> String {
        self.key(SEQ)
    }

    /// The counter of `room`'s messages (`lobby`'s is the bus's).
    pub(super) fn room_seq(&self, room: &RoomName) -> String {
        if let Some(counter) = self.in_room_slot(room, SEQ) {
            counter
        } else if room.is_lobby() {
            self.seq()
        } else {
            format!("{}{room}", self.room_seqs())
        }
    }

    /// The prefix of every room's counter but `lobby`'s.
    pub(super) fn room_seqs(&self) -> String {
        self.key(&format!("{SEQ}:"))
    }

    /// The counter of the server messages to everyone.
    pub(super) fn everyone(&self) -> String {
        self.key(EVERYONE)
    }

    /// The prefix of every session's counts key.
    pub(super) fn counts_prefix(&self) -> String {
        self.key(&format!("{COUNTS}:"))
    }

    /// Session `id`'s counts.
    pub(super) fn counts(&self, id: SessionId) -> String {
        self.key(&format!("{COUNTS}:{id}"))
    }
}

/// A failure to reach Redis (or through it, another instance), as the hub reports it.
pub(super) fn unavailable(err: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(err.to_string())
}

#[cfg(test)]
mod tests {
    use redis::cluster_routing::{Route, SlotAddr};

    use super::*;

    fn slot(key: &str) -> Route {
        Route::with_key(key, SlotAddr::Master)
    }

    #[test]
    fn with_rooms_sharded_each_room_has_a_slot_of_its_own_and_lobby_stays_on_the_bus() {
        let keys = Keys::sharded("sb");
        let dev = RoomName::parse("dev").unwrap();
        assert_eq!(keys.room(&dev), "{sb:dev}:room");
        assert_eq!(keys.room_seq(&dev), "{sb:dev}:seq");
        assert_eq!(keys.starts(&dev).as_deref(), Some("{sb:dev}:starts"));
        assert_eq!(keys.room_of("{sb:dev}:room"), Some("dev"));
        assert_eq!(keys.room_of(&keys.bus()), None);
        assert_eq!(keys.room(&RoomName::lobby()), "{sb}:bus");
        assert_eq!(keys.room_seq(&RoomName::lobby()), "{sb}:seq");
        assert_eq!(keys.starts(&RoomName::lobby()), None);
        // What one script touches shares a slot: a room's channel, counter and starts; the
        // deployment's keys; and rooms spread.
        assert_eq!(slot(&keys.room(&dev)), slot(&keys.room_seq(&dev)));
        assert_eq!(slot(&keys.room(&dev)), slot(&keys.starts(&dev).unwrap()));
        assert_eq!(slot(&keys.bus()), slot(&keys.counts(SessionId::random())));
        let rooms: std::collections::HashSet<String> = (0..50)
            .map(|n| {
                format!(
                    "{:?}",
                    slot(&keys.room_seq(&RoomName::parse(&format!("r{n}")).unwrap()))
                )
            })
            .collect();
        assert!(rooms.len() > 40, "50 rooms over {} slots", rooms.len());

        let together = Keys::new("{sb}");
        assert!(!together.is_sharded());
        assert_eq!(together.room(&dev), "{sb}:room:dev");
        assert_eq!(together.room_of("{sb}:room:dev"), Some("dev"));
        assert_eq!(together.starts(&dev), None);
    }
}
