//! A region served by a cluster of edges: the preheater lists them all under one region, a
//! warm goes to the next when one is down, any member takes it and routes it to the blob's
//! owner, and the origin sends each blob once.

mod common;

use std::time::Duration;

use common::*;
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::process::private_file;
use damselfly_test_support::proxy::FaultProxy;
use damselfly_test_support::redis::Redis;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_of_three_edges_is_warmed_through_its_live_members_and_the_origin_sends_once() {
    init_logging();
    let (registry, image) = registry_with(
        ImageSpec::new("preheat-cluster", vec![2 * MIB, MIB, MIB]),
        "demo/cluster:v1",
    )
    .await;
    let origin = FaultProxy::start(&registry.addr()).await.unwrap();
    let redis = Redis::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = private_file(dir.path(), "cluster.secret", &"s".repeat(48));
    let mut edges = Vec::new();
    for _ in 0..3 {
        let mut options = EdgeOptions::new(origin.url());
        options.warm_token = Some(EDGE_TOKEN.into());
        options.top_toml = format!(
            "redis = \"{}\"\ncluster_secret_file = \"{}\"\n",
            redis.url(),
            secret.display()
        );
        options.extra_toml = "[cluster]\nheartbeat_ms = 200\nmember_timeout_ms = 2000\n".into();
        options.advertise = true;
        edges.push(Edge::start(&edge_binary(), options).await.unwrap());
    }
    // The first listed edge is down before the job starts, and out of the others' ring.
    edges[0].kill().unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let listed: Vec<(&str, String)> = edges.iter().map(|e| ("eu", e.url())).collect();
    let preheater = Preheater::start(&PreheaterSetup::new(&registry, &listed)).await;
    let id = preheater
        .create_job(&format!("{}/demo/cluster:v1", registry.addr()))
        .await;
    let job = preheater.wait_job(&id, Duration::from_secs(60)).await;
    assert_eq!(job["state"], "succeeded", "{job:#?}\n{}", preheater.log_tail());
    assert_eq!(
        job["regions"].as_array().map(Vec::len),
        Some(1),
        "one region, however many edges: {job:#?}"
    );

    // Every blob is held by a live member, and the origin sent each once.
    for blob in &image.blobs {
        let mut held = false;
        for edge in &edges[1..] {
            held |= edge_state(&edge.url(), &blob.digest).await == "cached";
        }
        assert!(held, "{} is cached at no live edge", blob.digest);
    }
    let pushed: u64 = image.blobs.iter().map(|b| b.size).sum();
    assert!(
        origin.blob_bytes() <= pushed + pushed / 50,
        "the origin sent {} B for {pushed} B of blobs",
        origin.blob_bytes()
    );
}
