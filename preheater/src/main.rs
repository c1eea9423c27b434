//! `preheater`: wires flags, configuration and logging to the library, runs `jobs`, and turns
//! how it ended into the exit status.

use std::process::ExitCode;

use damselfly_preheater::config::{PreheaterCommand, DAEMON};
use damselfly_preheater::Cli;
use damselfly_server::daemon;

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = damselfly_server::cli::parse(&DAEMON);
    if let Some(PreheaterCommand::Jobs(args)) = &cli.command {
        return daemon::tool_exit(&DAEMON, "jobs", damselfly_preheater::jobs_cli::run(args).await);
    }
    daemon::run_daemon(&DAEMON, &cli, damselfly_preheater::run).await
}
