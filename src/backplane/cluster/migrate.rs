//! Migration: a session's mailbox moves to the instance its stream attached to, keeping its
//! event ids (on the wire `handover`, then `handed_over`).
//!
//! Its stream attaches to B: B publishes `Migrate`; when B reads its own request back it starts
//! buffering every later message that concerns the session (see [`transit`](super::transit));
//! the home A reads the same request at the same point, exports the mailbox (closing its
//! stream) and publishes `Migrated`; B imports it and applies the buffer. Everything before the
//! request reached A, everything after it reaches B: nothing twice, nothing lost. With rooms
//! sharded, a room's traffic is not in the bus's order: B keeps it from where it stood when
//! the pull began, A lets the session go once it applied as far, and says how far it applied;
//! B waits until it has read each room as far too (what it reads later then is after), and
//! applies what came after (see [`transit`](super::transit)).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use uuid::Uuid;

use super::instance::{ANSWER_TIMEOUT, Cluster, HOLD};
use super::keys::unavailable;
use super::request::Unanswered;
use super::transit::Pulled;
use super::wire::Message;
use crate::identity::{SessionId, Token, TokenHash};
use crate::registry::{Closed, RegistryError, Snapshot};

/// Pause before asking again for a session that is on its way elsewhere.
const NOT_YET_PAUSE: Duration = Duration::from_millis(20);

/// Logged when a session arrives before this instance read its rooms as far as its old home.
pub(super) const LAGS_BEHIND: &str = "this instance lags behind the session's old home on its rooms: it may hear a room message twice";

impl Cluster {
    /// Migrates session `id` from its home to this instance. A session on its way to another
    /// instance (drained by one that is stopping) is asked for again until it has arrived
    /// there, within [`ANSWER_TIMEOUT`]; one on its way here is waited for, as long.
    ///
    /// # Errors
    /// `UnknownSession` when it left meanwhile; `Unavailable` when its home did not answer,
    /// or it did not arrive, in time.
    pub(super) async fn migrate_here(
        self: &Arc<Self>,
        id: SessionId,
        token: &Token,
    ) -> Result<(), RegistryError> {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let arriving = self.migrations.lock().is_drained_here(id);
            let moved = if arriving {
                false
            } else {
                self.pull(id, token, deadline).await?
            };
            if moved || self.registry.homes(id) {
                return Ok(());
            }
            if Instant::now() + NOT_YET_PAUSE > deadline {
                warn!(session = %id, arriving, "still on its way: not moved here");
                return Err(unavailable("the session's instance did not hand it over"));
            }
            tokio::time::sleep(NOT_YET_PAUSE).await;
        }
    }

    /// One request for session `id`; false when it is on its way elsewhere, or already on its
    /// way here.
    async fn pull(
        self: &Arc<Self>,
        id: SessionId,
        token: &Token,
        deadline: Instant,
    ) -> Result<bool, RegistryError> {
        // Read before asking: from the `handover` on, what its rooms say reaches this instance.
        // Its home checks these cover the session's rooms (a join may have raced this read).
        let rooms = self
            .directory
            .get(id)
            .await?
            .ok_or(RegistryError::UnknownSession(id))?
            .rooms;
        self.subscriptions.ensure(&rooms, HOLD).await?;
        let request = self.migrations.open();
        let req = request.id();
        let (_guard, points) = {
            let mut transit = self.migrations.lock();
            // It may have arrived since the caller looked (sessions arrive under this lock).
            if self.registry.homes(id) {
                return Ok(true);
            }
            // With rooms sharded: where its room lines stand here, from which on they are kept.
            let points = self.applied_on(&rooms);
            let from = points.clone().map(Arc::new);
            // Already on its way here: another attach's pull, or one that timed out and
            // waits for a late answer until the bus says the home died. Look again soon.
            let Some(guard) = self.migrations.begin(&mut transit, id, req, from) else {
                return Ok(false);
            };
            (guard, points)
        };
        let ask = Message::Migrate {
            req,
            origin: self.instance,
            session: id,
            rooms: Some(rooms),
            points,
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        let (mut snapshot, applied) = match request.ask(self.publish(&ask), wait).await {
            Ok(Pulled::Snapshot(snapshot, applied)) => (snapshot, applied),
            Ok(Pulled::NotYet) => return Ok(false),
            Err(Unanswered::Unpublished(err)) => return Err(err),
            Err(Unanswered::Withdrawn) => return Err(RegistryError::UnknownSession(id)),
            Err(Unanswered::TimedOut) => {
                // A busy old home may still answer: keep buffering for a while, to adopt it.
                let mut transit = self.migrations.lock();
                let wait = transit.next_wait();
                if transit.wait_late(id, req, TokenHash::of(token), wait) {
                    drop(transit);
                    self.forget_later(wait);
                }
                warn!(session = %id, "nobody handed the session over in time: not moved here yet");
                return Err(unavailable("the session's instance did not hand it over"));
            }
        };
        // Its rooms read here as far as its old home applied them; meanwhile it keeps buffering.
        if let Some(applied) = &applied
            && !self.sequence.reach(applied, ANSWER_TIMEOUT).await
        {
            warn!(session = %id, "{LAGS_BEHIND}");
        }
        {
            let mut transit = self.migrations.lock();
            let held = transit.take_pulled(id);
            let (missed, messages) = held.after(applied.as_ref(), &snapshot.rooms);
            skip_missed(&mut snapshot, missed);
            self.registry.import(*snapshot, token.clone())?;
            for message in messages {
                self.apply_to(&message, Some(id));
            }
        }
        self.registry.authenticate(token)?;
        let homed = self.registry.homed_one(id).ok_or(RegistryError::BadToken)?;
        self.put_homed(&homed).await?;
        info!(session = %id, "moved here");
        Ok(true)
    }

    /// Session `id` is pulled by `to`: exports it if it lives here (closing its stream).
    pub(super) fn migrate_away(&self, id: SessionId, to: Uuid) -> Option<Snapshot> {
        let snapshot = self.registry.export(id, Closed::TakenOver)?;
        debug!(session = %id, %to, "handing over");
        Some(snapshot)
    }
}

/// A session handed over skips `missed` ids: numbered messages of its rooms that went by
/// before its arrival began here and that its old home had not applied (see
/// [`transit`](super::transit)). Its stream says `lagged`.
pub(super) fn skip_missed(snapshot: &mut Snapshot, missed: u64) {
    if missed > 0 {
        warn!(session = %snapshot.peer.id, missed, "room messages missed on the way here");
        snapshot.last_id += missed;
    }
}
