//! Presence: who hears about joins and leaves, and who is listed in `ready` and `joined`.
//!
//! The one place that policy lives. Both hubs call it: the local hub right after its registry
//! changed, the cluster hub when a join or leave comes back on the bus (in bus order, on every
//! instance). The registry only offers the mechanics (fan out to a room, list its members).
//!
//! Presence is per room: a join is announced (`new_user` with its `room`) to the other members
//! of each room the session joins, a leave (`user_left`) likewise. A room above the presence
//! limit (`--room-presence-limit`) is not announced join by join, which would cost the square
//! of its size: it is marked, and [`Presence::count`] (called about once a second) sends its
//! members one `room_count` while the count changes; `ready` and `joined` then carry the count
//! instead of its roster.
//!
//! With presence off (`--presence false`) nobody hears of anyone, and `ready` and `joined` carry
//! counts only; the sessions are still there for `GET /clients` and the room listings.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use crate::identity::{RoomName, SessionId};
use crate::registry::event::{Joined, Left, Member, RoomCount, Roster};
use crate::registry::{Event, Peer, Reach, Registry, Subscription};

/// Whether joins and leaves are announced, and above what room size they are only counted;
/// shared by the hub's parts.
#[derive(Clone, Debug)]
pub(crate) struct Presence {
    enabled: bool,
    /// Most members a room may have and still be announced join by join; 0: no limit.
    limit: usize,
    /// Rooms above the limit whose count changed since the last [`Presence::count`].
    changed: Arc<Mutex<BTreeSet<RoomName>>>,
}

impl Presence {
    pub(crate) fn new(enabled: bool, limit: usize) -> Self {
        Presence {
            enabled,
            limit,
            changed: Arc::default(),
        }
    }

    /// Whether a room of `members` is above the limit: counted, not listed.
    pub(crate) fn counted(&self, members: usize) -> bool {
        !self.enabled || (self.limit > 0 && members > self.limit)
    }

    /// A room's roster for `ready` or `joined`, as session `id` sees it: the other members
    /// (read from `members` only then), or the count `size` when the room is counted.
    pub(crate) fn roster(
        &self,
        id: SessionId,
        size: usize,
        members: impl FnOnce() -> Vec<Peer>,
    ) -> Roster {
        if self.counted(size) {
            Roster::Counted { members: size }
        } else {
            Roster::Listed(members().into_iter().filter(|p| p.id != id).collect())
        }
    }

    /// `peer` joined `rooms`, each of the size it has now (in the whole hub): the other
    /// members of each here hear `new_user` with the room (or only `only`, replaying a
    /// migration's buffer to one session).
    pub(crate) fn joined(
        &self,
        registry: &Registry,
        peer: &Peer,
        rooms: &[(RoomName, usize)],
        only: Option<SessionId>,
    ) {
        self.announce(registry, peer, rooms, only, Event::NewUser, 0);
    }

    /// `peer` left `rooms` (left them, left the hub, expired, or its instance died), each of
    /// the size it has now: their members here hear `user_left` (or only `only`). `peer` is
    /// already out of them here.
    pub(crate) fn left(
        &self,
        registry: &Registry,
        peer: &Peer,
        rooms: &[(RoomName, usize)],
        only: Option<SessionId>,
    ) {
        self.announce(registry, peer, rooms, only, Event::UserLeft, 1);
    }

    /// `event` about `peer` into each of `rooms`, or marks the room's count as changed when it
    /// is above the limit, before or after; `gone` is how many members the room had beyond
    /// its size now.
    fn announce(
        &self,
        registry: &Registry,
        peer: &Peer,
        rooms: &[(RoomName, usize)],
        only: Option<SessionId>,
        event: fn(Member) -> Event,
        gone: usize,
    ) {
        if !self.enabled {
            return;
        }
        for (room, size) in rooms {
            if self.counted(size + gone) {
                if only.is_none() {
                    self.changed
                        .lock()
                        .expect("presence lock")
                        .insert(room.clone());
                }
                continue;
            }
            let member = Member {
                peer: peer.clone(),
                room: room.clone(),
            };
            registry.fan_out(event(member), Reach::Room(room), Some(peer.id), only);
        }
    }

    /// Session `id` is now in `room`, of `members` in all, with `roster` (see
    /// [`Presence::roster`]): its own stream gets `joined`.
    pub(crate) fn entered(
        &self,
        registry: &Registry,
        id: SessionId,
        (room, members): (&RoomName, usize),
        roster: Roster,
    ) {
        let clients = match roster {
            Roster::Listed(peers) => Some(peers),
            Roster::Counted { .. } => None,
        };
        let event = Event::Joined(Joined {
            room: room.clone(),
            clients,
            members,
        });
        registry.fan_out(event, Reach::Everyone, None, Some(id));
    }

    /// Session `id` is no longer in `room`: its own stream gets `left`.
    pub(crate) fn exited(&self, registry: &Registry, id: SessionId, room: &RoomName) {
        let event = Event::Left(Left { room: room.clone() });
        registry.fan_out(event, Reach::Everyone, None, Some(id));
    }

    /// Whether a room's count changed since the last [`Presence::count`].
    pub(crate) fn counts_due(&self) -> bool {
        !self.changed.lock().expect("presence lock").is_empty()
    }

