//! Peers that misbehave on purpose: readers that ask an agent for pieces and never read them
//! (their upload slots come back after `server.send_stall_secs`).

mod common;

use std::time::{Duration, Instant};

use common::{agent_binary, edge_binary, sha256, MIB};
use damselfly_core::api::{TaskAnswer, TICKET_HEADER};
use damselfly_test_support::agent::{Agent, AgentOptions};
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::registry::{Registry, RegistryOptions};
use damselfly_test_support::skopeo::{self, PullOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// Stall grace in these tests (`server.send_stall_secs`).
const GRACE: Duration = Duration::from_secs(2);

/// The edge's answer for `digest` in `repo`, once the edge holds all of it.
async fn complete_task(edge: &Edge, repo: &str, digest: &str) -> TaskAnswer {
    let client = loopback_client().unwrap();
    let url = format!("{}/api/v1/tasks/{digest}?repo={repo}", edge.url());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer: TaskAnswer = client
            .get(&url)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap_or_else(|e| panic!("{e}\n{}", edge.log_tail()))
            .json()
            .await
            .unwrap();
        if answer.complete {
            return answer;
        }
        assert!(Instant::now() < deadline, "{digest} never completed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A connection asking for `path` with `ticket`, with a small receive buffer, that never reads.
async fn stalled_reader(addr: &str, path: &str, ticket: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{TICKET_HEADER}: {ticket}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_stop_reading_give_their_upload_slots_back() {
    let registry = Registry::start(RegistryOptions::default()).await.unwrap();
    let edge = Edge::start(
        &edge_binary(),
        EdgeOptions::for_registry(&registry.addr(), &registry.url()),
    )
    .await
    .unwrap();
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
    let reference = format!("{}/demo/stalled:v1", registry.addr());
    skopeo::pull_via_mirror(
        &registry.addr(),
        agent.addr(),
        &reference,
        &work.path().join("pull"),
        &PullOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", agent.log_tail()));
    let layer = image.largest_blob();
    let answer = complete_task(&edge, "demo/stalled", &layer.digest).await;
    assert!(answer.table.layout.piece_length >= 512 * 1024);

    let upload = agent.upload_url();
    let upload_addr = upload.trim_start_matches("http://");
    let mut stalled = Vec::new();
    for index in 0..2 {
        let path = format!("/pieces/{}/{index}", layer.digest);
        stalled.push(stalled_reader(upload_addr, &path, &answer.ticket).await);
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
