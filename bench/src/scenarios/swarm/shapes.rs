//! The swarm over a matrix of shapes: host counts × layer counts × clients, each a fresh
//! topology, registry, edge and agents (the `damselfly` setup), each against its own Kumar-Ross
//! bound. One table and one JSON line for the whole matrix, so no shape hides behind the
//! default one.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use super::clients::Client;
use super::{in_topology, Setup, SwarmArgs};
use crate::report::{json_line, ratio, table};

#[derive(Args, Debug)]
pub struct ShapesArgs {
    /// Host counts to run.
    #[arg(long, value_delimiter = ',', default_value = "4,8,16")]
    host_counts: Vec<usize>,
    /// Layer counts to run (the image size is split evenly over them).
    #[arg(long, value_delimiter = ',', default_value = "1,2,8")]
    layer_counts: Vec<u64>,
    /// Pulling clients to run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "curl,skopeo,ctr")]
    clients: Vec<Client>,
    /// Every link, in Mbit/s, each direction (registry and edge included). At the default, 16
    /// hosts keep a 2-core machine about half busy with curl or skopeo, and up to 90% with ctr
    /// (16 containerds); 20 keeps every shape under ~65%.
    #[arg(long, default_value_t = 40)]
    host_mbit: u64,
    /// Image size in MiB.
    #[arg(long, default_value_t = 64)]
    image_mib: u64,
    /// Hosts per rack.
    #[arg(long, default_value_t = 4)]
    rack_size: usize,
    /// Each agent's upload pacing, percent of its link (as `bench swarm`).
    #[arg(long, default_value_t = 90)]
    agent_upload_share: u64,
    /// TOML appended to every agent's config.
    #[arg(long, default_value = "")]
    agent_toml: String,
    /// TOML appended to the edge's config.
    #[arg(long, default_value = "")]
    edge_toml: String,
    /// First three octets of the bench subnet (must be unused on this machine).
    #[arg(long, default_value = "10.213.0")]
    subnet: String,
    /// Keep the daemons' logs under this directory, one subdirectory per shape.
    #[arg(long, value_name = "DIR")]
    keep_logs: Option<PathBuf>,
    /// The ratio to the bound every shape should stay within.
    #[arg(long, default_value_t = 1.2)]
    target: f64,
}

struct Row {
    hosts: usize,
    layers: u64,
    client: Client,
    result: Result<Figures>,
}

struct Figures {
    all_done: f64,
    p50: f64,
    bound: f64,
    /// Copies of the image sent by the origin, the edge and the peers.
    copies: [f64; 3],
    cpu_busy: f64,
    ingest: Option<super::report::Ingest>,
}

pub async fn run(bin_dir: &std::path::Path, args: ShapesArgs) -> Result<()> {
    let edge_binary = crate::scenarios::binary(bin_dir, "edge-cache")?;
    let agent_binary = crate::scenarios::binary(bin_dir, "peer-agent")?;
    let mut rows = Vec::new();
    for &client in &args.clients {
        for &layers in &args.layer_counts {
            for &hosts in &args.host_counts {
                eprintln!("shape: {hosts} hosts, {layers} layers, {}", client.name());
                let swarm = swarm_args(&args, hosts, layers, client);
                let result = match in_topology(&edge_binary, &agent_binary, &swarm).await {
                    Ok(measured) => figures(&measured),
                    Err(err) => {
                        eprintln!("  failed: {err:#}");
                        Err(err)
                    }
                };
                rows.push(Row {
                    hosts,
                    layers,
                    client,
                    result,
                });
            }
        }
    }
    print(&args, &rows);
    let failed = rows.iter().filter(|r| r.result.is_err()).count();
    if failed > 0 {
        bail!("{failed} of {} shapes failed", rows.len());
    }
    Ok(())
}

fn swarm_args(args: &ShapesArgs, hosts: usize, layers: u64, client: Client) -> SwarmArgs {
    SwarmArgs {
        hosts,
        rack_size: args.rack_size,
        host_mbit: args.host_mbit,
        uplink_mbit: None,
        image_mib: args.image_mib,
        layers,
        client,
        setups: vec![Setup::Damselfly],
        subnet: args.subnet.clone(),
        agent_upload_share: args.agent_upload_share,
        abuse_idle: 0,
        abuse_stalled: 0,
        agent_toml: args.agent_toml.clone(),
        edge_toml: args.edge_toml.clone(),
        timeline: None,
        keep_logs: args
            .keep_logs
            .as_ref()
            .map(|dir| dir.join(format!("{hosts}h-{layers}l-{}", client.name()))),
        image: None,
    }
}

fn figures(measured: &super::Measured) -> Result<Figures> {
    let Some(outcome) = measured.outcomes.iter().find(|o| o.setup() == Setup::Damselfly) else {
        bail!("the damselfly setup did not run");
    };
    let image = measured.image.total_blob_bytes as f64;
    let bytes = outcome.bytes();
    Ok(Figures {
        all_done: outcome.all_done(),
        p50: outcome.percentile(0.5),
        bound: measured.links.bound(&measured.image),
        copies: [bytes.origin, bytes.edge, bytes.peer].map(|b| b as f64 / image),
        cpu_busy: outcome.cpu_busy(),
        ingest: outcome.ingest(measured.image.total_blob_bytes),
    })
}

