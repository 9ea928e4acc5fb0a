//! Lifetimes across the cluster. A session's lifetime is its home's: it lives in the home's
//! registry, whose reaper warns and ends the session, and it travels in the snapshot when the
//! session migrates or is drained. A refresh taken by another instance is sent to the home
//! (`refresh`, on the home's own channel) and waits for its answer; a session on its way
//! elsewhere gets it like a direct message (buffered on arrival, or sent on).

use tokio::time::Instant;

use super::instance::{ANSWER_TIMEOUT, Cluster};
use super::keys::unavailable;
use super::request::Unanswered;
use super::wire::{Message, Outcome};
use crate::identity::SessionId;
use crate::registry::RegistryError;
use crate::registry::lifetime::{Bound, instant_of_unix_ms, unix_ms_of_instant};

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
        if self.registry.homes(id) {
            match self.registry.refresh(id, ends, bound) {
                // It moved away meanwhile: ask its new home.
                Err(RegistryError::UnknownSession(_)) => {}
                refreshed => return refreshed.map(|lifetime| lifetime.ends),
            }
        }
        let home = self
            .directory
            .get(id)
            .await?
            .ok_or(RegistryError::UnknownSession(id))?
            .home;
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
}
