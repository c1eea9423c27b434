//! Many hosts pull one image at once over rate-limited links (network namespaces, `tbf`).
//!
//! Three setups on the same image and links, one after the other, each starting cold:
//! `direct` (every host pulls from the registry), `edge` (every host pulls through one edge
//! cache, no agents) and `damselfly` (an agent per host, the edge as piece source and
//! scheduler). Each is compared with the Kumar-Ross lower bound for distributing F bytes from a
//! source of uplink u_s to N hosts of uplinks u_i and downlinks d_i:
//! `max(F/u_s, F/d_min, N·F/(u_s + Σu_i))`, and with the direct pulls of the same run.
//!
//! The pulling client runs in each host's namespace: curl by default (the manifest, then the
//! blobs, three at a time as containerd does, exactly the requests a runtime sends to its
//! mirror), or skopeo or containerd's `ctr` (`--client`, `clients.rs`), which hash and write
//! what they receive.
//!
//! `bench shapes` (`shapes.rs`) runs the `damselfly` setup over a matrix of host counts, layer
//! counts and clients and prints one table.
//!
//! Two more setups measure what the plain one pays: `damselfly-tls` (the edge on TLS, agents with
//! certificates) and `damselfly-abuse` (the plain setup while idle connections and stalled piece
//! readers hold on to the edge, `abuse.rs`).

mod abuse;
mod clients;
pub mod compress;
mod daemons;
mod links;
mod pull;
pub mod region;
mod report;
pub mod shapes;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use clap::{Args, ValueEnum};
use damselfly_test_support::image::{build_image_async, BuiltImage, ImageSpec};
use damselfly_test_support::pki::Pki;
use damselfly_test_support::skopeo::{self, PushOptions};

use self::clients::{Client, HostClient};
use self::daemons::{AgentSetup, Daemon, REGISTRY_PORT};
use self::report::{Bytes, Outcome};
use crate::netns::{Host, Topology};
use crate::report::MIB;

pub const REPOSITORY: &str = "bench/swarm";
pub const TAG: &str = "v1";
const ABUSE_REPOSITORY: &str = "bench/abuse";

#[derive(Args, Clone, Debug)]
pub struct SwarmArgs {
    /// Hosts pulling at once, each in its own network namespace.
    #[arg(long, default_value_t = 16)]
    hosts: usize,
    /// Hosts per rack (agents prefer parents in their own rack).
    #[arg(long, default_value_t = 4)]
    rack_size: usize,
    /// Every host's link, in Mbit/s, each direction. The default keeps a 2-core machine below
    /// saturation with 16 hosts, so the run measures the distribution, not the CPU.
    #[arg(long, default_value_t = 40)]
    host_mbit: u64,
    /// The registry's and the edge's link, in Mbit/s, each direction [default: --host-mbit].
    #[arg(long)]
    uplink_mbit: Option<u64>,
    /// Image size in MiB, split evenly over the layers.
    #[arg(long, default_value_t = 64)]
    image_mib: u64,
    /// Number of layers.
    #[arg(long, default_value_t = 8)]
    layers: u64,
    /// The pulling client on every host.
    #[arg(long, value_enum, default_value = "curl")]
    client: Client,
    /// Setups to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "direct,edge,damselfly"
    )]
    setups: Vec<Setup>,
    /// First three octets of the bench subnet (must be unused on this machine).
    #[arg(long, default_value = "10.213.0")]
    subnet: String,
    /// Each agent's `upload.rate_limit`, as a percentage of its link (0: unlimited). Pacing
    /// uploads a little under the link's rate keeps its queue short, so the host's piece
    /// requests and acknowledgements do not wait behind its uploads; it is how an agent is
    /// meant to be configured (see docs/configuration.md). Set 0 to put an `[upload]` section
    /// in --agent-toml.
    #[arg(long, default_value_t = 90)]
    agent_upload_share: u64,
    /// `damselfly-abuse`: connections opened to the edge that never send a request.
    #[arg(long, default_value_t = 2000)]
    abuse_idle: usize,
    /// `damselfly-abuse`: connections that ask the edge for pieces and never read them.
    #[arg(long, default_value_t = 8)]
    abuse_stalled: usize,
    /// TOML appended to every agent's config, e.g. "[download]\nconcurrent_pieces = 16".
    #[arg(long, default_value = "")]
    agent_toml: String,
    /// TOML appended to the edge's config, e.g. "[scheduler]\nmax_parents = 16".
    #[arg(long, default_value = "")]
    edge_toml: String,
    /// Print each setup's links step by step (what the origin, the edge and the hosts sent and
    /// received), from the switch's counters sampled every 100 ms: every second, or every
    /// SECONDS given (0.2 and up).
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "1")]
    timeline: Option<f64>,
    /// Keep the edge's and agents' logs (at info level: when each agent finished each blob)
    /// in this directory, as `<setup>-<daemon>.log`.
    #[arg(long, value_name = "DIR")]
    keep_logs: Option<std::path::PathBuf>,
    /// The image pulled, when a scenario brings its own (`bench compress`); else generated
    /// layers of --image-mib in --layers.
    #[arg(skip)]
    image: Option<ImageSpec>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Setup {
    /// Every host pulls straight from the registry.
    Direct,
    /// Every host pulls through the edge cache; no agents.
    Edge,
    /// An agent on every host: pieces from rack neighbours and the edge (a lab edge: plain
    /// HTTP, `insecure`).
    Damselfly,
    /// The same as deployed: the edge on TLS handing task keys only to agents presenting a
    /// certificate of the cluster CA.
    DamselflyTls,
    /// The plain setup while `--abuse-idle` idle connections and `--abuse-stalled` stalled piece
    /// readers hold on to the edge.
    DamselflyAbuse,
}

