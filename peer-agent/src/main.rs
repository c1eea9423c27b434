//! `peer-agent`: wires flags, configuration and logging to the library, runs `configure`,
//! `unconfigure`, `get` and `status`, and turns how it ended into the exit status.

use std::process::ExitCode;

use damselfly_agent::config::{Command, DAEMON};
use damselfly_agent::Cli;
use damselfly_server::daemon;

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = damselfly_server::cli::parse(&DAEMON);
    let tool = |name, outcome| daemon::tool_exit(&DAEMON, name, outcome);
    match &cli.command {
        Some(Command::Configure(args)) => tool("configure", damselfly_agent::configure::run(args)),
        Some(Command::Unconfigure(args)) => {
            tool("unconfigure", damselfly_agent::configure::run_unconfigure(args))
        }
        Some(Command::Get(args)) => tool("get", damselfly_agent::get::run(args).await),
        Some(Command::Status(args)) => tool("status", damselfly_agent::status::run(args).await),
        None => daemon::run_daemon(&DAEMON, &cli, damselfly_agent::run).await,
    }
}
