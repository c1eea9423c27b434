//! Thousands of connections that open and say nothing: the edge keeps answering its health
//! probe and serving blobs, and a connection past `server.max_connections` is told to come back
//! (503 with `Retry-After`) instead of waiting or breaking the accept loop.

mod common;

use std::time::{Duration, Instant};

use common::{health, layers, pull_checked, Origin, MIB};
use damselfly_test_support::net::{loopback_client, raise_open_files};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const IDLE: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_leave_health_and_pulls_answering() {
    raise_open_files(IDLE + 1_024).unwrap();
    let origin = Origin::start().await;
    let mut options = origin.edge_options();
    // Room for the idle ones and a few more; beyond it, 503.
    options.server_toml = format!("max_connections = {}\n", IDLE + 16);
    let edge = origin.edge_with(options).await;
    let image = origin.push(layers(&[2 * MIB], "idle"), "demo/idle:v1").await;

    let mut idle = Vec::with_capacity(IDLE);
    for n in 0..IDLE {
        let stream = TcpStream::connect(edge.addr())
            .await
            .unwrap_or_else(|e| panic!("idle connection {n}: {e}"));
        idle.push(stream);
    }
    // The accept loop has taken them all once the edge counts them.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let client = loopback_client().unwrap();
    let started = Instant::now();
    assert_eq!(health(&client, &edge).await, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "/healthz took {:?} beside {IDLE} idle connections",
        started.elapsed()
    );
    let layer = image.largest_blob();
    pull_checked(&client, &edge, "demo/idle", &layer.digest).await;

    // Past the limit: a prompt 503 that says when to come back.
    let mut more = Vec::new();
    for _ in 0..32 {
        more.push(TcpStream::connect(edge.addr()).await.unwrap());
    }
    let answers = more.iter_mut().map(|stream| async move {
        let mut answer = vec![0u8; 256];
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut answer)).await {
            Ok(Ok(n)) => String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase(),
            _ => String::new(),
        }
    });
    let refused = futures::future::join_all(answers)
        .await
        .iter()
        .filter(|text| text.starts_with("http/1.1 503") && text.contains("retry-after"))
        .count();
    assert!(
        refused >= 16,
        "{refused} of 32 connections past the limit were told 503"
    );
    drop(idle);
    drop(more);
}
