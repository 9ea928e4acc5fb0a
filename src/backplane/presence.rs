//! Presence: who hears about joins and leaves, and who is listed in `ready`.
//!
//! The one place that policy lives. Both hubs call it: the local hub right after its registry
//! changed, the cluster hub when a join or leave comes back on the bus (in bus order, on every
//! instance). The registry only offers the mechanics (fan out to all but one, list sessions).
//! With presence off (`--presence false`) nobody hears of anyone and `ready` lists nobody; the
//! sessions are still there for `GET /clients`.

use std::future::Future;

use crate::identity::SessionId;
use crate::registry::{Event, Peer, Registry, RegistryError, Subscription};

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
    /// when replaying a migration's buffer to one session).
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::identity::DisplayName;
    use crate::limits::AddressGuard;
    use crate::metrics::Metrics;
    use crate::registry::{Pull, Settings};

    fn registry() -> Registry {
        Registry::new(Settings::small(), Arc::new(Metrics::default()))
    }

    fn names(subscription: &mut Subscription) -> Vec<&'static str> {
        match subscription.pull(10) {
            Pull::Events(replay) => replay.events.iter().map(|(_, e)| e.event.name()).collect(),
            _ => Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn joins_and_leaves_reach_the_others_only_when_presence_is_on() {
        for enabled in [true, false] {
            let presence = Presence::new(enabled);
            let registry = registry();
            let (ann, token) = registry
                .register(
                    DisplayName::parse("ann").unwrap().into(),
                    AddressGuard::unlimited(),
                )
                .unwrap();
            let (bob, _) = registry
                .register(
                    DisplayName::parse("bob").unwrap().into(),
                    AddressGuard::unlimited(),
                )
                .unwrap();
            let mut stream = registry.attach(ann.id, &token, None).unwrap();
            presence.joined(&registry, &bob, None);
            presence.left(&registry, &bob, None);
            presence.joined(&registry, &ann, None); // ann does not hear of herself
            let heard = if enabled {
                vec!["new_user", "user_left"]
            } else {
                vec![]
            };
            assert_eq!(names(&mut stream), heard);

            let roster = async { Ok(registry.list()) };
            presence.fill_roster(&mut stream, roster).await.unwrap();
            let Some(Event::Ready(ready)) = stream.take_ready() else {
                panic!("ready first");
            };
            let listed: Vec<_> = ready.clients.iter().map(|p| p.id).collect();
            assert_eq!(listed, if enabled { vec![bob.id] } else { vec![] });
        }
    }
}
