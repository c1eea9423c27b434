//! Shared set-up for the edge's integration tests: a real registry with images pushed by skopeo,
//! optionally behind a counting proxy, and the edge binary in front.
#![allow(dead_code)]

use std::path::Path;

use damselfly_core::api::TICKET_HEADER;
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::image::{BuiltImage, ImageSpec};
use damselfly_test_support::proxy::FaultProxy;
use damselfly_test_support::registry::{Registry, RegistryOptions};
use sha2::{Digest as _, Sha256};

pub const MIB: u64 = 1024 * 1024;

pub fn edge_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_edge-cache"))
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A registry, a counting proxy in front of it, and an edge whose upstream is the proxy.
pub struct Origin {
    pub registry: Registry,
    pub proxy: FaultProxy,
}

impl Origin {
    pub async fn start() -> Origin {
        let registry = Registry::start(RegistryOptions::default())
            .await
            .expect("registry");
        let proxy = FaultProxy::start(&registry.addr()).await.expect("proxy");
        Origin { registry, proxy }
    }

    pub async fn edge(&self) -> Edge {
        self.edge_with(self.edge_options()).await
    }

    /// The registry, reached through the counting proxy.
    pub fn edge_options(&self) -> EdgeOptions {
        EdgeOptions::for_registry(&self.registry.addr(), &self.proxy.url())
    }

    pub async fn edge_with(&self, options: EdgeOptions) -> Edge {
        Edge::start(edge_binary(), options).await.expect("edge")
    }

    /// Builds `spec` offline and pushes it to `repo:tag` on the registry directly.
    pub async fn push(&self, spec: ImageSpec, repo_tag: &str) -> BuiltImage {
        self.registry.push_image(spec, repo_tag).await.expect("push")
    }

    /// How many requests for exactly `path` reached the upstream since the proxy started or its
    /// counters were last reset.
    pub fn upstream_requests_for(&self, path: &str) -> usize {
        self.proxy.requests().iter().filter(|r| r.path == path).count()
    }
}

/// Where most tests start: an origin, an edge in front of it (default options), and then one
/// image of layers of `sizes` pushed to `repo_tag`.
pub async fn origin_edge_and_image(sizes: &[u64], seed: &str, repo_tag: &str) -> (Origin, Edge, BuiltImage) {
    let origin = Origin::start().await;
    let edge = origin.edge().await;
    let image = origin.push(layers(sizes, seed), repo_tag).await;
    (origin, edge, image)
}

pub fn layers(sizes: &[u64], seed: &str) -> ImageSpec {
    ImageSpec::new(seed, sizes.to_vec())
}

pub fn two_platforms(spec: ImageSpec) -> ImageSpec {
    spec.with_platforms([("amd64", None), ("arm64", Some("v8"))])
}

/// GETs `url` and returns the whole body, or the error that cut it short.
pub async fn fetch(client: &reqwest::Client, url: &str) -> Result<bytes::Bytes, String> {
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    response.bytes().await.map_err(|e| e.to_string())
}

pub fn blob_url(edge: &Edge, repo: &str, digest: &str) -> String {
    format!("{}/v2/{repo}/blobs/{digest}", edge.url())
}

/// Pulls blob `digest` of `repo` through `edge` and checks that its bytes hash to the digest; a
/// failed pull panics with the edge's log.
pub async fn pull_checked(client: &reqwest::Client, edge: &Edge, repo: &str, digest: &str) {
    let url = blob_url(edge, repo, digest);
    let body = fetch(client, &url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}\n{}", edge.log_tail()));
    assert_eq!(sha256(&body), digest);
}

/// [`fetch`] by `clients` clients at once; their results in order.
pub async fn fetch_at_once(
    client: &reqwest::Client,
    url: &str,
    clients: usize,
) -> Vec<Result<bytes::Bytes, String>> {
    let pulls = (0..clients).map(|_| {
        let (client, url) = (client.clone(), url.to_string());
        tokio::spawn(async move { fetch(&client, &url).await })
    });
    futures::future::join_all(pulls)
        .await
        .into_iter()
        .map(|pull| pull.expect("fetch task"))
        .collect()
}

/// The status of the edge's `GET /healthz`.
pub async fn health(client: &reqwest::Client, edge: &Edge) -> reqwest::StatusCode {
    client
        .get(format!("{}/healthz", edge.url()))
        .send()
        .await
        .unwrap()
        .status()
}

/// GETs piece `index` of blob `digest` from the edge as an agent holding `ticket` does.
pub async fn get_piece(
    client: &reqwest::Client,
    edge: &Edge,
    digest: &str,
    index: u64,
    ticket: &str,
) -> reqwest::Response {
    client
        .get(format!("{}/pieces/{digest}/{index}", edge.url()))
        .header(TICKET_HEADER, ticket)
        .send()
        .await
        .unwrap()
}

/// GETs `url` and reads the answer as JSON, whatever its status.
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    response.json().await.unwrap_or_else(|e| panic!("{url}: {e}"))
}
