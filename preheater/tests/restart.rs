//! Jobs are durable: a preheater killed (SIGKILL) in the middle of a job finishes it after a
//! restart on the same data directory.

mod common;

use std::time::Duration;

use common::*;
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::poll::{poll_until, Probe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_interrupted_by_sigkill_completes_after_restart() {
    init_logging();
    let (registry, image) = registry_with(
        ImageSpec::new("preheat-restart", vec![MIB, MIB / 2]),
        "demo/restart:v1",
    )
    .await;

    // The edge fetches through a proxy that fails every blob download until told otherwise, so
    // the job is stuck retrying when the preheater is killed.
    let (origin, edge) = edge_behind_failing_origin(&registry).await;
    let mut preheater = Preheater::start(&PreheaterSetup {
        warm: "max_attempts = 1000".into(),
        ..PreheaterSetup::new(&registry, &[("eu", edge.url())])
    })
    .await;
    let id = preheater
        .create_job(&format!("{}/demo/restart:v1", registry.addr()))
        .await;

    poll_until("job resolved and warming", Duration::from_secs(30), || {
        let job = preheater.job(&id);
        let gets = origin.blob_gets();
        async move {
            let job = job.await;
            Ok(
                if job["state"] == "running" && !job["items"].as_array().unwrap().is_empty() && gets >= 2 {
                    Probe::Ready(())
                } else {
                    Probe::NotYet(format!("state {} after {gets} failed blob GETs", job["state"]))
                },
            )
        }
    })
    .await
    .unwrap();
    preheater.kill();
    for blob in image.blobs.iter().filter(|b| b.media_type.contains("layer")) {
        assert_ne!(
            edge_state(&edge.url(), &blob.digest).await,
            "cached",
            "nothing got through yet"
        );
    }

    origin.clear_faults();
    preheater.start_again().await;
    let job = preheater.wait_job(&id, Duration::from_secs(45)).await;
    assert_eq!(
        job["state"],
        "succeeded",
        "{job:#?}\nlog:\n{}",
        preheater.log_tail()
    );
    for blob in &image.blobs {
        assert_eq!(
            edge_state(&edge.url(), &blob.digest).await,
            "cached",
            "{}",
            blob.digest
        );
    }
    assert!(
        preheater.log_tail().contains("resuming unfinished jobs"),
        "{}",
        preheater.log_tail()
    );
}
