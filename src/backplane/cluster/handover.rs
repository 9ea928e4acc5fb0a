//! Hand-over: moving a session's mailbox to the instance its stream now attaches to, keeping its
//! event ids.
//!
//! B publishes `handover`; when B reads its own request back it starts buffering every later
//! message that concerns the session; the home A reads the same request at the same point,
//! exports the mailbox (closing its stream) and publishes `handed_over`; B imports it and applies
//! the buffer. Everything before the request reached A, everything after it reaches B: nothing
//! twice, nothing lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{debug, info};
use uuid::Uuid;

use super::bus::Bus;
use super::request::{Requests, Unanswered};
use super::{ANSWER_TIMEOUT, Cluster, unavailable};
use crate::registry::{RegistryError, SessionId, Snapshot, Token};

/// Sessions being moved here.
#[derive(Default)]
pub(super) struct Handovers {
    /// What each move has buffered. First in the lock order (before the registry's locks): held
    /// while a bus message is applied and while a move completes, so the two never interleave.
    moving: Mutex<Moving>,
    /// Snapshots awaited from the sessions' old homes.
    snapshots: Requests<Box<Snapshot>>,
}

/// The moves in progress, and where sessions handed away from here went.
#[derive(Default)]
pub(super) struct Moving {
    /// Moves to this instance, by session.
    moves: HashMap<SessionId, Move>,
    /// Sessions handed from here: to which instance, and when.
    away: HashMap<SessionId, (Uuid, Instant)>,
}

/// How long a session handed away is remembered, to forward direct messages sent to it here by
/// senders that read the directory before its new home wrote it.
const FORWARD_FOR: Duration = Duration::from_secs(30);

struct Move {
    /// The request id of our `handover` message.
    req: u64,
    /// Our own request came back on the bus: from now on, buffer what concerns the session.
    seen: bool,
    buffer: Vec<Bus>,
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
}

impl Handovers {
    pub(super) fn lock(&self) -> MutexGuard<'_, Moving> {
        self.moving.lock().expect("hand-over lock poisoned")
    }

    /// The snapshot answering request `req` arrived.
    pub(super) fn arrived(&self, req: u64, snapshot: Box<Snapshot>) {
        self.snapshots.answer(req, snapshot);
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
        if moving.request(self.session) == Some(self.req) {
            moving.moves.remove(&self.session);
        }
    }
}

impl Cluster {
    /// Moves session `id` from its home to this instance.
    ///
    /// # Errors
    /// `UnknownSession` when it left meanwhile; `Unavailable` when it is already moving here,
    /// or its home did not answer in time.
    pub(super) async fn move_here(
        self: &Arc<Self>,
        id: SessionId,
        token: &Token,
    ) -> Result<(), RegistryError> {
        let request = self.handovers.snapshots.open();
        let req = request.id();
        let _guard = {
            let mut moving = self.handovers.lock();
            if moving.moves.contains_key(&id) {
                return Err(unavailable("the session is already moving here; retry"));
            }
            let fresh = Move {
                req,
                seen: false,
                buffer: Vec::new(),
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
        let snapshot = match request.ask(self.publish(&ask), ANSWER_TIMEOUT).await {
            Ok(snapshot) => snapshot,
            Err(Unanswered::Unpublished(err)) => return Err(err),
            Err(Unanswered::Withdrawn) => return Err(RegistryError::UnknownSession(id)),
            Err(Unanswered::TimedOut) => {
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
        self.directory.put(&peer, may_broadcast, token).await?;
        info!(session = %id, "moved here");
        Ok(())
    }

    /// Session `id` is asked for by `to`: exports it if it lives here (closing its stream).
    pub(super) fn hand_over(&self, id: SessionId, to: Uuid) -> Option<Snapshot> {
        let snapshot = self.registry.export(id)?;
        debug!(session = %id, %to, "handing over");
        Some(snapshot)
    }
}
