//! `download.prefetch_layers`: an image manifest passing through the mirror starts the download
//! of every layer; the runtime's blob requests then join them. Off (the default), a manifest
//! starts nothing.

mod common;

use common::{downloaded_from, until, Region};
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::registry::RegistryOptions;

const MIB: u64 = 1024 * 1024;
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_starts_every_layer_and_the_pull_joins_them() {
    let region = Region::start_with_agent_toml(&["eu/z1/r1"], "[download]\nprefetch_layers = true\n").await;
    let image = region
        .push(
            ImageSpec::new("prefetch", vec![3 * MIB, 2 * MIB, MIB]),
            "demo/prefetch:v1",
        )
        .await;
    let layers: Vec<_> = image.blobs.iter().filter(|b| b.size >= MIB).collect();
    let layer_bytes: u64 = layers.iter().map(|b| b.size).sum();

    // The manifest alone, as a runtime asks for it first.
    let manifest = get_manifest(&region, "demo/prefetch").await;
    assert_eq!(manifest.status(), 200);
    let served = manifest.bytes().await.unwrap();
    let pushed = std::fs::read(image.blob_path(&image.manifests[0])).unwrap();
    assert_eq!(served, pushed, "the manifest reaches the runtime unchanged");

    // Every layer arrives without a blob request.
    until(60, || async {
        let m = region.agents[0].metrics().await.unwrap_or_default();
        m.sum("damselfly_agent_download_bytes_total", &[]) >= layer_bytes as f64
    })
    .await;
    let metrics = region.agents[0].metrics().await.unwrap();
    assert_eq!(
        metrics.sum("damselfly_agent_prefetched_layers_total", &[]),
        image.blobs.len() as f64 - 1.0,
        "one per layer (the config is the runtime's to ask for)"
    );

    // The pull then takes them from the agent's store: nothing more comes from anywhere.
    let before = region.agent_metrics().await;
    let digest = region.pull_via(0, "demo/prefetch:v1", None).await.unwrap();
    assert_eq!(digest, image.top_digest);
    let after = region.agent_metrics().await;
    for source in ["edge", "peer", "origin"] {
        let fetched = downloaded_from(&after[..1], source) - downloaded_from(&before[..1], source);
        assert!(
            fetched < MIB as f64,
            "{fetched} bytes more from {source} after the prefetch\n{}",
            region.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_by_default_a_manifest_starts_nothing() {
    let region = Region::start(RegistryOptions::default(), &["eu/z1/r1"]).await;
    region
        .push(ImageSpec::new("quiet", vec![2 * MIB]), "demo/quiet:v1")
        .await;
    let manifest = get_manifest(&region, "demo/quiet").await;
    assert_eq!(manifest.status(), 200);
    let _ = manifest.bytes().await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let metrics = region.agents[0].metrics().await.unwrap();
    assert_eq!(metrics.sum("damselfly_agent_prefetched_layers_total", &[]), 0.0);
    assert_eq!(metrics.sum("damselfly_agent_download_bytes_total", &[]), 0.0);
}

/// `GET /v2/<repo>/manifests/v1` from agent 0's mirror, as a runtime asks for an image manifest.
async fn get_manifest(region: &Region, repo: &str) -> reqwest::Response {
    loopback_client()
        .unwrap()
        .get(format!(
            "{}/v2/{repo}/manifests/v1?ns={}",
            region.agents[0].url(),
            region.registry.addr()
        ))
        .header(http::header::ACCEPT, MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap()
}
