//! The swarm with the edge's compression `off` and `auto`, in the same run, over images that
//! compress the way real ones do and one that does not: plain tar layers of this machine's own
//! root filesystem (binaries, libraries, text), a float16 weights file, and gzip layers. Time to
//! all done, bytes on the wire (edge and peers), what the edge stored, and the CPU seconds of
//! the edge and of the hosts' agents.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use damselfly_test_support::image::ImageSpec;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::clients::Client;
use super::{in_topology, Setup, SwarmArgs};
use crate::report::{json_line, ratio, table, MIB};

#[derive(Args, Debug)]
pub struct CompressArgs {
    /// Images to pull.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "rootfs,weights,gzip"
    )]
    images: Vec<Kind>,
    /// Hosts pulling at once.
    #[arg(long, default_value_t = 8)]
    hosts: usize,
    /// Every link, in Mbit/s, each direction (registry and edge included).
    #[arg(long, default_value_t = 40)]
    host_mbit: u64,
    /// Each image's size in MiB (the root filesystem's layers may come out a little smaller:
    /// whole files only).
    #[arg(long, default_value_t = 32)]
    image_mib: u64,
    /// Runs of each image with each mode, alternating off and auto (the machine is noisy).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The pulling client on every host.
    #[arg(long, value_enum, default_value = "curl")]
    client: Client,
    /// First three octets of the bench subnet (must be unused on this machine).
    #[arg(long, default_value = "10.213.0")]
    subnet: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Plain tar layers of this machine's /usr (binaries, libraries, shared data, headers).
    Rootfs,
    /// One plain tar layer holding a float16 weights file (normally distributed values).
    Weights,
    /// Gzip layers of random bytes: nothing to gain.
    Gzip,
}

impl Kind {
    fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(|| format!("{self:?}"), |v| v.get_name().to_string())
    }
}

const MODES: [&str; 2] = ["off", "auto"];

struct Run {
    kind: Kind,
    mode: &'static str,
    image_bytes: u64,
    all_done: f64,
    bound: f64,
    /// Sealed piece bytes agents received from the edge and from peers.
    wire: u64,
    stored_plain: u64,
    stored_sealed: u64,
    edge_cpu: f64,
    hosts_cpu: f64,
    cpu_busy: f64,
}

pub async fn run(bin_dir: &Path, args: CompressArgs) -> Result<()> {
    let edge_binary = crate::scenarios::binary(bin_dir, "edge-cache")?;
    let agent_binary = crate::scenarios::binary(bin_dir, "peer-agent")?;
    let work = tempfile::Builder::new()
        .prefix("damselfly-bench-compress-")
        .tempdir()?;
    let mut runs = Vec::new();
    for &kind in &args.images {
        let spec = image(kind, args.image_mib, work.path())?;
        for round in 0..args.rounds {
            for mode in MODES {
                eprintln!("{}: compression {mode} (round {})", kind.name(), round + 1);
                let swarm = swarm_args(&args, mode, spec.clone());
                let measured = in_topology(&edge_binary, &agent_binary, &swarm).await?;
                let Some(outcome) = measured.outcomes.first() else {
                    bail!("the damselfly setup did not run");
                };
                let bytes = outcome.bytes();
                let (edge_cpu, hosts_cpu) = outcome.cpu_seconds();
                runs.push(Run {
                    kind,
                    mode,
                    image_bytes: measured.image.total_blob_bytes,
                    all_done: outcome.all_done(),
                    bound: measured.links.bound(&measured.image),
                    wire: bytes.edge + bytes.peer,
                    stored_plain: bytes.stored_plain,
                    stored_sealed: bytes.stored_sealed,
                    edge_cpu,
                    hosts_cpu,
                    cpu_busy: outcome.cpu_busy(),
                });
            }
        }
    }
    print(&args, &runs);
    Ok(())
}

fn swarm_args(args: &CompressArgs, mode: &str, image: ImageSpec) -> SwarmArgs {
    SwarmArgs {
        hosts: args.hosts,
        rack_size: 4,
        host_mbit: args.host_mbit,
        uplink_mbit: None,
        image_mib: args.image_mib,
        layers: 1,
        client: args.client,
        setups: vec![Setup::Damselfly],
        subnet: args.subnet.clone(),
        agent_upload_share: 90,
        abuse_idle: 0,
        abuse_stalled: 0,
        agent_toml: String::new(),
        edge_toml: format!("[compression]\nmode = \"{mode}\"\n"),
        timeline: None,
        keep_logs: None,
        image: Some(image),
    }
}

/// The image of `kind`, about `mib` MiB; files it needs are written under `work`.
fn image(kind: Kind, mib: u64, work: &Path) -> Result<ImageSpec> {
    let seed = format!("compress-{}", kind.name());
    Ok(match kind {
        Kind::Rootfs => {
            let trees: Vec<PathBuf> = ["/usr/bin", "/usr/lib", "/usr/share", "/usr/include"]
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.is_dir())
                .collect();
            let each = mib * MIB / trees.len().max(1) as u64;
            trees
                .into_iter()
                .fold(ImageSpec::new(seed, Vec::new()), |spec, tree| {
                    spec.with_file_layer(tree, each)
                })
        }
        Kind::Weights => {
            let dir = work.join("weights");
            std::fs::create_dir_all(&dir)?;
            write_weights(&dir.join("model.f16"), mib * MIB)?;
            ImageSpec::new(seed, Vec::new()).with_file_layer(dir, mib * MIB)
        }
        Kind::Gzip => ImageSpec::new(seed, vec![mib * MIB / 4; 4]),
    })
}

