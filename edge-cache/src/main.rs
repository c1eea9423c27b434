//! `edge-cache`: wires flags, configuration and logging to the library, runs `certs`, and turns
//! how it ended into the exit status.

use std::process::ExitCode;

use damselfly_edge::config::{EdgeCommand, DAEMON};
use damselfly_edge::{Cli, Config};
use damselfly_server::daemon;

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = damselfly_server::cli::parse(&DAEMON);
    if let Some(EdgeCommand::Certs(command)) = &cli.command {
        return match damselfly_edge::certs::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("edge-cache certs: {e}");
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
