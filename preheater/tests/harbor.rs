//! Harbor webhooks, Default and CloudEvents, drive a warm-up. The payloads are the contract
//! fixtures with the host, repository, tag and digest pointed at a real registry: Harbor itself
//! cannot run here, its wire format can.

mod common;

use std::time::Duration;

use common::*;
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::registry::{Registry, RegistryOptions};

/// The fixture, retargeted: same structure and field order, our registry and artifact.
fn retarget(fixture: &str, registry: &str, tag: &str, digest: &str) -> Vec<u8> {
    let original_digest = "sha256:a484819eb60211f5299034ac80f6a681b06f89e65866ce91f356ed7c72af059c";
    assert!(fixture.contains(original_digest) && fixture.contains("harbor.example.com/library/nginx:1.25.3"));
    fixture
        .replace("harbor.example.com", registry)
        .replace("\"library", "\"demo")
        .replace("/library/", "/demo/")
        .replace("1.25.3", tag)
        .replace(original_digest, digest)
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_and_cloudevents_pushes_warm_the_artifact() {
    init_logging();
    let registry = Registry::start(RegistryOptions::default())
        .await
        .expect("registry");
    let image = |seed: &str| ImageSpec::new(seed, vec![MIB, MIB / 2]);
    let v1 = registry
        .push_image(image("harbor-v1"), "demo/nginx:v1")
        .await
        .unwrap();
    let v2 = registry
        .push_image(image("harbor-v2"), "demo/nginx:v2")
        .await
        .unwrap();
    let edge = start_edge(&registry.url()).await;
    let preheater = Preheater::start(&PreheaterSetup::new(&registry, &[("eu", edge.url())])).await;

    let default = retarget(
        include_str!("fixtures/harbor_push_artifact.json"),
        &registry.addr(),
        "v1",
        &v1.top_digest,
    );
    let cloudevent = retarget(
        include_str!("fixtures/harbor_push_artifact_cloudevents.json"),
        &registry.addr(),
        "v2",
        &v2.top_digest,
    );

    // Harbor's auth_header is compared verbatim.
    for auth in [None, Some("Bearer wrong"), Some("bearer wh-7f3c9a1e2b")] {
        let (status, body) = preheater
            .post("/webhooks/harbor", "application/json", auth, default.clone())
            .await;
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    }

    let mut jobs = Vec::new();
    for (content_type, payload) in [
        ("application/json", &default),
        ("application/cloudevents+json", &cloudevent),
    ] {
        let deliver = || {
            preheater.post(
                "/webhooks/harbor",
                content_type,
                Some(HARBOR_AUTH),
                payload.clone(),
            )
        };
        let (status, receipt) = deliver().await;
        assert_eq!(
            (status, receipt["accepted"].as_u64()),
            (202, Some(1)),
            "{receipt}"
        );
        jobs.push(receipt["jobs"][0].as_str().unwrap().to_string());
        // Harbor retries a delivery it thinks failed: the copy is recognised.
        let (status, receipt) = deliver().await;
        assert_eq!(
            (status, receipt["duplicates"].as_u64()),
            (202, Some(1)),
            "{receipt}"
        );
    }

    for (id, (img, tag)) in jobs.iter().zip([(&v1, "v1"), (&v2, "v2")]) {
        let job = preheater.wait_job(id, Duration::from_secs(45)).await;
        assert_eq!(job["state"], "succeeded", "{job:#?}");
        assert_eq!(job["source"], "harbor");
        assert_eq!(job["target"]["reference"], tag);
        assert_eq!(job["resolved_digest"], img.top_digest.as_str());
        for blob in &img.blobs {
            assert_eq!(edge_state(&edge.url(), &blob.digest).await, "cached");
        }
    }

    // A pull event is understood and needs no work.
    let pull = retarget(
        &include_str!("fixtures/harbor_push_artifact.json").replace("PUSH_ARTIFACT", "PULL_ARTIFACT"),
        &registry.addr(),
        "v1",
        &v1.top_digest,
    );
    let (status, receipt) = preheater
        .post("/webhooks/harbor", "application/json", Some(HARBOR_AUTH), pull)
        .await;
    assert_eq!((status, receipt["ignored"].as_u64()), (202, Some(1)), "{receipt}");
}
