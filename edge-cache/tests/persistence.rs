//! What survives: a restart keeps the cache (hits without upstream traffic), the quota holds,
//! no plaintext of a layer is ever written to the data directory, SIGTERM drains and exits.

mod common;

use std::time::Duration;

use common::{fetch, layers, origin_edge_and_image, sha256, Origin, MIB};
use damselfly_test_support::edge::EdgeOptions;
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::plaintext;
use damselfly_test_support::skopeo::{self, PullOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_edge_serves_its_cache_without_upstream_traffic() {
    let (origin, mut edge, image) =
        origin_edge_and_image(&[4 * MIB, MIB], "restart", "demo/restart:v1").await;
    let registry = origin.registry.addr();
    let reference = format!("{registry}/demo/restart:v1");
    let out = tempfile::tempdir().unwrap();
    let pull = |edge: String, into: &str| {
        let out = out.path().join(into);
        let (registry, reference) = (registry.clone(), reference.clone());
        async move {
            skopeo::pull_via_mirror(&registry, &edge, &reference, &out, &PullOptions::default())
                .await
                .unwrap()
        }
    };
    let pulled = pull(edge.addr(), "a").await;
    assert_eq!(pulled.manifest_digest, image.top_digest);

    edge.restart().await.unwrap();
    origin.proxy.reset_counters();
    let pulled = pull(edge.addr(), "b").await;
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
    let (_origin, edge, image) = origin_edge_and_image(&[3 * MIB], "plaintext", "demo/plain:v1").await;
    let layer = image.largest_blob();
    let client = loopback_client().unwrap();
    let body = fetch(
        &client,
        &format!("{}/v2/demo/plain/blobs/{}", edge.url(), layer.digest),
    )
    .await
    .unwrap();
    assert_eq!(sha256(&body), layer.digest);
    // Samples of the layer at several offsets must appear in no file of the data directory.
    let samples = plaintext::layer_samples(&body);
    for sample in &samples {
        assert!(
            sample.iter().any(|b| *b != sample[0]),
            "sample is not random payload"
        );
    }
    let scan = plaintext::scan(&[edge.data_dir()], &samples).unwrap();
    assert!(scan.leaks.is_empty(), "plaintext found in {:?}", scan.leaks);
    assert!(scan.files >= 2, "the sealed blob and its table were scanned");
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

fn dir_size(dir: &std::path::Path) -> u64 {
    plaintext::files_under(dir)
        .unwrap()
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}
