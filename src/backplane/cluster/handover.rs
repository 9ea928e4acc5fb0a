//! Hand-over: moving a session's mailbox to another instance, keeping its event ids.
//!
//! Pulled, when its stream attaches to B: B publishes `handover`; when B reads its own request
//! back it starts buffering every later message that concerns the session; the home A reads the
//! same request at the same point, exports the mailbox (closing its stream) and publishes
//! `handed_over`; B imports it and applies the buffer. Everything before the request reached A,
//! everything after it reaches B: nothing twice, nothing lost.
//!
//! Pushed, when its home A stops: see [`handoff`](super::handoff). This file keeps the table
//! of moves both kinds share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use uuid::Uuid;

use super::bus::Bus;
use super::request::{Requests, Unanswered};
use super::{ANSWER_TIMEOUT, Cluster, unavailable};
use crate::registry::{Closed, RegistryError, SessionId, Snapshot, Token, TokenHash};

/// Sessions being moved here.
#[derive(Default)]
pub(super) struct Handovers {
    /// What each move has buffered. First in the lock order (before the registry's locks): held
    /// while a bus message is applied and while a move completes, so the two never interleave.
    moving: Mutex<Moving>,
    /// Snapshots awaited from the sessions' old homes.
    snapshots: Requests<Handed>,
}

/// The answer to a `handover` request.
pub(super) enum Handed {
    Snapshot(Box<Snapshot>),
    /// The session is on its way to the instance that answered (handed off by an instance
    /// that is stopping): ask again in a moment. Also what our own request gets when the
    /// session arrived here another way meanwhile (a hand-off, a late answer): look again.
    NotYet,
}

/// Pause before asking again for a session that is on its way elsewhere.
const NOT_YET_PAUSE: Duration = Duration::from_millis(20);

/// The moves in progress, and where sessions handed away from here went.
#[derive(Default)]
pub(super) struct Moving {
    /// Moves to this instance, by session.
    moves: HashMap<SessionId, Move>,
    /// Sessions handed from here: to which instance, and when.
    away: HashMap<SessionId, (Uuid, Instant)>,
    /// Waits for sessions on their way here opened so far (hand-offs to here, late answers):
    /// each has a number, which [`Moving::expire`] ends.
    waits: u64,
}

/// The request id of a move this instance did not ask for: a session handed off to it.
pub(super) const PUSHED: u64 = 0;

/// How long a session handed away is remembered, to forward direct messages sent to it here by
/// senders that read the directory before its new home wrote it.
const FORWARD_FOR: Duration = Duration::from_secs(30);

struct Move {
    /// The request id of our `handover` message.
    req: u64,
    /// Our own request came back on the bus: from now on, buffer what concerns the session.
    seen: bool,
    buffer: Vec<Bus>,
    /// For a session handed off here: the hash of its token (its client is not here to show
    /// the token itself), and which `handoff` message announced it (or which wait for a late
    /// answer, see `late`).
    pushed: Option<(TokenHash, u64)>,
    /// Our own request timed out, but its answer may still come (the old home may have
    /// exported the session already): it is kept, buffering, to adopt then. Such a move answers
    /// nobody else's request: another instance may hold the session.
    late: bool,
}

impl Moving {
    /// Keeps `message` for every move past its own request that it concerns.
    pub(super) fn buffer(&mut self, message: &Bus) {
        for (session, m) in &mut self.moves {
            if m.seen && message.concerns(*session) {
                m.buffer.push(message.clone());
            }
        }
    }

    /// Our request `req` for `session` came back: buffering starts.
    pub(super) fn seen(&mut self, session: SessionId, req: u64) {
        if let Some(m) = self.moves.get_mut(&session)
            && m.req == req
        {
            m.seen = true;
        }
    }

    /// `session` was handed from here to `instance`.
    pub(super) fn moved(&mut self, session: SessionId, instance: Uuid) {
        let now = Instant::now();
        self.away
            .retain(|_, (_, when)| now.duration_since(*when) < FORWARD_FOR);
        self.away.insert(session, (instance, now));
    }

