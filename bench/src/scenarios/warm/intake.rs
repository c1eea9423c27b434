//! Webhook intake: blob-push events posted concurrently, each delivered several times.
//!
//! The edges sit behind counting proxies, so the warm requests the preheater sends are counted
//! where they arrive: with deduplication working, each blob is warmed once per region however
//! many events and deliveries name it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use damselfly_test_support::image::BuiltImage;
use damselfly_test_support::net::{free_addr_on, loopback_client};
use damselfly_test_support::proxy::FaultProxy;
use damselfly_test_support::registry::Registry;
use futures::StreamExt;
use serde_json::{json, Value};

use super::{warm_edge, Preheater, WarmArgs, REGIONS, REPOSITORY, WEBHOOK_TOKEN};
use crate::report::{median, ratio, secs, table};

const CONTENT_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

pub async fn run(
    edge_binary: &Path,
    preheater_binary: &Path,
    registry: &Registry,
    image: &BuiltImage,
    args: &WarmArgs,
) -> Result<Value> {
    let mut edges = Vec::new();
    let mut proxies = Vec::new();
    for _ in REGIONS {
        let edge = warm_edge(edge_binary, registry).await?;
        proxies.push(FaultProxy::start(&edge.addr()).await?);
        edges.push(edge);
    }
    let proxy_urls: Vec<String> = proxies.iter().map(FaultProxy::url).collect();
    let preheater = Preheater::start(
        preheater_binary,
        free_addr_on("127.0.0.1")?,
        registry,
        &proxy_urls,
    )
    .await?;

    // The deliveries of one event go out back to back, so they are in flight together: the hard
    // case for deduplication (a registry's retry after a timeout races its first delivery).
    let deliveries: Vec<usize> = (0..args.events)
        .flat_map(|k| std::iter::repeat_n(k, args.duplicates))
        .collect();
    let client = loopback_client()?;
    let url = format!("{}/webhooks/distribution", preheater.url());
    let auth = format!("Bearer {WEBHOOK_TOKEN}");
    eprintln!(
        "intake: {} events × {} deliveries, {} at a time…",
        args.events, args.duplicates, args.concurrency
    );
    let start = Instant::now();
    let answers: Vec<Result<(Duration, Value)>> = futures::stream::iter(deliveries)
        .map(|k| {
            let blob = &image.blobs[k % image.blobs.len()];
            let body = envelope(
                &format!("bench-event-{k}"),
                &registry.addr(),
                &blob.digest,
                blob.size,
            );
            let request = client
                .post(&url)
                .header("content-type", CONTENT_TYPE)
                .header("authorization", &auth)
                .body(body);
            async move {
                let sent = Instant::now();
                let response = request.send().await?;
                let status = response.status();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                ensure!(status.as_u16() == 202, "webhook answered {status}: {body}");
                Ok((sent.elapsed(), body))
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let intake = start.elapsed();
    let mut latencies = Vec::new();
    let (mut accepted, mut duplicates) = (0, 0);
    for answer in answers {
        let (latency, body) = answer?;
        latencies.push(latency);
        accepted += body["accepted"].as_u64().unwrap_or(0);
        duplicates += body["duplicates"].as_u64().unwrap_or(0);
    }
    let posts = latencies.len();
    latencies.sort();
    let p99 = latencies[(posts * 99 / 100).min(posts - 1)];

    let settle = Instant::now();
    let metrics = wait_jobs_finished(&preheater, args.events).await?;
    let settled = settle.elapsed();
    let distinct = image.blobs.len().min(args.events);
    let warm_posts: Vec<usize> = proxies
        .iter()
        .map(|p| {
            p.requests()
                .iter()
                .filter(|r| r.method == "POST" && r.path == "/api/v1/warm")
                .count()
        })
        .collect();
    let failed = metrics.sum("damselfly_preheater_jobs_finished_total", &["state=\"failed\""]);
    let dedupe_ok = accepted == args.events as u64
        && duplicates == (args.events * (args.duplicates - 1)) as u64
        && warm_posts.iter().all(|&n| n == distinct)
        && failed == 0.0;

    let rate = posts as f64 / intake.as_secs_f64();
    table(
        &format!(
            "webhook intake: {} events × {} deliveries, {} concurrent",
            args.events, args.duplicates, args.concurrency
        ),
        &["what", "value"],
        &[
            vec!["deliveries posted".into(), posts.to_string()],
            vec!["wall time s".into(), format!("{:.3}", secs(intake))],
            vec!["deliveries per second".into(), format!("{rate:.0}")],
            vec![
                "latency p50 / p99 ms".into(),
                format!(
                    "{:.1} / {:.1}",
                    median(latencies.clone()).as_secs_f64() * 1e3,
                    p99.as_secs_f64() * 1e3
                ),
            ],
            vec![
                "accepted / duplicates".into(),
                format!("{accepted} / {duplicates}"),
            ],
            vec![
                "jobs settled after intake s".into(),
                format!("{:.3}", secs(settled)),
            ],
            vec![
                "warm requests per region (expected)".into(),
                format!("{warm_posts:?} ({distinct} each)"),
            ],
            vec![
                "dedupe".into(),
                if dedupe_ok {
                    "verified".into()
                } else {
                    "FAILED".into()
                },
            ],
        ],
    );
    if !dedupe_ok {
        bail!("deduplication check failed: accepted {accepted}, duplicates {duplicates}, warm requests {warm_posts:?}, failed jobs {failed}");
    }
    Ok(json!({
        "events": args.events, "duplicates": args.duplicates, "concurrency": args.concurrency,
        "posts": posts, "intake_s": secs(intake), "posts_per_s": rate.round(),
        "latency_p50_ms": median(latencies).as_secs_f64() * 1e3,
        "latency_p99_ms": p99.as_secs_f64() * 1e3,
        "accepted": accepted, "duplicates_seen": duplicates,
        "settled_s": secs(settled),
        "warm_requests_per_region": warm_posts, "distinct_blobs": distinct,
        "settled_vs_intake": ratio(secs(settled), secs(intake)),
    }))
}

/// Waits until the preheater has finished as many jobs as it created (at least `events`).
async fn wait_jobs_finished(
    preheater: &Preheater,
    events: usize,
) -> Result<damselfly_test_support::metrics::Metrics> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let m = preheater.metrics().await?;
        let created = m.get("damselfly_preheater_jobs_created_total");
        let finished = m.get("damselfly_preheater_jobs_finished_total");
        if created >= events as f64 && finished >= created {
            return Ok(m);
        }
        if Instant::now() > deadline {
            bail!("jobs did not finish: created {created}, finished {finished}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Distribution blob-push notification, shaped as docker-registry 2.8 sends it.
fn envelope(id: &str, registry: &str, digest: &str, size: u64) -> Vec<u8> {
    let body = json!({"events": [{
        "id": id,
        "timestamp": "2026-01-01T00:00:00.000000000Z",
        "action": "push",
        "target": {
            "mediaType": "application/octet-stream",
            "size": size,
            "digest": digest,
            "length": size,
            "repository": REPOSITORY,
            "url": format!("http://{registry}/v2/{REPOSITORY}/blobs/{digest}"),
        },
        "request": {
            "id": format!("{id}-request"),
            "addr": "127.0.0.1:40000",
            "host": registry,
            "method": "PUT",
            "useragent": "skopeo/1.9.3",
        },
        "actor": {},
        "source": {"addr": "bench:5000", "instanceID": "damselfly-bench"},
    }]});
    serde_json::to_vec(&body).unwrap_or_default()
}
