//! Layer read-ahead against a real registry and edge: a runtime fetches an image's manifest and
//! its config and first layer through the agent; with `download.read_ahead = "always"` the agent
//! starts the next layer before the runtime asks (the origin sees it asked for), one layer at a
//! time and only while the runtime pulls, and the runtime asking then is served that download;
//! with "off" nothing is fetched before it is asked.

mod common;

use std::time::Duration;

use common::{downloaded_from, sha256, Region, MIB};
use damselfly_test_support::image::{BuiltImage, ImageSpec};

const REFERENCE: &str = "demo/ahead:v1";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// GETs of `digest` the origin answered (the edge's access checks are HEADs).
fn origin_gets(region: &Region, digest: &str) -> usize {
    region
        .proxy
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(digest))
        .count()
}

async fn get(client: &reqwest::Client, url: &str) -> bytes::Bytes {
    let response = client
        .get(url)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{url}: {}", response.status());
    response.bytes().await.unwrap()
}

/// A region with one agent in `mode`, an image of a config and three 2 MiB layers, the origin
/// sending blobs at 1 MiB/s (a layer takes the edge about 2 s); the runtime has fetched the
/// manifest, the config and the first layer. Returns the blobs in the manifest's order.
async fn first_layer_pulled(mode: &str) -> (Region, BuiltImage, Vec<String>, reqwest::Client, String) {
    let toml = format!("[download]\nread_ahead = \"{mode}\"\n");
    let region = Region::start_with_agent_toml(&["eu/z1/r1"], &toml).await;
    let image = region
        .push(ImageSpec::new("ahead", vec![2 * MIB; 3]), REFERENCE)
        .await;
    assert_eq!(image.blobs.len(), 4, "a config and three layers");
    region.proxy.reset_counters();
    region.proxy.set_blob_rate(MIB);
    let client = reqwest::Client::new();
    let base = format!("{}/v2/demo/ahead", region.agents[0].url());
    let manifest = get(&client, &format!("{base}/manifests/v1")).await;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let digest = |d: &serde_json::Value| d["digest"].as_str().unwrap().to_string();
    let layers = manifest["layers"].as_array().unwrap();
    let blobs: Vec<String> = std::iter::once(digest(&manifest["config"]))
        .chain(layers.iter().map(digest))
        .collect();
    assert_eq!(blobs.len(), image.blobs.len());
    for blob in &blobs[..2] {
        let body = get(&client, &format!("{base}/blobs/{blob}")).await;
        assert_eq!(&sha256(&body), blob);
    }
    (region, image, blobs, client, base)
}

fn size_of(image: &BuiltImage, digest: &str) -> u64 {
    image.blobs.iter().find(|b| b.digest == digest).unwrap().size
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_next_layer_starts_before_the_runtime_asks_and_the_runtime_joins_it() {
    let (region, image, blobs, client, base) = first_layer_pulled("always").await;
    let second = &blobs[2];
    // The edge asks the origin for the second layer though nobody asked the agent for it.
    for _ in 0..200 {
        if origin_gets(&region, second) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        origin_gets(&region, second),
        1,
        "{:?}\n{}",
        region.proxy.requests(),
        region.logs()
    );
    // One layer at a time: the next waits for the edge to be nearly done with this one.
    assert_eq!(origin_gets(&region, &blobs[3]), 0);
    let read_ahead = region.agents[0].metrics().await.unwrap();
    assert_eq!(read_ahead.get("damselfly_agent_read_ahead_blobs_total"), 1.0);
    // The runtime's own downloads are done and it asks for nothing more: it is not pulling,
    // and the layer read ahead (not its own) starts no further one.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(origin_gets(&region, &blobs[3]), 0);
    // The runtime asks now and is served what was read ahead: the right bytes, fetched once.
    let body = get(&client, &format!("{base}/blobs/{second}")).await;
    assert_eq!(&sha256(&body), second);
    assert_eq!(origin_gets(&region, second), 1);
    let metrics = region.agent_metrics().await;
    let from_edge = downloaded_from(&metrics, "edge");
    let three: u64 = blobs[..3].iter().map(|d| size_of(&image, d)).sum();
    assert!(
        (three as f64..three as f64 * 1.01).contains(&from_edge),
        "the agent took {from_edge} bytes from the edge for {three} bytes of blobs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_read_ahead_off_nothing_is_fetched_before_the_runtime_asks() {
    let (region, _image, blobs, _client, _base) = first_layer_pulled("off").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    for blob in &blobs[2..] {
        assert_eq!(origin_gets(&region, blob), 0, "{blob}");
    }
    let metrics = region.agents[0].metrics().await.unwrap();
    assert_eq!(metrics.get("damselfly_agent_read_ahead_blobs_total"), 0.0);
}
