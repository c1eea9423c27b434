//! Registries deliver at least once and retry forever: repeated events must not repeat work,
//! and jobs that need the same blob share one warm.

mod common;

use std::time::Duration;

use common::*;
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::metrics::scrape;
use damselfly_test_support::proxy::FaultProxy;

fn warm_posts(proxy: &FaultProxy) -> usize {
    proxy
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/api/v1/warm")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_five_times_warms_each_blob_once_per_region() {
    init_logging();
    let (registry, image) = registry_with(
        ImageSpec::new("preheat-dedupe", vec![MIB, MIB, MIB / 4]),
        "demo/dedupe:v1",
    )
    .await;

    // A counting proxy in front of each edge sees every warm request.
    let eu = start_edge(&registry.url()).await;
    let us = start_edge(&registry.url()).await;
    let eu_proxy = FaultProxy::start(&eu.addr()).await.unwrap();
    let us_proxy = FaultProxy::start(&us.addr()).await.unwrap();
    let preheater = Preheater::start(&PreheaterSetup::new(
        &registry,
        &[("eu", eu_proxy.url()), ("us", us_proxy.url())],
    ))
    .await;

    // Each blob's push event, twice, then the tagged manifest push five times at once.
    for (i, blob) in image.blobs.iter().enumerate() {
        let body = blob_push_envelope(
            &format!("blob-{i}"),
            &registry.addr(),
            "demo/dedupe",
            &blob.digest,
            blob.size,
        );
        for _ in 0..2 {
            let (status, _) = preheater.notify(body.clone()).await;
            assert_eq!(status, 202);
        }
    }
    let tagged = tagged_push_envelope(
        "tag-push-1",
        &registry.addr(),
        "demo/dedupe",
        "v1",
        &image.top_digest,
        &image.top_media_type,
    );
    let deliveries = (0..5).map(|_| preheater.notify(tagged.clone()));
    let receipts = futures::future::join_all(deliveries).await;
    let accepted: u64 = receipts
        .iter()
        .map(|(_, r)| r["accepted"].as_u64().unwrap())
        .sum();
    let duplicates: u64 = receipts
        .iter()
        .map(|(_, r)| r["duplicates"].as_u64().unwrap())
        .sum();
    assert!(receipts.iter().all(|(s, _)| *s == 202), "{receipts:?}");
    assert_eq!((accepted, duplicates), (1, 4), "{receipts:?}");

    let image_job = receipts
        .iter()
        .find_map(|(_, r)| {
            r["jobs"]
                .as_array()
                .and_then(|j| j.first())
                .and_then(|j| j.as_str())
        })
        .unwrap()
        .to_string();
    let job = preheater.wait_job(&image_job, Duration::from_secs(45)).await;
    assert_eq!(job["state"], "succeeded", "{job:#?}");
    // Every job (blob jobs included) must be done before counting.
    for j in preheater.jobs().await {
        let done = preheater
            .wait_job(j["id"].as_str().unwrap(), Duration::from_secs(30))
            .await;
        assert_eq!(done["state"], "succeeded", "{done:#?}");
    }
    assert_eq!(
        preheater.jobs().await.len(),
        image.blobs.len() + 1,
        "one job per distinct event"
    );

    // One POST per blob plus one for the tagged manifest, per region.
    let expected = image.blobs.len() + 1;
    assert_eq!(
        warm_posts(&eu_proxy),
        expected,
        "eu saw {:#?}",
        eu_proxy.requests()
    );
    assert_eq!(
        warm_posts(&us_proxy),
        expected,
        "us saw {:#?}",
        us_proxy.requests()
    );

    // A late redelivery after the work is done changes nothing.
    let (status, receipt) = preheater.notify(tagged).await;
    assert_eq!((status, receipt["duplicates"].as_u64()), (202, Some(1)));
    assert_eq!(warm_posts(&eu_proxy), expected);

    let metrics = scrape(&format!("{}/metrics", preheater.url())).await.unwrap();
    // Each blob event once more, the tagged one four times plus the late one.
    let expected_duplicates = (image.blobs.len() + 5) as f64;
    assert_eq!(
        metrics.sum("damselfly_preheater_events_deduplicated_total", &[]),
        expected_duplicates
    );
}
