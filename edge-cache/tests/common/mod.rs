//! Shared set-up for the edge's integration tests: a real registry with images pushed by skopeo,
//! optionally behind a counting proxy, and the edge binary in front.
#![allow(dead_code)]

use std::path::Path;

use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::image::{build_image, BuiltImage, ImageSpec};
use damselfly_test_support::proxy::FaultProxy;
use damselfly_test_support::registry::{Registry, RegistryOptions};
use damselfly_test_support::skopeo::{self, PushOptions};
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

    /// The registry is the default upstream, reached through the counting proxy; containerd
    /// names it in `?ns=` by its own address, which maps to the same place.
    pub fn edge_options(&self) -> EdgeOptions {
        let mut options = EdgeOptions::new(self.proxy.url());
        options.extra_toml = format!(
            "[[upstreams]]\nregistry = \"{}\"\nurl = \"{}\"\n",
            self.registry.addr(),
            self.proxy.url()
        );
        options
    }

    pub async fn edge_with(&self, options: EdgeOptions) -> Edge {
        Edge::start(edge_binary(), options).await.expect("edge")
    }

    /// Builds `spec` offline and pushes it to `repo:tag` on the registry directly.
    pub async fn push(&self, spec: ImageSpec, repo_tag: &str) -> BuiltImage {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let tag = repo_tag.rsplit_once(':').map_or("latest", |(_, t)| t);
        let image = build_image(&spec, &dir.join("layout"), tag).expect("build image");
        let dest = format!("{}/{repo_tag}", self.registry.addr());
        let options = PushOptions {
            all: image.manifests.len() > 1,
            ..PushOptions::default()
        };
        skopeo::push(&image, &dest, &options).await.expect("push");
        image
    }
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