    /// Where `session` was handed from here lately, if it was.
    pub(super) fn moved_to(&self, session: SessionId) -> Option<Uuid> {
        self.away
            .get(&session)
            .filter(|(_, when)| when.elapsed() < FORWARD_FOR)
            .map(|(instance, _)| *instance)
    }

    /// The request id of the move of `session`, if it is moving here.
    pub(super) fn request(&self, session: SessionId) -> Option<u64> {
        self.moves.get(&session).map(|m| m.req)
    }

    /// Whether `session` is on its way here from an instance that is stopping.
    pub(super) fn is_pushed(&self, session: SessionId) -> bool {
        self.moves
            .get(&session)
            .is_some_and(|m| m.pushed.is_some() && !m.late)
    }

    /// A number for one wait that [`Moving::expire`] ends.
    pub(super) fn next_wait(&mut self) -> u64 {
        self.waits += 1;
        self.waits
    }

    /// Our request `req` for `session` timed out: keep the move for a late answer, as
    /// [`Moving::expire`]`(wait)` will end it. False when the move is no longer ours.
    fn wait_late(&mut self, session: SessionId, req: u64, hash: TokenHash, wait: u64) -> bool {
        match self.moves.get_mut(&session) {
            Some(m) if m.req == req && m.pushed.is_none() => {
                m.pushed = Some((hash, wait));
                m.late = true;
                true
            }
            _ => false,
        }
    }

    /// The old home says `session` is not coming: forgets its hand-off here (not a late wait
    /// of ours: that answer comes from our own request, whatever a hand-off said).
    pub(super) fn not_coming(&mut self, session: SessionId) {
        if self.moves.get(&session).is_some_and(|m| !m.late) {
            self.pushed(session);
        }
    }

    /// `sessions` are being handed off here: buffer from this point on. Returns which `handoff`
    /// this is.
    ///
    /// A session we asked for ourselves, whose request has not come back yet, is now handed
    /// off here instead: its old home exports it at this point, not at our request's, so
    /// buffering starts here. (One whose request came back first reached its old home first:
    /// it comes as the answer to that request.)
    pub(super) fn expect(&mut self, sessions: Vec<(SessionId, TokenHash)>) -> u64 {
        let handoff = self.next_wait();
        for (session, hash) in sessions {
            let m = self.moves.entry(session).or_insert(Move {
                req: PUSHED,
                seen: false,
                buffer: Vec::new(),
                pushed: None,
                late: false,
            });
            if !m.seen {
                m.seen = true;
                m.late = false;
                m.pushed = Some((hash, handoff));
            }
        }
        handoff
    }

    /// Ends the move of a session handed off here: its token hash, what it buffered, and the
    /// request of ours it answers instead, if any.
    pub(super) fn pushed(
        &mut self,
        session: SessionId,
    ) -> Option<(TokenHash, Vec<Bus>, Option<u64>)> {
        self.moves.get(&session)?.pushed.as_ref()?;
        let m = self.moves.remove(&session)?;
        let asked = (m.req != PUSHED).then_some(m.req);
        Some((m.pushed?.0, m.buffer, asked))
    }

    /// Ends wait number `wait`: forgets the sessions it waited for that never arrived; how many.
    pub(super) fn expire(&mut self, wait: u64) -> usize {
        let before = self.moves.len();
        self.moves
            .retain(|_, m| m.pushed.as_ref().is_none_or(|(_, n)| *n != wait));
        before - self.moves.len()
    }

    /// `session` left: forgets its move here if it was handed off (or waits for a late
    /// answer), and returns the request id of ours to withdraw, if any.
    pub(super) fn left(&mut self, session: SessionId) -> Option<u64> {
        match self.pushed(session) {
            Some((.., asked)) => asked,
            None => self.request(session),
        }
    }

    /// `session`'s home died and an instance adopted it (see `sequence`): nothing will come
    /// from the old home. Forgets its move here as [`Moving::left`] does, and returns the
    /// request id of ours to answer "ask again" (its new home will answer, or it is here).
    pub(super) fn orphaned(&mut self, session: SessionId) -> Option<u64> {
        self.left(session)
    }
}

