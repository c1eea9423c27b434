//! A region on one machine: a registry (behind a counting proxy), an edge, and agents on
//! distinct loopback addresses standing for hosts in racks.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use damselfly_test_support::agent::{Agent, AgentOptions};
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::image::{BuiltImage, ImageSpec};
use damselfly_test_support::link::Link;
use damselfly_test_support::metrics::Metrics;
use damselfly_test_support::pki::Pki;
use damselfly_test_support::proxy::FaultProxy;
use damselfly_test_support::registry::{Registry, RegistryOptions};
use damselfly_test_support::skopeo::{self, PullOptions, PulledImage};
use tokio::task::JoinHandle;

pub const MIB: u64 = 1024 * 1024;

pub fn agent_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_peer-agent"))
}

/// The edge binary, built alongside (the workspace builds every binary before its tests).
pub fn edge_binary() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_peer-agent")).with_file_name("edge-cache")
}

/// An edge with default options straight in front of `registry` (no proxy, no agents): for
/// tests that drive the edge themselves rather than through a [`Region`].
pub async fn edge_in_front_of(registry: &Registry) -> Edge {
    let options = EdgeOptions::for_registry(&registry.addr(), &registry.url());
    Edge::start(&edge_binary(), options).await.unwrap()
}

pub fn sha256(bytes: &[u8]) -> String {
    damselfly_core::Digest::of(bytes).to_string()
}

/// What a region is started with besides its registry and racks.
#[derive(Default)]
struct Setup<'a> {
    /// Top-level keys and whole sections of the edge's configuration.
    edge_top_toml: &'a str,
    edge_toml: &'a str,
    /// Whole sections of every agent's configuration.
    agent_toml: &'a str,
    /// A cluster CA: the edge serves TLS and agents present certificates.
    pki: Option<Arc<Pki>>,
    /// The edge in a network namespace of its own, behind this link.
    link: Option<Link>,
    /// Agents reach the edge through a counting proxy.
    edge_proxy: bool,
}

pub struct Region {
    pub registry: Registry,
    pub proxy: FaultProxy,
    pub edge: Edge,
    /// Between the agents and the edge, when asked for: counts (and can break) the pieces sent.
    pub edge_proxy: Option<FaultProxy>,
    pub agents: Vec<Agent>,
    work: tempfile::TempDir,
    /// The edge's one link, when it runs behind one (declared last: dropped after the edge).
    pub link: Option<Link>,
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
        Region::start_on(
            registry_options,
            racks,
            Setup {
                edge_toml,
                ..Setup::default()
            },
        )
        .await
    }

    /// As [`Region::start`], with `agent_toml` (whole sections) in every agent's configuration.
    pub async fn start_with_agent_toml(racks: &[&str], agent_toml: &str) -> Region {
        Region::start_with_tomls(racks, "", agent_toml).await
    }

    /// As [`Region::start`], with whole sections added to the edge's and every agent's
    /// configuration.
    pub async fn start_with_tomls(racks: &[&str], edge_toml: &str, agent_toml: &str) -> Region {
        Region::start_on(
            RegistryOptions::default(),
            racks,
            Setup {
                edge_toml,
                agent_toml,
                ..Setup::default()
            },
        )
        .await
    }

    /// As [`Region::start_with_edge_toml`], with the agents reaching the edge through a
    /// counting proxy ([`Region::edge_proxy`]).
    pub async fn start_with_edge_proxy(racks: &[&str], edge_toml: &str) -> Region {
        Region::start_on(
            RegistryOptions::default(),
            racks,
            Setup {
                edge_toml,
                edge_proxy: true,
                ..Setup::default()
            },
        )
        .await
    }

    /// As [`Region::start_with_agent_toml`], with the edge in a network namespace of its own
    /// behind one link ([`Region::link`]): agents and the origin are reached across it, and a
    /// test can cut it.
    pub async fn start_behind_link(racks: &[&str], agent_toml: &str) -> Region {
        let link = Link::create().expect("a network namespace (needs root)");
        Region::start_on(
            RegistryOptions::default(),
            racks,
            Setup {
                agent_toml,
                link: Some(link),
                ..Setup::default()
            },
        )
        .await
    }

    /// As [`Region::start`], with the edge's scheduler state in the Redis at `redis_url`.
    pub async fn start_with_redis(racks: &[&str], redis_url: &str) -> Region {
        let top = format!("redis = \"{redis_url}\"\n");
        Region::start_on(
            RegistryOptions::default(),
            racks,
            Setup {
                edge_top_toml: &top,
                ..Setup::default()
            },
        )
        .await
    }

    /// As [`Region::start`], the way a region is deployed: the edge serves TLS with a
    /// certificate of a cluster CA and hands task keys only to agents presenting theirs.
    pub async fn start_secure(registry_options: RegistryOptions, racks: &[&str]) -> Region {
        let pki = Pki::new().expect("cluster CA");
        Region::start_on(
            registry_options,
            racks,
            Setup {
                pki: Some(pki),
                ..Setup::default()
            },
        )
        .await
    }

    async fn start_on(registry_options: RegistryOptions, racks: &[&str], setup: Setup<'_>) -> Region {
        let Setup {
            edge_top_toml,
            edge_toml,
            agent_toml,
            pki,
            link,
            edge_proxy,
        } = setup;
        let registry = Registry::start(registry_options).await.expect("registry");
        // Behind a link, the edge reaches the origin across it: the proxy listens on its near end.
        let proxy_ip = link.as_ref().map_or("127.0.0.1", |l| l.near_ip.as_str());
        let proxy = FaultProxy::start_on(&registry.addr(), proxy_ip)
            .await
            .expect("proxy");
        let mut options = EdgeOptions::for_registry(&registry.addr(), &proxy.url());
        if let Some(link) = &link {
            options.bind_ip = link.far_ip.clone();
            options.netns = Some(link.ns.clone());
        }
        options.top_toml.push_str(edge_top_toml);
        options.extra_toml.push_str(edge_toml);
        options.tls = pki.clone();
        let edge = Edge::start(&edge_binary(), options).await.expect("edge");
        let edge_proxy = match edge_proxy {
            true => Some(FaultProxy::start(&edge.addr()).await.expect("edge proxy")),
            false => None,
        };
        let edge_url = edge_proxy.as_ref().map_or_else(|| edge.url(), FaultProxy::url);
        let mut agents = Vec::new();
        for (i, rack) in racks.iter().enumerate() {
            let mut options = AgentOptions::host(i, rack, edge_url.clone(), &registry);
            options.tls = pki.clone();
            options.extra_toml.push_str(agent_toml);
            agents.push(Agent::start(agent_binary(), options).await.expect("agent"));
        }
        Region {
            registry,
            proxy,
            edge,
            edge_proxy,
            agents,
            work: tempfile::tempdir().expect("tempdir"),
            link,
        }
    }

    /// Builds `spec` and pushes it to `repo_tag` (with the registry's credentials, if any).
    pub async fn push(&self, spec: ImageSpec, repo_tag: &str) -> BuiltImage {
        self.registry.push_image(spec, repo_tag).await.expect("push")
    }

    /// [`Region::pull_via`] without credentials, on a task of its own: it goes on while the
    /// test kills an agent or the edge.
    pub fn spawn_pull(&self, i: usize, repo_tag: &str) -> JoinHandle<anyhow::Result<String>> {
        tokio::spawn(self.pull_via(i, repo_tag, None))
    }

    /// skopeo pull of `repo_tag` with agent `i` as the mirror; returns the manifest digest.
    pub fn pull_via(
        &self,
        i: usize,
        repo_tag: &str,
        creds: Option<(String, String)>,
    ) -> impl Future<Output = anyhow::Result<String>> + Send + 'static {
        let out = self
            .work
            .path()
            .join(format!("pull-{i}-{}", repo_tag.replace(['/', ':'], "_")));
        let registry = self.registry.addr();
        let reference = format!("{registry}/{repo_tag}");
        let mirror = self.agents[i].addr().to_string();
        let options = PullOptions {
            creds,
            ..PullOptions::default()
        };
        async move {
            let pulled = skopeo::pull_via_mirror(&registry, &mirror, &reference, &out, &options).await?;
            Ok(pulled.manifest_digest)
        }
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

