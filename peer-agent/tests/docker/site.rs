//! A region on one machine for docker: the origin registry behind a counting proxy, an edge,
//! and hosts, each an agent with a Docker Engine whose `daemon.json` `peer-agent configure
//! docker` wrote.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{agent_binary, edge_binary, sha256};
use damselfly_test_support::agent::{Agent, AgentOptions};
use damselfly_test_support::docker::{uncompressed_layer, Dockerd, DockerdOptions, TokenService};
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::image::{build_image_async, BuiltImage, ImageSpec, MEDIA_TYPE_CONFIG};
use damselfly_test_support::proxy::FaultProxy;
use damselfly_test_support::registry::{Registry, RegistryOptions};
use damselfly_test_support::skopeo::{self, PushOptions};

/// Docker Hub's official images live under `library/`; docker asks its mirror for this path.
pub const APP: &str = "library/app:1.0";

pub struct Site {
    pub registry: Registry,
    /// The origin as the edge and the agents reach it, counting what it sends.
    pub origin: FaultProxy,
    pub edge: Edge,
    /// The token service the registry sends callers to, when it wants tokens.
    pub tokens: Option<TokenService>,
    work: tempfile::TempDir,
    dockers: AtomicUsize,
}

/// A host: its agent, and a Docker Engine that has the agent as its mirror.
pub struct Host {
    pub agent: Agent,
    pub docker: Dockerd,
}

impl Site {
    pub async fn start(registry_options: RegistryOptions) -> Site {
        let registry = Registry::start(registry_options).await.expect("registry");
        Site::around(registry, tempfile::tempdir().expect("work directory"), None).await
    }

    /// A site whose registry wants tokens from a token service, as Docker Hub does.
    pub async fn start_with_tokens() -> Site {
        let work = tempfile::tempdir().expect("work directory");
        let tokens = TokenService::start(work.path()).await.expect("token service");
        // Started with htpasswd (the harness then takes a 401 for "up", and pushes with
        // credentials the token service takes as they come), then switched to token auth.
        let options = RegistryOptions {
            htpasswd: Some(("pusher".into(), "pusher".into())),
            ..RegistryOptions::default()
        };
        let mut registry = Registry::start(options).await.expect("registry");
        registry.stop().unwrap();
        let config = std::fs::read_to_string(registry.config_path()).unwrap();
        let auth = config.find("auth:\n  htpasswd:").expect("the auth block, last");
        let config = format!("{}{}", &config[..auth], tokens.registry_auth_yaml());
        std::fs::write(registry.config_path(), config).unwrap();
        registry.start_again().await.expect("registry with token auth");
        Site::around(registry, work, Some(tokens)).await
    }

    async fn around(registry: Registry, work: tempfile::TempDir, tokens: Option<TokenService>) -> Site {
        let origin = FaultProxy::start(&registry.addr()).await.expect("origin proxy");
        let mut edge_options = EdgeOptions::new(origin.url());
        edge_options.extra_toml = docker_io(&origin.url(), "upstreams");
        let edge = Edge::start(&edge_binary(), edge_options).await.expect("edge");
        Site {
            registry,
            origin,
            edge,
            tokens,
            work,
            dockers: AtomicUsize::new(0),
        }
    }

    /// Builds `spec` and pushes it to `repo_tag`, then forgets what the origin sent so far.
    pub async fn push(&self, spec: ImageSpec, repo_tag: &str) -> BuiltImage {
        let image = self.registry.push_image(spec, repo_tag).await.expect("push");
        self.origin.reset_counters();
        image
    }

    /// Builds `spec` and pushes it to `repo_tag` as Docker Hub serves its images: Docker schema 2
    /// media types (the manifest's digest then differs from the OCI one; blobs are the same).
    pub async fn push_docker_schema2(&self, spec: ImageSpec, repo_tag: &str) -> (BuiltImage, String) {
        let layout = self
            .work
            .path()
            .join(format!("layout-{}", repo_tag.replace(['/', ':'], "_")));
        let tag = repo_tag.rsplit_once(':').map_or("latest", |(_, t)| t).to_string();
        let image = build_image_async(spec, layout, tag).await.expect("image");
        let options = PushOptions {
            format_v2s2: true,
            ..PushOptions::default()
        };
        let destination = format!("{}/{repo_tag}", self.registry.addr());
        let digest = skopeo::push(&image, &destination, &options).await.expect("push");
        self.origin.reset_counters();
        (image, digest)
    }

    /// The agent of host `index` (at 127.0.0.`index + 2`) in `rack`.
    pub async fn agent(&self, index: usize, rack: &str) -> Agent {
        self.agent_with_origin(index, rack, &self.origin.url()).await
    }

    /// The agent of host `index`, reaching the origin at `origin`.
    pub async fn agent_with_origin(&self, index: usize, rack: &str, origin: &str) -> Agent {
        let options = AgentOptions {
            ip: format!("127.0.0.{}", index + 2),
            edges: vec![self.edge.url()],
            upstream: origin.to_string(),
            location: rack.to_string(),
            extra_toml: docker_io(origin, "registries"),
            // A lab edge (docker also uses it directly as a plain-HTTP mirror).
            tls: None,
            data_dir: None,
        };
        Agent::start(agent_binary(), options).await.expect("agent")
    }

