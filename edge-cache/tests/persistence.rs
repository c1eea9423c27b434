//! What survives: a restart keeps the cache (hits without upstream traffic), the quota holds,
//! no plaintext of a layer is ever written to the data directory, SIGTERM drains and exits.

mod common;

use std::time::Duration;

use common::{fetch, layers, sha256, Origin, MIB};
use damselfly_test_support::edge::EdgeOptions;
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::skopeo::{self, PullOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_edge_serves_its_cache_without_upstream_traffic() {
    let origin = Origin::start().await;
    let mut edge = origin.edge().await;
    let image = origin
        .push(layers(&[4 * MIB, MIB], "restart"), "demo/restart:v1")
        .await;
    let registry = origin.registry.addr();
    let reference = format!("{registry}/demo/restart:v1");
    let out = tempfile::tempdir().unwrap();
    let pulled = skopeo::pull_via_mirror(
        &registry,
        &edge.addr(),
        &reference,
        &out.path().join("a"),
        &PullOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(pulled.manifest_digest, image.top_digest);

    edge.restart().await.unwrap();
    origin.proxy.reset_counters();
    let pulled = skopeo::pull_via_mirror(
        &registry,
        &edge.addr(),
        &reference,
        &out.path().join("b"),
        &PullOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(pulled.manifest_digest, image.top_digest);
    assert_eq!(
        origin.proxy.blob_bytes(),
        0,
        "blobs came from the cache, not the upstream"
    );
    let metrics = edge.metrics().await.unwrap();
    assert_eq!(
        metrics.sum("damselfly_edge_cache_hits_total", &["kind=\"blob\""]),
        image.blobs.len() as f64
    );
    assert_eq!(metrics.get("damselfly_edge_upstream_bytes_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_within_its_quota() {
    let origin = Origin::start().await;
    let quota = 40 * MIB;
    let edge = origin
        .edge_with(EdgeOptions {
            quota: format!("{quota}"),
            ..origin.edge_options()
        })
        .await;
    let client = loopback_client().unwrap();
    for round in 0..4 {
        let image = origin
            .push(
                layers(&[12 * MIB], &format!("quota-{round}")),
                &format!("demo/q{round}:v1"),
            )
            .await;
        for blob in &image.blobs {
            let url = format!("{}/v2/demo/q{round}/blobs/{}", edge.url(), blob.digest);
            let body = fetch(&client, &url).await.unwrap();
            assert_eq!(sha256(&body), blob.digest);
        }
        let on_disk = dir_size(&edge.data_dir().join("blobs"));
        assert!(
            on_disk <= quota,
            "round {round}: {on_disk} bytes on disk, quota {quota}"
        );
    }
    let metrics = edge.metrics().await.unwrap();
    assert!(metrics.get("damselfly_edge_evicted_blobs_total") >= 1.0);
    assert!(metrics.get("damselfly_edge_cache_used_bytes") as u64 <= quota);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_layer_plaintext_is_written_to_disk() {
    let origin = Origin::start().await;
    let edge = origin.edge().await;
    let image = origin
        .push(layers(&[3 * MIB], "plaintext"), "demo/plain:v1")
        .await;
    let layer = image.blobs.iter().max_by_key(|b| b.size).unwrap().clone();
    let client = loopback_client().unwrap();
    let body = fetch(
        &client,
        &format!("{}/v2/demo/plain/blobs/{}", edge.url(), layer.digest),
    )
    .await
    .unwrap();
    assert_eq!(sha256(&body), layer.digest);
    // Samples of the layer at several offsets must appear in no file of the data directory.
    // (inside the layer's random payload: the tar and gzip framing at the ends is mostly zeros)
    let samples: Vec<&[u8]> = [4096usize, body.len() / 2, body.len() * 3 / 4]
        .iter()
        .map(|&o| &body[o..o + 64])
        .collect();
    for sample in &samples {
        assert!(
            sample.iter().any(|b| *b != sample[0]),
            "sample is not random payload"
        );
    }
    let mut files = 0;
    for path in walk(edge.data_dir()) {
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        for sample in &samples {
            assert!(
                !bytes.windows(sample.len()).any(|w| w == *sample),
                "plaintext found in {}",
                path.display()
            );
        }
    }
    assert!(files >= 2, "the sealed blob and its table were scanned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_not_ready_and_exits() {
    let origin = Origin::start().await;
    let mut edge = origin.edge().await;
    edge.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(loopback_client()
        .unwrap()
        .get(format!("{}/healthz", edge.url()))
        .send()
        .await
        .is_err());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn dir_size(dir: &std::path::Path) -> u64 {
    walk(dir)
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}
