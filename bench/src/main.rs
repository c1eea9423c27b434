//! `bench`: whole-system scenarios with real registries and clients, each reporting ratios
//! against a baseline measured in the same run (these machines are noisy; absolute numbers
//! from different runs do not compare). Also `bench demo`, the guided tour.

mod netns;
mod report;
mod scenarios;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bench", about = "Damselfly benchmarks and demo", version)]
struct Cli {
    /// Directory holding the `edge-cache`, `peer-agent` and `preheater` binaries (default: next
    /// to this one).
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
    /// The scheduler's load: many simulated agents speaking the agent-edge protocol to one edge
    /// on loopback at the agents' cadence, no piece moving; the edge's CPU in hosts per core,
    /// the scheduler's bytes per host against the data, answer latency.
    Control(scenarios::control::ControlArgs),
    /// Edge against direct pulls: one cold and one warm pull of a large image, then many
    /// concurrent cold pulls; times and upstream bytes as ratios.
    Edge(scenarios::edge::EdgeArgs),
    /// One host alone: a fresh agent pulls a large blob from a warm edge on loopback, against
    /// a direct pull from the registry and the receive path's single-core limit (hash and
    /// decrypt each byte once, the same code in this process); CPU seconds per GiB for agent
    /// and edge, and what BLAKE3 as the piece hash would change.
    Host(scenarios::host::HostArgs),
    /// Thousands of hosts in racks on modelled links, running the agent's own piece picker and
    /// download timing against the edge's own parent ranking: completion against the bound
    /// with rack uplinks, origin and edge copies, bytes into racks, scheduler traffic per host.
    /// `--compare` first runs the real swarm at 16 hosts and the simulation of its shape.
    Sim(scenarios::sim::SimArgs),
    /// Many hosts pull one image at once over rate-limited links, each host in its own network
    /// namespace (needs root): direct from the registry, through the edge alone, and with an
    /// agent per host. Completion times against the Kumar-Ross lower bound and the direct
    /// pulls; origin, edge and peer bytes.
    Swarm(scenarios::swarm::SwarmArgs),
    /// The swarm (an agent per host) over a matrix of shapes: host counts, layer counts and
    /// clients (curl, skopeo, containerd's ctr), each against its own lower bound, in one
    /// table (needs root).
    Shapes(scenarios::swarm::shapes::ShapesArgs),
    /// The swarm (an agent per host) with the edge's compression off and auto in the same run:
    /// plain tar layers of this machine's /usr, a float16 weights file, gzip layers. Time to
    /// all done, wire bytes, edge and agent CPU (needs root).
    Compress(scenarios::swarm::compress::CompressArgs),
    /// Two regions of edge clusters (each on its own Redis), the second chained to the first,
    /// agents in both, over shaped links in network namespaces: time to all done against a
    /// bound, origin bytes and bytes between the regions over the image, with all edges up and
    /// with one killed mid-run (needs root).
    Region(scenarios::swarm::region::RegionArgs),
    /// Forwards TCP connections: LISTEN=TO pairs (used by `region` inside a namespace).
    #[command(hide = true)]
    Relay { pairs: Vec<String> },
    /// The warm path on loopback: a registry notifies the preheater during a skopeo push, two
    /// edges (two regions) cache every blob; push-to-warm latency against the push itself.
    /// Then webhook intake: events per second with duplicate deliveries, and a check that each
    /// blob was warmed once per region.
    Warm(scenarios::warm::WarmArgs),
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
    match cli.scenario {
        Scenario::Demo => {
            scenarios::demo::run(
                &scenarios::binary(&bin_dir, "edge-cache")?,
                &scenarios::binary(&bin_dir, "peer-agent")?,
            )
            .await
        }
        Scenario::Control(args) => {
            scenarios::control::run(&scenarios::binary(&bin_dir, "edge-cache")?, args).await
        }
        Scenario::Edge(args) => scenarios::edge::run(&scenarios::binary(&bin_dir, "edge-cache")?, args).await,
        Scenario::Host(args) => {
            scenarios::host::run(
                &scenarios::binary(&bin_dir, "edge-cache")?,
                &scenarios::binary(&bin_dir, "peer-agent")?,
                args,
            )
            .await
        }
        Scenario::Sim(args) => scenarios::sim::run(&bin_dir, args).await,
        Scenario::Swarm(args) => scenarios::swarm::run(&bin_dir, args).await,
        Scenario::Shapes(args) => scenarios::swarm::shapes::run(&bin_dir, args).await,
        Scenario::Compress(args) => scenarios::swarm::compress::run(&bin_dir, args).await,
        Scenario::Region(args) => scenarios::swarm::region::run(&bin_dir, args).await,
        Scenario::Relay { pairs } => scenarios::swarm::region::serve_relay(pairs).await,
        Scenario::Warm(args) => scenarios::warm::run(&bin_dir, args).await,
    }
}
