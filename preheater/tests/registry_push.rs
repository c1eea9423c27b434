//! The warm path end to end: a real docker-registry notifies the preheater while skopeo pushes;
//! with no client pull at all, two edges in two regions end up holding every layer and the
//! tagged manifests, and serve the images with the origin stopped.

mod common;

use std::time::Duration;

use common::*;
use damselfly_test_support::image::{build_image_async, ImageSpec};
use damselfly_test_support::registry::{Registry, RegistryOptions};
use damselfly_test_support::skopeo::{self, PushOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_warm_every_layer_at_two_regions_and_edges_serve_without_the_origin() {
    init_logging();
    let preheater_addr = Preheater::reserve();
    let mut registry = Registry::start(RegistryOptions {
        notifications: Some((
            format!("http://{preheater_addr}/webhooks/distribution"),
            Some(format!("Bearer {WEBHOOK_TOKEN}")),
        )),
        ..RegistryOptions::default()
    })
    .await
    .expect("registry");
    let eu = start_edge(&registry.url()).await;
    let us = start_edge(&registry.url()).await;
    let preheater = Preheater::start_on(
        preheater_addr,
        &PreheaterSetup {
            edges: vec![("eu".into(), eu.url()), ("us".into(), us.url())],
            registries: vec![(registry.addr(), registry.url())],
            ..PreheaterSetup::default()
        },
        "preheater",
    )
    .await;

    let work = tempfile::tempdir().unwrap();
    let single = build_image_async(
        ImageSpec::new("preheat-single", vec![MIB, 2 * MIB, MIB / 2]),
        work.path().join("single"),
        "v1".into(),
    )
    .await
    .unwrap();
    let multi = build_image_async(
        ImageSpec::new("preheat-multi", vec![MIB, MIB / 2])
            .with_platforms([("amd64", None), ("arm64", Some("v8"))]),
        work.path().join("multi"),
        "v1".into(),
    )
    .await
    .unwrap();
    assert!(multi.is_index());
    skopeo::push(
        &single,
        &format!("{}/demo/app:v1", registry.addr()),
        &PushOptions::default(),
    )
    .await
    .unwrap();
    let all = PushOptions {
        all: true,
        ..PushOptions::default()
    };
    skopeo::push(&multi, &format!("{}/demo/multi:v1", registry.addr()), &all)
        .await
        .unwrap();

    // Nobody pulls: every blob of both images becomes cached at both edges.
    for edge in [&eu, &us] {
        for blob in single.blobs.iter().chain(&multi.blobs) {
            wait_cached(&edge.url(), &blob.digest, Duration::from_secs(45))
                .await
                .unwrap_or_else(|e| panic!("{e}\npreheater log:\n{}", preheater.log_tail()));
        }
    }
    // The two tagged pushes made two image jobs; wait for them to report success.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let image_jobs = loop {
        let jobs = preheater.jobs().await;
        let images: Vec<_> = jobs
            .iter()
            .filter(|j| j["target"]["kind"] == "image")
            .cloned()
            .collect();
        if images.len() == 2 && images.iter().all(|j| j["state"] == "succeeded") {
            break images;
        }
        assert!(
            images.iter().all(|j| j["state"] != "failed"),
            "an image job failed: {images:#?}\nlog:\n{}",
            preheater.log_tail()
        );
        assert!(tokio::time::Instant::now() < deadline, "image jobs: {images:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for job in &image_jobs {
        for item in job["items"].as_array().unwrap() {
            for region in ["eu", "us"] {
                assert_eq!(item["regions"][region]["state"], "cached", "{item:#?}");
            }
        }
        let top = if job["repository"] == "demo/app" {
            &single.top_digest
        } else {
            &multi.top_digest
        };
        assert_eq!(&job["resolved_digest"], top.as_str());
    }
    let blob_pushes = preheater
        .jobs()
        .await
        .into_iter()
        .filter(|j| j["target"]["kind"] == "blob")
        .count();
    assert!(
        blob_pushes >= single.blobs.len(),
        "blob pushes warm at once: {blob_pushes} blob jobs"
    );

    // The origin goes away; both edges serve both images, byte-exact.
    registry.stop().unwrap();
    for edge in [&eu, &us] {
        let bytes = pull_through_edge(&edge.url(), "demo/app", "v1")
            .await
            .unwrap_or_else(|e| panic!("{e}\nedge log:\n{}", edge.log_tail()));
        assert_eq!(bytes, single.total_blob_bytes);
        let bytes = pull_through_edge(&edge.url(), "demo/multi", "v1")
            .await
            .unwrap_or_else(|e| panic!("{e}\nedge log:\n{}", edge.log_tail()));
        assert_eq!(bytes, multi.total_blob_bytes);
    }
}
