//! `edge-cache`: wires flags, configuration and logging to the library, and the exit status.

use std::process::ExitCode;

use damselfly_edge::config::DAEMON;
use damselfly_edge::{Cli, Config};
use damselfly_server::daemon;

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = damselfly_server::cli::parse(&DAEMON);
    let (config, _telemetry) = match daemon::start::<Config>(&DAEMON, &cli.common, cli.overrides()) {
        Ok(started) => started,
        Err(exit) => return exit,
    };
    daemon::exit(damselfly_edge::run(config, damselfly_server::shutdown::signal()).await)
}
