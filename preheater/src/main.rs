//! `preheater`: wires flags, configuration and logging to the library, runs `jobs`, and turns
//! how it ended into the exit status.

use std::process::ExitCode;

use damselfly_preheater::config::{PreheaterCommand, DAEMON};
use damselfly_preheater::{Cli, Config};
use damselfly_server::daemon;

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = damselfly_server::cli::parse(&DAEMON);
    if let Some(PreheaterCommand::Jobs(args)) = &cli.command {
        return match damselfly_preheater::jobs_cli::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("preheater jobs: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
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
