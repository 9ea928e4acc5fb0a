//! Lifetimes across the cluster. A session's lifetime is its home's: it lives in the home's
//! registry, whose reaper warns and ends the session, and it travels in the snapshot when the
//! session migrates or is drained.
//!
//! - **Refreshing.** A refresh taken by another instance is sent to the home (`refresh`, on
//!   the home's own channel) and waits for its answer; a session on its way elsewhere gets it
//!   like a direct message (buffered on arrival, or sent on).
//! - **Surviving a crash.** The home writes the lifetime into the session's directory entry
//!   (see [`directory`](super::directory)) when it writes the entry, and on each refresh before
//!   it answers, so a survivor adopting the session after a crash ends it at the same moment.
//!   Any instance refuses a token whose entry's end has passed.
//! - **Telling why.** The home that ends a session remembers it in Redis for a while
//!   ([`ended`](super::ended)): every instance then refuses its token with `session_expired`.
//! - **An older home** (protocol 1, see [`protocol`](super::protocol)) knows neither
//!   lifetimes nor `refresh`. The instance taking a refresh of a session homed there records
//!   the new end in the entry itself and answers: the old home does not enforce it, but every
//!   instance of this protocol refuses the session's token after it, and the instance the
//!   session moves to next (by a drain, a migration, or adoption) takes the end from the entry
//!   ([`Cluster::put_homed`]) and enforces it. Such an end is held to `--max-session-age` only
//!   if the entry knew the session's cap. An older instance that writes the entry afterwards
//!   (a room change it takes, its re-registration after Redis restarted) drops the end; the
//!   next refresh records it again.

use tokio::time::Instant;
use tracing::{info, warn};
use uuid::Uuid;

use super::entry::Entry;
use super::instance::{ANSWER_TIMEOUT, Cluster};
use super::keys::unavailable;
use super::request::Unanswered;
use super::wire::{Message, Outcome};
use crate::identity::{SessionId, Token};
use crate::registry::lifetime::{
    Bound, Deadline, Lifetime, instant_of_unix_ms, unix_ms_of_instant,
};
use crate::registry::{Homed, RegistryError};

impl Cluster {
    /// Moves the end of session `id`'s lifetime to `ends`, here or at its home; its end now.
    ///
    /// # Errors
    /// `UnknownSession` when there is no such session; `Unavailable`.
    pub(crate) async fn refresh(
        &self,
        id: SessionId,
        ends: Instant,
        bound: Bound,
    ) -> Result<Instant, RegistryError> {
        // Twice at most: a session that moves meanwhile is refreshed again where it went.
        for _ in 0..2 {
            if self.registry.homes(id) {
                match self.registry.refresh(id, ends, bound) {
                    // It moved away meanwhile: ask its new home.
                    Err(RegistryError::UnknownSession(_)) => {}
                    Err(err) => return Err(err),
                    Ok(lifetime) => {
                        self.record(id, &lifetime).await?;
                        return Ok(lifetime.ends);
                    }
                }
            }
            let entry = self
                .directory
                .get(id)
                .await?
                .ok_or(RegistryError::UnknownSession(id))?;
            if !self.liveness.is_older(entry.home) {
                return self.refresh_at(entry.home, id, ends, bound).await;
            }
            if let Some(ends) = self.refresh_for_older(id, &entry, ends, bound).await? {
                return Ok(ends);
            }
        }
        Err(unavailable(
            "the session moved between instances while it was refreshed; retry",
        ))
    }

    /// Asks `home` to move the end of session `id`, and waits for its answer.
    async fn refresh_at(
        &self,
        home: Uuid,
        id: SessionId,
        ends: Instant,
        bound: Bound,
    ) -> Result<Instant, RegistryError> {
        let request = self.replies.open();
        let message = Message::Refresh {
            req: request.id(),
            origin: self.instance,
            session: id,
            ends_ms: unix_ms_of_instant(ends),
            bound,
        };
        match request.ask(self.send(home, &message), ANSWER_TIMEOUT).await {
            Ok(Outcome::Refreshed(ends_ms)) => Ok(instant_of_unix_ms(ends_ms)),
            Ok(_) => Err(RegistryError::UnknownSession(id)),
            Err(Unanswered::Unpublished(err)) => Err(err),
            Err(Unanswered::TimedOut | Unanswered::Withdrawn) => {
                Err(unavailable("the session's instance did not answer"))
            }
        }
    }

    /// The refresh of session `id`, homed on an instance of an older protocol, recorded in its
    /// `entry` (see the module doc); its end now, or `None` when the session moved meanwhile.
    async fn refresh_for_older(
        &self,
        id: SessionId,
        entry: &Entry,
        ends: Instant,
        bound: Bound,
    ) -> Result<Option<Instant>, RegistryError> {
        let old = entry.lifetime.as_ref().map(Deadline::lifetime);
        let lifetime = Lifetime::refreshed(old, ends, bound, Instant::now());
        let deadline = Deadline::of(&lifetime);
        if !self
            .directory
            .set_lifetime(id, entry.home, &deadline)
            .await?
        {
            return Ok(None);
        }
        self.registry.metrics().session_refreshes.inc();
        info!(session = %id, home = %entry.home, ?bound, "lifetime recorded for an older home");
        Ok(Some(lifetime.ends))
    }

    /// Writes the `lifetime` of session `id`, homed here, into its directory entry. An entry
    /// that names another home is left alone: the session is on its way there, and its new
    /// home writes the entry with the lifetime it took with it.
    pub(super) async fn record(
        &self,
        id: SessionId,
        lifetime: &Lifetime,
    ) -> Result<(), RegistryError> {
        let deadline = Deadline::of(lifetime);
        self.directory
            .set_lifetime(id, self.instance, &deadline)
            .await
            .map(|_| ())
    }

    /// A refresh of session `id` applied here for `origin`: answers once the entry holds the
    /// new end (the answer promises it survives a crash of this instance). An entry that
    /// cannot be written gets no answer, and the asker says the refresh failed.
    pub(super) fn refreshed_for(
        self: &std::sync::Arc<Self>,
        (req, origin): (u64, Uuid),
        id: SessionId,
        lifetime: Lifetime,
    ) {
        let cluster = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            if let Err(err) = cluster.record(id, &lifetime).await {
                warn!(session = %id, error = %err, "could not write a refreshed lifetime");
                return;
            }
            cluster.publish_soon(Message::Reply {
                req,
                origin,
                outcome: Outcome::Refreshed(unix_ms_of_instant(lifetime.ends)),
            });
        });
    }

    /// Writes the entry of `session`, homed here. When the session came without a lifetime
    /// and the entry had one (recorded while it was homed on an older instance), the session
    /// takes it on.
    pub(super) async fn put_homed(&self, session: &Homed) -> Result<(), RegistryError> {
        if let Some(kept) = self.directory.put(session).await? {
            self.registry.take_deadline(session.peer.id, &kept);
        }
        Ok(())
    }

    /// What to answer for `token`, whose session has no directory entry: `SessionExpired`
    /// when it ended at its lifetime lately, here or on another instance; else `missing`, or
    /// that Redis is recovering (see [`restart`](super::restart)).
    pub(super) async fn gone(&self, token: &Token, missing: RegistryError) -> RegistryError {
        if let Err(expired @ RegistryError::SessionExpired(_)) = self.registry.authenticate(token) {
            return expired;
        }
        match self.ended.check(token).await {
            Ok(Some(bound)) => RegistryError::SessionExpired(bound),
            Ok(None) => self.unknown(missing).await,
            Err(err) => err,
        }
    }
}
