//! The guided tour: a registry, an edge cache and four peer agents (two racks) on loopback; an
//! image pushed with skopeo; pulls through the agents by real clients, each step reported with
//! where its bytes came from (origin, edge, rack neighbours).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use damselfly_test_support::agent::{Agent, AgentOptions};
use damselfly_test_support::containerd::{Containerd, CtrPullOptions};
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::image::{BuiltImage, ImageSpec};
use damselfly_test_support::metrics::Metrics;
use damselfly_test_support::process::program_on_path;
use damselfly_test_support::proxy::FaultProxy;
use damselfly_test_support::registry::{Registry, RegistryOptions};
use damselfly_test_support::skopeo::{self, PullOptions};
use serde_json::json;

use crate::report::{json_line, secs, table, MIB};

const RACKS: [&str; 4] = ["eu/z1/r1", "eu/z1/r1", "eu/z1/r2", "eu/z1/r2"];

/// Byte counters at one moment: what the origin sent the edge, what the edge served, what the
/// agents received from each source.
struct Counters {
    origin: u64,
    edge: Metrics,
    agents: Vec<Metrics>,
}

struct Demo {
    registry: Registry,
    origin_counter: FaultProxy,
    edge: Edge,
    agents: Vec<Agent>,
    containerd: Option<Containerd>,
    work: tempfile::TempDir,
}

pub async fn run(edge_binary: &Path, agent_binary: &Path) -> Result<()> {
    let work = tempfile::Builder::new().prefix("damselfly-demo-").tempdir()?;
    let registry = Registry::start(RegistryOptions::default()).await?;
    // A pass-through counter between edge and registry: what the origin really sent the edge.
    let origin_counter = FaultProxy::start(&registry.addr()).await?;
    let options = EdgeOptions::for_registry(&registry.addr(), &origin_counter.url());
    let edge = Edge::start(edge_binary, options).await?;
    println!("registry (origin)  http://{}", registry.addr());
    println!(
        "edge cache         {}   (data in {})",
        edge.url(),
        edge.data_dir().display()
    );
    let mut agents = Vec::new();
    for (i, rack) in RACKS.iter().enumerate() {
        let options = AgentOptions::host(i, rack, edge.url(), &registry);
        let agent = Agent::start(agent_binary, options)
            .await
            .with_context(|| format!("starting agent {}", i + 1))?;
        println!("agent {}            {}   (rack {rack})", i + 1, agent.url());
        agents.push(agent);
    }
    let containerd = if program_on_path("containerd") {
        Some(Containerd::start().await?)
    } else {
        println!("(containerd not installed: its pull is skipped)");
        None
    };
    let demo = Demo {
        registry,
        origin_counter,
        edge,
        agents,
        containerd,
        work,
    };

    let spec = ImageSpec::new("demo", vec![24 * MIB, 8 * MIB, 2 * MIB]);
    let image = demo.registry.push_image(spec, "demo/app:v1").await?;
    let reference = format!("{}/demo/app:v1", demo.registry.addr());
    println!(
        "pushed {reference}: {} blobs, {:.1} MiB, manifest {}",
        image.blobs.len(),
        image.total_blob_bytes as f64 / MIB as f64,
        image.top_digest
    );

    let mut steps: Vec<(&str, Vec<usize>, bool)> = vec![
        ("agent 1 skopeo (cold)", vec![0], false),
        ("agents 2+3 skopeo at once", vec![1, 2], false),
    ];
    if demo.containerd.is_some() {
        steps.push(("agent 4 containerd ctr", vec![3], true));
    }
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for (label, hosts, with_ctr) in steps {
        let before = demo.counters().await?;
        let start = Instant::now();
        demo.pull_all(&image, &reference, &hosts, with_ctr).await?;
        let elapsed = start.elapsed();
        let after = demo.counters().await?;
        let origin = after.origin - before.origin;
        let edge = delta(
            &before.edge,
            &after.edge,
            "damselfly_edge_served_bytes_total",
            "kind=\"piece\"",
        );
        let from = |source: &str| {
            let label = format!("source=\"{source}\"");
            let sum = |m: &[Metrics]| -> f64 {
                m.iter()
                    .map(|m| m.sum("damselfly_agent_download_bytes_total", &[&label]))
                    .sum()
            };
            (sum(&after.agents) - sum(&before.agents)) as u64
        };
        let (peer, direct) = (from("peer"), from("origin"));
        let mib = |b: u64| format!("{:.1}", b as f64 / MIB as f64);
        rows.push(vec![
            label.to_string(),
            format!("{:.3}", secs(elapsed)),
            mib(origin),
            mib(edge),
            mib(peer),
            mib(direct),
            "digests ok".to_string(),
        ]);
        results.push(
            json!({"step": label, "seconds": secs(elapsed), "origin_to_edge_bytes": origin,
            "edge_piece_bytes": edge, "peer_bytes": peer, "origin_direct_bytes": direct}),
        );
    }
    table(
        "pulls through the peer agents",
        &[
            "step",
            "seconds",
            "MiB origin→edge",
            "MiB edge→agents",
            "MiB agent↔agent",
            "MiB origin→agents",
            "check",
        ],
        &rows,
    );
    println!(
        "\nThe origin sent each blob once, to the edge. Later hosts took sealed pieces from their\n\
         neighbours first (same rack, then zone) and from the edge for the rest."
    );
    json_line(&json!({"scenario": "demo", "image_bytes": image.total_blob_bytes, "steps": results}));
    Ok(())
}

impl Demo {
    async fn counters(&self) -> Result<Counters> {
        let mut agents = Vec::new();
        for a in &self.agents {
            agents.push(a.metrics().await?);
        }
        Ok(Counters {
            origin: self.origin_counter.blob_bytes(),
            edge: self.edge.metrics().await?,
            agents,
        })
    }

    /// Pulls the image on each host at once (skopeo, or containerd with `with_ctr`), each
    /// through its own agent, and checks the manifest digest.
    async fn pull_all(
        &self,
        image: &BuiltImage,
        reference: &str,
        hosts: &[usize],
        with_ctr: bool,
    ) -> Result<()> {
        let pulls = hosts.iter().map(|&i| async move {
            let agent = &self.agents[i];
            let digest = match (&self.containerd, with_ctr) {
                (Some(c), true) => {
                    c.write_hosts_toml(&self.registry.addr(), &agent.url())?;
                    c.pull(reference, &CtrPullOptions::default()).await?
                }
                _ => {
                    let out = self.work.path().join(format!("pull-{i}"));
                    skopeo::pull_via_mirror(
                        &self.registry.addr(),
                        agent.addr(),
                        reference,
                        &out,
                        &PullOptions::default(),
                    )
                    .await?
                    .manifest_digest
                }
            };
            anyhow::ensure!(
                digest == image.top_digest,
                "host {} pulled {digest}, expected {}",
                i + 1,
                image.top_digest
            );
            Ok(())
        });
        for result in futures::future::join_all(pulls).await {
            result?;
        }
        Ok(())
    }
}

fn delta(before: &Metrics, after: &Metrics, name: &str, label: &str) -> u64 {
    (after.sum(name, &[label]) - before.sum(name, &[label])) as u64
}
