//! One host alone: how fast a fresh agent pulls a large blob from a warm edge on loopback,
//! against what its CPU allows.
//!
//! Baselines, measured in the same run:
//! - **direct**: `curl` of the blob straight from the registry;
//! - **receive limit**: the agent's per-byte work on the receive path (hash the sealed piece
//!   with BLAKE3 against the table, decrypt it), done by this process on one core with the same
//!   functions over the same piece layout. An agent at 1.00x of it would spend nothing on
//!   sockets, disk and scheduling. The same loop with SHA-256, the hash agents use with edges
//!   that have no BLAKE3 table, is shown beside it.
//!
//! CPU seconds are read from `/proc` for the agent and the edge, per GiB pulled.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Args;
use damselfly_core::{PieceHash, PieceLayout, TaskKey};
use damselfly_test_support::agent::{Agent, AgentOptions};
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::registry::{Registry, RegistryOptions};
use serde_json::json;

use crate::report::{json_line, ratio, table, MIB};

const GIB: f64 = (1u64 << 30) as f64;

#[derive(Args, Debug)]
pub struct HostArgs {
    /// Size of the blob, in MiB.
    #[arg(long, default_value_t = 512)]
    blob_mib: u64,
    /// Rounds; each pulls through a fresh agent (the median round is reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
}

/// One pull: wall time and the CPU seconds of the processes that served it.
#[derive(Clone, Copy, Debug, Default)]
struct Pull {
    seconds: f64,
    agent_cpu: f64,
    edge_cpu: f64,
}

pub async fn run(edge_binary: &Path, agent_binary: &Path, args: HostArgs) -> Result<()> {
    let registry = Registry::start(RegistryOptions::default()).await?;
    eprintln!("pushing a {} MiB blob…", args.blob_mib);
    let image = registry
        .push_image(ImageSpec::new("host", vec![args.blob_mib * MIB]), "bench/host:v1")
        .await?;
    let blob = image.largest_blob().clone();
    let path = format!("/v2/bench/host/blobs/{}", blob.digest);
    let ns = registry.addr();

    let edge = Edge::start(edge_binary, EdgeOptions::new(registry.url())).await?;
    eprintln!("warming the edge…");
    curl(&format!("{}{path}?ns={ns}", edge.url()), blob.size).await?;

    let mut direct = Vec::new();
    let mut agent = Vec::new();
    for round in 0..args.repeat {
        eprintln!("round {}/{}: direct, then a fresh agent…", round + 1, args.repeat);
        direct.push(curl(&format!("{}{path}", registry.url()), blob.size).await?);
        touch_memory(2 * blob.size)?;
        let host = Agent::start(
            agent_binary,
            AgentOptions::host(0, "r/z/rack", edge.url(), &registry),
        )
        .await?;
        let (agent_before, edge_before) = (host.cpu_seconds()?, edge.cpu_seconds()?);
        let seconds = curl(&format!("{}{path}?ns={ns}", host.url()), blob.size).await?;
        let pull = Pull {
            seconds,
            agent_cpu: host.cpu_seconds()? - agent_before,
            edge_cpu: edge.cpu_seconds()? - edge_before,
        };
        eprintln!(
            "  direct {:.3} s; agent {:.3} s, agent CPU {:.2} s, edge CPU {:.2} s",
            direct[round], pull.seconds, pull.agent_cpu, pull.edge_cpu
        );
        agent.push(pull);
    }
    let direct = median_by(direct, |s| *s);
    let agent = median_by(agent, |p| p.seconds);

    eprintln!("measuring the receive path's CPU limit…");
    let limit = receive_limit(blob.size);
    let gib = blob.size as f64 / GIB;
    let mbps = |seconds: f64| blob.size as f64 / seconds / 1e6;
    // The agent's own receive path: BLAKE3 piece hashes from an edge that has them.
    let own = limit.blake3;
    let row = |name: &str, seconds: f64, cpu: Option<f64>| {
        vec![
            name.to_string(),
            format!("{seconds:.3}"),
            format!("{:.0}", mbps(seconds)),
            format!("{:.2}", ratio(mbps(seconds), mbps(own))),
            cpu.map(|c| format!("{:.2}", c / gib))
                .unwrap_or_else(|| "-".into()),
            cpu.map(|c| format!("{:.2}", ratio(c, own)))
                .unwrap_or_else(|| "-".into()),
        ]
    };
    table(
        &format!(
            "one host, a {} MiB blob (median of {} rounds)",
            args.blob_mib, args.repeat
        ),
        &[
            "path",
            "seconds",
            "MB/s",
            "speed vs limit",
            "CPU s / GiB",
            "CPU vs limit",
        ],
        &[
            row("direct from the registry (curl)", direct, None),
            row(
                "fresh agent, warm edge: the agent",
                agent.seconds,
                Some(agent.agent_cpu),
            ),
            vec![
                "  … the edge serving it".into(),
                "".into(),
                "".into(),
                "".into(),
                format!("{:.2}", agent.edge_cpu / gib),
                "".into(),
            ],
            row(
                "receive limit: BLAKE3 + AES-GCM, 1 core",
                limit.blake3,
                Some(limit.blake3),
            ),
            row(
                "  … with SHA-256 as the piece hash",
                limit.sha256,
                Some(limit.sha256),
            ),
            row("  … BLAKE3 alone", limit.blake3_only, Some(limit.blake3_only)),
            row("  … SHA-256 alone", limit.hash_only, Some(limit.hash_only)),
        ],
    );
    json_line(&json!({
        "scenario": "host",
        "blob_bytes": blob.size,
        "repeat": args.repeat,
        "direct_s": direct,
        "direct_mb_per_s": mbps(direct),
        "agent_s": agent.seconds,
        "agent_mb_per_s": mbps(agent.seconds),
        "agent_vs_receive_limit": ratio(mbps(agent.seconds), mbps(own)),
        "agent_cpu_s_per_gib": agent.agent_cpu / gib,
        "agent_cpu_vs_receive_limit": ratio(agent.agent_cpu, own),
        "edge_cpu_s_per_gib": agent.edge_cpu / gib,
        "receive_limit_s": limit.blake3,
        "receive_limit_sha256_s": limit.sha256,
        "blake3_only_s": limit.blake3_only,
        "sha256_only_s": limit.hash_only,
    }));
    Ok(())
}