fn print(args: &ShapesArgs, rows: &[Row]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = vec![r.hosts.to_string(), r.layers.to_string(), r.client.name()];
            match &r.result {
                Ok(f) => {
                    let vs = ratio(f.all_done, f.bound);
                    cells.extend([
                        format!("{:.1}", f.all_done),
                        format!("{:.1}", f.p50),
                        format!("{:.1}", f.bound),
                        format!("{vs:.2}"),
                        if vs <= args.target { "yes" } else { "no" }.into(),
                        format!("{:.2}", f.copies[0]),
                        format!("{:.2}", f.copies[1]),
                        format!("{:.2}", f.copies[2]),
                        f.ingest.map_or("-".into(), |i| format!("{:.1}", i.done)),
                        f.ingest.map_or("-".into(), |i| format!("{:.0}", i.mbit)),
                        f.ingest
                            .map_or("-".into(), |i| format!("{:.1}", f.all_done - i.done)),
                        format!("{:.0}%", f.cpu_busy * 100.0),
                    ]);
                }
                Err(_) => cells.push("failed".into()),
            }
            cells
        })
        .collect();
    let within = format!("≤{}x", args.target);
    table(
        &format!(
            "swarm shapes: every link {} Mbit/s, {} MiB image, {} hosts per rack, agents' uploads at {}%; \
             copies are of the image",
            args.host_mbit, args.image_mib, args.rack_size, args.agent_upload_share
        ),
        &[
            "hosts",
            "layers",
            "client",
            "all done s",
            "p50 s",
            "bound s",
            "vs bound",
            &within,
            "origin",
            "edge",
            "peers",
            "edge has all s",
            "edge in Mbit/s",
            "after s",
            "cpu busy",
        ],
        &cells,
    );
    let measured: Vec<(&Row, &Figures)> = rows
        .iter()
        .filter_map(|r| r.result.as_ref().ok().map(|f| (r, f)))
        .collect();
    let vs = |f: &Figures| ratio(f.all_done, f.bound);
    let met = measured.iter().filter(|(_, f)| vs(f) <= args.target).count();
    if let Some((worst, f)) = measured.iter().max_by(|a, b| vs(a.1).total_cmp(&vs(b.1))) {
        println!(
            "\n  {met} of {} shapes within {}x the bound; worst {:.2}x ({} hosts, {} layers, {})",
            rows.len(),
            args.target,
            vs(f),
            worst.hosts,
            worst.layers,
            worst.client.name()
        );
    }
    let results: Vec<_> = rows
        .iter()
        .map(|r| match &r.result {
            Ok(f) => json!({
                "hosts": r.hosts,
                "layers": r.layers,
                "client": r.client.name(),
                "all_done_s": f.all_done,
                "p50_s": f.p50,
                "lower_bound_s": (f.bound * 1000.0).round() / 1000.0,
                "vs_bound": vs(f),
                "origin_copies": ratio(f.copies[0], 1.0),
                "edge_copies": ratio(f.copies[1], 1.0),
                "peer_copies": ratio(f.copies[2], 1.0),
                "cpu_busy": (f.cpu_busy * 100.0).round() / 100.0,
                "edge_has_all_s": f.ingest.map(|i| i.done),
                "edge_in_mbit": f.ingest.map(|i| (i.mbit * 10.0).round() / 10.0),
            }),
            Err(err) => json!({
                "hosts": r.hosts,
                "layers": r.layers,
                "client": r.client.name(),
                "error": format!("{err:#}"),
            }),
        })
        .collect();
    json_line(&json!({
        "scenario": "shapes",
        "host_mbit": args.host_mbit,
        "image_mib": args.image_mib,
        "rack_size": args.rack_size,
        "agent_upload_share": args.agent_upload_share,
        "target_vs_bound": args.target,
        "shapes_within_target": met,
        "results": results,
    }));
}

/// One real swarm at `bench swarm`'s defaults but for its host and layer counts: what `bench sim
/// --compare` holds its model against.
pub struct RealShape {
    pub all_done: f64,
    pub bound: f64,
    pub rack_size: usize,
    pub host_mbit: u64,
    pub image_bytes: u64,
    pub agent_upload_share: u64,
}

pub async fn run_one(
    bin_dir: &std::path::Path,
    hosts: usize,
    layers: u64,
    subnet: &str,
) -> Result<RealShape> {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        swarm: SwarmArgs,
    }
    let hosts = hosts.to_string();
    let layers = layers.to_string();
    let argv = [
        "swarm",
        "--hosts",
        &hosts,
        "--layers",
        &layers,
        "--setups",
        "damselfly",
        "--subnet",
        subnet,
    ];
    let swarm = <Defaults as clap::Parser>::try_parse_from(argv)?.swarm;
    let edge_binary = crate::scenarios::binary(bin_dir, "edge-cache")?;
    let agent_binary = crate::scenarios::binary(bin_dir, "peer-agent")?;
    let measured = in_topology(&edge_binary, &agent_binary, &swarm).await?;
    let figures = figures(&measured)?;
    Ok(RealShape {
        all_done: figures.all_done,
        bound: figures.bound,
        rack_size: swarm.rack_size,
        host_mbit: swarm.host_mbit,
        image_bytes: measured.image.total_blob_bytes,
        agent_upload_share: swarm.agent_upload_share,
    })
}
