//! One trace per pull: an agent's download is a trace that continues at the edge (its task
//! request, the edge's transfer from the origin) and shows where the pieces came from, one span
//! per switch of source. Received by an OTLP receiver and decoded with the OTLP protobuf
//! definitions, as a collector would.

mod common;

use std::time::Duration;

use common::{Region, MIB};
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::otlp::{OtlpReceiver, Span};

fn find<'a>(spans: &'a [Span], service: &str, name: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.service == service && s.name == name)
        .collect()
}

/// The edge's task-request span that continues one of the agents' downloads, and the
/// download; `None` until both have been exported.
fn linked(spans: &[Span]) -> Option<(Span, Span)> {
    let downloads = find(spans, "damselfly-peer-agent", "download");
    find(spans, "damselfly-edge-cache", "request")
        .into_iter()
        .find_map(|request| {
            downloads
                .iter()
                .find(|d| d.span_id == request.parent_span_id && d.trace_id == request.trace_id)
                .map(|d| ((*d).clone(), request.clone()))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_through_agents_is_one_trace_from_download_to_the_edge_transfer() {
    let otlp = OtlpReceiver::start().await.unwrap();
    let log = format!("[log]\notlp_endpoint = \"{}\"\n", otlp.url());
    let region = Region::start_with_tomls(&["eu/z1/r1", "eu/z1/r1"], &log, &log).await;
    let image = region
        .push(ImageSpec::new("traced", vec![8 * MIB]), "demo/traced:v1")
        .await;
    // The first agent's download starts the edge's transfer; the second takes from its peer.
    for i in 0..2 {
        let digest = region
            .pull_via(i, "demo/traced:v1", None)
            .await
            .unwrap_or_else(|e| panic!("agent {i}: {e:#}\n{}", region.logs()));
        assert_eq!(digest, image.top_digest);
    }

    // Spans leave in batches (every 5 s by default).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = otlp.spans();
        let ingest_under_request = linked(&spans).is_some_and(|(_, request)| {
            find(&spans, "damselfly-edge-cache", "ingest")
                .iter()
                .any(|i| i.parent_span_id == request.span_id && i.trace_id == request.trace_id)
        });
        let from_peer = find(&spans, "damselfly-peer-agent", "pieces").len() >= 2;
        if ingest_under_request && from_peer {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no linked trace after 30 s; {} spans: {:?}",
            spans.len(),
            spans.iter().map(|s| (&s.service, &s.name)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // Every source run is a child of its download, in the download's trace, not one per piece.
    let downloads = find(&spans, "damselfly-peer-agent", "download");
    let pieces = find(&spans, "damselfly-peer-agent", "pieces");
    for run in &pieces {
        assert!(
            downloads
                .iter()
                .any(|d| d.span_id == run.parent_span_id && d.trace_id == run.trace_id),
            "a pieces span outside any download: {run:?}"
        );
    }
    let layer_pieces = 8 * MIB / (1024 * 1024);
    assert!(
        (pieces.len() as u64) < 2 * layer_pieces,
        "{} pieces spans: one per piece, not per switch of source",
        pieces.len()
    );
}
