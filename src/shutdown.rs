//! Turning process signals into one shutdown trigger.
//!
//! `serve` takes the trigger as a future, so tests pass a oneshot instead of sending signals.

use std::future::Future;

/// Installs the SIGINT (Ctrl-C) and SIGTERM handlers at once and returns a future that
/// resolves on the first of those signals.
///
/// The handlers are installed by this call, not when the future is first polled: `serve`
/// polls it only once it accepts connections, and a SIGTERM arriving before that (a service
/// manager stopping a server that has just started) would otherwise kill the process with the
/// default action, before the state file is written.
///
/// # Panics
/// When the handlers cannot be installed (only at startup, before serving), or outside a
/// tokio runtime.
pub fn signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    let received = {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
        let mut terminate =
            signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
    };
    #[cfg(not(unix))]
    let received = async {
        tokio::signal::ctrl_c()
            .await
            .expect("installing the SIGINT handler");
    };
    async move {
        received.await;
        tracing::info!("shutdown signal received");
    }
}
