//! Presence: who hears about joins and leaves, and who is listed in `ready`.
//!
//! The one place that policy lives. Both hubs call it: the local hub right after its registry
//! changed, the cluster hub when a join or leave comes back on the bus (in bus order, on every
//! instance). The registry only offers the mechanics (fan out to all but one, list sessions).
//! With presence off (`--presence false`) nobody hears of anyone and `ready` lists nobody; the
//! sessions are still there for `GET /clients`.

use std::future::Future;

use crate::registry::{Event, Peer, Registry, RegistryError, SessionId, Subscription};

/// Whether joins and leaves are announced; copied into each hub.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Presence {
    enabled: bool,
}

impl Presence {
    pub(crate) fn new(enabled: bool) -> Self {
        Presence { enabled }
    }

    /// `peer` joined: every session in `registry` but `peer` hears `new_user` (or only `only`,
    /// when replaying a hand-over's buffer to one session).
    pub(crate) fn joined(self, registry: &Registry, peer: &Peer, only: Option<SessionId>) {
        if self.enabled {
            registry.fan_out(Event::NewUser(peer.clone()), Some(peer.id), only);
        }
    }

    /// `peer` left (deleted, expired, or its instance died): the sessions in `registry` hear
    /// `user_left` (or only `only`). `peer` is already gone from `registry` when it was there.
    pub(crate) fn left(self, registry: &Registry, peer: &Peer, only: Option<SessionId>) {
        if self.enabled {
            registry.fan_out(Event::UserLeft(peer.clone()), Some(peer.id), only);
        }
    }

    /// Lists everyone else in `subscription`'s `ready`, from `everyone` (this registry, or the
    /// cluster's directory), read only when presence is on.
    ///
    /// Read after the stream attached, so a session that joins later reaches it as `new_user`;
    /// one that joins in between may appear both ways, never neither.
    ///
    /// # Errors
    /// Whatever reading `everyone` fails with.
    pub(crate) async fn fill_roster(
        self,
        subscription: &mut Subscription,
        everyone: impl Future<Output = Result<Vec<Peer>, RegistryError>>,
    ) -> Result<(), RegistryError> {
        if self.enabled {
            let id = subscription.session_id();
            let others = everyone.await?.into_iter().filter(|p| p.id != id);
            subscription.set_roster(others.collect());
        }
        Ok(())
    }
}
