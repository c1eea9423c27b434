//! `peer-agent`: wires flags, configuration and logging to the library, runs `configure`,
//! `unconfigure`, `get` and `status`, and turns how it ended into the exit status.

use std::process::ExitCode;

use damselfly_agent::config::{Command, DAEMON};
use damselfly_agent::{Cli, Config};
use damselfly_server::daemon;

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = damselfly_server::cli::parse(&DAEMON);
    let tool = match &cli.command {
        Some(Command::Configure(args)) => Some(("configure", damselfly_agent::configure::run(args))),
        Some(Command::Unconfigure(args)) => {
            Some(("unconfigure", damselfly_agent::configure::run_unconfigure(args)))
        }
        Some(Command::Get(args)) => Some(("get", damselfly_agent::get::run(args).await)),
        Some(Command::Status(args)) => Some(("status", damselfly_agent::status::run(args).await)),
        None => None,
    };
    if let Some((name, result)) = tool {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("peer-agent {name}: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let (config, _telemetry) = match daemon::start::<Config>(&DAEMON, &cli.common, cli.daemon.overrides()) {
        Ok(started) => started,
        Err(exit) => return exit,
    };
    daemon::exit(damselfly_agent::run(config, damselfly_server::shutdown::signal()).await)
}