impl Handovers {
    pub(super) fn lock(&self) -> MutexGuard<'_, Moving> {
        self.moving.lock().expect("hand-over lock poisoned")
    }

    /// The answer to request `req` arrived; false when nobody waits for it any more.
    pub(super) fn arrived(&self, req: u64, handed: Handed) -> bool {
        self.snapshots.answer(req, handed)
    }

    /// The move `req` will get no snapshot (the session left).
    pub(super) fn withdraw(&self, req: u64) {
        self.snapshots.withdraw(req);
    }
}

/// Forgets a move when its mover returns, whichever way.
struct MoveGuard<'a> {
    handovers: &'a Handovers,
    session: SessionId,
    req: u64,
}

impl Drop for MoveGuard<'_> {
    fn drop(&mut self) {
        let mut moving = self.handovers.lock();
        let ours = moving
            .moves
            .get(&self.session)
            .is_some_and(|m| m.req == self.req && m.pushed.is_none());
        if ours {
            moving.moves.remove(&self.session);
        }
    }
}

impl Cluster {
    /// Moves session `id` from its home to this instance. A session on its way to another
    /// instance (handed off by one that is stopping) is asked for again until it has arrived
    /// there, within [`ANSWER_TIMEOUT`]; one on its way here is waited for.
    ///
    /// # Errors
    /// `UnknownSession` when it left meanwhile; `Unavailable` when it is already moving here,
    /// or its home did not answer in time.
    pub(super) async fn move_here(
        self: &Arc<Self>,
        id: SessionId,
        token: &Token,
    ) -> Result<(), RegistryError> {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let arriving = self.handovers.lock().is_pushed(id);
            let moved = if arriving {
                false
            } else {
                self.try_move_here(id, token, deadline).await?
            };
            if moved || self.registry.homes(id) {
                return Ok(());
            }
            if Instant::now() + NOT_YET_PAUSE > deadline {
                warn!(session = %id, arriving, "still on its way elsewhere: not moved here");
                return Err(unavailable("the session's instance did not hand it over"));
            }
            tokio::time::sleep(NOT_YET_PAUSE).await;
        }
    }

    /// One request for session `id`; false when it is on its way elsewhere.
    async fn try_move_here(
        self: &Arc<Self>,
        id: SessionId,
        token: &Token,
        deadline: Instant,
    ) -> Result<bool, RegistryError> {
        let request = self.handovers.snapshots.open();
        let req = request.id();
        let _guard = {
            let mut moving = self.handovers.lock();
            // It may have arrived since the caller looked (sessions arrive under this lock).
            if self.registry.homes(id) {
                return Ok(true);
            }
            if moving.moves.contains_key(&id) {
                return Err(unavailable("the session is already moving here; retry"));
            }
            let fresh = Move {
                req,
                seen: false,
                buffer: Vec::new(),
                pushed: None,
                late: false,
            };
            moving.moves.insert(id, fresh);
            MoveGuard {
                handovers: &self.handovers,
                session: id,
                req,
            }
        };
        let ask = Bus::Handover {
            req,
            origin: self.instance,
            session: id,
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        let snapshot = match request.ask(self.publish(&ask), wait).await {
            Ok(Handed::Snapshot(snapshot)) => snapshot,
            Ok(Handed::NotYet) => return Ok(false),
            Err(Unanswered::Unpublished(err)) => return Err(err),
            Err(Unanswered::Withdrawn) => return Err(RegistryError::UnknownSession(id)),
            Err(Unanswered::TimedOut) => {
                // A busy old home may still answer: keep buffering for a while, to adopt it.
                let mut moving = self.handovers.lock();
                let wait = moving.next_wait();
                if moving.wait_late(id, req, TokenHash::of(token), wait) {
                    drop(moving);
                    self.forget_later(wait);
                }
                warn!(session = %id, "nobody handed the session over in time: not moved here yet");
                return Err(unavailable("the session's instance did not hand it over"));
            }
        };
        let may_broadcast;
        {
            let mut moving = self.handovers.lock();
            let buffer = moving
                .moves
                .remove(&id)
                .map(|m| m.buffer)
                .unwrap_or_default();
            may_broadcast = snapshot.may_broadcast;
            self.registry.import(*snapshot, token.clone())?;
            for message in buffer {
                self.apply_to(&message, Some(id));
            }
        }
        let peer = self.registry.authenticate(token)?;
        self.directory
            .put(&peer, may_broadcast, &TokenHash::of(token))
            .await?;
        info!(session = %id, "moved here");
        Ok(true)
    }

    /// Session `id` is asked for by `to`: exports it if it lives here (closing its stream).
    pub(super) fn hand_over(&self, id: SessionId, to: Uuid) -> Option<Snapshot> {
        let snapshot = self.registry.export(id, Closed::TakenOver)?;
        debug!(session = %id, %to, "handing over");
        Some(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{DisplayName, Event, Peer};
    use serde_json::value::RawValue;

    #[test]
    fn a_session_handed_off_here_buffers_what_concerns_it_until_it_arrives() {
        let ann = SessionId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        let bob = Peer {
            id: SessionId::parse("0b7e5d2c-1d9e-4b8f-9a77-3f2a1c4e5d6f").unwrap(),
            name: DisplayName::parse("bob").unwrap(),
            user: None,
        };
        let hash = TokenHash::of(&Token::issue(ann));
        let mut moving = Moving::default();
        let first = moving.expect(vec![(ann, hash.clone())]);
        let again = moving.expect(vec![(ann, hash.clone())]);
        let direct = |n: &str| Bus::Direct {
            req: 1,
            origin: Uuid::nil(),
            to: ann,
            event: Event::direct(&bob, ann, RawValue::from_string(n.into()).unwrap()),
            key: None,
        };
        moving.buffer(&direct("1"));
        moving.buffer(&Bus::Join { peer: bob.clone() });
        assert_eq!(
            moving.expire(again),
            0,
            "the second handoff found it on its way"
        );
        let (arrived, buffer, asked) = moving.pushed(ann).expect("handed off here");
        assert_eq!(asked, None);
        assert!(arrived == hash);
        assert_eq!(buffer.len(), 2);
        assert!(moving.pushed(ann).is_none(), "taken once");
        assert_eq!(moving.expire(first), 0, "an arrived session is not expired");

        // One that leaves on the way is forgotten; no request of ours to withdraw.
        moving.expect(vec![(ann, hash.clone())]);
        assert_eq!(moving.left(ann), None);
        assert!(moving.request(ann).is_none());

        // A move we asked for whose request has not come back becomes the hand-off's (its old
        // home exports it at the hand-off); one whose request came back stays ours.
        let ours = |seen| Move {
            req: 7,
            seen,
            buffer: Vec::new(),
            pushed: None,
            late: false,
        };
        moving.moves.insert(ann, ours(false));
        moving.expect(vec![(ann, hash.clone())]);
        moving.buffer(&direct("2"));
        let (_, buffer, asked) = moving.pushed(ann).expect("now handed off here");
        assert_eq!((buffer.len(), asked), (1, Some(7)));
        moving.moves.insert(ann, ours(true));
        moving.expect(vec![(ann, hash.clone())]);
        assert!(moving.pushed(ann).is_none(), "still our own move");
        assert_eq!(moving.request(ann), Some(7));
        moving.moves.clear();

        // A request of ours that timed out waits for a late answer, silently: a hand-off's
        // "not coming" does not end it, and it is not "on its way" to anyone asking.
        moving.moves.insert(ann, ours(true));
        let wait = moving.next_wait();
        assert!(moving.wait_late(ann, 7, hash.clone(), wait));
        assert!(!moving.is_pushed(ann));
        moving.not_coming(ann);
        moving.buffer(&direct("3"));
        let (_, buffer, asked) = moving.pushed(ann).expect("the late answer is adopted");
        assert_eq!((buffer.len(), asked), (1, Some(7)));
        assert!(
            !moving.wait_late(ann, 7, hash.clone(), wait),
            "no move left to keep"
        );

        // One that never arrives is forgotten by its own handoff's expiry only.
        let late = moving.expect(vec![(ann, hash)]);
        assert_eq!(moving.expire(first), 0);
        assert_eq!(moving.expire(late), 1);
        assert!(!moving.is_pushed(ann));
    }
}