/// skopeo pull of `repo_tag` from `registry` with `agent` as the mirror, into `out`, for tests
/// that run a lone agent rather than a [`Region`]; a failure panics with the agent's log.
pub async fn pull_through(registry: &Registry, agent: &Agent, repo_tag: &str, out: &Path) -> PulledImage {
    let reference = format!("{}/{repo_tag}", registry.addr());
    skopeo::pull_via_mirror(
        &registry.addr(),
        agent.addr(),
        &reference,
        out,
        &PullOptions::default(),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "pull through {}: {e:#}
{}",
            agent.addr(),
            agent.log_tail()
        )
    })
}

pub fn sum(metrics: &[Metrics], name: &str, labels: &[&str]) -> f64 {
    metrics.iter().map(|m| m.sum(name, labels)).sum()
}

/// Bytes the agents downloaded from `source` (`peer`, `edge` or `origin`).
pub fn downloaded_from(metrics: &[Metrics], source: &str) -> f64 {
    let label = format!("source=\"{source}\"");
    sum(metrics, "damselfly_agent_download_bytes_total", &[&label])
}

/// Waits until `probe` says yes (polling), or panics after `secs`.
pub async fn until<F: Future<Output = bool>>(secs: u64, mut probe: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !probe().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the edge has sent agents a piece: the pulls are under way.
pub async fn until_the_edge_sends_pieces(region: &Region) {
    until(30, || async {
        region
            .edge
            .metrics()
            .await
            .map(|m| m.sum("damselfly_edge_served_bytes_total", &["kind=\"piece\""]) > 0.0)
            .unwrap_or(false)
    })
    .await;
}

/// Waits at most `secs` for `pulls` and checks that each gave `digest`; a hang, a failure or
/// another digest panics with every daemon's log (`what` says what the test did).
pub async fn all_pulled(
    region: &Region,
    pulls: Vec<JoinHandle<anyhow::Result<String>>>,
    digest: &str,
    secs: u64,
    what: &str,
) {
    let outcome = tokio::time::timeout(Duration::from_secs(secs), futures::future::join_all(pulls)).await;
    let results = outcome.unwrap_or_else(|_| panic!("pulls hung {what}\n{}", region.logs()));
    for (i, result) in results.into_iter().enumerate() {
        let pulled = result
            .unwrap()
            .unwrap_or_else(|e| panic!("agent {i}, {what}: {e:#}\n{}", region.logs()));
        assert_eq!(pulled, digest, "agent {i}, {what}");
    }
}
