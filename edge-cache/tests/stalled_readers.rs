//! Readers that ask for pieces and never read them: after `limits.piece_send_stall_ms` without
//! progress they lose their piece-send permit, and other agents' pieces go out again.

mod common;

use std::time::{Duration, Instant};

use common::{get_piece, layers, sha256, Origin, MIB};
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::stalled::stalled_reader;

/// Stall grace in these tests (`limits.piece_send_stall_ms`).
const GRACE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_stop_reading_do_not_hold_the_piece_sends() {
    let origin = Origin::start().await;
    let mut options = origin.edge_options();
    options.limits_toml = format!("piece_sends = 2\npiece_send_stall_ms = {}\n", GRACE.as_millis());
    // No minimum rate: the stalled connections stay open (the server crate's own tests cover
    // cutting them), so only the permit's own watch can free the sends.
    options.server_toml = "send_min_bytes_per_sec = 0\n".into();
    let edge = origin.edge_with(options).await;
    // 512 KiB pieces: far more than the socket buffers between a stalled reader and the edge.
    let image = origin
        .push(layers(&[80 * MIB], "stalled"), "demo/stalled:v1")
        .await;
    let layer = image.largest_blob();
    let client = loopback_client().unwrap();
    let answer = edge.complete_task("demo/stalled", &layer.digest).await.unwrap();
    assert!(answer.table.layout.piece_length >= 512 * 1024);

    // Twice as many stalled readers as permits: every permit is taken, and more are queued.
    let mut stalled = Vec::new();
    for index in 0..4 {
        let path = format!("/pieces/{}/{index}", layer.digest);
        stalled.push(stalled_reader(&edge.addr(), &path, &answer.ticket).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A reader that reads gets its piece once the stalled ones are cut, well before a queued
    // request would be refused as busy (10 s).
    let started = Instant::now();
    let piece = get_piece(&client, &edge, &layer.digest, 10, &answer.ticket).await;
    assert_eq!(piece.status(), 200, "{}", edge.log_tail());
    let body = piece.bytes().await.unwrap();
    let took = started.elapsed();
    assert_eq!(body.len() as u64, answer.table.layout.sealed_len(10));
    assert_eq!(
        sha256(&body),
        format!("sha256:{}", hex::encode(answer.table.pieces[10])),
        "the piece as listed"
    );
    assert!(
        took < 2 * GRACE + Duration::from_secs(2),
        "a piece took {took:?} behind stalled readers"
    );
    let metrics = edge.metrics().await.unwrap();
    assert!(metrics.get("damselfly_edge_piece_sends_stalled_total") >= 2.0);
    drop(stalled);
}
