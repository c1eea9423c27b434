//! Shared pieces of the preheater's integration tests: the preheater as a real process, edges
//! with the warm API on, redis-server, and polling helpers.
//!
//! The edge binary: `cargo test --workspace` builds every binary first; when running only this
//! crate's tests, build it with `cargo build -p damselfly-edge --bin edge-cache`. It is looked up
//! at `$DAMSELFLY_EDGE_BIN`, else next to the `preheater` binary in the same target directory.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use damselfly_test_support::daemon::{Daemon, DaemonSpec, OpsEndpoint};
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::image::{BuiltImage, ImageSpec};
use damselfly_test_support::net::{free_addr_on, loopback_client};
use damselfly_test_support::pki::Pki;
use damselfly_test_support::poll::{poll_until, Probe};
use damselfly_test_support::proxy::FaultProxy;
use damselfly_test_support::registry::{Registry, RegistryOptions};
use http::StatusCode;
use serde_json::Value;

pub const WEBHOOK_TOKEN: &str = "registry-webhook-token-1";
pub const EDGE_TOKEN: &str = "edge-warm-token-0123456789";
pub const HARBOR_AUTH: &str = "Bearer wh-7f3c9a1e2b";
pub const MIB: u64 = 1024 * 1024;
/// The content type of Distribution's notifications.
pub const DISTRIBUTION_EVENTS: &str = "application/vnd.docker.distribution.events.v1+json";

/// Every modern manifest type, for pulling through an edge.
pub const MANIFEST_ACCEPT: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_test_writer()
        .try_init();
}

pub fn edge_binary() -> PathBuf {
    let path = std::env::var_os("DAMSELFLY_EDGE_BIN")
        .map(PathBuf::from)
        // Built alongside: `cargo test --workspace` builds every binary before running tests.
        .unwrap_or_else(|| Path::new(env!("CARGO_BIN_EXE_preheater")).with_file_name("edge-cache"));
    assert!(
        path.exists(),
        "edge binary not found at {}: run `cargo build --workspace --bins` first \
         (or set DAMSELFLY_EDGE_BIN)",
        path.display()
    );
    path
}

/// A registry holding one image, pushed to `repo_tag`.
pub async fn registry_with(spec: ImageSpec, repo_tag: &str) -> (Registry, BuiltImage) {
    let registry = Registry::start(RegistryOptions::default())
        .await
        .expect("registry");
    let image = registry.push_image(spec, repo_tag).await.expect("push");
    (registry, image)
}

/// A registry that sends its notifications to a preheater at `preheater` (see
/// [`Preheater::reserve`]), with the preheater's webhook token.
pub async fn notifying_registry(preheater: SocketAddr) -> Registry {
    Registry::start(RegistryOptions {
        notifications: Some((
            format!("http://{preheater}/webhooks/distribution"),
            Some(format!("Bearer {WEBHOOK_TOKEN}")),
        )),
        ..RegistryOptions::default()
    })
    .await
    .expect("registry")
}

/// An edge with the warm API enabled, fetching from `upstream_url`.
pub async fn start_edge(upstream_url: &str) -> Edge {
    let mut options = EdgeOptions::new(upstream_url);
    options.warm_token = Some(EDGE_TOKEN.into());
    Edge::start(&edge_binary(), options).await.expect("edge starts")
}

/// An edge whose way to `registry` fails every blob download until the returned proxy's
/// faults are cleared: a job warming it is stuck retrying.
pub async fn edge_behind_failing_origin(registry: &Registry) -> (FaultProxy, Edge) {
    let origin = FaultProxy::start(&registry.addr()).await.unwrap();
    origin.fail_blobs(1_000_000, StatusCode::SERVICE_UNAVAILABLE);
    let edge = start_edge(&origin.url()).await;
    (origin, edge)
}

/// What the generated preheater config contains.
#[derive(Debug, Clone, Default)]
pub struct PreheaterSetup {
    /// `(region, url)`.
    pub edges: Vec<(String, String)>,
    /// `(host, url)`; the edges are told to use their default upstream for it.
    pub registries: Vec<(String, String)>,
    pub redis: Option<String>,
    /// Extra top-level TOML lines (before any section).
    pub extra_top: String,
    /// Overrides of the `[warm]` section's test defaults.
    pub warm: String,
    /// Lines for the `[jobs]` section.
    pub jobs: String,
    /// Serve TLS with a certificate of this CA and trust it for the edges; `None`: a lab
    /// preheater on plain HTTP (`insecure`).
    pub tls: Option<Arc<Pki>>,
}

