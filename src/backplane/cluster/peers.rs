//! The peer directory: who is in which room, held in memory by every instance, so that the
//! roster a `ready` carries costs no read of the whole [`directory`](super::directory).
//!
//! Read from Redis, a roster was a walk of the whole directory hash per attach: a reconnect
//! storm of N sessions after a deploy cost N reads of N entries. Here it is kept current by
//! the messages every instance reads anyway ([`Peers::apply`]: joins, leaves, rooms entered
//! and left; a migration or an adoption moves a session, not its rooms), and rebuilt from one
//! read of the directory ([`Peers::reload`]) after each (re)subscription, since what was
//! published while an instance was cut off is not replayed to it.
//!
//! Every answer is checked against the room's member count, which the directory's scripts
//! keep beside the entries (one `HGET`): a room whose count here differs is read from the
//! directory as before, and the peer directory is reloaded (at most once per
//! [`RELOAD_PAUSE`]). So a roster is never wrong for long, whatever was missed: messages
//! published while this instance re-subscribed, or sessions that other instances re-registered
//! after Redis restarted empty (which they write without a message): their counts differ until
//! the reload after the last of them. An instance that reads a room's messages only while it
//! homes members there must forget that room's members when it stops reading them.
//!
//! A reload reads the directory while messages keep coming: the changes applied meanwhile are
//! kept in a journal and applied again onto what it read. Each is idempotent (a set insert or
//! removal), and every directory write comes before its message, so what the read missed is
//! in the journal, and what it already had is not undone.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::directory::{Directory, Entry};
use super::wire::Message;
use crate::identity::{RoomName, SessionId};
use crate::registry::Peer;

/// Least time between two reloads a mismatch asks for.
pub(super) const RELOAD_PAUSE: Duration = Duration::from_secs(1);

/// One change of membership, as a message says it.
#[derive(Clone, Debug)]
enum Change {
    Joined(Peer, Vec<RoomName>),
    Left(SessionId),
    Entered(Peer, RoomName),
    Exited(SessionId, RoomName),
}

impl Change {
    /// What `message` changes of who is in which room, if anything.
    fn of(message: &Message) -> Option<Change> {
        match message {
            Message::Join { peer, rooms, .. } => Some(Change::Joined(peer.clone(), rooms.clone())),
            Message::Leave { peer, .. } => Some(Change::Left(peer.id)),
            Message::Enter { peer, room, .. } => Some(Change::Entered(peer.clone(), room.clone())),
            Message::Exit { peer, room, .. } => Some(Change::Exited(peer.id, room.clone())),
            _ => None,
        }
    }
}

/// Who is in which room, as far as this instance read it.
#[derive(Default)]
struct Rosters {
    /// Each session as others see it.
    peers: HashMap<SessionId, Peer>,
    /// Each room's members.
    rooms: HashMap<RoomName, HashSet<SessionId>>,
}

impl Rosters {
    fn from_entries(entries: Vec<(SessionId, Entry)>) -> Self {
        let mut rosters = Rosters::default();
        for (id, entry) in entries {
            let rooms = entry.rooms.clone();
            rosters.change(Change::Joined(entry.peer(id), rooms));
        }
        rosters
    }

    fn change(&mut self, change: Change) {
        match change {
            Change::Joined(peer, rooms) => {
                for room in rooms {
                    self.rooms.entry(room).or_default().insert(peer.id);
                }
                self.peers.insert(peer.id, peer);
            }
            Change::Left(id) => {
                if self.peers.remove(&id).is_some() {
                    self.rooms.retain(|_, members| {
                        members.remove(&id);
                        !members.is_empty()
                    });
                }
            }
            Change::Entered(peer, room) => {
                self.rooms.entry(room).or_default().insert(peer.id);
                self.peers.insert(peer.id, peer);
            }
            Change::Exited(id, room) => {
                if let Some(members) = self.rooms.get_mut(&room) {
                    members.remove(&id);
                    if members.is_empty() {
                        self.rooms.remove(&room);
                    }
                }
            }
        }
    }
}

/// The peer directory's state, under one lock.
#[derive(Default)]
struct State {
    rosters: Rosters,
    /// Whether `rosters` follows the bus: read once since the last (re)subscription.
    current: bool,
    /// Changes applied since the oldest reload in flight began; `None` when none is.
    journal: Option<Vec<Change>>,
    /// The newest reload begun: only its result is kept.
    generation: u64,
    /// When the last reload a mismatch asked for began.
    asked: Option<Instant>,
}

/// Who is in which room, kept in memory (module doc).
///
/// A `std` mutex, held only to read or change the maps, never across an `.await`. Lock
/// order: after the migration lock (messages are applied under it).
#[derive(Default)]
pub(super) struct Peers {
    state: Mutex<State>,
    /// Held by the reload a mismatch asked for: a storm of attaches that all disagree waits
    /// for that one read of the directory instead of each making its own.
    reloading: tokio::sync::Mutex<()>,
}

