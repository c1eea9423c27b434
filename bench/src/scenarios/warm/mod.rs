//! The warm path: a push warms every region's edge while it is still going on.
//!
//! A real docker-registry notifies the preheater; two edges stand for two regions. Part one
//! pushes a multi-layer image with skopeo and watches both edges (`GET /api/v1/warm/<digest>`
//! every 20 ms) until every blob is cached at both: the push-to-warm latency (from the end of the
//! push) is compared with the push itself. Part two posts blob-push events concurrently, each
//! delivered several times as registries do on retries, to fresh edges behind counting proxies:
//! events per second taken in, and proof that each blob was warmed once per region.

mod intake;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use damselfly_test_support::daemon::{Daemon, DaemonSpec};
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::image::{build_image_async, BuiltImage, ImageSpec};
use damselfly_test_support::metrics::Metrics;
use damselfly_test_support::net::{free_addr_on, loopback_client};
use damselfly_test_support::registry::{Registry, RegistryOptions};
use damselfly_test_support::skopeo::{self, PushOptions};
use serde_json::json;

use crate::report::{json_line, ratio, secs, table, MIB};

const WEBHOOK_TOKEN: &str = "bench-webhook-token";
const EDGE_TOKEN: &str = "bench-edge-warm-token-0123456789";
const REGIONS: [&str; 2] = ["eu", "us"];
const REPOSITORY: &str = "bench/warm";
const POLL: Duration = Duration::from_millis(20);
const WARM_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Args, Debug)]
pub struct WarmArgs {
    /// Size of the pushed image in MiB, split evenly over the layers.
    #[arg(long, default_value_t = 256)]
    image_mib: u64,
    /// Number of layers.
    #[arg(long, default_value_t = 8)]
    layers: u64,
    /// Distinct events in the intake part (blob pushes, spread over the image's blobs).
    #[arg(long, default_value_t = 1000)]
    events: usize,
    /// Deliveries of each event (registries deliver at least once and retry).
    #[arg(long, default_value_t = 3)]
    duplicates: usize,
    /// Webhook requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

pub async fn run(bin_dir: &Path, args: WarmArgs) -> Result<()> {
    anyhow::ensure!(args.layers >= 1 && args.duplicates >= 1 && args.concurrency >= 1);
    let edge_binary = super::binary(bin_dir, "edge-cache")?;
    let preheater_binary = super::binary(bin_dir, "preheater")?;
    let work = tempfile::Builder::new()
        .prefix("damselfly-bench-warm-")
        .tempdir()?;
    eprintln!(
        "building a {} MiB image in {} layers…",
        args.image_mib, args.layers
    );
    let image = build_image_async(
        ImageSpec::new(
            "warm",
            vec![args.image_mib * MIB / args.layers; args.layers as usize],
        ),
        work.path().join("layout"),
        "v1".into(),
    )
    .await?;

    let preheater_addr = free_addr_on("127.0.0.1")?;
    let registry = Registry::start(RegistryOptions {
        notifications: Some((
            format!("http://{preheater_addr}/webhooks/distribution"),
            Some(format!("Bearer {WEBHOOK_TOKEN}")),
        )),
        ..RegistryOptions::default()
    })
    .await?;
    let mut edges = Vec::new();
    for _ in REGIONS {
        edges.push(warm_edge(&edge_binary, &registry).await?);
    }
    let edge_urls: Vec<String> = edges.iter().map(Edge::url).collect();
    let preheater = Preheater::start(&preheater_binary, preheater_addr, &registry, &edge_urls).await?;

    eprintln!(
        "pushing with skopeo while the preheater warms {} edges…",
        edges.len()
    );
    let start = Instant::now();
    let watch = tokio::spawn(cached_everywhere(edge_urls.clone(), image.clone(), start));
    skopeo::push(
        &image,
        &format!("{}/{REPOSITORY}:v1", registry.addr()),
        &PushOptions::default(),
    )
    .await?;
    let push = start.elapsed();
    let per_blob = watch.await??;
    let warm = per_blob.iter().copied().max().unwrap_or_default();
    // Negative when the last blob was cached at every edge before skopeo even returned.
    let latency = secs(warm) - secs(push);
    let pm = preheater.metrics().await?;

    let mut rows = vec![vec![
        "skopeo push".into(),
        format!("{:.3}", secs(push)),
        "1.00".into(),
    ]];
    rows.push(vec![
        "every blob cached at both edges (from push start)".into(),
        format!("{:.3}", secs(warm)),
        format!("{:.2}", ratio(secs(warm), secs(push))),
    ]);
    rows.push(vec![
        "push-to-warm latency (from the end of the push)".into(),
        format!("{latency:+.3}"),
        format!("{:+.2}", latency / secs(push)),
    ]);
    table(
        &format!(
            "push of a {} MiB image ({} blobs) warming {} regions",
            image.total_blob_bytes / MIB,
            image.blobs.len(),
            REGIONS.len()
        ),
        &["what", "seconds", "vs push"],
        &rows,
    );
    let warmed_bytes = pm.get("damselfly_preheater_warmed_bytes_total") as u64;
    println!(
        "  preheater: {} warm requests sent, {:.0} MiB ingested by edges on its request",
        pm.get("damselfly_preheater_warm_requests_sent_total"),
        warmed_bytes as f64 / MIB as f64
    );
    drop(preheater);
    drop(edges);

    let intake = intake::run(&edge_binary, &preheater_binary, &registry, &image, &args).await?;
    json_line(&json!({
        "scenario": "warm",
        "image_bytes": image.total_blob_bytes,
        "blobs": image.blobs.len(),
        "regions": REGIONS.len(),
        "push_s": secs(push),
        "all_cached_s": secs(warm),
        "push_to_warm_s": (latency * 1000.0).round() / 1000.0,
        "push_to_warm_vs_push": ratio(latency, secs(push)),
        "blob_cached_s": per_blob.iter().map(|d| secs(*d)).collect::<Vec<_>>(),
        "intake": intake,
    }));
    Ok(())
}

/// An edge with the warm API on, fetching from `registry`.
async fn warm_edge(binary: &Path, registry: &Registry) -> Result<Edge> {
    let mut options = EdgeOptions::new(registry.url());
    options.warm_token = Some(EDGE_TOKEN.into());
    Edge::start(binary, options).await
}

/// For each blob of `image`, the time (since `start`) it was first seen cached at every edge.
async fn cached_everywhere(edges: Vec<String>, image: BuiltImage, start: Instant) -> Result<Vec<Duration>> {
    let client = loopback_client()?;
    let mut done: Vec<Option<Duration>> = vec![None; image.blobs.len()];
    while done.iter().any(Option::is_none) {
        if start.elapsed() > WARM_TIMEOUT {
            bail!("not every blob was cached at every edge within {WARM_TIMEOUT:?}");
        }
        for (i, blob) in image.blobs.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let mut everywhere = true;
            for edge in &edges {
                if warm_state(&client, edge, &blob.digest).await? != "cached" {
                    everywhere = false;
                    break;
                }
            }
            if everywhere {
                done[i] = Some(start.elapsed());
            }
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(done.into_iter().flatten().collect())
}

async fn warm_state(client: &reqwest::Client, edge: &str, digest: &str) -> Result<String> {
    let body: serde_json::Value = client
        .get(format!("{edge}/api/v1/warm/{digest}"))
        .bearer_auth(EDGE_TOKEN)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(body["state"].as_str().unwrap_or_default().to_string())
}

/// The preheater binary with its production defaults, except the addresses and tokens.
pub struct Preheater {
    daemon: Daemon,
}

impl Preheater {
    async fn start(binary: &Path, addr: SocketAddr, registry: &Registry, edges: &[String]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("damselfly-bench-preheater-")
            .tempdir()?;
        let mut config = format!(
            "listen = \"{addr}\"\ninsecure = true\ndata_dir = \"{}\"\nwebhook_token = \"{WEBHOOK_TOKEN}\"\n\
             edge_token = \"{EDGE_TOKEN}\"\n",
            dir.path().join("data").display()
        );
        for (region, url) in REGIONS.iter().zip(edges) {
            config.push_str(&format!("[[edges]]\nregion = \"{region}\"\nurl = \"{url}\"\n"));
        }
        config.push_str(&format!(
            "[[registries]]\nhost = \"{}\"\nurl = \"{}\"\nedge_default_upstream = true\n",
            registry.addr(),
            registry.url()
        ));
        let spec = DaemonSpec::plain("preheater", binary, "warn", format!("http://{addr}"));
        let daemon = Daemon::start(spec, dir, &config).await?;
        Ok(Preheater { daemon })
    }

    fn url(&self) -> &str {
        self.daemon.url()
    }

    async fn metrics(&self) -> Result<Metrics> {
        self.daemon.metrics().await
    }
}