/// Writes and deletes a scratch file of `bytes`. On a virtual machine the first touch of a
/// guest page costs a trip to the hypervisor, several times the copy itself; the agent's
/// writes then land on pages the kernel has just freed, as on a host that has run a while,
/// and the figures measure the agent rather than the machine's first minutes.
fn touch_memory(bytes: u64) -> Result<()> {
    let scratch = tempfile::NamedTempFile::new()?;
    let chunk = vec![1u8; MIB as usize];
    let mut file = scratch.as_file();
    for _ in 0..bytes / MIB {
        std::io::Write::write_all(&mut file, &chunk)?;
    }
    Ok(())
}

/// Seconds to fetch `url` with curl into nothing; the body must be `size` bytes.
async fn curl(url: &str, size: u64) -> Result<f64> {
    let start = Instant::now();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}", url])
        .stdin(Stdio::null())
        .output()
        .await
        .context("running curl")?;
    let seconds = start.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
    ensure!(got == size, "curl {url}: {got} bytes, expected {size}");
    Ok(seconds)
}

fn median_by<T: Copy>(mut values: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    values.sort_by(|a, b| key(a).total_cmp(&key(b)));
    values[values.len() / 2]
}

/// Single-core seconds for the receive path's per-byte work over a blob of `size` bytes.
struct ReceiveLimit {
    /// BLAKE3 of each sealed piece, then AES-256-GCM open: what an agent does per byte.
    blake3: f64,
    /// The same with SHA-256 as the piece hash.
    sha256: f64,
    hash_only: f64,
    blake3_only: f64,
}

fn receive_limit(size: u64) -> ReceiveLimit {
    let layout = PieceLayout::for_size(size);
    let key = TaskKey::from_bytes([7; 32]);
    // Sealed pieces of pseudo-random bytes, as the agent receives them.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let pieces: Vec<Vec<u8>> = (0..layout.count())
        .map(|index| {
            let mut piece: Vec<u8> = (0..layout.plain_len(index))
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            key.seal(index, &mut piece);
            piece
        })
        .collect();
    // A buffer per piece for opening, as the agent has (the sealed copy is kept to serve).
    let mut scratch = vec![0u8; layout.sealed_len(0) as usize];
    let mut open = |index: usize, sealed: &[u8]| {
        let buffer = &mut scratch[..sealed.len()];
        buffer.copy_from_slice(sealed);
        let plain = key.open(index as u64, buffer).expect("sealed by this key").len();
        std::hint::black_box(plain);
    };
    let time = |work: &mut dyn FnMut()| -> f64 {
        // Best of three: the least disturbed by the rest of the machine.
        (0..3)
            .map(|_| {
                let start = Instant::now();
                work();
                start.elapsed()
            })
            .min()
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
    };
    let hash_only = time(&mut || {
        for piece in &pieces {
            std::hint::black_box(PieceHash::Sha256.of(piece));
        }
    });
    let blake3_only = time(&mut || {
        for piece in &pieces {
            std::hint::black_box(PieceHash::Blake3.of(piece));
        }
    });
    let sha256 = time(&mut || {
        for (index, piece) in pieces.iter().enumerate() {
            std::hint::black_box(PieceHash::Sha256.of(piece));
            open(index, piece);
        }
    });
    let blake3 = time(&mut || {
        for (index, piece) in pieces.iter().enumerate() {
            std::hint::black_box(PieceHash::Blake3.of(piece));
            open(index, piece);
        }
    });
    ReceiveLimit {
        sha256,
        blake3,
        hash_only,
        blake3_only,
    }
}
