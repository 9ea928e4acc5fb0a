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
//! keep beside the entries (one `HGET`): when a room's count here differs, the peer directory
//! is reloaded (at most once per [`RELOAD_PAUSE`]; a mismatch soon after one waits for the
//! next), and the room is read from the directory as before if they still differ. So a roster is never wrong for long, whatever was missed: messages
//! published while this instance re-subscribed, or sessions that other instances re-registered
//! after Redis restarted empty (which they write without a message): their counts differ until
//! the reload after the last of them.
//!
//! An instance reads a room's messages only while it homes members there (see
//! [`subscriptions`](super::subscriptions)), so the peer directory holds only the rooms read
//! here (and `lobby`, on the bus): [`Subscriptions`](super::subscriptions::Subscriptions) tells
//! it when it starts and stops reading one ([`Peers::reading`], [`Peers::stopped`]). A room it
//! stops reading is forgotten, because a count check cannot tell members that changed while
//! nobody here read them if their number did not; a room it starts reading again holds only
//! the members it heard of since, a part of the real ones, so the count check catches every
//! difference: a room read again, or for the first time since the last reload, costs a
//! reload. A room not read here is answered from the directory.
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
    fn from_entries(entries: Vec<(SessionId, Entry)>, read: impl Fn(&RoomName) -> bool) -> Self {
        let mut rosters = Rosters::default();
        for (id, entry) in entries {
            let rooms = entry.rooms.clone();
            rosters.change(Change::Joined(entry.peer(id), rooms), &read);
        }
        rosters
    }

    /// Forgets every room but those `read` says, and the sessions left in none.
    fn keep(&mut self, read: impl Fn(&RoomName) -> bool) {
        let before = self.rooms.len();
        self.rooms.retain(|room, _| read(room));
        if self.rooms.len() == before {
            return;
        }
        let kept: HashSet<SessionId> = self.rooms.values().flatten().copied().collect();
        self.peers.retain(|id, _| kept.contains(id));
    }

    /// Applies `change` to the rooms `read` says (every member of a room kept is in `peers`).
    fn change(&mut self, change: Change, read: impl Fn(&RoomName) -> bool) {
        match change {
            Change::Joined(peer, rooms) => {
                let mut kept = false;
                for room in rooms.into_iter().filter(|room| read(room)) {
                    self.rooms.entry(room).or_default().insert(peer.id);
                    kept = true;
                }
                if kept {
                    self.peers.insert(peer.id, peer);
                }
            }
            Change::Left(id) => {
                if self.peers.remove(&id).is_some() {
                    self.rooms.retain(|_, members| {
                        members.remove(&id);
                        !members.is_empty()
                    });
                }
            }
            Change::Entered(peer, room) if read(&room) => {
                self.rooms.entry(room).or_default().insert(peer.id);
                self.peers.insert(peer.id, peer);
            }
            Change::Entered(..) => {}
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
    /// When the last reload a mismatch asked for begins.
    asked: Option<Instant>,
    /// The rooms whose channels are read here, but `lobby` (always read, on the bus): the
    /// only ones `rosters` holds (module doc).
    read: HashSet<RoomName>,
    /// Rooms first read while a reload was in flight: what it read of them may predate what
    /// was missed before reading them, so it keeps only what was heard since.
    fresh: HashSet<RoomName>,
}

impl State {
    /// Whether `room`'s messages are read here.
    fn reads(&self, room: &RoomName) -> bool {
        room.is_lobby() || self.read.contains(room)
    }
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
        let State { rosters, read, .. } = &mut *state;
        rosters.change(change, |room| room.is_lobby() || read.contains(room));
    }

    /// This instance starts reading the channels of `rooms`: from now on their members are
    /// kept, starting from none (module doc). Called before the subscription is made.
    pub(super) fn reading(&self, rooms: &[RoomName]) {
        let mut state = self.lock();
        if state.journal.is_some() {
            let new: Vec<RoomName> = rooms
                .iter()
                .filter(|room| !state.reads(room))
                .cloned()
                .collect();
            state.fresh.extend(new);
        }
        state.read.extend(rooms.iter().cloned());
    }

    /// This instance stopped reading the channels of `rooms` (or lost its connection, and
    /// with it every room): forgets their members, which nothing here keeps current now.
    pub(super) fn stopped(&self, rooms: &[RoomName]) {
        let mut state = self.lock();
        for room in rooms {
            state.read.remove(room);
        }
        let State { rosters, read, .. } = &mut *state;
        rosters.keep(|room| room.is_lobby() || read.contains(room));
    }

    /// The subscription was lost: what is published until the next reload is not read here.
    pub(super) fn lost(&self) {
        self.lock().current = false;
    }

    /// The members of `room`, if what this instance holds is current and counts `size` of them
    /// (the room's count in the directory).
    pub(super) fn members(&self, room: &RoomName, size: usize) -> Option<Vec<Peer>> {
        let state = self.lock();
        if !state.current || !state.reads(room) {
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
    /// waits for it and looks again, one soon after waits for the next, so that a storm of
    /// attaches to rooms just read here costs a read of the directory a second, not one
    /// each). `None` when they still disagree, or the room is not read here: read the
    /// directory.
    pub(super) async fn members_reloading(
        &self,
        room: &RoomName,
        size: usize,
        directory: &Directory,
    ) -> Option<Vec<Peer>> {
        if let Some(members) = self.members(room, size) {
            return Some(members);
        }
        if !self.lock().reads(room) {
            return None; // not kept here: a reload would not help
        }
        let _turn = self.reloading.lock().await;
        if let Some(members) = self.members(room, size) {
            return Some(members);
        }
        let wait = self.next_reload();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        self.reload(directory).await;
        self.members(room, size)
    }

    /// Books the next reload: now, or [`RELOAD_PAUSE`] after the last one booked; how long
    /// until then.
    fn next_reload(&self) -> Duration {
        let mut state = self.lock();
        let now = Instant::now();
        let at = state
            .asked
            .map_or(now, |last| (last + RELOAD_PAUSE).max(now));
        state.asked = Some(at);
        at - now
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
                let fresh = std::mem::take(&mut state.fresh);
                let read = |room: &RoomName| state.reads(room);
                let known = |room: &RoomName| read(room) && !fresh.contains(room);
                let mut rosters = Rosters::from_entries(entries, known);
                for change in journal {
                    rosters.change(change, read);
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
        peers.reading(&[room("den")]);
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

    /// The fault the count check alone missed: a room stops being read here, its members
    /// change while their number does not, and it is read again.
    #[test]
    fn a_room_read_again_after_a_pause_is_not_answered_with_the_members_it_had() {
        let peers = current();
        let den = room("den");
        peers.reading(std::slice::from_ref(&den));
        let (ann, bob, cy) = (peer("ann"), peer("bob"), peer("cy"));
        for member in [&ann, &bob] {
            peers.apply(&Message::Enter {
                peer: member.clone(),
                room: den.clone(),
                members: 1,
                roster: None,
            });
        }
        assert_eq!(
            names(peers.members(&den, 2)),
            Some(vec!["ann".into(), "bob".into()])
        );
        peers.stopped(std::slice::from_ref(&den));
        assert!(peers.members(&den, 2).is_none(), "not read: not answered");
        // Meanwhile ann left den and cy entered it: two members still. Nothing read here, but
        // a message on the bus naming den (mixed versions) is not kept either.
        peers.apply(&Message::Join {
            peer: cy.clone(),
            rooms: vec![den.clone()],
            sizes: vec![2],
        });
        peers.reading(std::slice::from_ref(&den));
        assert!(
            peers.members(&den, 2).is_none(),
            "the old members are forgotten: the count differs, so a reload is asked for"
        );
        // What is heard once read again is kept, and is right.
        peers.apply(&Message::Exit {
            peer: bob.clone(),
            room: den.clone(),
            members: 1,
        });
        peers.apply(&Message::Enter {
            peer: bob,
            room: den.clone(),
            members: 2,
            roster: None,
        });
        assert!(peers.members(&den, 2).is_none(), "cy is not known here yet");
        assert_eq!(names(peers.members(&den, 1)), Some(vec!["bob".into()]));
        assert!(
            !peers.lock().rosters.peers.contains_key(&ann.id),
            "a session in no room read here is not kept"
        );
    }

    #[test]
    fn mismatches_reload_at_most_once_a_pause() {
        let peers = Peers::default();
        assert_eq!(peers.next_reload(), Duration::ZERO);
        let wait = peers.next_reload();
        assert!(wait > Duration::ZERO && wait <= RELOAD_PAUSE, "{wait:?}");
    }
}
