//! Sessions in transit: those on their way here (each an [`Arrival`], buffering what concerns
//! it until its mailbox arrives), and those lately sent away (to forward what still reaches
//! them here). A session arrives by *migrating* (its stream attached here and this instance
//! pulled it, see [`migrate`](super::migrate)) or by being *drained* here by an instance that
//! stops (see [`drain`](super::drain)).
//!
//! The table is behind the migration lock (its place in the lock order: the
//! [cluster doc](super)): it is held while a bus message is applied and while an arrival
//! completes, so the two never interleave.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::request::{Request, Requests};
use super::sequence::{Numbers, Points};
use super::wire::{DRAINED, Message};
use crate::identity::{RoomName, SessionId, TokenHash};
use crate::registry::Snapshot;

/// Sessions on their way here, behind the migration lock, and the pulls awaiting a snapshot.
#[derive(Default)]
pub(super) struct Migrations {
    /// The migration lock.
    transit: Mutex<Transit>,
    /// Snapshots awaited from the sessions' old homes.
    snapshots: Requests<Pulled>,
}

/// The answer to a `Migrate` request.
pub(super) enum Pulled {
    /// The session, and the last number its old home applied on each of its room lines (with
    /// rooms sharded).
    Snapshot(Box<Snapshot>, Option<Points>),
    /// The session is on its way to the instance that answered (drained by an instance that
    /// is stopping): ask again in a moment. Also what our own request gets when the session
    /// arrived here another way meanwhile (drained here, a late answer): look again.
    NotYet,
}

/// Arrivals in progress, and where sessions sent away from here went.
#[derive(Default)]
pub(super) struct Transit {
    /// Sessions on their way to this instance.
    arrivals: HashMap<SessionId, Arrival>,
    /// Sessions sent from here: to which instance, and when.
    away: HashMap<SessionId, (Uuid, Instant)>,
    /// Waits for sessions on their way here opened so far (drains to here, late answers):
    /// each has a number, which [`Transit::expire`] ends.
    waits: u64,
    /// Sessions homed here that are joining rooms: kept here until their `enter` comes back
    /// (see [`rooms`](super::rooms)), or until the instant.
    pinned: HashMap<SessionId, (Vec<RoomName>, Instant)>,
}

/// How long a session sent away is remembered, to forward direct messages sent to it here by
/// senders that read the directory before its new home wrote it.
const FORWARD_FOR: Duration = Duration::from_secs(30);

/// What an arrival kept on the way.
///
/// With rooms sharded, an instance reads a room's channel on another connection than the bus
/// (another shard), so there is no one order in which "before the request" means the same for
/// room traffic at both ends. Room lines are numbered instead: the arrival keeps every message
/// of a room line that concerns the session from its start (`from`: the last number applied
/// here on each line then), and its old home says the last number it applied on each (a home
/// lets a pulled session go only once that is at least `from`, see
/// [`dispatch`](super::dispatch)): what comes after that is applied, the rest was applied
/// there. The arrival ends only once this instance has applied as far on each line itself
/// ([`Sequence::reach`](super::sequence::Sequence::reach)): a message numbered before that
/// and read here after the arrival would reach the session a second time. Where a home had applied less than `from` (a drain, which cannot wait), the numbers
/// in between went by here before the arrival began: each counts as missed (`lagged`).
#[derive(Default)]
pub(super) struct Held {
    buffer: Vec<Buffered>,
    /// With rooms sharded: the last number applied here on each room line when the arrival
    /// began.
    from: Option<Arc<Points>>,
}

/// One message kept for an arrival.
struct Buffered {
    message: Message,
    /// Its room line and number, for a numbered message on a room's channel.
    line: Option<(RoomName, u64)>,
    /// Kept after the arrival's own request came back (what the bus's order says is after),
    /// or, with rooms sharded, the session's own entering or leaving a room whose other
    /// members do not hear of it (no number says whether its old home applied it; applying
    /// it again changes nothing: it is in the room, or out, already).
    seen: bool,
}

/// Whether `message` puts `session` itself into a room or out of one.
fn moves(message: &Message, session: SessionId) -> bool {
    matches!(message, Message::Enter { peer, .. } | Message::Exit { peer, .. } if peer.id == session)
}

impl Held {
    fn starting(from: Option<Arc<Points>>) -> Self {
        Held {
            buffer: Vec::new(),
            from,
        }
    }

