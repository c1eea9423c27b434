//! `preheater`: wires flags, configuration and logging to the library, and the exit status.

use std::process::ExitCode;

use damselfly_preheater::config::DAEMON;
use damselfly_preheater::{Cli, Config};
use damselfly_server::daemon;

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = damselfly_server::cli::parse(&DAEMON);
    let flags = match cli.overrides() {
        Ok(flags) => flags,
        Err(e) => {
            eprintln!("preheater: {e}");
            return ExitCode::from(2);
        }
    };
    let (config, _telemetry) = match daemon::start::<Config>(&DAEMON, &cli.common, flags) {
        Ok(started) => started,
        Err(exit) => return exit,
    };
    daemon::exit(damselfly_preheater::run(config, damselfly_server::shutdown::signal()).await)
}
