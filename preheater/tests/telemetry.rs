//! OpenTelemetry: with an OTLP endpoint configured, the webhook's trace continues through the job
//! to the edge warms, and SIGTERM flushes the spans. The collector here is a plain HTTP receiver
//! (no collector runs on this machine); it checks the OTLP/HTTP requests, not their rendering.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use bytes::Bytes;
use common::*;
use damselfly_test_support::image::ImageSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_one_trace_from_webhook_to_edge_warms() {
    init_logging();
    let received: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let sink = received.clone();
    let collector = axum::Router::new().route(
        "/v1/traces",
        post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                sink.lock().unwrap().push((content_type, body));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let (registry, image) =
        registry_with(ImageSpec::new("preheat-otel", vec![MIB / 2]), "demo/otel:v1").await;
    let edge = start_edge(&registry.url()).await;
    let mut preheater = Preheater::start(&PreheaterSetup {
        extra_top: format!("log.otlp_endpoint = \"{collector_url}\"\n"),
        ..PreheaterSetup::new(&registry, &[("eu", edge.url())])
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
    let batches = received.lock().unwrap().clone();
    assert!(!batches.is_empty(), "no spans were exported");
    assert!(
        batches.iter().all(|(ct, _)| ct == "application/x-protobuf"),
        "{:?}",
        batches.iter().map(|b| &b.0).collect::<Vec<_>>()
    );
    let all: Vec<u8> = batches.iter().flat_map(|(_, b)| b.to_vec()).collect();
    let contains = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
    let trace_bytes: Vec<u8> = (0..trace_id.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&trace_id[i..i + 2], 16).unwrap())
        .collect();
    assert!(contains(&trace_bytes), "the webhook's trace id is in the export");
    for span in [&b"job"[..], b"warm", b"damselfly-preheater"] {
        assert!(
            contains(span),
            "span {:?} exported",
            String::from_utf8_lossy(span)
        );
    }
}
