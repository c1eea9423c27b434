//! The Redis backend, against a real redis-server: several preheaters share the queue, the jobs
//! and the deduplication set, and a job whose preheater dies is finished by another.

mod common;

use std::time::Duration;

use common::*;
use damselfly_preheater::config::{Config, JobsConfig};
use damselfly_preheater::job::Job;
use damselfly_preheater::store::{Admission, RedisStore};
use damselfly_test_support::edge::Edge;
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::metrics::scrape;
use damselfly_test_support::poll::{poll_until, Probe};
use damselfly_test_support::redis::Redis;
use damselfly_test_support::registry::Registry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_dedupes_queues_and_requeues_abandoned_claims() {
    init_logging();
    let redis = Redis::start().await.expect("redis-server");
    let config = Config {
        jobs: JobsConfig {
            lease_secs: 1,
            ..JobsConfig::default()
        },
        ..Config::default()
    };
    let a = RedisStore::connect(&redis.url(), &config).await.unwrap();
    let b = RedisStore::connect(&redis.url(), &config).await.unwrap();

    let (j1, j2) = (Job::sample(1), Job::sample(2));
    assert_eq!(
        a.admit(Some("event-1"), std::slice::from_ref(&j1)).await.unwrap(),
        Admission::Created
    );
    assert_eq!(
        b.admit(Some("event-1"), std::slice::from_ref(&j2)).await.unwrap(),
        Admission::Duplicate
    );
    assert!(b.get(&j2.id).await.unwrap().is_none());
    assert_eq!(b.get(&j1.id).await.unwrap().unwrap(), j1);
    b.admit(None, std::slice::from_ref(&j2)).await.unwrap();
    let recent: Vec<String> = a.recent(10).await.unwrap().into_iter().map(|j| j.id).collect();
    assert_eq!(recent, [j2.id.clone(), j1.id.clone()]);

    // FIFO across instances; each job is claimed once.
    assert_eq!(a.next(Duration::from_secs(1)).await.unwrap(), Some(j1.id.clone()));
    assert_eq!(b.next(Duration::from_secs(1)).await.unwrap(), Some(j2.id.clone()));
    assert_eq!(a.next(Duration::from_millis(300)).await.unwrap(), None);
    b.release(&j2.id).await.unwrap();

    // `a` stops renewing j1: after its lease expires, a sweep by `b` hands it out again.
    poll_until("abandoned claim requeued", Duration::from_secs(15), || async {
        b.maintain().await?;
        Ok(match b.next(Duration::from_millis(10)).await? {
            Some(id) => Probe::Ready(id),
            None => Probe::NotYet("still claimed".into()),
        })
    })
    .await
    .map(|id| assert_eq!(id, j1.id))
    .unwrap();
}

