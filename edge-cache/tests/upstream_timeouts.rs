//! An upstream that accepts a blob request and never answers it: the transfer is given up
//! after `limits.upstream_timeout_secs` per attempt instead of waiting for ever, and the next
//! request starts a fresh transfer rather than joining the wedged one.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use common::{edge_binary, sha256, MIB};
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::net::loopback_client;

/// A registry serving one blob, whose `GET`s hang without an answer while `hang` is set.
struct WedgingUpstream {
    url: String,
    hang: Arc<AtomicBool>,
    gets: Arc<AtomicU64>,
}

async fn wedging_upstream(blob: bytes::Bytes) -> WedgingUpstream {
    let digest = sha256(&blob);
    let hang = Arc::new(AtomicBool::new(true));
    let gets = Arc::new(AtomicU64::new(0));
    let (hanging, counting) = (hang.clone(), gets.clone());
    let app = Router::new().route(
        "/v2/demo/wedged/blobs/{digest}",
        get(move |method: Method, Path(asked): Path<String>| {
            let (blob, digest) = (blob.clone(), digest.clone());
            let (hanging, counting) = (hanging.clone(), counting.clone());
            async move {
                if asked != digest {
                    return StatusCode::NOT_FOUND.into_response();
                }
                if method == Method::GET {
                    counting.fetch_add(1, Ordering::SeqCst);
                    if hanging.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                }
                Response::builder()
                    .header("content-length", blob.len())
                    .header("docker-content-digest", digest)
                    .body(Body::from(blob))
                    .unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    WedgingUpstream { url, hang, gets }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_the_upstream_never_answers_is_given_up_and_the_next_starts_afresh() {
    let blob: bytes::Bytes = (0..2 * MIB)
        .map(|i| (i * 7 % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let digest = sha256(&blob);
    let upstream = wedging_upstream(blob.clone()).await;
    let mut options = EdgeOptions::new(&upstream.url);
    // Readers give up after upstream_idle_timeout_secs (5 in tests) × (attempts + 2) = 15 s.
    options.limits_toml = "upstream_timeout_secs = 1\nupstream_resume_attempts = 1\n".into();
    let edge = Edge::start(edge_binary(), options).await.unwrap();
    let client = loopback_client().unwrap();
    let url = format!("{}/v2/demo/wedged/blobs/{digest}", edge.url());
    // The client's own limit, far above the edge's: an edge that never answers fails the test
    // instead of hanging it.
    let get = || client.get(&url).timeout(Duration::from_secs(60)).send();

    let started = Instant::now();
    let first = get().await.unwrap();
    let took = started.elapsed();
    assert_eq!(first.status(), 502, "{}", edge.log_tail());
    assert!(
        took < Duration::from_secs(8),
        "the wedged transfer held its reader for {took:?}"
    );
    assert!(upstream.gets.load(Ordering::SeqCst) >= 2, "one retry");

    // The upstream answers again: a new request is a new transfer, not a wait on the old one.
    upstream.hang.store(false, Ordering::SeqCst);
    let started = Instant::now();
    let second = get().await.unwrap();
    assert_eq!(second.status(), 200, "{}", edge.log_tail());
    let body = second.bytes().await.unwrap();
    assert_eq!(sha256(&body), digest);
    assert!(started.elapsed() < Duration::from_secs(8));
    let metrics = edge.metrics().await.unwrap();
    assert_eq!(metrics.get("damselfly_edge_ingest_failures_total"), 1.0);
    assert_eq!(metrics.get("damselfly_edge_ingests_in_flight"), 0.0);
}
