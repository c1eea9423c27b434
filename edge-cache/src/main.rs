//! `edge-cache`: wires flags, configuration and logging to the library, runs `certs` and
//! `admin`, and turns how it ended into the exit status.

use std::process::ExitCode;

use damselfly_edge::config::{EdgeCommand, DAEMON};
use damselfly_edge::Cli;
use damselfly_server::daemon;

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = damselfly_server::cli::parse(&DAEMON);
    match &cli.command {
        Some(EdgeCommand::Certs(command)) => {
            daemon::tool_exit(&DAEMON, "certs", damselfly_edge::certs::run(command))
        }
        Some(EdgeCommand::Admin(args)) => {
            daemon::tool_exit(&DAEMON, "admin", damselfly_edge::admin_cli::run(args).await)
        }
        None => daemon::run_daemon(&DAEMON, &cli, damselfly_edge::run).await,
    }
}
