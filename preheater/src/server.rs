//! Running the preheater: the workers, store upkeep and the HTTP server, until `shutdown`.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::runner;
use crate::state::AppState;

/// Serves until `shutdown` resolves; then marks the preheater not ready, stops accepting, stops
/// claiming jobs, and gives requests and running jobs `limits.shutdown_grace_secs` to finish.
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
        workers.spawn(runner::worker(state.clone(), worker, stop_rx.clone()));
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
    let grace = Duration::from_secs(state.config.limits.shutdown_grace_secs);
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let signal_state = state.clone();
    let signal = async move {
        shutdown.await;
        signal_state.ready.store(false, Ordering::SeqCst);
        tracing::info!("shutting down: not ready, draining requests and running jobs");
        let _ = stop_tx.send(true);
        let _ = draining_tx.send(());
    };
    let app = crate::http::app(state.clone());
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
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
    if let Some(endpoint) = &c.otlp_endpoint {
        tracing::info!(endpoint = %crate::telemetry::traces_url(endpoint), "exporting traces over OTLP/HTTP");
    }
}
