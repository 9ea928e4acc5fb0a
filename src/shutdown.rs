//! Turning process signals into one shutdown trigger.
//!
//! `serve` takes the trigger as a future, so tests pass a oneshot instead of sending signals.

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
///
/// # Panics
/// When the signal handlers cannot be installed (only at startup, before serving).
pub async fn signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c()
            .await
            .expect("installing the SIGINT handler");
    };
    #[cfg(unix)]
    let terminate = async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler")
            .recv()
            .await;
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
