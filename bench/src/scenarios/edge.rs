//! Edge against direct pulls.
//!
//! Baselines, measured in the same run on the same registry: a direct `skopeo copy` from the
//! registry. The edge's upstream traffic is counted by a pass-through proxy between edge and
//! registry (which only adds cost to the edge's side). Direct pulls' upstream bytes are what
//! their clients received from the registry.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::image::{BuiltImage, ImageSpec};
use damselfly_test_support::proxy::FaultProxy;
use damselfly_test_support::registry::{Registry, RegistryOptions};
use damselfly_test_support::skopeo::{self, PullOptions};
use serde_json::json;

use crate::report::{json_line, median, ratio, secs, table, MIB};

#[derive(Args, Debug)]
pub struct EdgeArgs {
    /// Size of the image for the single cold/warm pulls, in MiB (split in 4 layers).
    #[arg(long, default_value_t = 512)]
    image_mib: u64,
    /// Repetitions of each single pull (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Concurrent clients in the swarm part.
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// Size of the image the concurrent clients pull, in MiB (split in 2 layers).
    #[arg(long, default_value_t = 64)]
    swarm_image_mib: u64,
}

pub async fn run(edge_binary: &Path, args: EdgeArgs) -> Result<()> {
    let registry = Registry::start(RegistryOptions::default()).await?;
    let proxy = FaultProxy::start(&registry.addr()).await?;
    let work = tempfile::Builder::new().prefix("damselfly-bench-").tempdir()?;
    let origin = registry.addr();

    eprintln!("building and pushing a {} MiB image…", args.image_mib);
    let (big, big_ref) = push_split(&registry, "bench", "bench/big:v1", args.image_mib, 4).await?;

    let mut direct = Vec::new();
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut cold_upstream = Vec::new();
    for round in 0..args.repeat {
        eprintln!(
            "round {}/{}: direct, cold through a fresh edge, warm…",
            round + 1,
            args.repeat
        );
        let into = |step: &str| work.path().join(format!("{step}{round}"));
        direct.push(timed(pull(&origin, None, &big_ref, &into("d"))).await?);
        let edge = Edge::start(edge_binary, EdgeOptions::new(proxy.url())).await?;
        proxy.reset_counters();
        let mirror = Some(edge.addr());
        cold.push(timed(pull(&origin, mirror.as_deref(), &big_ref, &into("c"))).await?);
        cold_upstream.push(proxy.blob_bytes());
        warm.push(timed(pull(&origin, mirror.as_deref(), &big_ref, &into("w"))).await?);
        clear(work.path())?;
    }
    let (direct, cold, warm) = (median(direct), median(cold), median(warm));
    let image_bytes = big.total_blob_bytes;

    eprintln!(
        "swarm: {} clients, {} MiB image…",
        args.clients, args.swarm_image_mib
    );
    let (swarm_image, swarm_ref) =
        push_split(&registry, "swarm", "bench/swarm:v1", args.swarm_image_mib, 2).await?;
    let swarm_direct = timed(swarm(args.clients, work.path(), "sd", |out| {
        let (origin, reference) = (origin.clone(), swarm_ref.clone());
        async move { pull(&origin, None, &reference, &out).await }
    }))
    .await?;
    clear(work.path())?;
    let edge = Edge::start(edge_binary, EdgeOptions::new(proxy.url())).await?;
    proxy.reset_counters();
    let edge_addr = edge.addr();
    let swarm_edge = timed(swarm(args.clients, work.path(), "se", |out| {
        let (origin, reference, mirror) = (origin.clone(), swarm_ref.clone(), edge_addr.clone());
        async move { pull(&origin, Some(&mirror), &reference, &out).await }
    }))
    .await?;
    let swarm_upstream = proxy.blob_bytes();
    let swarm_bytes = swarm_image.total_blob_bytes;
    let swarm_direct_upstream = swarm_bytes * args.clients as u64;

    let mib = |b: u64| format!("{:.1}", b as f64 / MIB as f64);
    table(
        &format!(
            "single pull of a {} MiB image (median of {})",
            mib(image_bytes),
            args.repeat
        ),
        &["pull", "seconds", "vs direct", "upstream MiB", "upstream / image"],
        &[
            vec![
                "direct from registry".into(),
                format!("{:.3}", secs(direct)),
                "1.00".into(),
                mib(image_bytes),
                "1.00".into(),
            ],
            vec![
                "cold through edge".into(),
                format!("{:.3}", secs(cold)),
                format!("{:.2}", ratio(secs(cold), secs(direct))),
                mib(cold_upstream[0]),
                format!("{:.2}", ratio(cold_upstream[0] as f64, image_bytes as f64)),
            ],
            vec![
                "warm through edge".into(),
                format!("{:.3}", secs(warm)),
                format!("{:.2}", ratio(secs(warm), secs(direct))),
                "0.0".into(),
                "0.00".into(),
            ],
        ],
    );
    table(
        &format!(
            "{} concurrent cold pulls of a {} MiB image",
            args.clients,
            mib(swarm_bytes)
        ),
        &[
            "pulls",
            "seconds (all done)",
            "vs direct",
            "upstream MiB",
            "upstream / image",
        ],
        &[
            vec![
                "direct from registry".into(),
                format!("{:.3}", secs(swarm_direct)),
                "1.00".into(),
                mib(swarm_direct_upstream),
                format!("{:.2}", ratio(swarm_direct_upstream as f64, swarm_bytes as f64)),
            ],
            vec![
                "through one edge".into(),
                format!("{:.3}", secs(swarm_edge)),
                format!("{:.2}", ratio(secs(swarm_edge), secs(swarm_direct))),
                mib(swarm_upstream),
                format!("{:.2}", ratio(swarm_upstream as f64, swarm_bytes as f64)),
            ],
        ],
    );
    json_line(&json!({
        "scenario": "edge",
        "image_bytes": image_bytes,
        "repeat": args.repeat,
        "direct_s": secs(direct), "cold_edge_s": secs(cold), "warm_edge_s": secs(warm),
        "cold_vs_direct": ratio(secs(cold), secs(direct)),
        "warm_vs_direct": ratio(secs(warm), secs(direct)),
        "cold_upstream_bytes": cold_upstream,
        "swarm_clients": args.clients, "swarm_image_bytes": swarm_bytes,
        "swarm_direct_s": secs(swarm_direct), "swarm_edge_s": secs(swarm_edge),
        "swarm_edge_vs_direct": ratio(secs(swarm_edge), secs(swarm_direct)),
        "swarm_direct_upstream_bytes": swarm_direct_upstream,
        "swarm_edge_upstream_bytes": swarm_upstream,
        "swarm_edge_upstream_vs_image": ratio(swarm_upstream as f64, swarm_bytes as f64),
    }));
    Ok(())
}