impl Setup {
    /// The name `--setups` takes.
    pub fn name(&self) -> String {
        self.to_possible_value()
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_string())
    }
}

pub async fn run(bin_dir: &Path, args: SwarmArgs) -> Result<()> {
    anyhow::ensure!(args.hosts >= 1 && args.hosts <= 200, "--hosts must be 1..=200");
    anyhow::ensure!(
        args.rack_size >= 1 && args.layers >= 1,
        "--rack-size and --layers must be > 0"
    );
    anyhow::ensure!(
        args.agent_upload_share <= 100,
        "--agent-upload-share is a percentage"
    );
    anyhow::ensure!(
        args.timeline.is_none_or(|step| step >= 0.2),
        "--timeline takes a step of 0.2 s or more (the counters are read every 100 ms)"
    );
    let edge_binary = super::binary(bin_dir, "edge-cache")?;
    let agent_binary = super::binary(bin_dir, "peer-agent")?;
    let measured = in_topology(&edge_binary, &agent_binary, &args).await?;
    report::print(
        &measured.links,
        &measured.image,
        &measured.outcomes,
        args.timeline,
    );
    Ok(())
}

/// What one swarm measured.
pub struct Measured {
    links: report::Links,
    image: BuiltImage,
    outcomes: Vec<Outcome>,
}

/// Runs the scenario in a topology of its own, deleted afterwards (also when interrupted).
async fn in_topology(edge_binary: &Path, agent_binary: &Path, args: &SwarmArgs) -> Result<Measured> {
    if let Some(dir) = &args.keep_logs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut topology = Topology::create(&args.subnet)?;
    // Dropping the scenario future kills the daemons; the namespaces go after them.
    let outcome = tokio::select! {
        r = scenario(&mut topology, edge_binary, agent_binary, args) => r,
        () = interrupted() => Err(anyhow!("interrupted: stopping daemons and deleting namespaces")),
    };
    drop(topology);
    outcome
}

async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// What every agent's config gets besides its addresses: the upload pacing, then --agent-toml.
fn agent_toml(args: &SwarmArgs) -> String {
    let mut toml = String::new();
    if args.agent_upload_share > 0 {
        let bytes_per_sec = args.host_mbit * 1_000_000 / 8 * args.agent_upload_share / 100;
        toml.push_str(&format!("[upload]\nrate_limit = \"{bytes_per_sec}\"\n"));
    }
    toml + &args.agent_toml
}

