//! A region on one machine: a registry (behind a counting proxy), an edge, and agents on
//! distinct loopback addresses standing for hosts in racks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use damselfly_test_support::agent::{Agent, AgentOptions};
use damselfly_test_support::edge::{Edge, EdgeOptions, Metrics};
use damselfly_test_support::image::{build_image, BuiltImage, ImageSpec};
use damselfly_test_support::proxy::FaultProxy;
use damselfly_test_support::registry::{Registry, RegistryOptions};
use damselfly_test_support::skopeo::{self, PullOptions, PushOptions};

pub const MIB: u64 = 1024 * 1024;

pub fn agent_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_peer-agent"))
}

/// The edge binary, built alongside (the workspace builds every binary before its tests).
pub fn edge_binary() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_peer-agent")).with_file_name("edge-cache")
}

pub fn sha256(bytes: &[u8]) -> String {
    damselfly_core::Digest::of(bytes).to_string()
}

pub struct Region {
    pub registry: Registry,
    pub proxy: FaultProxy,
    pub edge: Edge,
    pub agents: Vec<Agent>,
    work: tempfile::TempDir,
}

impl Region {
    /// A registry with `registry_options`, an edge, and agents at 127.0.0.2.. in the racks given
    /// (`"eu/z1/r1"` per agent).
    pub async fn start(registry_options: RegistryOptions, racks: &[&str]) -> Region {
        Region::start_with_edge_toml(registry_options, racks, "").await
    }

    /// As [`Region::start`], with extra sections in the edge's configuration.
    pub async fn start_with_edge_toml(
        registry_options: RegistryOptions,
        racks: &[&str],
        edge_toml: &str,
    ) -> Region {
        let registry = Registry::start(registry_options).await.expect("registry");
        let proxy = FaultProxy::start(&registry.addr()).await.expect("proxy");
        let mut options = EdgeOptions::new(proxy.url());
        options.extra_toml = format!(
            "[[upstreams]]\nregistry = \"{}\"\nurl = \"{}\"\n{edge_toml}\n",
            registry.addr(),
            proxy.url()
        );
        let edge = Edge::start(&edge_binary(), options).await.expect("edge");
        let mut agents = Vec::new();
        for (i, rack) in racks.iter().enumerate() {
            let options = AgentOptions {
                ip: format!("127.0.0.{}", i + 2),
                edges: vec![edge.url()],
                upstream: registry.url(),
                location: rack.to_string(),
                extra_toml: format!(
                    "[[registries]]\nregistry = \"{}\"\nurl = \"{}\"\n",
                    registry.addr(),
                    registry.url()
                ),
            };
            agents.push(Agent::start(agent_binary(), options).await.expect("agent"));
        }
        Region {
            registry,
            proxy,
            edge,
            agents,
            work: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub async fn push(&self, spec: ImageSpec, repo_tag: &str, creds: Option<(String, String)>) -> BuiltImage {
        let layout = self.work.path().join(repo_tag.replace(['/', ':'], "_"));
        let tag = repo_tag.rsplit_once(':').map_or("latest", |(_, t)| t);
        let image = build_image(&spec, &layout, tag).expect("build image");
        let options = PushOptions {
            all: image.manifests.len() > 1,
            creds,
            ..PushOptions::default()
        };
        skopeo::push(&image, &format!("{}/{repo_tag}", self.registry.addr()), &options)
            .await
            .expect("push");
        image
    }

    /// skopeo pull of `repo_tag` with agent `i` as the mirror; returns the manifest digest.
    pub async fn pull_via(
        &self,
        i: usize,
        repo_tag: &str,
        creds: Option<(String, String)>,
    ) -> anyhow::Result<String> {
        let out = self
            .work
            .path()
            .join(format!("pull-{i}-{}", repo_tag.replace(['/', ':'], "_")));
        let reference = format!("{}/{repo_tag}", self.registry.addr());
        let options = PullOptions {
            creds,
            ..PullOptions::default()
        };
        let pulled = skopeo::pull_via_mirror(
            &self.registry.addr(),
            self.agents[i].addr(),
            &reference,
            &out,
            &options,
        )
        .await?;
        Ok(pulled.manifest_digest)
    }

    pub async fn agent_metrics(&self) -> Vec<Metrics> {
        let mut all = Vec::new();
        for a in &self.agents {
            all.push(a.metrics().await.unwrap_or_default());
        }
        all
    }

    pub fn logs(&self) -> String {
        let mut out = format!("--- edge ---\n{}\n", self.edge.log_tail());
        for (i, a) in self.agents.iter().enumerate() {
            out.push_str(&format!("--- agent {i} ---\n{}\n", a.log_tail()));
        }
        out
    }
}

pub fn sum(metrics: &[Metrics], name: &str, labels: &[&str]) -> f64 {
    metrics.iter().map(|m| m.sum(name, labels)).sum()
}
