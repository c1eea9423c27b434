//! `harbor-integration`: wires the command line to the library.

use std::process::ExitCode;

use clap::Parser;
use damselfly_harbor::cli::{Cli, Command};
use damselfly_harbor::register::register;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Register(args) => {
            let prepared = args.client().and_then(|c| args.registration().map(|r| (c, r)));
            let (client, registration) = match prepared {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("harbor-integration: {e}");
                    return ExitCode::from(2);
                }
            };
            match register(&client, &registration).await {
                Ok((_, output)) => {
                    for line in output {
                        println!("{line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("harbor-integration: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