/// `bytes` of float16 values drawn from N(0, 0.02), as a trained layer's weights are spread:
/// the sign and exponent bits repeat, the mantissa's do not.
fn write_weights(path: &Path, bytes: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(16);
    let mut out = Vec::with_capacity(bytes as usize);
    while (out.len() as u64) < bytes {
        // Box-Muller: two uniforms give a standard normal.
        let (u1, u2): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
        let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        out.extend_from_slice(&f16_bits(normal * 0.02).to_le_bytes());
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// IEEE 754 half precision of `x` (round toward zero; subnormals flushed to zero).
fn f16_bits(x: f64) -> u16 {
    let bits = (x as f32).to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let mantissa = ((bits >> 13) & 0x3ff) as u16;
    match exponent {
        e if e <= 0 => sign,
        e if e >= 31 => sign | 0x7c00,
        e => sign | ((e as u16) << 10) | mantissa,
    }
}

fn print(args: &CompressArgs, runs: &[Run]) {
    let cells: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.kind.name(),
                r.mode.to_string(),
                format!("{:.1}", r.image_bytes as f64 / MIB as f64),
                format!("{:.1}", r.all_done),
                format!("{:.2}", ratio(r.all_done, r.bound)),
                format!(
                    "{:.2}",
                    ratio(r.wire as f64, (r.image_bytes * args.hosts as u64) as f64)
                ),
                format!("{:.2}", ratio(r.stored_sealed as f64, r.stored_plain as f64)),
                format!("{:.1}", r.edge_cpu),
                format!("{:.1}", r.hosts_cpu),
                format!("{:.0}%", r.cpu_busy * 100.0),
            ]
        })
        .collect();
    table(
        &format!(
            "compression off and auto: {} hosts, every link {} Mbit/s, {}; wire = sealed piece \
             bytes agents received over what they pulled, stored = what the edge stored over the \
             plaintext",
            args.hosts,
            args.host_mbit,
            args.client.name()
        ),
        &[
            "image",
            "compression",
            "MiB",
            "all done s",
            "vs bound",
            "wire",
            "stored",
            "edge CPU s",
            "agents CPU s",
            "cpu busy",
        ],
        &cells,
    );
    // auto against off for each image, from the medians of its runs.
    let median = |kind: Kind, mode: &str, f: fn(&Run) -> f64| {
        let mut values: Vec<f64> = runs
            .iter()
            .filter(|r| r.kind == kind && r.mode == mode)
            .map(f)
            .collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    let mut summary = Vec::new();
    for &kind in &args.images {
        let vs = |f: fn(&Run) -> f64| ratio(median(kind, "auto", f), median(kind, "off", f));
        let (time, wire) = (vs(|r| r.all_done), vs(|r| r.wire as f64));
        let (edge_cpu, hosts_cpu) = (vs(|r| r.edge_cpu), vs(|r| r.hosts_cpu));
        println!(
            "  {}: auto/off time {time:.2}x, wire bytes {wire:.2}x, edge CPU {edge_cpu:.2}x, agents CPU {hosts_cpu:.2}x",
            kind.name()
        );
        summary.push(json!({
            "image": kind.name(),
            "auto_vs_off_time": time,
            "auto_vs_off_wire": wire,
            "auto_vs_off_edge_cpu": edge_cpu,
            "auto_vs_off_agents_cpu": hosts_cpu,
        }));
    }
    let results: Vec<_> = runs
        .iter()
        .map(|r| {
            json!({
                "image": r.kind.name(),
                "compression": r.mode,
                "image_bytes": r.image_bytes,
                "all_done_s": r.all_done,
                "vs_bound": ratio(r.all_done, r.bound),
                "wire_bytes": r.wire,
                "stored_plain_bytes": r.stored_plain,
                "stored_sealed_bytes": r.stored_sealed,
                "edge_cpu_s": (r.edge_cpu * 100.0).round() / 100.0,
                "agents_cpu_s": (r.hosts_cpu * 100.0).round() / 100.0,
                "cpu_busy": (r.cpu_busy * 100.0).round() / 100.0,
            })
        })
        .collect();
    json_line(&json!({
        "scenario": "compress",
        "hosts": args.hosts,
        "host_mbit": args.host_mbit,
        "client": args.client.name(),
        "summary": summary,
        "results": results,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_bits() {
        assert_eq!(f16_bits(0.0), 0);
        assert_eq!(f16_bits(1.0), 0x3c00);
        assert_eq!(f16_bits(-2.0), 0xc000);
        assert_eq!(f16_bits(0.5), 0x3800);
        assert_eq!(f16_bits(1e6), 0x7c00, "beyond the range: infinity");
        assert_eq!(f16_bits(1e-9), 0, "below the normal range: zero");
    }
}
