//! Running the edge: serve on a bound listener until `shutdown` resolves, then drain.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use damselfly_core::net::limit_unsent_on_accept;
use tokio::net::TcpListener;

use crate::state::AppState;

/// How often access times are written to the index.
const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves; then marks the edge not ready, stops accepting, and lets
/// in-flight requests finish for up to `limits.shutdown_grace_secs`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let flusher = {
        let store = state.store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            loop {
                tick.tick().await;
                let store = store.clone();
                let _ = tokio::task::spawn_blocking(move || store.flush_access_times()).await;
            }
        })
    };
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let signal_state = state.clone();
    let signal = async move {
        shutdown.await;
        signal_state.ready.store(false, Ordering::SeqCst);
        tracing::info!("shutting down: not ready, draining in-flight requests");
        let _ = draining_tx.send(());
    };
    let app = crate::http::app(state.clone());
    let server = axum::serve(listener.tap_io(limit_unsent_on_accept), app).with_graceful_shutdown(signal);
    let grace = Duration::from_secs(state.config.limits.shutdown_grace_secs);
    let result = tokio::select! {
        result = server => result,
        _ = async {
            if draining_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(grace_secs = grace.as_secs(), "grace period over; closing remaining connections");
            Ok(())
        }
    };
    flusher.abort();
    state.store.flush_access_times();
    result
}