    /// The messages to apply to the session, in order, once its old home says it applied
    /// `applied` on its room lines (`None`: a home that does not say, or rooms not sharded:
    /// what came after the request); and how many numbers of its `rooms`' lines went by here
    /// before the arrival began that its old home had not applied.
    pub(super) fn after(self, applied: Option<&Points>, rooms: &[RoomName]) -> (u64, Vec<Message>) {
        let missed = match (applied, &self.from) {
            (Some(applied), Some(from)) => rooms
                .iter()
                .filter_map(|room| Some(from.get(room)?.saturating_sub(*applied.get(room)?)))
                .sum(),
            _ => 0,
        };
        let after = |b: &Buffered| match (&b.line, applied) {
            (Some((room, seq)), Some(applied)) if applied.contains_key(room) => {
                *seq > applied[room]
            }
            _ => b.seen,
        };
        let messages = self.buffer.into_iter().filter(after);
        (missed, messages.map(|b| b.message).collect())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buffer.len()
    }
}

/// A session on its way here.
pub(super) struct Arrival {
    /// The request id of our `Migrate` message ([`DRAINED`] when we did not ask).
    req: u64,
    /// Our own request came back on the bus: from now on, buffer what concerns the session.
    seen: bool,
    held: Held,
    /// For a session drained here: the hash of its token (its client is not here to show
    /// the token itself), and which `Drain` message announced it (or which wait for a late
    /// answer, see `late`).
    drained: Option<(TokenHash, u64)>,
    /// Our own request timed out, but its answer may still come (the old home may have
    /// exported the session already): it is kept, buffering, to adopt then. Such an arrival answers
    /// nobody else's request: another instance may hold the session.
    late: bool,
}

impl Transit {
    /// Keeps `message` for every arrival past its own request that it concerns, and with
    /// rooms sharded, every numbered message of a room line since the arrival began (`numbers`).
    pub(super) fn buffer(&mut self, message: &Message, numbers: Option<&Numbers>) {
        let line = numbers.and_then(|n| Some((n.room.clone()?, n.seq)));
        for (session, m) in &mut self.arrivals {
            let moves = moves(message, *session);
            let kept = m.seen || (m.held.from.is_some() && (line.is_some() || moves));
            if kept && message.concerns(*session) {
                m.held.buffer.push(Buffered {
                    message: message.clone(),
                    line: line.clone(),
                    seen: m.seen || moves,
                });
            }
        }
    }

    /// Keeps `session` here until its `enter` into each of `rooms` comes back, for at most `hold`.
    pub(super) fn pin(&mut self, session: SessionId, rooms: Vec<RoomName>, hold: Duration) {
        let until = Instant::now() + hold;
        let now = Instant::now();
        self.pinned.retain(|_, (_, when)| *when > now);
        let (pinned, when) = self.pinned.entry(session).or_insert((Vec::new(), until));
        pinned.extend(rooms);
        *when = until;
    }

    /// Whether `session` is joining a room and must not migrate yet.
    pub(super) fn is_pinned(&self, session: SessionId) -> bool {
        self.pinned
            .get(&session)
            .is_some_and(|(_, until)| *until > Instant::now())
    }

    /// `session`'s `enter` into `room` came back: it may migrate again once its other joins did.
    pub(super) fn entered(&mut self, session: SessionId, room: &RoomName) {
        if let Some((rooms, _)) = self.pinned.get_mut(&session) {
            rooms.retain(|r| r != room);
            if rooms.is_empty() {
                self.pinned.remove(&session);
            }
        }
    }

    /// Our request `req` for `session` came back: buffering starts.
    pub(super) fn seen(&mut self, session: SessionId, req: u64) {
        if let Some(m) = self.arrivals.get_mut(&session)
            && m.req == req
        {
            m.seen = true;
        }
    }

    /// `session` was sent from here to `instance`.
    pub(super) fn sent(&mut self, session: SessionId, instance: Uuid) {
        let now = Instant::now();
        self.away
            .retain(|_, (_, when)| now.duration_since(*when) < FORWARD_FOR);
        self.away.insert(session, (instance, now));
    }

    /// Where `session` was sent from here lately, if it was.
    pub(super) fn sent_to(&self, session: SessionId) -> Option<Uuid> {
        self.away
            .get(&session)
            .filter(|(_, when)| when.elapsed() < FORWARD_FOR)
            .map(|(instance, _)| *instance)
    }

    /// The request id of the arrival of `session`, if it is on its way here.
    pub(super) fn request(&self, session: SessionId) -> Option<u64> {
        self.arrivals.get(&session).map(|m| m.req)
    }

