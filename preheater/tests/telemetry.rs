//! OpenTelemetry: with an OTLP endpoint configured, a push is one trace from the webhook through
//! the job and its warms to every edge's transfer from the origin, and SIGTERM flushes the
//! spans. The receiver decodes what arrives with the OTLP protobuf definitions, as a collector
//! would.

mod common;

use std::time::Duration;

use common::*;
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::otlp::{OtlpReceiver, Span};

async fn traced_edge(upstream_url: &str, collector: &str) -> Edge {
    let mut options = EdgeOptions::new(upstream_url);
    options.warm_token = Some(EDGE_TOKEN.into());
    options.extra_toml = format!("[log]\notlp_endpoint = \"{collector}\"\n");
    Edge::start(&edge_binary(), options).await.expect("edge starts")
}

fn named<'a>(spans: &'a [Span], service: &str, name: &str, trace: &[u8]) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.service == service && s.name == name && s.trace_id == trace)
        .collect()
}

fn children<'a>(spans: &[&'a Span], of: &[&Span]) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| of.iter().any(|p| p.span_id == s.parent_span_id))
        .copied()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_one_trace_from_webhook_to_every_edge_transfer() {
    init_logging();
    let otlp = OtlpReceiver::start().await.unwrap();
    let collector_url = otlp.url().to_string();

    let (registry, image) =
        registry_with(ImageSpec::new("preheat-otel", vec![MIB / 2]), "demo/otel:v1").await;
    let edges = [
        traced_edge(&registry.url(), &collector_url).await,
        traced_edge(&registry.url(), &collector_url).await,
    ];
    let mut preheater = Preheater::start(&PreheaterSetup {
        extra_top: format!("log.otlp_endpoint = \"{collector_url}\"\n"),
        ..PreheaterSetup::new(&registry, &[("eu", edges[0].url()), ("us", edges[1].url())])
    })
    .await;
    let event = tagged_push_envelope(
        "otel-1",
        &registry.addr(),
        "demo/otel",
        "v1",
        &image.top_digest,
        &image.top_media_type,
    );
    let (status, receipt) = preheater.notify(event).await;
    assert_eq!(status, 202);
    let id = receipt["jobs"][0].as_str().unwrap().to_string();
    let job = preheater.wait_job(&id, Duration::from_secs(30)).await;
    assert_eq!(job["state"], "succeeded");
    let traceparent = job["traceparent"]
        .as_str()
        .expect("the job remembers the webhook's trace")
        .to_string();
    let trace_id = traceparent.split('-').nth(1).unwrap();

    preheater.terminate(Duration::from_secs(15)).await;
    let trace: Vec<u8> = (0..trace_id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&trace_id[i..i + 2], 16).unwrap())
        .collect();
    // The edges export in batches (every 5 s by default): wait for every transfer's span.
    let blobs = image.blobs.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let spans = otlp.spans();
        let warms = named(&spans, "damselfly-preheater", "warm", &trace);
        let jobs = named(&spans, "damselfly-preheater", "job", &trace);
        let requests = named(&spans, "damselfly-edge-cache", "request", &trace);
        let ingests = named(&spans, "damselfly-edge-cache", "ingest", &trace);
        // webhook → job → warm (preheater) → request → ingest (each edge), parent by parent.
        let warms_of_job = children(&warms, &jobs);
        let requests_of_warms = children(&requests, &warms_of_job);
        let ingests_of_requests = children(&ingests, &requests_of_warms);
        if !jobs.is_empty() && ingests_of_requests.len() >= 2 * blobs {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "trace {trace_id}: {} jobs, {} warms under them, {} edge requests under those, {} ingests \
             under those (want {} = every blob at both edges); all spans: {:?}",
            jobs.len(),
            warms_of_job.len(),
            requests_of_warms.len(),
            ingests_of_requests.len(),
            2 * blobs,
            spans.iter().map(|s| (&s.service, &s.name)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
