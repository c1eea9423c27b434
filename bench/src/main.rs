//! `bench`: whole-system scenarios with real registries and clients, each reporting ratios
//! against a baseline measured in the same run (these machines are noisy; absolute numbers
//! from different runs do not compare). Also `bench demo`, the guided tour.

mod report;
mod scenarios;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bench", about = "Damselfly benchmarks and demo", version)]
struct Cli {
    /// Directory holding the `edge-cache` and `peer-agent` binaries (default: next to this one).
    #[arg(long, global = true, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Start a registry, an edge and four peer agents (two racks) on loopback, push a generated
    /// image, pull it through the agents with skopeo (and containerd when present), and show
    /// where the bytes came from.
    Demo,
    /// Edge against direct pulls: one cold and one warm pull of a large image, then many
    /// concurrent cold pulls; times and upstream bytes as ratios.
    Edge(scenarios::edge::EdgeArgs),
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let bin_dir = match cli.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("binary has no directory")?
            .to_path_buf(),
    };
    let edge_binary = bin_dir.join("edge-cache");
    anyhow::ensure!(
        edge_binary.exists(),
        "{} not found: build it first (cargo build --release --bins)",
        edge_binary.display()
    );
    match cli.scenario {
        Scenario::Demo => scenarios::demo::run(&edge_binary, &bin_dir.join("peer-agent")).await,
        Scenario::Edge(args) => scenarios::edge::run(&edge_binary, args).await,
    }
}
