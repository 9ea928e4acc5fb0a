//! [`Rooms`]: a session's rooms as its stream tells them: each with its member count and,
//! below the server's presence limit, the roster of the others. It reads [`Frame`]s and
//! sends nothing.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::{Frame, Peer};

/// One of a session's rooms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Room {
    /// Its members, the session included.
    pub members: u64,
    /// The others in it, by id; `None` in a room above the server's `--room-presence-limit`
    /// (or with presence off), where only the count is told (`room_count`).
    pub roster: Option<BTreeMap<String, Peer>>,
}

/// A session's rooms by name, kept from its stream: pass every [`Frame`] to [`Rooms::apply`].
/// `ready` replaces them all (so a resume leaves nothing stale); `joined`, `left`,
/// `new_user`, `user_left` and `room_count` change one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rooms {
    rooms: BTreeMap<String, Room>,
}

/// A roster as `ready` carries it: the others, or only the count.
#[derive(Deserialize)]
#[serde(untagged)]
enum Roster {
    Peers(Vec<Peer>),
    Count { members: u64 },
}

#[derive(Deserialize)]
struct Ready {
    #[serde(default)]
    rooms: BTreeMap<String, Roster>,
}

#[derive(Deserialize)]
struct Joined {
    room: String,
    clients: Option<Vec<Peer>>,
    members: u64,
}

#[derive(Deserialize)]
struct Member {
    id: String,
    name: String,
    room: Option<String>,
}

#[derive(Deserialize)]
struct Count {
    room: String,
    members: u64,
}

impl Rooms {
    /// Takes what `frame` says about this session's rooms into account; returns whether it
    /// changed anything. Frames of other kinds, and ones whose data does not have the
    /// documented shape, change nothing.
    pub fn apply(&mut self, frame: &Frame) -> bool {
        let data = &frame.data;
        match frame.event.as_str() {
            "ready" => parse(data).is_some_and(|ready: Ready| {
                self.rooms = ready
                    .rooms
                    .into_iter()
                    .map(|(name, roster)| (name, Room::from(roster)))
                    .collect();
                true
            }),
            "joined" => parse(data).is_some_and(|joined: Joined| {
                let roster = joined.clients.map(roster_of);
                let room = Room {
                    members: joined.members,
                    roster,
                };
                self.rooms.insert(joined.room, room);
                true
            }),
            "left" => frame
                .room()
                .is_some_and(|room| self.rooms.remove(room).is_some()),
            "new_user" => parse(data).is_some_and(|member: Member| {
                let Some(room) = member.room.and_then(|room| self.rooms.get_mut(&room)) else {
                    return false;
                };
                let Some(roster) = room.roster.as_mut() else {
                    return false;
                };
                let peer = Peer {
                    id: member.id.clone(),
                    name: member.name,
                };
                if roster.insert(member.id, peer).is_none() {
                    room.members += 1;
                }
                true
            }),
            "user_left" => parse(data).is_some_and(|member: Member| {
                // Without a room (a server without rooms), the peer left every room.
                let mut changed = false;
                for (name, room) in &mut self.rooms {
                    if member.room.as_ref().is_some_and(|left| left != name) {
                        continue;
                    }
                    if let Some(roster) = room.roster.as_mut()
                        && roster.remove(&member.id).is_some()
                    {
                        room.members = room.members.saturating_sub(1);
                        changed = true;
                    }
                }
                changed
            }),
            "room_count" => parse(data).is_some_and(|count: Count| {
                self.rooms
                    .get_mut(&count.room)
                    .map(|room| room.members = count.members)
                    .is_some()
            }),
            _ => false,
        }
    }

    /// The room `name`, if the session is in it.
    pub fn get(&self, name: &str) -> Option<&Room> {
        self.rooms.get(name)
    }

    /// The rooms' names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(String::as_str)
    }

    /// The rooms by name, sorted.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Room)> {
        self.rooms.iter().map(|(name, room)| (name.as_str(), room))
    }

    /// How many rooms the session is in.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether the session is in no room (direct messages only).
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

impl From<Roster> for Room {
    fn from(roster: Roster) -> Room {
        match roster {
            Roster::Peers(peers) => {
                let roster = roster_of(peers);
                Room {
                    members: roster.len() as u64 + 1,
                    roster: Some(roster),
                }
            }
            Roster::Count { members } => Room {
                members,
                roster: None,
            },
        }
    }
}

fn roster_of(peers: Vec<Peer>) -> BTreeMap<String, Peer> {
    peers.into_iter().map(|p| (p.id.clone(), p)).collect()
}

fn parse<T: for<'de> Deserialize<'de>>(data: &Value) -> Option<T> {
    T::deserialize(data).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn frame(event: &str, data: Value) -> Frame {
        Frame {
            id: None,
            event: event.to_owned(),
            data,
        }
    }

    fn ids(room: &Room) -> Vec<&str> {
        let roster = room.roster.as_ref().expect("a roster");
        roster.keys().map(String::as_str).collect()
    }

    #[test]
    fn rooms_follow_ready_joined_left_presence_and_counts() {
        let mut rooms = Rooms::default();
        let ready = json!({"id": "me", "name": "me", "clients": [{"id": "b", "name": "bob"}],
            "rooms": {"dev": [{"id": "b", "name": "bob"}], "big": {"members": 5000}}});
        assert!(rooms.apply(&frame("ready", ready)));
        assert_eq!(rooms.names().collect::<Vec<_>>(), ["big", "dev"]);
        assert_eq!(
            (
                rooms.get("dev").unwrap().members,
                ids(rooms.get("dev").unwrap())
            ),
            (2, vec!["b"])
        );
        assert_eq!(rooms.get("big").unwrap().roster, None);

        assert!(rooms.apply(&frame(
            "new_user",
            json!({"id": "c", "name": "cat", "room": "dev"})
        )));
        // Told again (a replay): nothing new.
        rooms.apply(&frame(
            "new_user",
            json!({"id": "c", "name": "cat", "room": "dev"}),
        ));
        assert_eq!(rooms.get("dev").unwrap().members, 3);
        assert!(rooms.apply(&frame(
            "user_left",
            json!({"id": "b", "name": "bob", "room": "dev"})
        )));
        assert_eq!(
            (
                rooms.get("dev").unwrap().members,
                ids(rooms.get("dev").unwrap())
            ),
            (2, vec!["c"])
        );

        assert!(rooms.apply(&frame(
            "room_count",
            json!({"room": "big", "members": 5001})
        )));
        assert_eq!(rooms.get("big").unwrap().members, 5001);

        let joined = json!({"room": "ops", "clients": [{"id": "d", "name": "dee"}], "members": 2});
        assert!(rooms.apply(&frame("joined", joined)));
        assert_eq!(ids(rooms.get("ops").unwrap()), ["d"]);
        assert!(rooms.apply(&frame("left", json!({"room": "big"}))));
        assert!(!rooms.apply(&frame("left", json!({"room": "big"}))));
        assert_eq!(rooms.names().collect::<Vec<_>>(), ["dev", "ops"]);

        // Other events change nothing.
        assert!(!rooms.apply(&frame(
            "client_broadcast",
            json!({"room": "dev", "message": 1})
        )));
        assert_eq!(rooms.len(), 2);
    }
}
