//! The TTL task: removes sessions that stayed detached longer than the TTL.
//!
//! It sleeps until the earliest deadline, and is woken early when a detach may have created an
//! earlier one. It ends when shutdown fires. What to tell others about expired sessions is the
//! caller's business (`on_expired`): the hub announces them, locally or through the cluster.

use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::{Departure, Registry};

/// Runs until `shutdown` is cancelled.
pub async fn run(
    registry: Registry,
    shutdown: CancellationToken,
    on_expired: impl Fn(Vec<Departure>) + Send,
) {
    loop {
        let (expired, next) = registry.expire(Instant::now());
        if !expired.is_empty() {
            on_expired(expired);
        }
        // With nothing detached, sleep "forever": a detach will wake us.
        let deadline = next.unwrap_or_else(|| Instant::now() + registry.settings().session_ttl);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = registry.shared.reaper.notified() => {}
            () = sleep_until(deadline) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::identity::DisplayName;
    use crate::limits::AddressGuard;
    use crate::metrics::Metrics;
    use crate::registry::Settings;

    fn registry(ttl: Duration) -> Registry {
        Registry::new(
            Settings {
                session_ttl: ttl,
                ..Settings::small()
            },
            Arc::new(Metrics::default()),
        )
    }

    fn stats(registry: &Registry) -> (usize, usize) {
        let stats = registry.stats();
        (stats.sessions, stats.streams)
    }

    #[tokio::test(start_paused = true)]
    async fn detached_sessions_expire_after_the_ttl_and_attached_ones_do_not() {
        let registry = registry(Duration::from_secs(30));
        let shutdown = CancellationToken::new();
        let reaper = tokio::spawn(run(registry.clone(), shutdown.clone(), |_| {}));

        let (idle, _) = registry
            .register(
                DisplayName::parse("idle").unwrap().into(),
                AddressGuard::unlimited(),
            )
            .unwrap();
        let (held, token) = registry
            .register(
                DisplayName::parse("held").unwrap().into(),
                AddressGuard::unlimited(),
            )
            .unwrap();
        let subscription = registry.attach(held.id, &token, None).unwrap();

        tokio::time::sleep(Duration::from_secs(29)).await;
        assert_eq!(stats(&registry), (2, 1));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let left: Vec<_> = registry.list().into_iter().map(|p| p.id).collect();
        assert_eq!(left, [held.id], "{} should have expired", idle.id);

        // Detaching starts the clock for the held session too.
        drop(subscription);
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(stats(&registry), (0, 0));

        shutdown.cancel();
        reaper.await.unwrap();
    }
}