impl PreheaterSetup {
    /// Pushes to `registry` warm `edges` (`(region, url)`).
    pub fn new(registry: &Registry, edges: &[(&str, String)]) -> PreheaterSetup {
        PreheaterSetup {
            edges: edges
                .iter()
                .map(|(region, url)| (region.to_string(), url.clone()))
                .collect(),
            registries: vec![(registry.addr(), registry.url())],
            ..PreheaterSetup::default()
        }
    }
}

/// The preheater binary on a fixed address and data directory (so it can be restarted).
pub struct Preheater {
    pub addr: SocketAddr,
    daemon: Daemon,
}

impl Preheater {
    /// Reserves an address, so a registry can be told where to send notifications first.
    pub fn reserve() -> SocketAddr {
        free_addr_on("127.0.0.1").expect("free address")
    }

    pub async fn start(setup: &PreheaterSetup) -> Preheater {
        Self::start_on(Self::reserve(), setup, "preheater").await
    }

    /// The preheater at `addr` that a [`notifying_registry`] sends `registry`'s pushes to,
    /// warming `edges` (`(region, url)`): the whole of the push-driven setup.
    pub async fn start_notified_by(
        addr: SocketAddr,
        registry: &Registry,
        edges: &[(&str, String)],
    ) -> Preheater {
        Self::start_on(addr, &PreheaterSetup::new(registry, edges), "preheater").await
    }

    pub async fn start_on(addr: SocketAddr, setup: &PreheaterSetup, name: &str) -> Preheater {
        let dir = tempfile::Builder::new()
            .prefix("damselfly-preheater-")
            .tempdir()
            .expect("tempdir");
        let (scheme, insecure, tls) = match &setup.tls {
            Some(pki) => {
                let files = pki
                    .issue("preheater", &["127.0.0.1"])
                    .expect("preheater certificate");
                ("https", "", pki.toml(&files, false))
            }
            None => ("http", "insecure = true\n", String::new()),
        };
        let mut text = format!(
            "listen = \"{addr}\"\n{insecure}data_dir = \"{}\"\nwebhook_token = \"{WEBHOOK_TOKEN}\"\n\
             harbor_auth = \"{HARBOR_AUTH}\"\nedge_token = \"{EDGE_TOKEN}\"\n",
            dir.path().join("data").display()
        );
        if let Some(redis) = &setup.redis {
            text.push_str(&format!("redis = \"{redis}\"\n"));
        }
        text.push_str(&setup.extra_top);
        for (region, url) in &setup.edges {
            text.push_str(&format!("[[edges]]\nregion = \"{region}\"\nurl = \"{url}\"\n"));
        }
        for (host, url) in &setup.registries {
            text.push_str(&format!(
                "[[registries]]\nhost = \"{host}\"\nurl = \"{url}\"\nedge_default_upstream = true\n"
            ));
        }
        text.push_str(&format!(
            "[warm]\nbackoff_initial_ms = 100\nbackoff_max_ms = 500\npoll_initial_ms = 50\npoll_max_ms = 200\n{}\n",
            setup.warm
        ));
        text.push_str(&format!(
            "[jobs]\n{}\n[server]\nshutdown_grace_secs = 2\n{tls}",
            setup.jobs
        ));
        let spec = DaemonSpec {
            name: name.into(),
            binary: env!("CARGO_BIN_EXE_preheater").into(),
            log_filter: "info,damselfly_preheater=debug".into(),
            ops: OpsEndpoint {
                url: format!("{scheme}://{addr}"),
                ca: setup.tls.as_ref().map(|pki| pki.ca()),
            },
            netns: None,
        };
        let daemon = Daemon::start(spec, dir, &text).await.expect("preheater starts");
        Preheater { addr, daemon }
    }

    pub fn url(&self) -> String {
        self.daemon.url().to_string()
    }

    pub fn log_tail(&self) -> String {
        self.daemon.log_tail()
    }