    /// Whether `session` is on its way here from an instance that is stopping.
    pub(super) fn is_drained_here(&self, session: SessionId) -> bool {
        self.arrivals
            .get(&session)
            .is_some_and(|m| m.drained.is_some() && !m.late)
    }

    /// Whether `session` is handed here without a pull waiting for it: drained here, adopted
    /// here, or the late answer to a pull that timed out.
    pub(super) fn is_handed_here(&self, session: SessionId) -> bool {
        self.arrivals
            .get(&session)
            .is_some_and(|m| m.drained.is_some())
    }

    /// A number for one wait that [`Transit::expire`] ends.
    pub(super) fn next_wait(&mut self) -> u64 {
        self.waits += 1;
        self.waits
    }

    /// Our request `req` for `session` timed out: keep the arrival for a late answer, as
    /// [`Transit::expire`]`(wait)` will end it. False when the arrival is no longer ours.
    pub(super) fn wait_late(
        &mut self,
        session: SessionId,
        req: u64,
        hash: TokenHash,
        wait: u64,
    ) -> bool {
        match self.arrivals.get_mut(&session) {
            Some(m) if m.req == req && m.drained.is_none() => {
                m.drained = Some((hash, wait));
                m.late = true;
                true
            }
            _ => false,
        }
    }

    /// The old home says `session` is not coming: forgets its drain here (not a late wait
    /// of ours: that answer comes from our own request, whatever a drain said).
    pub(super) fn not_coming(&mut self, session: SessionId) {
        if self.arrivals.get(&session).is_some_and(|m| !m.late) {
            self.take_drained(session);
        }
    }

    /// `sessions` are being drained here: buffer from this point on. Returns which wait
    /// this is.
    ///
    /// A session we asked for ourselves, whose request has not come back yet, is now drained
    /// off here instead: its old home exports it at this point, not at our request's, so
    /// buffering starts here. (One whose request came back first reached its old home first:
    /// it comes as the answer to that request.)
    /// With rooms sharded, `from` is where each room line stands here now.
    pub(super) fn expect_drained(
        &mut self,
        sessions: Vec<(SessionId, TokenHash)>,
        from: Option<Arc<Points>>,
    ) -> u64 {
        let drain = self.next_wait();
        for (session, hash) in sessions {
            let m = self.arrivals.entry(session).or_insert(Arrival {
                req: DRAINED,
                seen: false,
                held: Held::starting(from.clone()),
                drained: None,
                late: false,
            });
            if !m.seen {
                m.seen = true;
                m.late = false;
                m.drained = Some((hash, drain));
            }
        }
        drain
    }

    /// `sessions` of a dead instance were adopted here (with rooms sharded, see
    /// [`recovery`](super::recovery)): keep what concerns them from this point on, until
    /// they are created here. Any arrival of theirs ends: nothing comes from a dead home.
    /// Returns which wait this is.
    pub(super) fn expect_adopted(&mut self, sessions: Vec<(SessionId, TokenHash)>) -> u64 {
        let wait = self.next_wait();
        for (session, hash) in sessions {
            let adopted = Arrival {
                req: DRAINED,
                seen: true,
                held: Held::default(),
                drained: Some((hash, wait)),
                late: false,
            };
            self.arrivals.insert(session, adopted);
        }
        wait
    }

    /// Ends the arrival of a session drained here: its token hash, what it buffered, and the
    /// request of ours it answers instead, if any.
    pub(super) fn take_drained(
        &mut self,
        session: SessionId,
    ) -> Option<(TokenHash, Held, Option<u64>)> {
        self.arrivals.get(&session)?.drained.as_ref()?;
        let m = self.arrivals.remove(&session)?;
        let asked = (m.req != DRAINED).then_some(m.req);
        Some((m.drained?.0, m.held, asked))
    }

    /// Ends wait number `wait`: forgets the sessions it waited for that never arrived; how many.
    pub(super) fn expire(&mut self, wait: u64) -> usize {
        let before = self.arrivals.len();
        self.arrivals
            .retain(|_, m| m.drained.as_ref().is_none_or(|(_, n)| *n != wait));
        before - self.arrivals.len()
    }

    /// `session` left: forgets its arrival here if it was drained (or waits for a late
    /// answer), and returns the request id of ours to withdraw, if any.
    pub(super) fn left(&mut self, session: SessionId) -> Option<u64> {
        match self.take_drained(session) {
            Some((.., asked)) => asked,
            None => self.request(session),
        }
    }

    /// `session`'s home died and an instance adopted it (see `sequence`): nothing will come
    /// from the old home. Forgets its arrival here as [`Transit::left`] does, and returns the
    /// request id of ours to answer "ask again" (its new home will answer, or it is here).
    pub(super) fn orphaned(&mut self, session: SessionId) -> Option<u64> {
        self.left(session)
    }
}