/// Pushes `repo_tag`, an image of `total_mib` MiB in `layers` equal layers (`seed` makes its
/// content); answers it and the reference clients pull it by.
async fn push_split(
    registry: &Registry,
    seed: &str,
    repo_tag: &str,
    total_mib: u64,
    layers: u64,
) -> Result<(BuiltImage, String)> {
    let sizes = (0..layers).map(|_| total_mib * MIB / layers).collect();
    let image = registry.push_image(ImageSpec::new(seed, sizes), repo_tag).await?;
    Ok((image, format!("{}/{repo_tag}", registry.addr())))
}

async fn timed<F: std::future::Future<Output = Result<()>>>(f: F) -> Result<Duration> {
    let start = Instant::now();
    f.await?;
    Ok(start.elapsed())
}

/// One skopeo pull into `out`: straight from `origin`, or through `mirror`.
async fn pull(origin: &str, mirror: Option<&str>, reference: &str, out: &Path) -> Result<()> {
    let options = PullOptions::default();
    match mirror {
        Some(mirror) => skopeo::pull_via_mirror(origin, mirror, reference, out, &options).await?,
        None => skopeo::pull_direct(origin, reference, out, &options).await?,
    };
    Ok(())
}

/// Runs `clients` pulls at once, each into its own directory; done when the last one is.
async fn swarm<F, Fut>(clients: usize, work: &Path, prefix: &str, pull: F) -> Result<()>
where
    F: Fn(std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let tasks: Vec<_> = (0..clients)
        .map(|i| tokio::spawn(pull(work.join(format!("{prefix}{i}")))))
        .collect();
    for task in tasks {
        task.await.context("pull task")??;
    }
    Ok(())
}

/// Removes pulled copies between rounds (the image layouts live with the registry).
fn clear(work: &Path) -> Result<()> {
    for entry in std::fs::read_dir(work)?.flatten() {
        std::fs::remove_dir_all(entry.path())?;
    }
    Ok(())
}
