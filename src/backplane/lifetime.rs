//! The hub's lifetime operations: moving when sessions end (see
//! [`registry::lifetime`](crate::registry::lifetime)), for a session with a new join token or
//! for the sessions the server API names. Warning and ending them is the reaper's, on the
//! instance that homes each.

use tokio::time::Instant;

use super::{Hub, Target};
use crate::registry::lifetime::Bound;
use crate::registry::{Peer, RegistryError};

impl Hub {
    /// Moves the end of `peer`'s session to `ends`, a new join token's (held to
    /// `--max-session-age`); its end now.
    ///
    /// # Errors
    /// `BadToken` when it has left meanwhile; `Unavailable`.
    pub async fn refresh(&self, peer: &Peer, ends: Instant) -> Result<Instant, RegistryError> {
        match self.broker.refresh(peer.id, ends, Bound::JoinToken).await {
            Err(RegistryError::UnknownSession(_)) => Err(RegistryError::BadToken),
            refreshed => refreshed,
        }
    }

    /// Moves the end of the sessions `target` names to `ends`, for the app's backend (no cap);
    /// an end already past ends them now. How many there were.
    ///
    /// # Errors
    /// `UnknownSession` for a session that is not registered; `Unavailable`.
    pub async fn refresh_sessions(
        &self,
        target: &Target,
        ends: Instant,
    ) -> Result<usize, RegistryError> {
        let mut moved = 0;
        for peer in self.targeted(target).await? {
            match self.broker.refresh(peer.id, ends, Bound::Server).await {
                Ok(_) => moved += 1,
                // Left meanwhile.
                Err(RegistryError::UnknownSession(_)) if !matches!(target, Target::Session(_)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(moved)
    }
}