async fn scenario(
    topology: &mut Topology,
    edge_binary: &Path,
    agent_binary: &Path,
    args: &SwarmArgs,
) -> Result<Measured> {
    let uplink = args.uplink_mbit.unwrap_or(args.host_mbit);
    let work = tempfile::Builder::new()
        .prefix("damselfly-bench-swarm-")
        .tempdir()?;
    let per_layer = args.image_mib * MIB / args.layers;
    match &args.image {
        Some(_) => eprintln!("building the image…"),
        None => eprintln!(
            "building a {} MiB image in {} layers…",
            args.image_mib, args.layers
        ),
    }
    let spec = args
        .image
        .clone()
        .unwrap_or_else(|| ImageSpec::new("swarm", vec![per_layer; args.layers as usize]));
    let image = build_image_async(spec, work.path().join("layout"), TAG.into()).await?;

    let origin_host = topology.add_host("origin", 1)?;
    let edge_host = topology.add_host("edge", 2)?;
    let mut hosts = Vec::new();
    for i in 0..args.hosts {
        hosts.push(topology.add_host(&format!("h{:02}", i + 1), 10 + i as u8)?);
    }
    let registry = daemons::registry(&origin_host).await?;
    let origin = format!("{}:{REGISTRY_PORT}", origin_host.ip);
    eprintln!("pushing to the registry in {}…", origin_host.ns);
    skopeo::push(
        &image,
        &format!("{origin}/{REPOSITORY}:{TAG}"),
        &PushOptions::default(),
    )
    .await?;
    // The stalled readers' own blob (damselfly-abuse): the swarm's blobs stay cold at the edge.
    let abuse_image = if args.setups.contains(&Setup::DamselflyAbuse) {
        let image = build_image_async(
            ImageSpec::new("abuse", vec![8 * MIB]),
            work.path().join("abuse-layout"),
            TAG.into(),
        )
        .await?;
        skopeo::push(
            &image,
            &format!("{origin}/{ABUSE_REPOSITORY}:{TAG}"),
            &PushOptions::default(),
        )
        .await?;
        Some(image)
    } else {
        None
    };
    // Shaped only now: the push crossed the unshaped control link and is not measured.
    topology.shape(&origin_host, uplink, uplink)?;
    topology.shape(&edge_host, uplink, uplink)?;
    for host in &hosts {
        topology.shape(host, args.host_mbit, args.host_mbit)?;
    }

    let servers = (&origin_host, &edge_host);
    let clients = HostClient::for_hosts(args.client, hosts.len()).await?;
    let mut outcomes = Vec::new();
    for setup in &args.setups {
        eprintln!("{setup:?}: {} hosts pulling…", hosts.len());
        let setup_name = setup.name();
        let logs = daemons::Logs {
            keep_in: args.keep_logs.as_deref(),
            setup: &setup_name,
        };
        let outcome = match setup {
            Setup::Direct => {
                let round = pull::all(&hosts, &clients, servers, |_| registry.url.clone(), &image).await?;
                let origin_bytes = image.total_blob_bytes * hosts.len() as u64;
                Outcome::new(
                    *setup,
                    round,
                    Bytes {
                        origin: origin_bytes,
                        ..Bytes::default()
                    },
                )
            }
            Setup::Edge => {
                let edge =
                    daemons::edge(edge_binary, &edge_host, &origin, &args.edge_toml, None, logs, &[]).await?;
                let round = pull::all(&hosts, &clients, servers, |_| edge.url.clone(), &image).await?;
                let bytes = edge_bytes(&edge).await?;
                Outcome::new(*setup, round, bytes)
            }
            Setup::Damselfly | Setup::DamselflyTls | Setup::DamselflyAbuse => {
                let pki = match setup {
                    Setup::DamselflyTls => Some(Pki::new()?),
                    _ => None,
                };
                let edge = daemons::edge(
                    edge_binary,
                    &edge_host,
                    &origin,
                    &args.edge_toml,
                    pki.as_deref(),
                    logs,
                    &[],
                )
                .await?;
                let mut agents = Vec::new();
                let agent_toml = agent_toml(args);
                for (i, host) in hosts.iter().enumerate() {
                    let setup = AgentSetup {
                        binary: agent_binary,
                        edges: std::slice::from_ref(&edge.url),
                        spread_edges: false,
                        origin: &origin,
                        location: format!("bench/z1/r{}", i / args.rack_size + 1),
                        extra_toml: &agent_toml,
                        tls: pki.as_deref(),
                        logs,
                    };
                    agents.push(daemons::agent(host, &format!("agent-h{:02}", i + 1), &setup).await?);
                }
                // The attack starts with the pulls: every stalled read then competes with them.
                let _abuse = match (setup, &abuse_image) {
                    (Setup::DamselflyAbuse, Some(image)) => {
                        let edge_addr = format!("{}:{}", edge_host.ip, daemons::EDGE_PORT).parse()?;
                        let blob = image
                            .blobs
                            .iter()
                            .max_by_key(|b| b.size)
                            .ok_or_else(|| anyhow!("the abuse image has no blob"))?;
                        eprintln!(
                            "  {} idle connections and {} stalled piece readers on the edge",
                            args.abuse_idle, args.abuse_stalled
                        );
                        Some(
                            abuse::start(
                                edge_addr,
                                ABUSE_REPOSITORY,
                                &blob.digest.parse()?,
                                args.abuse_idle,
                                args.abuse_stalled,
                            )
                            .await?,
                        )
                    }
                    _ => None,
                };
                let round = pull::all(&hosts, &clients, servers, |i| agents[i].url.clone(), &image).await?;
                let bytes = damselfly_bytes(&edge, &agents).await?;
                Outcome::new(*setup, round, bytes)
            }
        };
        outcomes.push(outcome);
    }
    Ok(Measured {
        links: report::Links {
            hosts: hosts.len(),
            host_mbit: args.host_mbit,
            uplink_mbit: uplink,
            rack_size: args.rack_size,
            agent_upload_share: args.agent_upload_share,
            client: args.client,
        },
        image,
        outcomes,
    })
}

