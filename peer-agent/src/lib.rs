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
pub mod status;
pub mod store;

/// The download's decisions (pieces, parents, timing) as pure functions: what `bench sim` runs.
pub use download::{picker, policy};

use std::future::Future;
use std::sync::Arc;

use damselfly_core::net::limit_unsent_on_accept;
use damselfly_server::{Listener, Server};
use tokio::net::{TcpListener, TcpStream};

pub use config::{Cli, Config};
pub use state::AgentState;

/// Opens the piece store, binds the mirror, upload and ops addresses, and serves until
/// `shutdown`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    let (listen, upload_listen, ops_listen) = (config.listen, config.upload_listen, config.ops_listen);
    let state = AgentState::new(config).map_err(|e| format!("cannot start: {e}"))?;
    let mirror = damselfly_server::daemon::bind(listen).await?;
    let upload = damselfly_server::daemon::bind(upload_listen).await?;
    let ops = damselfly_server::daemon::bind(ops_listen).await?;
    tracing::info!(mirror = %listen, upload = %upload_listen, ops = %ops_listen,
        location = %state.config.location, "peer agent listening");
    serve(Listeners { mirror, upload, ops }, state, shutdown)
        .await
        .map_err(|e| format!("server failed: {e}"))
}

/// The agent's bound sockets.
pub struct Listeners {
    /// Registry mirror for the local runtime.
    pub mirror: TcpListener,
    /// Pieces for other agents.
    pub upload: TcpListener,
    /// Health, readiness and metrics.
    pub ops: TcpListener,
}

/// Serves the mirror, the upload server and the ops routes until `shutdown` resolves, then
/// marks the agent not ready, stops accepting, and gives in-flight requests
/// `server.shutdown_grace_secs`.
pub async fn serve(
    listeners: Listeners,
    state: Arc<AgentState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Listeners { mirror, upload, ops } = listeners;
    state.ticket_keys.prefetch();
    let mirror =
        Listener::new("mirror", mirror, http::mirror_app(state.clone())).route_of(http::mirror_route);
    let upload = Listener::new("upload", upload, http::upload_app(state.clone()))
        .route_of(http::upload_route)
        // Pieces go out in small chunks on a connection whose unsent bytes are bounded, so an
        // upload slot is held until the piece has nearly left.
        .on_accept(|socket: &TcpStream| limit_unsent_on_accept(socket));
    let ops =
        Listener::new("ops", ops, http::ops_app(state.clone())).route_of(|_| damselfly_server::ops::ROUTE);
    Server::new(
        &state.config.server,
        state.readiness.clone(),
        state.metrics.server.clone(),
    )
    .listener(mirror)
    .listener(upload)
    .listener(ops)
    .run(shutdown)
    .await
}
