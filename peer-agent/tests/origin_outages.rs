//! The origin registry stopped (SIGSTOP) or killed (SIGKILL) while a region pulls from it: a
//! stop delays the pulls and they finish with the right bytes once it answers again; a kill
//! ends them (there is no other copy yet) with an error, never with a wrong or partial blob
//! taken as whole, and the next pull after the registry's return succeeds.

mod common;

use std::time::{Duration, Instant};

use common::{until_the_edge_sends_pieces, Region, MIB};
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::registry::RegistryOptions;

const RACKS: [&str; 3] = ["eu/z1/r1", "eu/z1/r1", "eu/z1/r2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_registry_stopped_mid_pull_delays_the_pulls_and_nothing_breaks() {
    let region = Region::start(RegistryOptions::default(), &RACKS).await;
    let image = region
        .push(
            ImageSpec::new("origin-stop", vec![40 * MIB, 8 * MIB]),
            "demo/originstop:v1",
        )
        .await;
    // Slow the edge's transfer so that the stop lands in the middle of it.
    region.proxy.set_blob_rate(8 * MIB);
    let pulls: Vec<_> = (0..3)
        .map(|i| region.spawn_pull(i, "demo/originstop:v1"))
        .collect();
    until_the_edge_sends_pieces(&region).await;
    // Longer than the edge's upstream idle timeout (5 s in tests): its transfer is cut and
    // resumed with a Range request, which waits for the registry in turn.
    region.registry.pause().unwrap();
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    region.registry.resume().unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(90), futures::future::join_all(pulls)).await;
    let results =
        outcome.unwrap_or_else(|_| panic!("pulls hung after the registry came back\n{}", region.logs()));
    for (i, result) in results.into_iter().enumerate() {
        let digest = result
            .unwrap()
            .unwrap_or_else(|e| panic!("agent {i}: {e:#}\n{}", region.logs()));
        assert_eq!(digest, image.top_digest, "agent {i}");
    }
    eprintln!("pulls done {:?} after the stop", stopped.elapsed());
    let edge = region.edge.metrics().await.unwrap();
    assert!(
        edge.get("damselfly_edge_upstream_resumes_total") >= 1.0,
        "the edge cut its silent transfer and resumed it\n{}",
        region.logs()
    );
    assert_eq!(edge.get("damselfly_edge_ingest_failures_total"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_registry_killed_mid_pull_fails_cleanly_and_the_next_pull_succeeds() {
    let mut region = Region::start(RegistryOptions::default(), &RACKS).await;
    let image = region
        .push(
            ImageSpec::new("origin-kill", vec![40 * MIB, 8 * MIB]),
            "demo/originkill:v1",
        )
        .await;
    region.proxy.set_blob_rate(8 * MIB);
    let pulls: Vec<_> = (0..3)
        .map(|i| region.spawn_pull(i, "demo/originkill:v1"))
        .collect();
    until_the_edge_sends_pieces(&region).await;
    region.registry.stop().unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(pulls)).await;
    let results = outcome.unwrap_or_else(|_| panic!("pulls hung on a dead registry\n{}", region.logs()));
    let mut failed = 0;
    for (i, result) in results.into_iter().enumerate() {
        match result.unwrap() {
            // Only possible if every byte was through before the kill; then it must be right.
            Ok(digest) => assert_eq!(digest, image.top_digest, "agent {i}"),
            Err(_) => failed += 1,
        }
    }
    assert!(failed > 0, "the registry died before the layers were through");

    region.registry.start_again().await.unwrap();
    region.proxy.set_blob_rate(0);
    for i in 0..3 {
        let digest = region
            .pull_via(i, "demo/originkill:v1", None)
            .await
            .unwrap_or_else(|e| panic!("agent {i} after the restart: {e:#}\n{}", region.logs()));
        assert_eq!(digest, image.top_digest, "agent {i}");
    }
}
