//! The guided tour: a registry and an edge cache on loopback, an image pushed, and pulls through
//! the edge by real clients, each reported with where its bytes came from.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use damselfly_test_support::containerd::{Containerd, CtrPullOptions};
use damselfly_test_support::edge::{Edge, EdgeOptions, Metrics};
use damselfly_test_support::image::{build_image, ImageSpec};
use damselfly_test_support::process::program_on_path;
use damselfly_test_support::proxy::FaultProxy;
use damselfly_test_support::registry::{Registry, RegistryOptions};
use damselfly_test_support::skopeo::{self, PullOptions, PushOptions};
use serde_json::json;

use crate::report::{json_line, secs, table, MIB};

pub async fn run(edge_binary: &Path) -> Result<()> {
    let work = tempfile::Builder::new().prefix("damselfly-demo-").tempdir()?;
    let registry = Registry::start(RegistryOptions::default()).await?;
    // A pass-through counter between edge and registry: what the origin really sent.
    let origin_counter = FaultProxy::start(&registry.addr()).await?;
    let edge = Edge::start(edge_binary, EdgeOptions::new(origin_counter.url())).await?;
    println!("registry (origin)  http://{}", registry.addr());
    println!(
        "edge cache         {}   (data in {})",
        edge.url(),
        edge.data_dir().display()
    );

    let spec = ImageSpec::new("demo", vec![24 * MIB, 8 * MIB, 2 * MIB]);
    let image = build_image(&spec, &work.path().join("layout"), "v1")?;
    let reference = format!("{}/demo/app:v1", registry.addr());
    skopeo::push(&image, &reference, &PushOptions::default()).await?;
    println!(
        "pushed {reference}: {} blobs, {:.1} MiB, manifest {}",
        image.blobs.len(),
        image.total_blob_bytes as f64 / MIB as f64,
        image.top_digest
    );

    let mut rows = Vec::new();
    let mut results = Vec::new();
    let mut pulls: Vec<(&str, usize)> = vec![("skopeo (cold)", 0), ("skopeo (warm)", 1)];
    let containerd = if program_on_path("containerd") {
        Some(Containerd::start().await?)
    } else {
        None
    };
    if let Some(c) = &containerd {
        c.write_hosts_toml(&registry.addr(), &edge.url())?;
        pulls.push(("containerd ctr", 2));
    }
    for (label, n) in pulls {
        let before = (origin_counter.blob_bytes(), edge.metrics().await?);
        let start = Instant::now();
        let digest = match (&containerd, n) {
            (Some(c), 2) => c.pull(&reference, &CtrPullOptions::default()).await?,
            _ => {
                let out = work.path().join(format!("pull-{n}"));
                skopeo::pull_via_mirror(
                    &registry.addr(),
                    &edge.addr(),
                    &reference,
                    &out,
                    &PullOptions::default(),
                )
                .await?
                .manifest_digest
            }
        };
        let elapsed = start.elapsed();
        let after = (origin_counter.blob_bytes(), edge.metrics().await?);
        let from_origin = after.0 - before.0;
        let from_edge = delta(
            &before.1,
            &after.1,
            "damselfly_edge_served_bytes_total",
            "kind=\"blob\"",
        );
        let hits = delta(
            &before.1,
            &after.1,
            "damselfly_edge_cache_hits_total",
            "kind=\"blob\"",
        );
        anyhow::ensure!(
            digest == image.top_digest,
            "{label} pulled {digest}, expected {}",
            image.top_digest
        );
        rows.push(vec![
            label.to_string(),
            format!("{:.3}", secs(elapsed)),
            format!("{:.1}", from_edge as f64 / MIB as f64),
            format!("{:.1}", from_origin as f64 / MIB as f64),
            format!("{hits}"),
            "digest ok".to_string(),
        ]);
        results.push(
            json!({"client": label, "seconds": secs(elapsed), "edge_blob_bytes": from_edge,
                            "origin_bytes": from_origin, "blob_cache_hits": hits}),
        );
    }
    table(
        "pulls through the edge",
        &[
            "client",
            "seconds",
            "MiB served by edge",
            "MiB from origin",
            "blob hits",
            "check",
        ],
        &rows,
    );
    println!("\nThe origin sent each blob once; every later pull was served from sealed pieces on the edge.");
    json_line(&json!({"scenario": "demo", "image_bytes": image.total_blob_bytes, "pulls": results}));
    Ok(())
}

fn delta(before: &Metrics, after: &Metrics, name: &str, label: &str) -> u64 {
    (after.sum(name, &[label]) - before.sum(name, &[label])) as u64
}