    /// SIGKILL: no chance to tidy up.
    pub fn kill(&mut self) {
        self.daemon.kill().expect("kill preheater");
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn terminate(&mut self, within: Duration) {
        self.daemon
            .terminate(within)
            .await
            .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", self.log_tail()));
        let log = self.log_tail();
        assert!(log.contains("shutting down"), "{log}");
        assert!(!log.contains("panicked"), "{log}");
    }

    /// Starts the killed process again on the same address, config and data.
    pub async fn start_again(&mut self) {
        self.daemon.start_again().await.expect("preheater restarts");
    }

    pub async fn job(&self, id: &str) -> Value {
        let r = self.get(&format!("/api/v1/jobs/{id}")).await;
        assert_eq!(r.status(), 200, "GET job {id}");
        r.json().await.expect("job JSON")
    }

    pub async fn jobs(&self) -> Vec<Value> {
        let r = self.get("/api/v1/jobs?limit=1000").await;
        let body: Value = r.json().await.expect("jobs JSON");
        body["jobs"].as_array().cloned().unwrap_or_default()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        loopback_client()
            .unwrap()
            .get(format!("{}{path}", self.url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `POST /api/v1/jobs {"image": ...}`; returns the job id.
    pub async fn create_job(&self, image: &str) -> String {
        let r = loopback_client()
            .unwrap()
            .post(format!("{}/api/v1/jobs", self.url()))
            .json(&serde_json::json!({ "image": image }))
            .send()
            .await
            .expect("POST job");
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        let job: Value = r.json().await.expect("job JSON");
        job["id"].as_str().expect("job id").to_string()
    }

    /// Polls until the job is finished; returns it.
    pub async fn wait_job(&self, id: &str, timeout: Duration) -> Value {
        wait_job_at(&self.url(), id, timeout)
            .await
            .unwrap_or_else(|e| panic!("{e}\npreheater log:\n{}", self.log_tail()))
    }

    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        auth: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, Value) {
        post(&format!("{}{path}", self.url()), content_type, auth, body).await
    }

    /// Delivers a Distribution notification, as the registry does.
    pub async fn notify(&self, envelope: Vec<u8>) -> (u16, Value) {
        let auth = format!("Bearer {WEBHOOK_TOKEN}");
        self.post(
            "/webhooks/distribution",
            DISTRIBUTION_EVENTS,
            Some(&auth),
            envelope,
        )
        .await
    }
}

/// POSTs `body` to `url`; the status and the JSON answer (`null` if there is none).
pub async fn post(
    url: &str,
    content_type: &str,
    auth: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut request = loopback_client()
        .unwrap()
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let r = request.send().await.expect("POST");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls the preheater at `base_url` until job `id` is finished; returns it.
pub async fn wait_job_at(base_url: &str, id: &str, timeout: Duration) -> Result<Value> {
    let url = format!("{base_url}/api/v1/jobs/{id}");
    let client = loopback_client()?;
    poll_until(&format!("job {id}"), timeout, || {
        let request = client.get(&url).send();
        async move {
            let job: Value = match request.await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(e) => return Ok(Probe::NotYet(e.to_string())),
            };
            Ok(match job["state"].as_str() {
                Some("succeeded" | "failed") => Probe::Ready(job),
                other => Probe::NotYet(format!("state {other:?}")),
            })
        }
    })
    .await
}

/// Polls until `digest` is cached at the edge.
pub async fn wait_cached(edge_url: &str, digest: &str, timeout: Duration) -> Result<()> {
    wait_cached_with(&loopback_client()?, edge_url, digest, timeout).await
}

/// [`wait_cached`] with a given client (one trusting a TLS edge's CA).
pub async fn wait_cached_with(
    client: &reqwest::Client,
    edge_url: &str,
    digest: &str,
    timeout: Duration,
) -> Result<()> {
    let url = format!("{edge_url}/api/v1/warm/{digest}");
    poll_until(&format!("{digest} cached at {edge_url}"), timeout, || {
        let request = client.get(&url).bearer_auth(EDGE_TOKEN).send();
        async move {
            let state: Value = match request.await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(e) => return Ok(Probe::NotYet(e.to_string())),
            };
            Ok(if state["state"] == "cached" {
                Probe::Ready(())
            } else {
                Probe::NotYet(state.to_string())
            })
        }
    })
    .await
}

/// What one edge says about a blob right now.
pub async fn edge_state(edge_url: &str, digest: &str) -> String {
    let r = loopback_client()
        .unwrap()
        .get(format!("{edge_url}/api/v1/warm/{digest}"))
        .bearer_auth(EDGE_TOKEN)
        .send()
        .await
        .expect("edge status");
    let v: Value = r.json().await.expect("status JSON");
    v["state"].as_str().unwrap_or("?").to_string()
}

pub fn sha256(bytes: &[u8]) -> String {
    damselfly_core::Digest::of(bytes).to_string()
}

/// Pulls `repo:reference` through an edge with plain HTTP (manifest, child manifests, blobs) and
/// checks every digest. Returns the number of blob bytes read.
pub async fn pull_through_edge(edge_url: &str, repo: &str, reference: &str) -> Result<u64> {
    let client = loopback_client()?;
    let get_manifest = |r: String| {
        let mut request = client.get(format!("{edge_url}/v2/{repo}/manifests/{r}"));
        for a in MANIFEST_ACCEPT {
            request = request.header("accept", a);
        }
        request.send()
    };
    let top = get_manifest(reference.to_string()).await?;
    if top.status() != 200 {
        bail!(
            "manifest {repo}:{reference}: {} {}",
            top.status(),
            top.text().await?
        );
    }
    let top_bytes = top.bytes().await?;
    let top_doc: Value = serde_json::from_slice(&top_bytes)?;
    let mut images = Vec::new();
    match top_doc["manifests"].as_array() {
        Some(children) => {
            for child in children {
                let digest = child["digest"].as_str().context("child digest")?;
                let r = get_manifest(digest.to_string()).await?;
                if r.status() != 200 {
                    bail!("child manifest {digest}: {}", r.status());
                }
                let bytes = r.bytes().await?;
                if sha256(&bytes) != digest {
                    bail!("child manifest {digest} has the wrong content");
                }
                images.push(serde_json::from_slice::<Value>(&bytes)?);
            }
        }
        None => images.push(top_doc),
    }
    let mut total = 0;
    for image in images {
        let config = image["config"].clone();
        let layers = image["layers"].as_array().cloned().unwrap_or_default();
        for blob in std::iter::once(config).chain(layers) {
            let digest = blob["digest"].as_str().context("blob digest")?;
            let r = client
                .get(format!("{edge_url}/v2/{repo}/blobs/{digest}"))
                .send()
                .await?;
            if r.status() != 200 {
                bail!("blob {digest}: {}", r.status());
            }
            let bytes = r.bytes().await?;
            if sha256(&bytes) != digest {
                bail!("blob {digest} has the wrong content");
            }
            total += bytes.len() as u64;
        }
    }
    Ok(total)
}

/// A Distribution notification envelope for a tagged manifest push, shaped like the captured
/// `distribution_push_event.json`.
pub fn tagged_push_envelope(
    id: &str,
    registry: &str,
    repo: &str,
    tag: &str,
    digest: &str,
    media_type: &str,
) -> Vec<u8> {
    let template = include_str!("../fixtures/distribution_push_event.json");
    let target = [("mediaType", media_type.into()), ("tag", tag.into())];
    retargeted(template, id, registry, repo, "manifests", digest, &target)
}

/// A blob push envelope, shaped like `distribution_push_blob_event.json`.
pub fn blob_push_envelope(id: &str, registry: &str, repo: &str, digest: &str, size: u64) -> Vec<u8> {
    let template = include_str!("../fixtures/distribution_push_blob_event.json");
    let target = [("size", size.into()), ("length", size.into())];
    retargeted(template, id, registry, repo, "blobs", digest, &target)
}

/// A captured envelope whose one event is `id`, about `digest` (one of the repository's
/// `objects`: `manifests` or `blobs`) in `registry`'s `repo`, with the `target` fields that set
/// its kind of push apart; as the registry sends it.
fn retargeted(
    template: &str,
    id: &str,
    registry: &str,
    repo: &str,
    objects: &str,
    digest: &str,
    target: &[(&str, Value)],
) -> Vec<u8> {
    let mut envelope: Value = serde_json::from_str(template).expect("fixture");
    let event = &mut envelope["events"][0];
    event["id"] = id.into();
    event["target"]["digest"] = digest.into();
    event["target"]["repository"] = repo.into();
    event["target"]["url"] = format!("http://{registry}/v2/{repo}/{objects}/{digest}").into();
    event["request"]["host"] = registry.into();
    for (field, value) in target {
        event["target"][*field] = value.clone();
    }
    serde_json::to_vec_pretty(&envelope).expect("json")
}
