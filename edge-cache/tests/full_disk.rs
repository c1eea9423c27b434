//! A data directory on a disk that fills up (a small tmpfs; the quota is larger than the disk):
//! every blob a client receives as a success is whole and right, nothing partial is served as
//! complete later, and the edge keeps answering.

mod common;

use std::path::PathBuf;

use common::{fetch, health, layers, sha256, Origin, MIB};
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::small_disk::SmallDisk;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_serves_a_partial_blob() {
    let origin = Origin::start().await;
    let disk = SmallDisk::mount("20m").unwrap();
    let mut options = origin.edge_options();
    options.quota = "1GiB".into();
    options.data_dir = Some(PathBuf::from(disk.path()).join("edge"));
    let edge = origin.edge_with(options).await;
    let image = origin
        .push(
            layers(&[6 * MIB, 6 * MIB, 6 * MIB, 6 * MIB], "full"),
            "demo/full:v1",
        )
        .await;
    let client = loopback_client().unwrap();
    let mut outcomes = Vec::new();
    for round in 0..2 {
        for blob in &image.blobs {
            let url = format!("{}/v2/demo/full/blobs/{}", edge.url(), blob.digest);
            match fetch(&client, &url).await {
                Ok(body) => {
                    assert_eq!(
                        sha256(&body),
                        blob.digest,
                        "round {round}: a wrong blob served as a success"
                    );
                    outcomes.push(format!("round {round} {}: ok", &blob.digest[..15]));
                }
                Err(e) => outcomes.push(format!("round {round} {}: {e}", &blob.digest[..15])),
            }
        }
    }
    eprintln!("{}", outcomes.join("\n"));
    let failed: Vec<&String> = outcomes.iter().filter(|o| !o.ends_with(": ok")).collect();
    assert!(
        failed.is_empty(),
        "with the origin reachable every pull should succeed:\n{}\n{}",
        outcomes.join("\n"),
        edge.log_tail()
    );
    assert_eq!(health(&client, &edge).await, 200);
}