impl Peers {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("peers lock")
    }

    /// Applies what `message` changes of who is in which room (in bus order, or at once by the
    /// instance that wrote the change, before publishing it: applying it twice changes nothing).
    pub(super) fn apply(&self, message: &Message) {
        let Some(change) = Change::of(message) else {
            return;
        };
        let mut state = self.lock();
        if let Some(journal) = state.journal.as_mut() {
            journal.push(change.clone());
        }
        state.rosters.change(change);
    }

    /// The subscription was lost: what is published until the next reload is not read here.
    pub(super) fn lost(&self) {
        self.lock().current = false;
    }

    /// The members of `room`, if what this instance holds is current and counts `size` of them
    /// (the room's count in the directory).
    pub(super) fn members(&self, room: &RoomName, size: usize) -> Option<Vec<Peer>> {
        let state = self.lock();
        if !state.current {
            return None;
        }
        let members = state.rosters.rooms.get(room);
        if members.map_or(0, HashSet::len) != size {
            debug!(%room, size, "the peer directory's count differs from the directory's");
            return None;
        }
        let peers = &state.rosters.peers;
        Some(
            members
                .into_iter()
                .flatten()
                .filter_map(|id| peers.get(id).cloned())
                .collect(),
        )
    }

    /// The members of `room`, counting `size`, from memory; when the counts disagree, after a
    /// reload (one at a time, at most one per [`RELOAD_PAUSE`]: a mismatch while one runs
    /// waits for it and looks again). `None` when they still disagree: read the directory.
    pub(super) async fn members_reloading(
        &self,
        room: &RoomName,
        size: usize,
        directory: &Directory,
    ) -> Option<Vec<Peer>> {
        if let Some(members) = self.members(room, size) {
            return Some(members);
        }
        let _turn = self.reloading.lock().await;
        if let Some(members) = self.members(room, size) {
            return Some(members);
        }
        if !self.may_reload() {
            return None;
        }
        self.reload(directory).await;
        self.members(room, size)
    }

    /// Whether a mismatch may reload now: none did within [`RELOAD_PAUSE`].
    fn may_reload(&self) -> bool {
        let mut state = self.lock();
        let due = state.asked.is_none_or(|at| at.elapsed() >= RELOAD_PAUSE);
        if due {
            state.asked = Some(Instant::now());
        }
        due
    }

    /// Rebuilds the peer directory from one read of `directory`, keeping the changes applied
    /// while it read (module doc). On failure the previous state stays, marked as it was.
    pub(super) async fn reload(&self, directory: &Directory) {
        let generation = {
            let mut state = self.lock();
            state.journal.get_or_insert_with(Vec::new);
            state.generation += 1;
            state.generation
        };
        let read = directory.entries().await;
        let mut state = self.lock();
        if state.generation != generation {
            return; // a newer reload is in flight: it keeps the journal and finishes the work
        }
        let journal = state.journal.take().unwrap_or_default();
        match read {
            Ok(entries) => {
                let mut rosters = Rosters::from_entries(entries);
                for change in journal {
                    rosters.change(change);
                }
                state.rosters = rosters;
                state.current = true;
            }
            Err(err) => warn!(error = %err, "could not read the directory into the peer directory"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DisplayName;

    fn peer(name: &str) -> Peer {
        Peer {
            id: SessionId::random(),
            name: DisplayName::parse(name).unwrap(),
            user: None,
        }
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn names(peers: Option<Vec<Peer>>) -> Option<Vec<String>> {
        peers.map(|peers| {
            let mut names: Vec<String> = peers.iter().map(|p| p.name.as_str().to_owned()).collect();
            names.sort();
            names
        })
    }

    fn current() -> Peers {
        let peers = Peers::default();
        peers.lock().current = true;
        peers
    }

    #[test]
    fn joins_leaves_and_room_changes_keep_the_rosters() {
        let peers = current();
        let (ann, bob) = (peer("ann"), peer("bob"));
        let lobby = RoomName::lobby();
        peers.apply(&Message::Join {
            peer: ann.clone(),
            rooms: vec![lobby.clone()],
            sizes: vec![1],
        });
        peers.apply(&Message::Join {
            peer: bob.clone(),
            rooms: vec![lobby.clone()],
            sizes: vec![2],
        });
        peers.apply(&Message::Enter {
            peer: bob.clone(),
            room: room("den"),
            members: 1,
            roster: None,
        });
        // Applied twice (by its writer, then from the bus): no change.
        peers.apply(&Message::Enter {
            peer: bob.clone(),
            room: room("den"),
            members: 1,
            roster: None,
        });
        assert_eq!(
            names(peers.members(&lobby, 2)),
            Some(vec!["ann".into(), "bob".into()])
        );
        assert_eq!(
            names(peers.members(&room("den"), 1)),
            Some(vec!["bob".into()])
        );
        peers.apply(&Message::Exit {
            peer: bob.clone(),
            room: room("den"),
            members: 0,
        });
        assert_eq!(names(peers.members(&room("den"), 0)), Some(vec![]));
        peers.apply(&Message::Leave {
            peer: ann,
            rooms: vec![lobby.clone()],
            sizes: vec![1],
        });
        assert_eq!(names(peers.members(&lobby, 1)), Some(vec!["bob".into()]));
    }

    #[test]
    fn a_count_that_differs_or_a_lost_subscription_answers_nothing() {
        let peers = current();
        let lobby = RoomName::lobby();
        peers.apply(&Message::Join {
            peer: peer("ann"),
            rooms: vec![lobby.clone()],
            sizes: vec![1],
        });
        assert!(
            peers.members(&lobby, 2).is_none(),
            "a member this instance did not read"
        );
        assert!(peers.members(&lobby, 1).is_some());
        peers.lost();
        assert!(peers.members(&lobby, 1).is_none());
        assert!(Peers::default().members(&lobby, 0).is_none(), "never read");
    }

    #[test]
    fn mismatches_reload_at_most_once_a_pause() {
        let peers = Peers::default();
        assert!(peers.may_reload());
        assert!(!peers.may_reload());
    }
}