    /// A Docker Engine configured by `peer-agent configure docker --mirror <mirror>`, with
    /// `env` besides (a Docker Hub stand-in's), and plain-HTTP access to the registries in
    /// `insecure` (`host:port`) added by hand.
    pub async fn docker(&self, mirror: &str, env: Vec<(String, String)>, insecure: &[String]) -> Dockerd {
        let n = self.dockers.fetch_add(1, Ordering::Relaxed);
        let config_file = self.work.path().join(format!("daemon-{n}.json"));
        configure_docker(mirror, &config_file);
        if !insecure.is_empty() {
            let mut json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&config_file).unwrap()).unwrap();
            let list = json["insecure-registries"]
                .as_array_mut()
                .expect("configure lists the agent");
            list.extend(insecure.iter().map(|r| serde_json::Value::String(r.clone())));
            std::fs::write(&config_file, json.to_string()).unwrap();
        }
        let options = DockerdOptions { config_file, env };
        Dockerd::start(&options).await.expect("dockerd")
    }

    pub async fn host(&self, index: usize, rack: &str) -> Host {
        let agent = self.agent(index, rack).await;
        let docker = self.docker(&agent.url(), Vec::new(), &[]).await;
        Host { agent, docker }
    }

    pub fn logs(&self, hosts: &[&Host]) -> String {
        let mut out = format!("--- edge ---\n{}\n", self.edge.log_tail());
        for (i, host) in hosts.iter().enumerate() {
            out.push_str(&format!(
                "--- agent {i} ---\n{}\n--- dockerd {i} ---\n{}\n",
                host.agent.log_tail(),
                host.docker.log_tail()
            ));
        }
        out
    }

    /// How many times the origin sent each blob (GETs answered 200), by digest.
    pub fn origin_blob_gets(&self) -> BTreeMap<String, usize> {
        let mut gets = BTreeMap::new();
        for r in self.origin.requests() {
            if r.method == "GET" && r.path.contains("/blobs/") && r.status == 200 {
                let digest = r.path.rsplit('/').next().unwrap_or_default().to_string();
                *gets.entry(digest).or_default() += 1;
            }
        }
        gets
    }
}

/// Docker Hub by the name BuildKit gives it in `?ns=`, played by `url`: a `[[<section>]]`
/// entry of an edge (`upstreams`) or an agent (`registries`).
fn docker_io(url: &str, section: &str) -> String {
    format!("[[{section}]]\nregistry = \"docker.io\"\nurl = \"{url}\"\n")
}

/// A daemon's whole log (`Agent` and `Edge` keep it beside their data directory).
pub fn whole_log(data_dir: &Path, daemon: &str) -> String {
    let dir = data_dir.parent().expect("the daemon's directory");
    std::fs::read_to_string(dir.join(format!("{daemon}.log"))).expect("the daemon's log")
}

/// `peer-agent configure docker`, as an operator runs it, into `path`.
pub fn configure_docker(mirror: &str, path: &Path) {
    let output = std::process::Command::new(agent_binary())
        .args(["configure", "docker", "--mirror", mirror, "--path"])
        .arg(path)
        .output()
        .expect("peer-agent configure docker");
    assert!(
        output.status.success(),
        "configure docker: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("daemon.json")).expect("daemon.json is JSON");
    assert_eq!(written["registry-mirrors"], serde_json::json!([mirror]));
}

pub fn config_digest(image: &BuiltImage) -> &str {
    &image
        .blobs
        .iter()
        .find(|b| b.media_type == MEDIA_TYPE_CONFIG)
        .expect("a config blob")
        .digest
}

/// What docker holds is what was pushed: the image ID is the config's digest, and `docker save`
/// gives back the config and every layer's tar byte for byte.
pub async fn assert_holds(docker: &Dockerd, reference: &str, image: &BuiltImage) {
    let config = config_digest(image);
    assert_eq!(docker.image_id(reference).await.expect("image id"), config);
    let saved = docker.save(reference).await.expect("docker save");
    assert_eq!(
        sha256(&saved.config),
        config,
        "the saved config is the pushed one"
    );
    let layers: Vec<_> = image
        .blobs
        .iter()
        .filter(|b| b.media_type != MEDIA_TYPE_CONFIG)
        .collect();
    assert_eq!(saved.layers.len(), layers.len());
    for (saved_layer, pushed) in saved.layers.iter().zip(layers) {
        let saved_bytes = std::fs::read(saved_layer).expect("saved layer");
        let pushed_tar = uncompressed_layer(image, pushed).expect("pushed layer");
        assert!(
            saved_bytes == pushed_tar,
            "layer {} differs in docker save ({} vs {} bytes)",
            pushed.digest,
            saved_bytes.len(),
            pushed_tar.len()
        );
    }
}
