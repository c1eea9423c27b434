//! The warm path end to end: a real docker-registry notifies the preheater while skopeo pushes;
//! with no client pull at all, two edges in two regions end up holding every layer and the
//! tagged manifests, and serve the images with the origin stopped.

mod common;

use std::time::Duration;

use common::*;
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::registry::{Registry, RegistryOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_warm_every_layer_at_two_regions_and_edges_serve_without_the_origin() {
    init_logging();
    let preheater_addr = Preheater::reserve();
    let mut registry = notifying_registry(preheater_addr).await;
    let eu = start_edge(&registry.url()).await;
    let us = start_edge(&registry.url()).await;
    let edges = [("eu", eu.url()), ("us", us.url())];
    let preheater = Preheater::start_notified_by(preheater_addr, &registry, &edges).await;

    let single = registry
        .push_image(
            ImageSpec::new("preheat-single", vec![MIB, 2 * MIB, MIB / 2]),
            "demo/app:v1",
        )
        .await
        .unwrap();
    let multi = registry
        .push_image(
            ImageSpec::new("preheat-multi", vec![MIB, MIB / 2])
                .with_platforms([("amd64", None), ("arm64", Some("v8"))]),
            "demo/multi:v1",
        )
        .await
        .unwrap();
    assert!(multi.is_index());

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

/// Distribution sends a tagged manifest's push event before it links the tag, so the tag may not
/// be readable yet when the event arrives. The job reads the announced digest and retries the tag
/// mapping until the tag appears, instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_announced_before_it_is_readable_still_warms() {
    init_logging();
    let mut registry = Registry::start(RegistryOptions::default())
        .await
        .expect("registry");
    let edge = start_edge(&registry.url()).await;
    let preheater = Preheater::start(&PreheaterSetup {
        warm: "max_attempts = 40".into(),
        ..PreheaterSetup::new(&registry, &[("eu", edge.url())])
    })
    .await;
    let image = registry
        .push_image(
            ImageSpec::new("preheat-late-tag", vec![MIB, MIB / 2]),
            "demo/late:v1",
        )
        .await
        .unwrap();

    // The event names tag v2, which the registry does not serve yet.
    let announced = tagged_push_envelope(
        "late-tag",
        &registry.addr(),
        "demo/late",
        "v2",
        &image.top_digest,
        &image.top_media_type,
    );
    let (status, receipt) = preheater.notify(announced).await;
    assert_eq!(status, 202, "{receipt}");
    let id = receipt["jobs"][0].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waiting = preheater.job(&id).await;
    assert_ne!(waiting["state"], "failed", "{waiting:#?}");
    for blob in &image.blobs {
        wait_cached(&edge.url(), &blob.digest, Duration::from_secs(20))
            .await
            .unwrap();
    }

    // The tag appears; the job finishes and the edge maps it.
    registry.push_built(&image, "demo/late:v2").await.unwrap();
    let job = preheater.wait_job(&id, Duration::from_secs(30)).await;
    assert_eq!(job["state"], "succeeded", "{job:#?}");
    let tag_item = job["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["tag"] == "v2")
        .unwrap_or_else(|| panic!("no tag item: {job:#?}"));
    assert!(
        tag_item["regions"]["eu"]["attempts"].as_u64().unwrap() > 1,
        "the tag was readable at once, so nothing was retried: {tag_item:#?}"
    );
    registry.stop().unwrap();
    let bytes = pull_through_edge(&edge.url(), "demo/late", "v2")
        .await
        .unwrap_or_else(|e| panic!("{e}\nedge log:\n{}", edge.log_tail()));
    assert_eq!(bytes, image.total_blob_bytes);
}
