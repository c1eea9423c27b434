//! `bench sim`: thousands of hosts in racks, event by event on modelled links, running the
//! agent's own download decisions ([`download`]: the piece picker, piece ownership, parents'
//! and announcements' cadence) against the edge's own parent ranking ([`scheduler`]). What it
//! models rather than runs: the links (fluid flows, [`network`]), the edge serving any listed
//! piece at once, and calls to the scheduler taking no time.
//!
//! `--compare` first runs the real swarm (`bench swarm`'s damselfly setup, network namespaces)
//! at 16 hosts and the simulation of the same shape, so the model is checked against the
//! daemons in the same run.

mod download;
mod engine;
mod network;
mod scheduler;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use clap::Args;
use damselfly_agent::config::{DownloadConfig, UploadConfig};
use damselfly_edge::config::SchedulerConfig;
use serde_json::json;

use self::engine::{Outcome, Shape};
use crate::report::{json_line, ratio, table, MIB};

#[derive(Args, Debug)]
pub struct SimArgs {
    /// Host counts to simulate.
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    hosts: Vec<usize>,
    /// Hosts per rack.
    #[arg(long, default_value_t = 100)]
    rack_size: usize,
    /// Racks per zone.
    #[arg(long, default_value_t = 10)]
    racks_per_zone: usize,
    /// Every host's link, in Mbit/s, each direction. The default is `bench swarm`'s, whose
    /// real runs the model is checked against (`--compare`): piece times against the protocol's
    /// cadence as measured, not extrapolated.
    #[arg(long, default_value_t = 40.0)]
    host_mbit: f64,
    /// A rack's uplink is its hosts' links over this ratio (0: no rack uplinks, one switch).
    #[arg(long, default_value_t = 4.0)]
    oversubscription: f64,
    /// The edge's link, in Mbit/s, each direction (25 host links by default).
    #[arg(long, default_value_t = 1000.0)]
    edge_mbit: f64,
    /// The origin registry's link to the edge, in Mbit/s.
    #[arg(long, default_value_t = 40.0)]
    origin_mbit: f64,
    /// Image size in MiB, split evenly over the layers.
    #[arg(long, default_value_t = 64)]
    image_mib: u64,
    #[arg(long, default_value_t = 1)]
    layers: u64,
    /// Agents' upload pacing, percent of their link (as `bench swarm`).
    #[arg(long, default_value_t = 90)]
    agent_upload_share: u64,
    /// Bytes of a piece upload that fit in socket buffers, in KiB: an agent's upload slot frees
    /// once the rest is written (see `network.rs`).
    #[arg(long, default_value_t = 112)]
    send_buffer_kib: u64,
    /// The model's time step, in milliseconds (a 256 KiB piece takes 52 ms on a 40 Mbit/s
    /// link alone).
    #[arg(long, default_value_t = 4.0)]
    step_ms: f64,
    /// Runs of each host count (ties in the picker are broken at random).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Print each run's links second by second: what the origin, the edge and the peers sent.
    #[arg(long)]
    timeline: bool,
    /// First run the real swarm at 16 hosts and the simulation of its shape (needs root).
    #[arg(long)]
    compare: bool,
    /// With --compare: the real swarm's layers (`bench swarm`'s default shape otherwise).
    #[arg(long, default_value_t = 8)]
    compare_layers: u64,
    /// With --compare: first three octets of the bench subnet.
    #[arg(long, default_value = "10.213.0")]
    subnet: String,
}

struct Row {
    label: String,
    shape: Shape,
    outcome: Outcome,
    wall: Duration,
    /// The real swarm's all done, when this row is its simulation.
    real_all_done: Option<f64>,
}

pub async fn run(bin_dir: &Path, args: SimArgs) -> Result<()> {
    ensure!(
        args.rack_size >= 1 && args.layers >= 1 && args.image_mib >= 1,
        "--rack-size, --layers and --image-mib must be > 0"
    );
    ensure!(args.step_ms >= 0.1, "--step-ms must be at least 0.1");
    let mut rows = Vec::new();
    if args.compare {
        let real =
            crate::scenarios::swarm::shapes::run_one(bin_dir, 16, args.compare_layers, &args.subnet).await?;
        let shape = Shape {
            hosts: 16,
            rack_size: real.rack_size,
            racks_per_zone: usize::MAX,
            host_mbit: real.host_mbit as f64,
            // `bench swarm`'s hosts share one switch: no rack uplinks.
            oversubscription: 0.0,
            edge_mbit: real.host_mbit as f64,
            origin_mbit: real.host_mbit as f64,
            image_bytes: real.image_bytes,
            layers: args.compare_layers,
            upload_share: real.agent_upload_share as f64 / 100.0,
            send_buffer: (args.send_buffer_kib * 1024) as f64,
            step: Duration::from_secs_f64(args.step_ms / 1000.0),
        };
        eprintln!(
            "real swarm, 16 hosts: all done in {:.1} s ({:.2}x its bound {:.1} s)",
            real.all_done,
            real.all_done / real.bound,
            real.bound
        );
        rows.push(simulate("16 (as the real swarm)", &shape, Some(real.all_done)));
    }
    for &hosts in &args.hosts {
        ensure!(hosts >= 1, "--hosts must be > 0");
        let shape = Shape {
            hosts,
            rack_size: args.rack_size,
            racks_per_zone: args.racks_per_zone,
            host_mbit: args.host_mbit,
            oversubscription: args.oversubscription,
            edge_mbit: args.edge_mbit,
            origin_mbit: args.origin_mbit,
            image_bytes: args.image_mib * MIB,
            layers: args.layers,
            upload_share: args.agent_upload_share as f64 / 100.0,
            send_buffer: (args.send_buffer_kib * 1024) as f64,
            step: Duration::from_secs_f64(args.step_ms / 1000.0),
        };
        for _ in 0..args.rounds {
            rows.push(simulate(&hosts.to_string(), &shape, None));
        }
    }
    print(&rows);
    if args.timeline {
        for r in &rows {
            print_timeline(r);
        }
    }
    Ok(())
}

