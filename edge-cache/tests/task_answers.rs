//! Task answers for agents: `complete` is only ever said of a full piece table, however the
//! answer falls against the end of the transfer (an agent that believed a short table complete
//! would never ask for the last hash).

mod common;

use std::time::{Duration, Instant};

use common::{origin_edge_and_image, MIB};
use damselfly_core::PieceLayout;
use damselfly_test_support::edge::task_at;
use damselfly_test_support::net::loopback_client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_is_only_said_of_a_full_table() {
    let (_origin, edge, image) =
        origin_edge_and_image(&[24 * MIB, 6 * MIB, MIB], "answers", "demo/answers:v1").await;
    let client = loopback_client().unwrap();
    for layer in image.blobs.iter().filter(|b| b.size >= MIB) {
        let count = PieceLayout::for_size(layer.size).count() as usize;
        let url = format!("{}/api/v1/tasks/{}?repo=demo/answers", edge.url(), layer.digest);
        // Several agents refreshing as fast as they can while the blob arrives and completes.
        let pollers = (0..6).map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut answers = 0;
                loop {
                    let answer = task_at(&client, &url).await.unwrap();
                    answers += 1;
                    if answer.complete {
                        assert_eq!(
                            answer.table.pieces.len(),
                            count,
                            "complete with a short table after {answers} answers"
                        );
                        return answers;
                    }
                    assert!(answer.table.pieces.len() <= count);
                    assert!(Instant::now() < deadline, "never complete");
                }
            })
        });
        for poller in futures::future::join_all(pollers).await {
            poller.unwrap();
        }
    }
}
