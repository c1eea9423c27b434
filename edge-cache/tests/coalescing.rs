//! Many clients, one upstream transfer: 20 concurrent cold pulls of one 64 MiB layer make the
//! upstream send that layer's bytes exactly once, and every client gets the right bytes.

mod common;

use common::{fetch_at_once, origin_edge_and_image, sha256, MIB};
use damselfly_test_support::net::loopback_client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_cold_pulls_fetch_upstream_once() {
    let (origin, edge, image) = origin_edge_and_image(&[64 * MIB], "coalesce", "demo/big:v1").await;
    let layer = image.largest_blob();
    origin.proxy.reset_counters();

    let client = loopback_client().unwrap();
    let url = format!("{}/v2/demo/big/blobs/{}", edge.url(), layer.digest);
    for pull in fetch_at_once(&client, &url, 20).await {
        let body = pull.unwrap_or_else(|e| panic!("pull failed: {e}\n{}", edge.log_tail()));
        assert_eq!(body.len() as u64, layer.size);
        assert_eq!(sha256(&body), layer.digest);
    }
    assert_eq!(origin.proxy.blob_gets(), 1, "one upstream GET for 20 clients");
    assert_eq!(
        origin.proxy.blob_bytes(),
        layer.size,
        "upstream sent the layer exactly once"
    );
    let metrics = edge.metrics().await.unwrap();
    assert_eq!(
        metrics.get("damselfly_edge_upstream_bytes_total") as u64,
        layer.size
    );
    assert_eq!(
        metrics.sum("damselfly_edge_served_bytes_total", &["kind=\"blob\""]) as u64,
        20 * layer.size
    );
}
