//! `preheater`: wires configuration, logging, the listener and signals to the library.

use std::process::ExitCode;

use clap::Parser;
use damselfly_preheater::{AppState, Cli, Config};

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("preheater: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        match toml::to_string_pretty(&config.redacted()) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("preheater: cannot print config: {e}"),
        }
        eprintln!("preheater: configuration is valid");
        return ExitCode::SUCCESS;
    }
    // Held to the end: dropping it flushes buffered spans.
    let _telemetry =
        match damselfly_preheater::telemetry::init(&config.log_format, config.otlp_endpoint.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("preheater: {e}");
                return ExitCode::FAILURE;
            }
        };
    let listen = config.listen;
    let state = match AppState::new(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%listen, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %listen, store = state.store.backend(), regions = ?state.warmer.regions(),
        "preheater listening");
    match damselfly_preheater::serve(listener, state, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}
