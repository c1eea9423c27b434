//! Regions chained: an edge of region `us` with region `eu`'s edge as its parent takes blobs
//! from it, so the origin sends each blob once for both regions; with `eu` down, `us` goes to
//! the origin; a request that already passed through an edge's region is refused as a loop.

mod common;

use common::{blob_url, layers, pull_checked, sha256, Origin, MIB};
use damselfly_test_support::edge::Edge;
use damselfly_test_support::image::BuiltImage;
use damselfly_test_support::net::loopback_client;

async fn edge_in(origin: &Origin, region: &str, parents: &[String]) -> Edge {
    let mut options = origin.edge_options();
    options.region = region.into();
    if !parents.is_empty() {
        let list: Vec<String> = parents.iter().map(|p| format!("\"{p}\"")).collect();
        options
            .top_toml
            .push_str(&format!("parents = [{}]\n", list.join(", ")));
    }
    origin.edge_with(options).await
}

/// Every layer of `image` pulled from `edge` (repository `repo`), checked against its digest.
async fn pull_layers(edge: &Edge, repo: &str, image: &BuiltImage) {
    let client = loopback_client().unwrap();
    for blob in image.blobs.iter().filter(|b| b.size > MIB) {
        pull_checked(&client, edge, repo, &blob.digest).await;
    }
}

fn layer_bytes(image: &BuiltImage) -> u64 {
    image.blobs.iter().filter(|b| b.size > MIB).map(|b| b.size).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_region_takes_blobs_from_its_parent_and_the_origin_sends_them_once() {
    let origin = Origin::start().await;
    let mut eu = edge_in(&origin, "eu", &[]).await;
    let us = edge_in(&origin, "us", &[eu.url()]).await;
    let image = origin
        .push(layers(&[4 * MIB, 3 * MIB], "chain"), "demo/chain:v1")
        .await;
    origin.proxy.reset_counters();

    // The child region first: its edge asks the parent, which fetches from the origin.
    pull_layers(&us, "demo/chain", &image).await;
    pull_layers(&eu, "demo/chain", &image).await;
    assert_eq!(
        origin.proxy.blob_bytes(),
        layer_bytes(&image),
        "the origin sends each blob once for both regions\n{}\n{}",
        eu.log_tail(),
        us.log_tail()
    );
    let us_metrics = us.metrics().await.unwrap();
    assert_eq!(us_metrics.get("damselfly_edge_parent_fetches_total"), 2.0);

    // The parent down: the child goes to the origin.
    let other = origin.push(layers(&[2 * MIB], "chain-2"), "demo/chain2:v1").await;
    origin.proxy.reset_counters();
    eu.kill().unwrap();
    pull_layers(&us, "demo/chain2", &other).await;
    assert_eq!(origin.proxy.blob_bytes(), layer_bytes(&other));
    let us_metrics = us.metrics().await.unwrap();
    assert!(us_metrics.get("damselfly_edge_parent_failures_total") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_passed_through_the_edge_s_region_is_refused_as_a_loop() {
    let origin = Origin::start().await;
    let eu = edge_in(&origin, "eu", &[]).await;
    let image = origin.push(layers(&[2 * MIB], "loop"), "demo/loop:v1").await;
    let blob = image.largest_blob();
    let client = loopback_client().unwrap();
    let url = blob_url(&eu, "demo/loop", &blob.digest);
    // The blob, asked by a request that has already passed through `regions`.
    let through = |regions: &'static str| client.get(&url).header("x-damselfly-regions", regions).send();
    let refused = through("us,eu").await.unwrap();
    assert_eq!(refused.status(), 508);
    let passing = through("us,asia").await.unwrap();
    assert_eq!(passing.status(), 200);
    assert_eq!(sha256(&passing.bytes().await.unwrap()), blob.digest);
}
