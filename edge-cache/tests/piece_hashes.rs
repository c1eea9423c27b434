//! Piece tables in either hash: an agent that asks for BLAKE3 gets BLAKE3 hashes of the same
//! sealed pieces, one that does not (every agent from before the choice) gets SHA-256; a blob
//! cached before the edge kept BLAKE3 is listed in SHA-256 to everyone, whole.

mod common;

use common::{origin_edge_and_image, MIB};
use damselfly_core::api::{TaskAnswer, TICKET_HEADER};
use damselfly_core::{PieceHash, PieceLayout};
use damselfly_test_support::edge::task_at;
use damselfly_test_support::net::loopback_client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_list_the_hash_asked_for_over_the_same_sealed_pieces() {
    let (_origin, mut edge, image) = origin_edge_and_image(&[6 * MIB], "hashes", "demo/hashes:v1").await;
    let layer = image.largest_blob();
    let count = PieceLayout::for_size(layer.size).count() as usize;
    let client = loopback_client().unwrap();
    let sha256 = edge.complete_task("demo/hashes", &layer.digest).await.unwrap();
    let task = format!("{}/api/v1/tasks/{}?repo=demo/hashes", edge.url(), layer.digest);
    let answer = |query: &'static str| {
        let (client, url) = (client.clone(), format!("{task}{query}"));
        async move { task_at(&client, &url).await.unwrap() }
    };
    let blake3 = answer("&hash=blake3").await;
    assert_eq!(sha256.table.hash, PieceHash::Sha256);
    assert_eq!(blake3.table.hash, PieceHash::Blake3);
    assert_eq!(
        (sha256.table.pieces.len(), blake3.table.pieces.len()),
        (count, count)
    );
    assert_ne!(sha256.table.pieces, blake3.table.pieces);

    // Both tables prove the very bytes the edge sends, and nothing else.
    let edge_url = edge.url();
    let piece = |answer: &TaskAnswer, index: usize| {
        let (client, ticket) = (client.clone(), answer.ticket.clone());
        let url = format!("{edge_url}/pieces/{}/{index}", layer.digest);
        async move {
            let response = client
                .get(url)
                .header(TICKET_HEADER, ticket)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap()
        }
    };
    for index in 0..count {
        let sealed = piece(&blake3, index).await;
        assert!(sha256.table.proves(index as u64, &sealed), "piece {index}");
        assert!(blake3.table.proves(index as u64, &sealed), "piece {index}");
        let mut damaged = sealed.to_vec();
        damaged[sealed.len() / 2] ^= 1;
        assert!(!blake3.table.proves(index as u64, &damaged), "piece {index}");
    }

    // A refresh in the caller's hash carries only the hashes after the ones it holds.
    let refresh = answer("&hash=blake3&known=3&follow=true").await;
    assert_eq!((refresh.pieces_from, refresh.table.hash), (3, PieceHash::Blake3));
    assert_eq!(refresh.table.pieces, blake3.table.pieces[3..]);

    // The table file keeps both across a restart.
    edge.restart().await.unwrap();
    let again = answer("&hash=blake3").await;
    assert_eq!(again.table.pieces, blake3.table.pieces);

    // A table file from before BLAKE3: SHA-256 to everyone, sent whole whatever the caller
    // says it knows (its known hashes are of the other kind). Its pieces are still checked
    // before they are sent, by authenticating them.
    let path = edge
        .data_dir()
        .join("blobs")
        .join(format!("{}.table", layer.digest.trim_start_matches("sha256:")));
    let mut stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(
        stored.as_object_mut().unwrap().remove("blake3").is_some(),
        "{stored}"
    );
    std::fs::write(&path, serde_json::to_vec(&stored).unwrap()).unwrap();
    // Read at start-up, as an edge upgraded over an older cache reads it.
    edge.restart().await.unwrap();
    let old = answer("&hash=blake3&known=3&follow=true").await;
    assert_eq!((old.pieces_from, old.table.hash), (0, PieceHash::Sha256));
    assert_eq!(old.table.pieces, sha256.table.pieces);
    let sealed = piece(&old, 1).await;
    assert!(old.table.proves(1, &sealed));
}