fn simulate(label: &str, shape: &Shape, real_all_done: Option<f64>) -> Row {
    eprintln!(
        "simulating {} hosts, {} per rack, {:.0} MiB in {} blobs",
        shape.hosts,
        shape.rack_size,
        shape.image_bytes as f64 / MIB as f64,
        shape.layers
    );
    let started = Instant::now();
    let outcome = engine::run(
        shape,
        &DownloadConfig::default(),
        UploadConfig::default().slots,
        SchedulerConfig::default().max_parents,
    );
    Row {
        label: label.to_string(),
        shape: shape.clone(),
        outcome,
        wall: started.elapsed(),
        real_all_done,
    }
}

fn print(rows: &[Row]) {
    let mut cells = Vec::new();
    let mut json_rows = Vec::new();
    for r in rows {
        let (o, s) = (&r.outcome, &r.shape);
        let bound = s.bound();
        let f = s.image_bytes as f64;
        let racks = s.hosts.div_ceil(s.rack_size) as f64;
        let all_done = o.all_done();
        // Bytes that entered a rack: from the edge (outside every rack) or a peer elsewhere.
        let into_racks = o.edge_bytes + o.peer_bytes_across_racks;
        let data = o.edge_bytes + o.peer_bytes_in_rack + o.peer_bytes_across_racks;
        let per_host_sec = |v: f64| v / s.hosts as f64 / all_done;
        let control_bytes = o.traffic.bytes();
        let versus_real = r
            .real_all_done
            .map(|real| format!("{:+.0}%", (all_done / real - 1.0) * 100.0));
        cells.push(vec![
            r.label.clone(),
            format!("{:.0}", racks),
            format!("{bound:.2}"),
            format!(
                "{:.2} / {:.2} / {:.2}",
                ratio(o.percentile(0.5), bound),
                ratio(o.percentile(0.99), bound),
                ratio(all_done, bound)
            ),
            format!("{all_done:.2}"),
            versus_real.clone().unwrap_or_else(|| "-".into()),
            format!("{:.2} / {:.2}", o.origin_bytes / f, o.edge_bytes / f),
            format!("{:.2}", into_racks / (racks * f)),
            format!(
                "{:.1} / {:.1}",
                per_host_sec(o.traffic.messages() as f64),
                per_host_sec(control_bytes) / 1000.0
            ),
            format!("{:.3}%", control_bytes / data * 100.0),
            format!("{:.0}", r.wall.as_secs_f64()),
        ]);
        json_rows.push(json!({
            "label": r.label,
            "hosts": s.hosts,
            "rack_size": s.rack_size,
            "host_mbit": s.host_mbit,
            "oversubscription": s.oversubscription,
            "edge_mbit": s.edge_mbit,
            "origin_mbit": s.origin_mbit,
            "image_bytes": s.image_bytes,
            "layers": s.layers,
            "bound_s": bound,
            "p50_s": o.percentile(0.5),
            "p99_s": o.percentile(0.99),
            "all_done_s": all_done,
            "real_all_done_s": r.real_all_done,
            "origin_copies": o.origin_bytes / f,
            "edge_copies": o.edge_bytes / f,
            "peer_bytes_in_rack": o.peer_bytes_in_rack,
            "peer_bytes_across_racks": o.peer_bytes_across_racks,
            "into_racks_over_racks_x_image": into_racks / (racks * f),
            "announcements": o.traffic.announcements,
            "parents_queries": o.traffic.parents_queries,
            "table_refreshes": o.traffic.table_refreshes,
            "control_bytes": control_bytes,
            "busy_answers": o.busy_answers,
            "wall_s": r.wall.as_secs_f64(),
        }));
    }
    table(
        "simulated swarm (times in seconds; ratios to the bound with rack uplinks)",
        &[
            "hosts",
            "racks",
            "bound",
            "p50 / p99 / all vs bound",
            "all done",
            "vs real",
            "origin / edge copies",
            "into racks / (racks x image)",
            "control msgs / kB per host-s",
            "control / data",
            "wall s",
        ],
        &cells,
    );
    json_line(&json!({ "scenario": "sim", "rows": json_rows }));
}

fn print_timeline(row: &Row) {
    let mbit = |bytes: f64| format!("{:.0}", bytes * 8.0 / 1e6);
    let cells: Vec<Vec<String>> = row
        .outcome
        .timeline
        .iter()
        .enumerate()
        .map(|(second, [origin, edge, peers])| {
            let done = row
                .outcome
                .done
                .iter()
                .filter(|d| **d <= (second + 1) as f64)
                .count();
            vec![
                second.to_string(),
                mbit(*origin),
                mbit(*edge),
                mbit(*peers),
                done.to_string(),
            ]
        })
        .collect();
    table(
        &format!("{} hosts, second by second (Mbit/s)", row.label),
        &["second", "origin sent", "edge sent", "peers sent", "hosts done"],
        &cells,
    );
}
