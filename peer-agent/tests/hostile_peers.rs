//! Peers and servers that misbehave: readers that ask an agent for pieces and never read them
//! (their upload slots come back after `server.send_stall_secs`), a parent that answers every
//! piece with an endless body (read no further than the piece's sealed length, then left for
//! another source), and an edge that accepts connections and never answers (given up after
//! `outbound.response_timeout_secs`, the pull served by the origin).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use common::{agent_binary, downloaded_from, edge_in_front_of, pull_through, sha256, MIB};
use damselfly_core::api::{PeerAnnouncement, TICKET_HEADER};
use damselfly_core::Bitfield;
use damselfly_test_support::agent::{Agent, AgentOptions};
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::registry::{Registry, RegistryOptions};
use damselfly_test_support::skopeo::{self, PullOptions};
use damselfly_test_support::stalled::stalled_reader;

/// Stall grace in these tests (`server.send_stall_secs`).
const GRACE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_stop_reading_give_their_upload_slots_back() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let edge = edge_in_front_of(&registry).await;
    let mut options = AgentOptions::host(0, "eu/z1/r1", edge.url(), &registry);
    // No minimum rate: the stalled connections stay open, so only the slot's own watch can
    // free it.
    options.extra_toml.push_str(&format!(
        "[server]\nsend_stall_secs = {}\nsend_min_bytes_per_sec = 0\n[upload]\nslots = 2\n",
        GRACE.as_secs()
    ));
    let agent = Agent::start(agent_binary(), options).await.unwrap();
    // 512 KiB pieces: far more than the socket buffers between a stalled reader and the agent.
    let image = registry
        .push_image(ImageSpec::new("stalled", vec![80 * MIB]), "demo/stalled:v1")
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    pull_through(&registry, &agent, "demo/stalled:v1", &work.path().join("pull")).await;
    let layer = image.largest_blob();
    let answer = edge.complete_task("demo/stalled", &layer.digest).await.unwrap();
    assert!(answer.table.layout.piece_length >= 512 * 1024);

    let upload = agent.upload_url();
    let upload_addr = upload.trim_start_matches("http://");
    let mut stalled = Vec::new();
    for index in 0..2 {
        let path = format!("/pieces/{}/{index}", layer.digest);
        stalled.push(stalled_reader(upload_addr, &path, &answer.ticket).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Every slot is held: the agent sends others elsewhere until the stalled sends lose them.
    let client = loopback_client().unwrap();
    let started = Instant::now();
    let body = loop {
        let response = client
            .get(format!("{upload}/pieces/{}/10", layer.digest))
            .header(TICKET_HEADER, &answer.ticket)
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break response.bytes().await.unwrap();
        }
        assert_eq!(response.status(), 503, "{}", agent.log_tail());
        assert!(
            started.elapsed() < GRACE + Duration::from_secs(3),
            "upload slots still held by stalled readers after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        sha256(&body),
        format!("sha256:{}", hex::encode(answer.table.pieces[10]))
    );
    // The stalled uploads no longer count as slots in use (announced to the scheduler).
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let metrics = agent.metrics().await.unwrap();
        let stalled_total = metrics.get("damselfly_agent_uploads_stalled_total");
        let active = metrics.get("damselfly_agent_uploads_active");
        if stalled_total >= 2.0 && active == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{stalled_total} uploads stalled, {active} active"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stalled);
}

/// An upload server that answers every piece with zeros without end, counting what it hands
/// out.
async fn endless_parent(sent: Arc<AtomicU64>, requests: Arc<AtomicU64>) -> String {
    let app = Router::new().route(
        "/pieces/{digest}/{index}",
        get(move || {
            let sent = sent.clone();
            requests.fetch_add(1, Ordering::SeqCst);
            async move {
                let zeros = futures::stream::repeat_with(move || {
                    sent.fetch_add(64 * 1024, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0u8; 64 * 1024]))
                });
                Body::from_stream(zeros)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.9:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_sending_an_endless_body_is_cut_at_the_sealed_length_and_left() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let edge = edge_in_front_of(&registry).await;
    let image = registry
        .push_image(ImageSpec::new("endless", vec![16 * MIB]), "demo/endless:v1")
        .await
        .unwrap();
    let layer = image.largest_blob();
    let answer = edge.complete_task("demo/endless", &layer.digest).await.unwrap();

    // The hostile parent: in the agent's rack, every piece, free slots; announced until the
    // test ends.
    let (sent, requests) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let upload_url = endless_parent(sent.clone(), requests.clone()).await;
    let count = answer.table.layout.count();
    let announcement = PeerAnnouncement {
        upload_url,
        location: "eu/z1/r1".parse().unwrap(),
        pieces: Bitfield::full(count),
        fetching: None,
        uploads_active: 0,
        upload_slots: 64,
        downloaded: None,
    };
    let announce_url = format!("{}/api/v1/tasks/{}/peers/hostile", edge.url(), layer.digest);
    let client = loopback_client().unwrap();
    let announcing = {
        let (client, ticket) = (client.clone(), answer.ticket.clone());
        tokio::spawn(async move {
            loop {
                let response = client
                    .put(&announce_url)
                    .header(TICKET_HEADER, &ticket)
                    .json(&announcement)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let agent = Agent::start(
        agent_binary(),
        AgentOptions::host(0, "eu/z1/r1", edge.url(), &registry),
    )
    .await
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let pulled = pull_through(&registry, &agent, "demo/endless:v1", &work.path().join("pull")).await;
    announcing.abort();
    assert_eq!(pulled.manifest_digest, image.top_digest);
    let took = started.elapsed();

    let asked = requests.load(Ordering::SeqCst);
    assert!(asked >= 1, "the hostile parent was never asked");
    // What the parent managed to hand out per request: the piece's sealed length at most, plus
    // what the sockets and the HTTP layers buffer, never an endless stream.
    let per_request = sent.load(Ordering::SeqCst) / asked;
    let bound = answer.table.layout.sealed_len(0) + 8 * MIB;
    assert!(
        per_request < bound,
        "{per_request} bytes per piece request from an endless parent"
    );
    let metrics = agent.metrics().await.unwrap();
    assert!(
        metrics.sum("damselfly_agent_bad_pieces_total", &["source=\"peer\""]) >= 1.0,
        "{}",
        agent.log_tail()
    );
    // Served by the agent from the edge (not by skopeo going around a failed mirror).
    assert!(downloaded_from(&[metrics], "edge") >= layer.size as f64);
    assert!(
        took < Duration::from_secs(30),
        "the pull took {took:?} with a hostile parent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_never_answers_is_given_up_and_the_origin_serves_the_pull() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let image = registry
        .push_image(ImageSpec::new("wedged", vec![3 * MIB]), "demo/wedged:v1")
        .await
        .unwrap();
    // Accepts every connection, reads nothing, answers nothing.
    let wedged = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let wedged_url = format!("http://{}", wedged.local_addr().unwrap());
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = wedged.accept().await {
            held.push(socket);
        }
    });
    let mut options = AgentOptions::host(0, "eu/z1/r1", wedged_url, &registry);
    options
        .extra_toml
        .push_str("[outbound]\nresponse_timeout_secs = 2\nidle_timeout_secs = 2\n");
    let agent = Agent::start(agent_binary(), options).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let reference = format!("{}/demo/wedged:v1", registry.addr());
    for round in 0..2 {
        let started = Instant::now();
        let (origin, out, pull_options) = (
            registry.addr(),
            work.path().join(format!("pull-{round}")),
            PullOptions::default(),
        );
        let pull = skopeo::pull_via_mirror(&origin, agent.addr(), &reference, &out, &pull_options);
        let pulled = tokio::time::timeout(Duration::from_secs(90), pull)
            .await
            .unwrap_or_else(|_| panic!("pull {round} hung on the wedged edge\n{}", agent.log_tail()))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", agent.log_tail()));
        assert_eq!(pulled.manifest_digest, image.top_digest);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(45), "pull {round} took {took:?}");
    }
    // Served by the agent from the origin (not by skopeo going around a failed mirror).
    let metrics = agent.metrics().await.unwrap();
    assert!(metrics.get("damselfly_agent_origin_fallbacks_total") >= 1.0);
    let layer = image.largest_blob();
    assert!(downloaded_from(&[metrics], "origin") >= layer.size as f64);
    holding.abort();
}
