//! A misbehaving upstream: cut mid-blob (resumed with Range), answering 503 (retried), sending
//! corrupt bytes (no client ever gets a wrong blob as a success, nothing is cached).

mod common;

use common::{blob_url, fetch_at_once, origin_edge_and_image, pull_checked, sha256, MIB};
use damselfly_test_support::net::loopback_client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_upstream_transfer_resumes_and_completes() {
    let (origin, edge, image) = origin_edge_and_image(&[16 * MIB], "cut", "demo/cut:v1").await;
    let layer = image.largest_blob();
    origin.proxy.reset_counters();
    origin.proxy.cut_blob_after(5 * MIB + 123);

    let client = loopback_client().unwrap();
    pull_checked(&client, &edge, "demo/cut", &layer.digest).await;
    let metrics = edge.metrics().await.unwrap();
    assert!(metrics.get("damselfly_edge_upstream_resumes_total") >= 1.0);
    // Resumed, not restarted: the bytes before the cut were not fetched twice.
    assert_eq!(origin.proxy.blob_bytes(), layer.size);
    assert!(origin.proxy.blob_gets() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_are_retried() {
    let (origin, edge, image) = origin_edge_and_image(&[2 * MIB], "retry", "demo/retry:v1").await;
    let layer = image.largest_blob();
    // The access check (HEAD) passes; the transfer's first two GETs fail.
    origin
        .proxy
        .fail_blobs(2, reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let client = loopback_client().unwrap();
    pull_checked(&client, &edge, "demo/retry", &layer.digest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_upstream_bytes_never_reach_a_client_as_a_blob_and_are_not_cached() {
    let (origin, edge, image) =
        origin_edge_and_image(&[8 * MIB, 100 * 1024], "corrupt", "demo/corrupt:v1").await;
    let client = loopback_client().unwrap();
    // One multi-piece blob and one single-piece blob.
    for layer in image.blobs.iter().filter(|b| b.size > 50 * 1024) {
        origin.proxy.corrupt_blob_at(layer.size / 2);
        let url = blob_url(&edge, "demo/corrupt", &layer.digest);
        // A client may fail, or (arriving after the failed transfer) succeed from a new, clean
        // transfer; it must never succeed with wrong bytes.
        for body in fetch_at_once(&client, &url, 3).await.into_iter().flatten() {
            assert_eq!(
                sha256(&body),
                layer.digest,
                "a wrong blob was delivered as a success"
            );
        }
        // Not poisoned: the next pull fetches again and is right.
        pull_checked(&client, &edge, "demo/corrupt", &layer.digest).await;
    }
    let metrics = edge.metrics().await.unwrap();
    assert_eq!(metrics.get("damselfly_edge_ingest_failures_total"), 2.0);
}
