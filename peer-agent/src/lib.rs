//! The Damselfly peer agent: on every host, a registry mirror for the local runtime that fetches
//! blobs as sealed pieces from rack neighbours and the region's edges, verifies each piece
//! against the edge's table, streams the blob in order while later pieces are in flight, and
//! serves its own pieces to other agents. See ARCHITECTURE.md for the data flow.

mod client;
pub mod config;
pub mod configure;
mod download;
pub mod error;
pub mod get;
pub mod http;
pub mod metrics;
mod request;
pub mod state;
pub mod store;

use std::future::{Future, IntoFuture};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use damselfly_core::net::limit_unsent_on_accept;
use tokio::net::TcpListener;

pub use config::{Cli, Config};
pub use state::AgentState;

/// Serves the mirror and the upload server until `shutdown` resolves, then stops accepting,
/// marks the agent not ready, and gives in-flight requests a grace period.
pub async fn serve(
    mirror: TcpListener,
    upload: TcpListener,
    state: Arc<AgentState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    state.ticket_keys.prefetch();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signal_state = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        signal_state.ready.store(false, Ordering::SeqCst);
        tracing::info!("shutting down: not ready, draining");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mirror_server =
        axum::serve(mirror, http::mirror_app(state.clone())).with_graceful_shutdown(stopped(stop_rx.clone()));
    let upload_server = axum::serve(
        upload.tap_io(limit_unsent_on_accept),
        http::upload_app(state.clone()),
    )
    .with_graceful_shutdown(stopped(stop_rx.clone()));
    let grace = async move {
        stopped(stop_rx).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    };
    tokio::select! {
        r = async { tokio::try_join!(mirror_server.into_future(), upload_server.into_future()) } => r.map(|_| ()),
        _ = grace => {
            tracing::warn!("grace period over; closing remaining connections");
            Ok(())
        }
    }
}
