//! `edge-cache`: wires configuration, logging, the listener and signals to the library.

use std::process::ExitCode;

use clap::Parser;
use damselfly_edge::{AppState, Cli, Config};
use tracing_subscriber::EnvFilter;

fn init_logging(format: &str) {
    let filter = EnvFilter::try_from_env("DAMSELFLY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

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
            eprintln!("edge-cache: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        match toml::to_string_pretty(&config) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("edge-cache: cannot print config: {e}"),
        }
        eprintln!("edge-cache: configuration is valid");
        return ExitCode::SUCCESS;
    }
    init_logging(&config.log_format);
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
    tracing::info!(addr = %listen, region = %state.config.region, "edge cache listening");
    match damselfly_edge::serve(listener, state, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}
