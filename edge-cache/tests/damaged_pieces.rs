//! A bit flipped in a sealed piece on the edge's disk: the edge authenticates every piece
//! before sending it, so the damage is caught, the blob is dropped and fetched again, and no
//! client or agent ever receives the damaged bytes.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{fetch, get_piece, origin_edge_and_image, sha256, MIB};
use damselfly_core::PieceLayout;
use damselfly_test_support::edge::Edge;
use damselfly_test_support::net::loopback_client;

/// The sealed file of `digest` (`sha256:…`) once the edge has published it.
async fn published(edge: &Edge, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    let path = edge.data_dir().join("blobs").join(format!("{hex}.sealed"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{digest} was never published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    path
}

/// Flips one bit inside piece `index` of the sealed file at `path`.
fn flip_a_bit(path: &Path, layout: PieceLayout, index: u64) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let at = layout.sealed_offset(index) + 1000;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).unwrap();
    byte[0] ^= 0x08;
    file.write_all_at(&byte, at).unwrap();
    file.sync_all().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piece_damaged_on_disk_is_never_sent_and_the_blob_is_fetched_again() {
    let (origin, edge, image) = origin_edge_and_image(&[8 * MIB], "damaged", "demo/damaged:v1").await;
    let layer = image.largest_blob();
    let layout = PieceLayout::for_size(layer.size);
    assert!(layout.count() > 8);
    let client = loopback_client().unwrap();
    let url = format!("{}/v2/demo/damaged/blobs/{}", edge.url(), layer.digest);
    let body = fetch(&client, &url).await.unwrap();
    assert_eq!(sha256(&body), layer.digest);
    let path = published(&edge, &layer.digest).await;

    // A registry client: the blob arrives whole and right, from a fresh transfer.
    flip_a_bit(&path, layout, 5);
    origin.proxy.reset_counters();
    let body = fetch(&client, &url)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", edge.log_tail()));
    assert_eq!(sha256(&body), layer.digest, "damaged bytes were delivered");
    assert!(origin.proxy.blob_gets() >= 1, "the blob was not fetched again");
    let metrics = edge.metrics().await.unwrap();
    assert!(metrics.get("damselfly_edge_damaged_pieces_total") >= 1.0);

    // An agent: the damaged piece is refused (it would go elsewhere), never sent; the next task
    // request fetches the blob again and the piece matches its table.
    let path = published(&edge, &layer.digest).await;
    flip_a_bit(&path, layout, 7);
    let answer = edge.task(&client, "demo/damaged", &layer.digest).await.unwrap();
    let refused = get_piece(&client, &edge, &layer.digest, 7, &answer.ticket).await;
    assert_eq!(refused.status(), 503, "{}", edge.log_tail());
    // Fetched again by the next task requests.
    let answer = edge.complete_task("demo/damaged", &layer.digest).await.unwrap();
    let piece = get_piece(&client, &edge, &layer.digest, 7, &answer.ticket).await;
    assert_eq!(piece.status(), 200, "{}", edge.log_tail());
    let piece = piece.bytes().await.unwrap();
    assert_eq!(
        sha256(&piece),
        format!("sha256:{}", hex::encode(answer.table.pieces[7]))
    );
    let metrics = edge.metrics().await.unwrap();
    assert!(metrics.get("damselfly_edge_damaged_pieces_total") >= 2.0);
}