impl Migrations {
    pub(super) fn lock(&self) -> MutexGuard<'_, Transit> {
        self.transit.lock().expect("migration lock poisoned")
    }

    /// A fresh pull, waiting for its snapshot.
    pub(super) fn open(&self) -> Request<'_, Pulled> {
        self.snapshots.open()
    }

    /// The answer to pull `req` arrived; false when nobody waits for it any more.
    pub(super) fn answer(&self, req: u64, pulled: Pulled) -> bool {
        self.snapshots.answer(req, pulled)
    }

    /// Pull `req` will get no snapshot (the session left).
    pub(super) fn withdraw(&self, req: u64) {
        self.snapshots.withdraw(req);
    }

    /// Starts pull `req` of `session` (its caller holds `transit`, the lock); the guard ends
    /// it however its puller returns. `None` when the session is already on its way here.
    /// With rooms sharded, `from` is where the session's room lines stand here now.
    pub(super) fn begin<'a>(
        &'a self,
        transit: &mut Transit,
        session: SessionId,
        req: u64,
        from: Option<Arc<Points>>,
    ) -> Option<PullGuard<'a>> {
        if transit.arrivals.contains_key(&session) {
            return None;
        }
        let fresh = Arrival {
            req,
            seen: false,
            held: Held::starting(from),
            drained: None,
            late: false,
        };
        transit.arrivals.insert(session, fresh);
        Some(PullGuard {
            migrations: self,
            session,
            req,
        })
    }
}

impl Transit {
    /// Ends our pull of `session`, which got its snapshot: what it buffered on the way.
    pub(super) fn take_pulled(&mut self, session: SessionId) -> Held {
        self.arrivals
            .remove(&session)
            .map(|a| a.held)
            .unwrap_or_default()
    }
}

/// Forgets a pull when its puller returns, whichever way.
pub(super) struct PullGuard<'a> {
    migrations: &'a Migrations,
    session: SessionId,
    req: u64,
}

