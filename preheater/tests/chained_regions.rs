//! Regions chained and warmed by a push: region `us`'s edge has region `eu`'s edge as its
//! parent; a push warms both regions at once through the registry's notifications, and the
//! origin sends each blob once for the two.

mod common;

use std::time::Duration;

use common::*;
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::proxy::FaultProxy;

async fn edge_in(region: &str, origin: &str, parents: &[String]) -> Edge {
    let mut options = EdgeOptions::new(origin);
    options.warm_token = Some(EDGE_TOKEN.into());
    options.region = region.into();
    if !parents.is_empty() {
        let list: Vec<String> = parents.iter().map(|p| format!("\"{p}\"")).collect();
        options.top_toml = format!("parents = [{}]\n", list.join(", "));
    }
    Edge::start(&edge_binary(), options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_warms_a_region_and_its_child_region_and_the_origin_sends_each_blob_once() {
    init_logging();
    let preheater_addr = Preheater::reserve();
    let registry = notifying_registry(preheater_addr).await;
    let origin = FaultProxy::start(&registry.addr()).await.unwrap();
    let eu = edge_in("eu", &origin.url(), &[]).await;
    let us = edge_in("us", &origin.url(), &[eu.url()]).await;
    let edges = [("eu", eu.url()), ("us", us.url())];
    let preheater = Preheater::start_notified_by(preheater_addr, &registry, &edges).await;

    let image = registry
        .push_image(
            ImageSpec::new("preheat-chain", vec![2 * MIB, MIB, MIB / 2]),
            "demo/chain:v1",
        )
        .await
        .unwrap();
    for edge in [&eu, &us] {
        for blob in &image.blobs {
            wait_cached(&edge.url(), &blob.digest, Duration::from_secs(45))
                .await
                .unwrap_or_else(|e| panic!("{e}\npreheater log:\n{}", preheater.log_tail()));
        }
    }
    let pushed: u64 = image.blobs.iter().map(|b| b.size).sum();
    assert_eq!(
        origin.blob_bytes(),
        pushed,
        "the origin sends each blob once for both regions\n{}\n{}",
        eu.log_tail(),
        us.log_tail()
    );
    let us_metrics = us.metrics().await.unwrap();
    assert_eq!(
        us_metrics.get("damselfly_edge_parent_fetches_total") as usize,
        image.blobs.len(),
        "every blob of region us came from its parent"
    );
}