/// Preheaters keeping their jobs in `redis` (claims leased for `lease_secs`), warming `edge` for
/// `registry`, and retrying all the while the origin fails: what the tests of a preheater or a
/// store going away mid-job run.
fn on_redis_retrying(redis: &Redis, registry: &Registry, edge: &Edge, lease_secs: u64) -> PreheaterSetup {
    PreheaterSetup {
        redis: Some(redis.url()),
        warm: "max_attempts = 1000".into(),
        jobs: format!("lease_secs = {lease_secs}"),
        ..PreheaterSetup::new(registry, &[("eu", edge.url())])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_preheaters_share_work_and_one_finishes_what_the_other_started() {
    init_logging();
    let redis = Redis::start().await.expect("redis-server");
    let (registry, image) = registry_with(
        ImageSpec::new("preheat-redis", vec![MIB, MIB / 2]),
        "demo/shared:v1",
    )
    .await;
    let (origin, edge) = edge_behind_failing_origin(&registry).await;
    let setup = on_redis_retrying(&redis, &registry, &edge, 2);

    // A takes the job and gets stuck on the failing origin...
    let mut a = Preheater::start_on(Preheater::reserve(), &setup, "preheater-a").await;
    let id = a.create_job(&format!("{}/demo/shared:v1", registry.addr())).await;
    poll_until("A is warming", Duration::from_secs(30), || {
        let job = a.job(&id);
        let gets = origin.blob_gets();
        async move {
            let job = job.await;
            Ok(if job["state"] == "running" && gets >= 2 {
                Probe::Ready(())
            } else {
                Probe::NotYet(format!("{} after {gets} blob GETs", job["state"]))
            })
        }
    })
    .await
    .unwrap();

    // ...B sees the same jobs and the same dedupe set...
    let b = Preheater::start_on(Preheater::reserve(), &setup, "preheater-b").await;
    assert_eq!(b.job(&id).await["state"], "running");
    let event = tagged_push_envelope(
        "shared-1",
        &registry.addr(),
        "demo/shared",
        "v1",
        &image.top_digest,
        &image.top_media_type,
    );
    let (_, first) = a.notify(event.clone()).await;
    let (_, second) = b.notify(event).await;
    assert_eq!(
        (first["accepted"].as_u64(), second["duplicates"].as_u64()),
        (Some(1), Some(1))
    );

    // ...and when A dies, B finishes A's job once the origin is back.
    a.kill();
    origin.clear_faults();
    let job = b.wait_job(&id, Duration::from_secs(50)).await;
    assert_eq!(job["state"], "succeeded", "{job:#?}\nB's log:\n{}", b.log_tail());
    let event_job = first["jobs"][0].as_str().unwrap();
    assert_eq!(
        b.wait_job(event_job, Duration::from_secs(30)).await["state"],
        "succeeded"
    );
    for blob in &image.blobs {
        assert_eq!(edge_state(&edge.url(), &blob.digest).await, "cached");
    }
    assert!(b.log_tail().contains("requeueing a job"), "{}", b.log_tail());
}

/// Runs one command against the test's Redis.
async fn redis_command(url: &str, args: &[&str]) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query_async(&mut conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_store_writes_fail_is_requeued_and_finishes_once_they_work_again() {
    init_logging();
    let redis = Redis::start().await.expect("redis-server");
    let (registry, _image) =
        registry_with(ImageSpec::new("preheat-redis-oom", vec![MIB / 2]), "demo/oom:v1").await;
    let (origin, edge) = edge_behind_failing_origin(&registry).await;
    // A lease far longer than the test: only the requeue can bring the job back in time.
    let setup = on_redis_retrying(&redis, &registry, &edge, 600);
    let preheater = Preheater::start_on(Preheater::reserve(), &setup, "preheater").await;
    let id = preheater
        .create_job(&format!("{}/demo/oom:v1", registry.addr()))
        .await;
    poll_until("the job is warming", Duration::from_secs(30), || {
        let gets = origin.blob_gets();
        async move {
            Ok(if gets >= 2 {
                Probe::Ready(())
            } else {
                Probe::NotYet(format!("{gets} blob GETs"))
            })
        }
    })
    .await
    .unwrap();

    // Redis refuses every write (out of memory): the warm's result cannot be stored.
    redis_command(&redis.url(), &["CONFIG", "SET", "maxmemory", "1"]).await;
    origin.clear_faults();
    poll_until("the store write failed", Duration::from_secs(30), || {
        let log = preheater.log_tail();
        async move {
            Ok(if log.contains("job interrupted by a store failure") {
                Probe::Ready(())
            } else {
                Probe::NotYet("no store failure yet".into())
            })
        }
    })
    .await
    .unwrap();
    redis_command(&redis.url(), &["CONFIG", "SET", "maxmemory", "0"]).await;

    let job = preheater.wait_job(&id, Duration::from_secs(40)).await;
    assert_eq!(job["state"], "succeeded", "{job:#?}\n{}", preheater.log_tail());
    let metrics = scrape(&format!("{}/metrics", preheater.url())).await.unwrap();
    assert!(
        metrics.sum(
            "damselfly_preheater_jobs_interrupted_total",
            &["reason=\"store\""]
        ) >= 1.0,
        "the interruption is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_that_cannot_be_written_leaves_nothing_behind() {
    init_logging();
    let redis = Redis::start().await.expect("redis-server");
    let config = Config::default();
    let store = RedisStore::connect(&redis.url(), &config).await.unwrap();
    let j = Job::sample(1);
    // The job's key is taken (by something that is not a job): its write would fail.
    let taken = format!("{}job:{}", config.redis_prefix, j.id);
    redis_command(&redis.url(), &["SET", &taken, "not a hash"]).await;
    let err = store.admit(Some("event-1"), std::slice::from_ref(&j)).await;
    assert!(err.is_err(), "{err:?}");

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let queued: usize = redis::cmd("LLEN")
        .arg(format!("{}queue", config.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(queued, 0, "nothing queued for an event that was not admitted");
    assert!(store.recent(10).await.unwrap().is_empty());

    // The sender's retry is admitted once the key is free.
    redis_command(&redis.url(), &["DEL", &taken]).await;
    assert_eq!(
        store
            .admit(Some("event-1"), std::slice::from_ref(&j))
            .await
            .unwrap(),
        Admission::Created
    );
    assert_eq!(
        store.next(Duration::from_secs(1)).await.unwrap(),
        Some(j.id.clone())
    );
}
