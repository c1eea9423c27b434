//! Running the edge: bind, serve until `shutdown` resolves, drain, and keep the index's access
//! times flushed meanwhile.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use damselfly_core::net::limit_unsent_on_accept;
use damselfly_server::{Listener, Server};
use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::state::AppState;

/// How often access times are written to the index.
const FLUSH_EVERY: Duration = Duration::from_secs(10);

/// Opens the store (and Redis, when configured), binds `listen`, and serves until `shutdown`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    let listen = config.listen;
    let state = AppState::new(config)
        .await
        .map_err(|e| format!("cannot start: {e}"))?;
    let listener = damselfly_server::daemon::bind(listen).await?;
    warn_about_trust(&state.config);
    tracing::info!(addr = %listen, region = %state.config.region, tls = state.tls.is_some(), "edge cache listening");
    serve(listener, state, shutdown)
        .await
        .map_err(|e| format!("server failed: {e}"))
}

/// Serves on a bound listener until `shutdown` resolves; then marks the edge not ready, stops
/// accepting, and lets in-flight requests finish for up to `server.shutdown_grace_secs`.
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
    let sampler = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::status::SAMPLE_EVERY);
            loop {
                tick.tick().await;
                state.status.sample(&state.metrics);
            }
        })
    };
    let listener = Listener::new("edge", listener, crate::http::app(state.clone()))
        .route_of(crate::http::route_of)
        // Pieces go out in small chunks on a connection whose unsent bytes are bounded, so a
        // send permit is held until the piece has nearly left.
        .on_accept(|socket: &TcpStream| limit_unsent_on_accept(socket))
        .tls(state.tls.clone());
    let result = Server::new(
        &state.config.server,
        state.readiness.clone(),
        state.metrics.server.clone(),
    )
    .listener(listener)
    .run(shutdown)
    .await;
    flusher.abort();
    sampler.abort();
    state.store.flush_access_times();
    result
}

/// Says at start what an operator must know about who gets task keys.
fn warn_about_trust(config: &Config) {
    if config.insecure {
        tracing::warn!(
            "INSECURE: task keys go to any caller, without TLS client certificates; anyone who can \
             watch this edge's traffic can decrypt every piece. For a lab only."
        );
    } else if !config.tls.enabled() {
        tracing::warn!(
            "no TLS (tls.cert, tls.key): task keys are refused, so agents cannot use this edge; \
             registry pulls through /v2/ work"
        );
    } else if config.tls.client_ca.is_none() {
        tracing::warn!("no tls.client_ca: no agent can prove its identity, so task keys are refused");
    }
}