    /// The rooms above the limit whose count changed since the last call, each with its count
    /// from `size` (those left empty are not told): a cluster counts each `room_count` before
    /// it sends it with [`Presence::count_to`].
    pub(crate) fn due(&self, size: impl Fn(&RoomName) -> usize) -> Vec<(RoomName, usize)> {
        let changed = std::mem::take(&mut *self.changed.lock().expect("presence lock"));
        changed
            .into_iter()
            .map(|room| {
                let members = size(&room);
                (room, members)
            })
            .filter(|(_, members)| *members > 0)
            .collect()
    }

    /// Sends `room_count` of `members` to the members of `room` here that are among `to`.
    pub(crate) fn count_to(
        &self,
        registry: &Registry,
        (room, members): (&RoomName, usize),
        to: &HashSet<SessionId>,
    ) {
        let event = Event::RoomCount(RoomCount {
            room: room.clone(),
            members,
        });
        registry.fan_out(event, Reach::Among(room, to), None, None);
    }

    /// Fills `subscription`'s `ready` with each of its rooms' roster (see
    /// [`Presence::roster`]), and everyone listed in any of them once in `clients`.
    ///
    /// Read after the stream attached, so a session that joins later reaches it as `new_user`;
    /// one that joins in between may appear both ways, never neither.
    pub(crate) fn fill_roster(
        &self,
        subscription: &mut Subscription,
        rooms: BTreeMap<RoomName, Roster>,
    ) {
        let mut clients: Vec<Peer> = Vec::new();
        let mut listed = BTreeSet::new();
        for roster in rooms.values() {
            if let Roster::Listed(peers) = roster {
                for peer in peers {
                    if listed.insert(peer.id) {
                        clients.push(peer.clone());
                    }
                }
            }
        }
        subscription.set_roster(clients, rooms);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::identity::DisplayName;
    use crate::limits::AddressGuard;
    use crate::metrics::Metrics;
    use crate::registry::{Pull, Settings};

    fn registry() -> Registry {
        Registry::new(Settings::small(), Arc::new(Metrics::default()))
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn join(registry: &Registry, name: &str, rooms: &[RoomName]) -> Peer {
        let name = DisplayName::parse(name).unwrap();
        let (peer, _) = registry
            .register(name.into(), AddressGuard::unlimited())
            .unwrap();
        registry.join_rooms(peer.id, rooms).unwrap();
        peer
    }

    fn heard(subscription: &mut Subscription) -> Vec<String> {
        match subscription.pull(10) {
            Pull::Events(replay) => replay
                .events
                .iter()
                .map(|(_, e)| format!("{} {}", e.event.name(), e.event.data_json()))
                .collect(),
            _ => Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn joins_and_leaves_reach_the_rooms_members_only_when_presence_is_on() {
        for enabled in [true, false] {
            let presence = Presence::new(enabled, 0);
            let registry = registry();
            let (ann, token) = registry
                .register(
                    DisplayName::parse("ann").unwrap().into(),
                    AddressGuard::unlimited(),
                )
                .unwrap();
            registry.join_rooms(ann.id, &[room("dev")]).unwrap();
            let bob = join(&registry, "bob", &[room("dev")]);
            let mut stream = registry.attach(ann.id, &token, None).unwrap();
            presence.joined(&registry, &bob, &[(room("dev"), 2), (room("ops"), 1)], None);
            presence.left(&registry, &bob, &[(room("dev"), 1)], None);
            presence.joined(&registry, &ann, &[(room("dev"), 2)], None); // not of herself
            let heard = heard(&mut stream);
            let names: Vec<&str> = heard.iter().map(|h| h.split(' ').next().unwrap()).collect();
            if enabled {
                assert_eq!(names, ["new_user", "user_left"]);
                assert!(heard[0].contains(r#""room":"dev""#), "{heard:?}");
            } else {
                assert!(names.is_empty());
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_room_above_the_limit_is_counted_once_per_call_not_announced() {
        let presence = Presence::new(true, 2);
        let registry = registry();
        let (ann, token) = registry
            .register(
                DisplayName::parse("ann").unwrap().into(),
                AddressGuard::unlimited(),
            )
            .unwrap();
        registry.join_rooms(ann.id, &[room("big")]).unwrap();
        let mut stream = registry.attach(ann.id, &token, None).unwrap();
        let bob = join(&registry, "bob", &[room("big")]);
        presence.joined(&registry, &bob, &[(room("big"), 2)], None);
        assert_eq!(heard(&mut stream).len(), 1, "2 members: announced");
        assert!(!presence.counts_due());
        for name in ["cy", "di"] {
            let peer = join(&registry, name, &[room("big")]);
            presence.joined(
                &registry,
                &peer,
                &[(room("big"), registry.room_size(&room("big")))],
                None,
            );
        }
        assert!(heard(&mut stream).is_empty(), "above 2: not announced");
        assert!(presence.counts_due());
        for (big, members) in presence.due(|r| registry.room_size(r)) {
            presence.count_to(&registry, (&big, members), &registry.room_member_ids(&big));
        }
        assert_eq!(
            heard(&mut stream),
            [r#"room_count {"room":"big","members":4}"#]
        );
        assert!(!presence.counts_due(), "once per change");
        assert!(matches!(
            presence.roster(ann.id, 4, Vec::new),
            Roster::Counted { members: 4 }
        ));
    }
}
