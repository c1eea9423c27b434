//! A blob larger than the whole cache: streamed through to its client, verified, and not
//! stored, so it neither evicts everything else nor sits over the quota.

mod common;

use common::{fetch, layers, sha256, Origin, MIB};
use damselfly_test_support::net::loopback_client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_larger_than_the_cache_is_streamed_through_and_not_stored() {
    let origin = Origin::start().await;
    let mut options = origin.edge_options();
    options.quota = "20MiB".into();
    let edge = origin.edge_with(options).await;
    let image = origin
        .push(layers(&[4 * MIB, 30 * MIB], "oversized"), "demo/oversized:v1")
        .await;
    let small = image
        .blobs
        .iter()
        .find(|b| b.size > MIB && b.size < 10 * MIB)
        .unwrap();
    let large = image.largest_blob();
    assert!(large.size > 20 * MIB);
    let client = loopback_client().unwrap();
    let url = |digest: &str| format!("{}/v2/demo/oversized/blobs/{digest}", edge.url());

    let body = fetch(&client, &url(&small.digest)).await.unwrap();
    assert_eq!(sha256(&body), small.digest);
    let body = fetch(&client, &url(&large.digest))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", edge.log_tail()));
    assert_eq!(sha256(&body), large.digest, "the large blob, whole and right");

    let metrics = edge.metrics().await.unwrap();
    assert_eq!(metrics.get("damselfly_edge_evicted_blobs_total"), 0.0);
    assert_eq!(metrics.get("damselfly_edge_uncached_blobs_total"), 1.0);
    assert!(metrics.get("damselfly_edge_cache_used_bytes") < 5.0 * MIB as f64);
    let hex = large.digest.trim_start_matches("sha256:");
    for dir in ["blobs", "ingest"] {
        let path = edge.data_dir().join(dir).join(format!("{hex}.sealed"));
        assert!(!path.exists(), "{} is on disk", path.display());
    }

    // The small blob is still served from the cache; the large one is fetched again.
    origin.proxy.reset_counters();
    let body = fetch(&client, &url(&small.digest)).await.unwrap();
    assert_eq!(sha256(&body), small.digest);
    assert_eq!(origin.proxy.blob_gets(), 0, "the small blob was evicted");
    let body = fetch(&client, &url(&large.digest)).await.unwrap();
    assert_eq!(sha256(&body), large.digest);
    assert_eq!(origin.proxy.blob_gets(), 1);
}
