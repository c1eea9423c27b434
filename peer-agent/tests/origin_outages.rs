//! The origin registry stopped (SIGSTOP) or killed (SIGKILL) while a region pulls from it: a
//! stop delays the pulls and they finish with the right bytes once it answers again; a kill
//! ends them (there is no other copy yet) with an error, never with a wrong or partial blob
//! taken as whole, and the next pull after the registry's return succeeds.

mod common;

use std::time::{Duration, Instant};

use common::{all_pulled, until_the_edge_sends_pieces, Region, MIB};
use damselfly_test_support::image::{BuiltImage, ImageSpec};
use damselfly_test_support::registry::RegistryOptions;
use tokio::task::JoinHandle;

type Pulls = Vec<JoinHandle<anyhow::Result<String>>>;

/// Three agents pulling `demo/<name>:v1` (48 MiB) through an edge whose transfer from the
/// registry is paced to 8 MiB/s, returned once the edge sends its first pieces: the transfer
/// is then in its middle.
async fn region_pulling(name: &str) -> (Region, BuiltImage, Pulls) {
    let region = Region::start(RegistryOptions::default(), &["eu/z1/r1", "eu/z1/r1", "eu/z1/r2"]).await;
    let reference = format!("demo/{name}:v1");
    let image = region
        .push(ImageSpec::new(name, vec![40 * MIB, 8 * MIB]), &reference)
        .await;
    region.proxy.set_blob_rate(8 * MIB);
    let pulls = (0..3).map(|i| region.spawn_pull(i, &reference)).collect();
    until_the_edge_sends_pieces(&region).await;
    (region, image, pulls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_registry_stopped_mid_pull_delays_the_pulls_and_nothing_breaks() {
    let (region, image, pulls) = region_pulling("originstop").await;
    // Longer than the edge's upstream idle timeout (5 s in tests): its transfer is cut and
    // resumed with a Range request, which waits for the registry in turn.
    region.registry.pause().unwrap();
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    region.registry.resume().unwrap();
    all_pulled(
        &region,
        pulls,
        &image.top_digest,
        90,
        "after the registry came back",
    )
    .await;
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
    let (mut region, image, pulls) = region_pulling("originkill").await;
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
    let pulls = (0..3)
        .map(|i| region.spawn_pull(i, "demo/originkill:v1"))
        .collect();
    all_pulled(
        &region,
        pulls,
        &image.top_digest,
        90,
        "after the registry's restart",
    )
    .await;
}