impl Drop for PullGuard<'_> {
    fn drop(&mut self) {
        let mut transit = self.migrations.lock();
        let ours = transit
            .arrivals
            .get(&self.session)
            .is_some_and(|a| a.req == self.req && a.drained.is_none());
        if ours {
            transit.arrivals.remove(&self.session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{DisplayName, Token};
    use crate::registry::{Event, Peer};
    use serde_json::value::RawValue;

    #[test]
    fn a_session_drained_here_buffers_what_concerns_it_until_it_arrives() {
        let ann = SessionId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        let bob = Peer {
            id: SessionId::parse("0b7e5d2c-1d9e-4b8f-9a77-3f2a1c4e5d6f").unwrap(),
            name: DisplayName::parse("bob").unwrap(),
            user: None,
        };
        let hash = TokenHash::of(&Token::issue(ann));
        let mut transit = Transit::default();
        let first = transit.expect_drained(vec![(ann, hash.clone())], None);
        let again = transit.expect_drained(vec![(ann, hash.clone())], None);
        let direct = |n: &str| Message::Direct {
            req: 1,
            origin: Uuid::nil(),
            to: ann,
            event: Event::direct(&bob, ann, RawValue::from_string(n.into()).unwrap()),
            key: None,
        };
        transit.buffer(&direct("1"), None);
        transit.buffer(
            &Message::Join {
                peer: bob.clone(),
                rooms: Vec::new(),
                sizes: Vec::new(),
            },
            None,
        );
        assert_eq!(
            transit.expire(again),
            0,
            "the second drain found it on its way"
        );
        let (arrived, buffer, asked) = transit.take_drained(ann).expect("drained here");
        assert_eq!(asked, None);
        assert!(arrived == hash);
        assert_eq!(buffer.len(), 2);
        assert!(transit.take_drained(ann).is_none(), "taken once");
        assert_eq!(
            transit.expire(first),
            0,
            "an arrived session is not expired"
        );

        // One that leaves on the way is forgotten; no request of ours to withdraw.
        transit.expect_drained(vec![(ann, hash.clone())], None);
        assert_eq!(transit.left(ann), None);
        assert!(transit.request(ann).is_none());

        // A pull of ours whose request has not come back becomes the drain's (its old
        // home exports it at the drain); one whose request came back stays ours.
        let ours = |seen| Arrival {
            req: 7,
            seen,
            held: Held::default(),
            drained: None,
            late: false,
        };
        transit.arrivals.insert(ann, ours(false));
        transit.expect_drained(vec![(ann, hash.clone())], None);
        transit.buffer(&direct("2"), None);
        let (_, buffer, asked) = transit.take_drained(ann).expect("now drained here");
        assert_eq!((buffer.len(), asked), (1, Some(7)));
        transit.arrivals.insert(ann, ours(true));
        transit.expect_drained(vec![(ann, hash.clone())], None);
        assert!(transit.take_drained(ann).is_none(), "still our own pull");
        assert_eq!(transit.request(ann), Some(7));
        transit.arrivals.clear();

        // A request of ours that timed out waits for a late answer, silently: a drain's
        // "not coming" does not end it, and it is not "on its way" to anyone asking.
        transit.arrivals.insert(ann, ours(true));
        let wait = transit.next_wait();
        assert!(transit.wait_late(ann, 7, hash.clone(), wait));
        assert!(!transit.is_drained_here(ann));
        transit.not_coming(ann);
        transit.buffer(&direct("3"), None);
        let (_, buffer, asked) = transit
            .take_drained(ann)
            .expect("the late answer is adopted");
        assert_eq!((buffer.len(), asked), (1, Some(7)));
        assert!(
            !transit.wait_late(ann, 7, hash.clone(), wait),
            "no arrival left to keep"
        );

        // One that never arrives is forgotten by its own drain's expiry only.
        let late = transit.expect_drained(vec![(ann, hash)], None);
        assert_eq!(transit.expire(first), 0);
        assert_eq!(transit.expire(late), 1);
        assert!(!transit.is_drained_here(ann));
    }

    #[test]
    fn with_rooms_sharded_an_arrival_applies_each_room_after_what_its_old_home_applied() {
        let ann = SessionId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        let bob = Peer {
            id: SessionId::parse("0b7e5d2c-1d9e-4b8f-9a77-3f2a1c4e5d6f").unwrap(),
            name: DisplayName::parse("bob").unwrap(),
            user: None,
        };
        let (dev, ops) = (
            RoomName::parse("dev").unwrap(),
            RoomName::parse("ops").unwrap(),
        );
        let said = |room: &RoomName, n: &str| Message::Broadcast {
            from: bob.clone(),
            room: room.clone(),
            message: RawValue::from_string(n.into()).unwrap(),
        };
        let numbers = |room: &RoomName, seq| Numbers {
            room: Some(room.clone()),
            seq,
            all: None,
        };
        let mut transit = Transit::default();
        // Here, dev stood at 10 and ops at 4 when the pull began.
        let from = Arc::new(Points::from([(dev.clone(), 10), (ops.clone(), 4)]));
        let migrations = Migrations::default();
        let guard = migrations.begin(&mut transit, ann, 7, Some(from));
        assert!(guard.is_some());
        // Room traffic is kept before the request comes back; bus traffic only after.
        transit.buffer(&said(&dev, "11"), Some(&numbers(&dev, 11)));
        transit.buffer(&said(&dev, "12"), Some(&numbers(&dev, 12)));
        transit.buffer(&said(&RoomName::lobby(), "\"bus early\""), None);
        transit.seen(ann, 7);
        transit.buffer(&said(&ops, "5"), Some(&numbers(&ops, 5)));
        transit.buffer(&said(&RoomName::lobby(), "\"bus late\""), None);
        let held = transit.take_pulled(ann);
        assert_eq!(held.len(), 4);
        // Its old home applied dev to 11 and ops to 4: dev's 12, ops' 5 and the bus's late.
        let applied = Points::from([(dev.clone(), 11), (ops.clone(), 4)]);
        let (missed, messages) = held.after(Some(&applied), &[dev.clone(), ops.clone()]);
        let said: Vec<String> = messages
            .iter()
            .map(|m| match m {
                Message::Broadcast { message, .. } => message.get().to_owned(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(said, ["12", "5", "\"bus late\""]);
        assert_eq!(missed, 0);

        // A drained session whose old home had applied dev only to 8: 9 and 10 went by here
        // before the arrival began, and are counted as missed.
        let from = Arc::new(Points::from([(dev.clone(), 10)]));
        let hash = TokenHash::of(&Token::issue(ann));
        transit.expect_drained(vec![(ann, hash)], Some(from));
        let (_, held, _) = transit.take_drained(ann).unwrap();
        let (missed, _) = held.after(
            Some(&Points::from([(dev.clone(), 8)])),
            std::slice::from_ref(&dev),
        );
        assert_eq!(missed, 2);
    }
}
