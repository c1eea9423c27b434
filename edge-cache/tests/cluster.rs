//! The edges of a region as one cache, through the Redis they share: cold pulls spread over
//! three edges make the origin send each blob once; the owner of a blob killed mid-transfer
//! leaves the ring and the others finish from the next owner; an edge that stops is out of the
//! ring within its timeout and back when it goes on.

mod common;

use std::time::{Duration, Instant};

use common::{fetch, layers, sha256, Origin, MIB};
use damselfly_core::Digest;
use damselfly_edge::cluster::owner_of;
use damselfly_test_support::edge::Edge;
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::redis::Redis;

/// Heartbeats every 200 ms, out after 2 s without one: the tests' waits stay short, and a
/// heartbeat delayed on a busy machine does not drop a member.
const CLUSTER_TOML: &str = "[cluster]\nheartbeat_ms = 200\nmember_timeout_ms = 2000\n";

async fn cluster_of(origin: &Origin, redis: &Redis, n: usize) -> Vec<Edge> {
    // Read by each edge as it starts: the file can go once they run.
    let dir = tempfile::tempdir().unwrap();
    let secret = damselfly_test_support::process::private_file(dir.path(), "cluster.secret", &"s".repeat(48));
    let mut edges = Vec::new();
    for _ in 0..n {
        let mut options = origin.edge_options();
        options.top_toml.push_str(&format!(
            "redis = \"{}\"\ncluster_secret_file = \"{}\"\n",
            redis.url(),
            secret.display()
        ));
        options.extra_toml.push_str(CLUSTER_TOML);
        options.advertise = true;
        edges.push(origin.edge_with(options).await);
    }
    for edge in &edges {
        until_members(edge, n, Duration::from_secs(10)).await;
    }
    edges
}

async fn members(edge: &Edge) -> Vec<String> {
    let client = loopback_client().unwrap();
    let url = format!("{}/api/v1/cluster", edge.url());
    let view = common::get_json(&client, &url).await;
    let list = view["members"].as_array().cloned().unwrap_or_default();
    list.iter()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect()
}

/// Waits until `edge` sees `n` members; returns how long that took.
async fn until_members(edge: &Edge, n: usize, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let seen = members(edge).await;
        if seen.len() == n {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{} sees {seen:?}, not {n} members\n{}",
            edge.url(),
            edge.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn logs(edges: &[Edge]) -> String {
    edges
        .iter()
        .map(|e| format!("--- {} ---\n{}", e.url(), e.log_tail()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_cold_pulls_over_three_edges_take_each_blob_from_the_origin_once() {
    let origin = Origin::start().await;
    let redis = Redis::start().await.unwrap();
    let edges = cluster_of(&origin, &redis, 3).await;
    let image = origin
        .push(
            layers(&[6 * MIB, 5 * MIB, 4 * MIB, 3 * MIB], "cluster"),
            "demo/cluster:v1",
        )
        .await;
    origin.proxy.reset_counters();

    let client = loopback_client().unwrap();
    let blobs: Vec<_> = image.blobs.iter().filter(|b| b.size > MIB).cloned().collect();
    let pulls = (0..20).flat_map(|i| {
        let edge_url = edges[i % edges.len()].url();
        let client = client.clone();
        blobs.clone().into_iter().map(move |blob| {
            let (client, url) = (
                client.clone(),
                format!("{edge_url}/v2/demo/cluster/blobs/{}", blob.digest),
            );
            tokio::spawn(async move { (blob.clone(), fetch(&client, &url).await) })
        })
    });
    for pull in futures::future::join_all(pulls).await {
        let (blob, body) = pull.unwrap();
        let body = body.unwrap_or_else(|e| panic!("{}: {e}\n{}", blob.digest, logs(&edges)));
        assert_eq!(sha256(&body), blob.digest);
    }

    let image_bytes: u64 = blobs.iter().map(|b| b.size).sum();
    let sent = origin.proxy.blob_bytes();
    eprintln!("origin sent {sent} B for {image_bytes} B of blobs pulled through 3 edges");
    assert!(
        sent as f64 <= image_bytes as f64 * 1.02,
        "the origin sent {sent} B for {image_bytes} B\n{}",
        logs(&edges)
    );
    // Each blob came from the origin through its owner, and reached the others from it.
    let mut from_owners = 0.0;
    for edge in &edges {
        let m = edge.metrics().await.unwrap();
        from_owners += m.get("damselfly_edge_owner_fetches_total");
        assert_eq!(m.get("damselfly_edge_cluster_members"), 3.0);
    }
    assert!(
        from_owners >= blobs.len() as f64,
        "{from_owners} transfers from owners"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_owner_killed_mid_transfer_hands_the_blob_to_the_next_owner() {
    let origin = Origin::start().await;
    let redis = Redis::start().await.unwrap();
    let mut edges = cluster_of(&origin, &redis, 3).await;
    let image = origin
        .push(layers(&[16 * MIB], "owner-dies"), "demo/owner:v1")
        .await;
    let layer = image.largest_blob().clone();
    let urls: Vec<String> = edges.iter().map(Edge::url).collect();
    let digest: Digest = layer.digest.parse().unwrap();
    let owner = urls
        .iter()
        .position(|u| Some(u.as_str()) == owner_of(&digest, &urls))
        .unwrap();
    origin.proxy.reset_counters();
    // 16 MiB at 4 MiB/s: the owner is killed a second or so into the transfer.
    origin.proxy.set_blob_rate(4 * MIB);

    let client = loopback_client().unwrap();
    let pulls: Vec<_> = (0..6)
        .map(|i| {
            let others: Vec<&String> = urls
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != owner)
                .map(|(_, u)| u)
                .collect();
            let url = format!("{}/v2/demo/owner/blobs/{}", others[i % 2], layer.digest);
            let client = client.clone();
            tokio::spawn(async move { fetch(&client, &url).await })
        })
        .collect();
    let start = Instant::now();
    while origin.proxy.blob_bytes() < 3 * MIB {
        assert!(start.elapsed() < Duration::from_secs(20), "{}", logs(&edges));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    edges[owner].kill().unwrap();
    origin.proxy.set_blob_rate(0);

    for pull in futures::future::join_all(pulls).await {
        let body = pull
            .unwrap()
            .unwrap_or_else(|e| panic!("pull failed: {e}\n{}", logs(&edges)));
        assert_eq!(sha256(&body), layer.digest, "a wrong byte");
    }
    let sent = origin.proxy.blob_bytes();
    eprintln!("origin sent {sent} B for a {} B layer", layer.size);
    assert!(
        sent as f64 <= layer.size as f64 * 1.5,
        "the origin sent {sent} B for {} B\n{}",
        layer.size,
        logs(&edges)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edge_that_stops_leaves_the_ring_within_its_timeout_and_comes_back() {
    let origin = Origin::start().await;
    let redis = Redis::start().await.unwrap();
    let edges = cluster_of(&origin, &redis, 3).await;
    edges[2].pause().unwrap();
    // Out after 2 s without a heartbeat, seen at the next read (200 ms), with a margin.
    let left = until_members(&edges[0], 2, Duration::from_secs(5)).await;
    until_members(&edges[1], 2, Duration::from_secs(5)).await;
    assert!(!members(&edges[1]).await.contains(&edges[2].url()));
    edges[2].resume().unwrap();
    let back = until_members(&edges[0], 3, Duration::from_secs(5)).await;
    eprintln!("left after {left:?}, back after {back:?}");
    assert!(left >= Duration::from_millis(1500), "out too early: {left:?}");
}
