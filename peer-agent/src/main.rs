//! `peer-agent`: wires configuration, logging, listeners and signals to the library.

use std::process::ExitCode;

use clap::Parser;
use damselfly_agent::config::Command;
use damselfly_agent::{AgentState, Cli, Config};
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
    if let Some(Command::Configure(args)) = &cli.command {
        return match damselfly_agent::configure::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("peer-agent configure: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Get(args)) = &cli.command {
        return match damselfly_agent::get::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("peer-agent get: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(&cli.daemon) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("peer-agent: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.daemon.check_config {
        match toml::to_string_pretty(&config) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("peer-agent: cannot print config: {e}"),
        }
        eprintln!("peer-agent: configuration is valid");
        return ExitCode::SUCCESS;
    }
    init_logging(&config.log_format);
    let (listen, upload_listen) = (config.listen, config.upload_listen);
    let state = match AgentState::new(config) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let (mirror, upload) = match (
        tokio::net::TcpListener::bind(listen).await,
        tokio::net::TcpListener::bind(upload_listen).await,
    ) {
        (Ok(m), Ok(u)) => (m, u),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(%listen, %upload_listen, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(mirror = %listen, upload = %upload_listen, location = %state.config.location, "peer agent listening");
    match damselfly_agent::serve(mirror, upload, state, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}