async fn edge_bytes(edge: &Daemon) -> Result<Bytes> {
    let m = edge.metrics().await?;
    Ok(Bytes {
        origin: m.get("damselfly_edge_upstream_bytes_total") as u64,
        edge: m.get("damselfly_edge_served_bytes_total") as u64,
        peer: 0,
        stored_plain: m.get("damselfly_edge_compression_logical_bytes_total") as u64,
        stored_sealed: m.get("damselfly_edge_compression_stored_bytes_total") as u64,
    })
}

async fn damselfly_bytes(edge: &Daemon, agents: &[Daemon]) -> Result<Bytes> {
    let mut bytes = edge_bytes(edge).await?;
    let (mut from_edge, mut from_origin) = (0.0, 0.0);
    let mut from_peer = 0.0;
    for agent in agents {
        let m = agent.metrics().await?;
        let by = |source: &str| {
            m.sum(
                "damselfly_agent_download_bytes_total",
                &[&format!("source=\"{source}\"")],
            )
        };
        from_edge += by("edge");
        from_peer += by("peer");
        from_origin += by("origin");
    }
    // Agents that fall back to the origin fetch it directly: that is origin traffic too.
    bytes.origin += from_origin as u64;
    bytes.edge = from_edge as u64;
    bytes.peer = from_peer as u64;
    Ok(bytes)
}

/// Host CPU busy share (all cores) over an interval, from `/proc/stat`: the machine is small
/// and shared, so a time is only meaningful next to how busy the CPUs were.
pub struct CpuSample {
    busy: u64,
    total: u64,
    at: Instant,
}

impl CpuSample {
    pub fn now() -> CpuSample {
        let line = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = line
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: u64 = fields.iter().sum();
        // idle + iowait
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        CpuSample {
            busy: total - idle,
            total,
            at: Instant::now(),
        }
    }

    /// Busy share since `self`, 0..=1, and the elapsed time.
    pub fn busy_since(&self) -> (f64, Duration) {
        let now = CpuSample::now();
        let total = now.total.saturating_sub(self.total).max(1);
        (
            now.busy.saturating_sub(self.busy) as f64 / total as f64,
            self.at.elapsed(),
        )
    }
}

/// Blob URLs of `image` under `base`, in manifest order.
pub fn blob_urls(base: &str, image: &BuiltImage) -> Vec<String> {
    image
        .blobs
        .iter()
        .map(|b| format!("{base}/v2/{REPOSITORY}/blobs/{}", b.digest))
        .collect()
}

pub fn host_label(host: &Host) -> &str {
    host.ns.trim_start_matches(crate::netns::PREFIX)
}
