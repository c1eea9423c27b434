//! `edge-cache`: wires flags, configuration and logging to the library, runs `certs` and
//! `admin`, and turns how it ended into the exit status.

use std::process::ExitCode;

use damselfly_edge::config::{EdgeCommand, DAEMON};
use damselfly_edge::{Cli, Config};
use damselfly_server::daemon;

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = damselfly_server::cli::parse(&DAEMON);
    let tool = match &cli.command {
        Some(EdgeCommand::Certs(command)) => Some((
            "certs",
            damselfly_edge::certs::run(command).map_err(anyhow::Error::msg),
        )),
        Some(EdgeCommand::Admin(args)) => Some(("admin", damselfly_edge::admin_cli::run(args).await)),
        None => None,
    };
    if let Some((name, outcome)) = tool {
        return match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("edge-cache {name}: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let (config, _telemetry) = match daemon::start::<Config>(&DAEMON, &cli.common, cli.overrides()) {
        Ok(started) => started,
        Err(exit) => return exit,
    };
    daemon::exit(damselfly_edge::run(config, damselfly_server::shutdown::signal()).await)
}
