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

use std::future::Future;
use std::sync::Arc;

use damselfly_core::net::limit_unsent_on_accept;
use damselfly_server::{Listener, Server};
use tokio::net::{TcpListener, TcpStream};

pub use config::{Cli, Config};
pub use state::AgentState;

/// Opens the piece store, binds the mirror and upload addresses, and serves until `shutdown`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    let (listen, upload_listen) = (config.listen, config.upload_listen);
    let state = AgentState::new(config).map_err(|e| format!("cannot start: {e}"))?;
    let mirror = damselfly_server::daemon::bind(listen).await?;
    let upload = damselfly_server::daemon::bind(upload_listen).await?;
    tracing::info!(mirror = %listen, upload = %upload_listen, location = %state.config.location, "peer agent listening");
    serve(mirror, upload, state, shutdown)
        .await
        .map_err(|e| format!("server failed: {e}"))
}

/// Serves the mirror and the upload server until `shutdown` resolves, then marks the agent not
/// ready, stops accepting, and gives in-flight requests `server.shutdown_grace_secs`.
pub async fn serve(
    mirror: TcpListener,
    upload: TcpListener,
    state: Arc<AgentState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    state.ticket_keys.prefetch();
    let mirror =
        Listener::new("mirror", mirror, http::mirror_app(state.clone())).route_of(http::mirror_route);
    let upload = Listener::new("upload", upload, http::upload_app(state.clone()))
        .route_of(http::upload_route)
        // Pieces go out in small chunks on a connection whose unsent bytes are bounded, so an
        // upload slot is held until the piece has nearly left.
        .on_accept(|socket: &TcpStream| limit_unsent_on_accept(socket));
    Server::new(
        &state.config.server,
        state.readiness.clone(),
        state.metrics.server.clone(),
    )
    .listener(mirror)
    .listener(upload)
    .run(shutdown)
    .await
}
