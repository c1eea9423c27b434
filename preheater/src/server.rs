//! Running the preheater: the workers, store upkeep and the HTTP server, until `shutdown`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use damselfly_server::{Listener, Server};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::runner;
use crate::state::AppState;

/// Opens the job store (resuming unfinished jobs), binds `listen`, and serves until `shutdown`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    let listen = config.listen;
    crate::edge_check::registries_at_edges(&config)
        .await
        .map_err(|e| format!("cannot start: {e}"))?;
    let state = AppState::new(config)
        .await
        .map_err(|e| format!("cannot start: {e}"))?;
    let listener = damselfly_server::daemon::bind(listen).await?;
    tracing::info!(addr = %listen, store = state.store.backend(), regions = ?state.warmer.regions(),
        "preheater listening");
    serve(listener, state, shutdown)
        .await
        .map_err(|e| format!("server failed: {e}"))
}

/// Serves until `shutdown` resolves; then marks the preheater not ready, stops accepting, stops
/// claiming jobs, and gives requests and running jobs `server.shutdown_grace_secs` to finish.
/// Jobs still running after that stay in the store and resume at the next start.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    warn_about_open_doors(&state);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = JoinSet::new();
    for worker in 0..state.config.jobs.workers {
        workers.spawn(runner::supervised(state.clone(), worker, stop_rx.clone()));
    }
    let upkeep = {
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(state.store.maintenance_interval()).await;
                if let Err(e) = state.store.maintain().await {
                    tracing::warn!(error = %e, "store upkeep failed");
                }
            }
        })
    };
    let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
    let listener = Listener::new("preheater", listener, crate::http::app(state.clone()))
        .route_of(crate::http::route_of)
        // The handlers read bodies up to `limits.max_body_bytes` and answer their own 413.
        .body_limit(None)
        // INFO, so the request span survives the default filter and parents the jobs it creates.
        .trace_level(tracing::Level::INFO)
        .tls(state.tls.clone());
    let stopping = async move {
        shutdown.await;
        // Workers stop claiming jobs at once; running ones get the grace period below.
        let _ = stop_tx.send(true);
    };
    let result = Server::new(
        &state.config.server,
        state.readiness.clone(),
        state.metrics.server.clone(),
    )
    .listener(listener)
    .run(stopping)
    .await;
    let drained = tokio::time::timeout(grace, async { while workers.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            jobs = workers.len(),
            "grace period over; unfinished jobs resume at the next start"
        );
        workers.abort_all();
    }
    upkeep.abort();
    result
}

fn warn_about_open_doors(state: &AppState) {
    let c = &state.config;
    if c.insecure && state.tls.is_none() {
        tracing::warn!(
            "INSECURE: serving without TLS; webhook, API and Harbor tokens cross the network in \
             clear. For a lab only."
        );
    }
    if c.webhook_token.is_none() {
        tracing::warn!("no webhook_token: /webhooks/distribution accepts notifications from anyone");
    }
    if c.harbor_auth.is_none() {
        tracing::warn!("no harbor_auth: /webhooks/harbor accepts events from anyone");
    }
    if c.api_token.is_none() {
        tracing::warn!("no api_token: /api/v1/jobs is open to anyone who can reach it");
    }
    if c.edges.is_empty() {
        tracing::warn!("no edges configured: events are received but nothing is warmed");
    }
}
