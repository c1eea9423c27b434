//! Things going wrong in a swarm: an agent killed mid-transfer, a neighbour whose cache was
//! tampered with, an agent stopped, the edge killed, stopped or cut off (`ip link set down`)
//! mid-pull, the scheduler's Redis stopped or killed. Every other pull completes with the right
//! bytes, and no plaintext of a layer is ever on disk.

mod common;

use std::time::Duration;

use common::{all_pulled, downloaded_from, sum, until, until_the_edge_sends_pieces, Region, MIB};
use damselfly_test_support::agent::{Agent, AgentOptions};
use damselfly_test_support::image::{BuiltImage, ImageSpec};
use damselfly_test_support::plaintext;
use damselfly_test_support::redis::Redis;
use damselfly_test_support::registry::RegistryOptions;
use damselfly_test_support::small_disk::SmallDisk;
use tokio::task::JoinHandle;

const FOUR: [&str; 4] = ["eu/z1/r1", "eu/z1/r1", "eu/z1/r2", "eu/z1/r2"];

/// Pushes `demo/<name>:v1` (48 MiB) and has the four agents pull it; returns once agent 1's
/// download has started (it is then a parent to others too).
async fn four_pulling(region: &Region, name: &str) -> (BuiltImage, Vec<JoinHandle<anyhow::Result<String>>>) {
    let reference = format!("demo/{name}:v1");
    let image = region
        .push(ImageSpec::new(name, vec![48 * MIB]), &reference)
        .await;
    let pulls = (0..4).map(|i| region.spawn_pull(i, &reference)).collect();
    until(30, || async {
        region.agents[1]
            .metrics()
            .await
            .map(|m| m.get("damselfly_agent_download_bytes_total") > 0.0)
            .unwrap_or(false)
    })
    .await;
    (image, pulls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_killed_mid_transfer_does_not_stop_the_others() {
    let mut region = Region::start(RegistryOptions::default(), &FOUR).await;
    let (image, pulls) = four_pulling(&region, "kill").await;
    region.agents[1].kill().unwrap();
    for (i, pull) in pulls.into_iter().enumerate() {
        let result = pull.await.unwrap();
        if i == 1 {
            continue; // its runtime lost its mirror; that pull may fail
        }
        let digest = result.unwrap_or_else(|e| panic!("agent {i}: {e:#}\n{}", region.logs()));
        assert_eq!(digest, image.top_digest, "agent {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_stopped_mid_transfer_holds_up_neither_the_others_nor_itself() {
    let region = Region::start(RegistryOptions::default(), &FOUR).await;
    let (image, mut pulls) = four_pulling(&region, "agentstop").await;
    // Frozen, not dead: its sockets accept and answer nothing, to its children included.
    region.agents[1].pause().unwrap();
    let stopped = pulls.remove(1);
    let started = std::time::Instant::now();
    all_pulled(&region, pulls, &image.top_digest, 90, "with a parent stopped").await;
    eprintln!("the other three done {:?} after the stop", started.elapsed());
    // Once it runs again, its own pull carries on to the right bytes.
    region.agents[1].resume().unwrap();
    all_pulled(&region, vec![stopped], &image.top_digest, 60, "after SIGCONT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tampered_neighbour_is_caught_and_nobody_gets_a_wrong_byte() {
    let region = Region::start(RegistryOptions::default(), &FOUR).await;
    let image = region
        .push(
            ImageSpec::new("tamper", vec![16 * MIB, 2 * MIB]),
            "demo/tamper:v1",
        )
        .await;
    assert_eq!(
        region.pull_via(0, "demo/tamper:v1", None).await.unwrap(),
        image.top_digest
    );
    // Flip bytes all over agent 0's stored pieces (same inode it serves from).
    let mut tampered = 0;
    for entry in std::fs::read_dir(region.agents[0].data_dir().join("tasks"))
        .unwrap()
        .flatten()
    {
        if entry.path().extension().is_some_and(|e| e == "sealed") {
            let mut bytes = std::fs::read(entry.path()).unwrap();
            for at in (100..bytes.len()).step_by(64 * 1024) {
                bytes[at] ^= 0x5a;
            }
            std::fs::write(entry.path(), bytes).unwrap();
            tampered += 1;
        }
    }
    assert!(tampered >= 2, "agent 0 held the layers");
    let pulls = (1..4).map(|i| region.pull_via(i, "demo/tamper:v1", None));
    for (i, result) in futures::future::join_all(pulls).await.into_iter().enumerate() {
        let digest = result.unwrap_or_else(|e| panic!("agent {}: {e:#}\n{}", i + 1, region.logs()));
        assert_eq!(digest, image.top_digest);
    }
    let agents = region.agent_metrics().await;
    assert!(
        sum(&agents, "damselfly_agent_bad_pieces_total", &["source=\"peer\""]) >= 1.0,
        "the tampered pieces were offered and rejected:\n{}",
        region.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_edge_killed_mid_pull_leaves_peers_and_origin() {
    let mut region = Region::start(RegistryOptions::default(), &FOUR[..3]).await;
    let image = region
        .push(
            ImageSpec::new("edge-down", vec![32 * MIB, 16 * MIB, MIB]),
            "demo/edgedown:v1",
        )
        .await;
    let pulls: Vec<_> = (0..3).map(|i| region.spawn_pull(i, "demo/edgedown:v1")).collect();
    until_the_edge_sends_pieces(&region).await;
    region.edge.kill().unwrap();
    for (i, pull) in pulls.into_iter().enumerate() {
        let digest = pull
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("agent {i}: {e:#}\n{}", region.logs()));
        assert_eq!(digest, image.top_digest, "agent {i}");
    }
}

/// Short outbound timeouts, so the tests of a silent edge take seconds: the defaults are a
/// minute.
const SHORT_OUTBOUND: &str = "[outbound]\nresponse_timeout_secs = 3\nidle_timeout_secs = 2\n";

/// Pushes `demo/<name>:v1` (49 MiB) and has three agents pull it; returns once the edge sends
/// them pieces.
async fn three_pulling(region: &Region, name: &str) -> (BuiltImage, Vec<JoinHandle<anyhow::Result<String>>>) {
    let reference = format!("demo/{name}:v1");
    let image = region
        .push(ImageSpec::new(name, vec![32 * MIB, 16 * MIB, MIB]), &reference)
        .await;
    let pulls = (0..3).map(|i| region.spawn_pull(i, &reference)).collect();
    until_the_edge_sends_pieces(region).await;
    (image, pulls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_edge_stopped_mid_pull_is_left_for_peers_and_origin() {
    // (With outbound timeouts of 600 s, as good as none, these pulls hang until the limit.)
    let region = Region::start_with_agent_toml(&FOUR[..3], SHORT_OUTBOUND).await;
    let (image, pulls) = three_pulling(&region, "edgestop").await;
    // Stopped, not dead: its connections stay open and nothing more comes.
    region.edge.pause().unwrap();
    all_pulled(&region, pulls, &image.top_digest, 90, "on a stopped edge").await;
    region.edge.resume().unwrap();
    let metrics = region.agent_metrics().await;
    assert!(
        downloaded_from(&metrics, "origin") > 0.0,
        "the origin was never asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_edge_link_cut_mid_pull_is_left_for_peers_and_origin() {
    let region = Region::start_behind_link(&FOUR[..3], SHORT_OUTBOUND).await;
    // The edge's own transfer is still under way when its link goes.
    region.proxy.set_blob_rate(16 * MIB);
    let (image, pulls) = three_pulling(&region, "linkcut").await;
    // No reset, no refusal: packets to and from the edge are lost from here on.
    region.link.as_ref().unwrap().cut().unwrap();
    all_pulled(&region, pulls, &image.top_digest, 90, "behind a cut link").await;
    let metrics = region.agent_metrics().await;
    assert!(
        downloaded_from(&metrics, "origin") > 0.0,
        "the origin was never asked"
    );
    let across = tokio::time::timeout(Duration::from_secs(5), region.edge.metrics()).await;
    assert!(
        !matches!(across, Ok(Ok(_))),
        "the edge still answers across the cut link"
    );
}

/// A region of two agents in one rack and `demo/<name>:v1`, a single layer of `size` bytes,
/// pushed to its origin and not pulled yet: the start of the checks on what lands where.
async fn two_agents_and_a_one_layer_image(name: &str, size: u64) -> (Region, BuiltImage) {
    let region = Region::start(RegistryOptions::default(), &FOUR[..2]).await;
    let reference = format!("demo/{name}:v1");
    let image = region.push(ImageSpec::new(name, vec![size]), &reference).await;
    (region, image)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_bytes_reaching_the_edge_send_agents_to_the_origin() {
    let (region, image) = two_agents_and_a_one_layer_image("corrupt", 8 * MIB).await;
    let layer = image.largest_blob();
    // The edge's one upstream transfer of the layer has a flipped byte: it must not be served
    // as the blob by anyone, and the agents must turn to the origin rather than wait.
    region.proxy.corrupt_blob_at(layer.size / 2);
    let client = damselfly_test_support::net::loopback_client().unwrap();
    let gets = region.agents.iter().map(|a| {
        let url = format!("{}/v2/demo/corrupt/blobs/{}", a.url(), layer.digest);
        let client = client.clone();
        async move {
            let response = client.get(url).send().await?.error_for_status()?;
            response.bytes().await
        }
    });
    for (i, body) in futures::future::join_all(gets).await.into_iter().enumerate() {
        let body = body.unwrap_or_else(|e| panic!("agent {i}: {e}\n{}", region.logs()));
        assert_eq!(
            common::sha256(&body),
            layer.digest,
            "agent {i} served wrong bytes"
        );
    }
    let agents = region.agent_metrics().await;
    assert!(downloaded_from(&agents, "origin") > 0.0);
    // Refreshing agents never restart a failed transfer (only a new request may, and each
    // agent made one).
    let gets = region.proxy.blob_gets();
    assert!((1..=2).contains(&gets), "the edge fetched the layer {gets} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_layer_plaintext_in_any_data_directory() {
    let (region, image) = two_agents_and_a_one_layer_image("plain", 4 * MIB).await;
    for i in 0..2 {
        assert_eq!(
            region.pull_via(i, "demo/plain:v1", None).await.unwrap(),
            image.top_digest
        );
    }
    let layer = image.largest_blob();
    let bytes = std::fs::read(image.blob_path(&layer.digest)).unwrap();
    let samples = plaintext::layer_samples(&bytes);
    let agent_dirs: Vec<_> = region.agents.iter().map(|a| a.data_dir()).collect();
    let mut dirs = vec![region.edge.data_dir()];
    dirs.extend(agent_dirs.iter().map(|d| d.as_path()));
    let scan = plaintext::scan(&dirs, &samples).unwrap();
    assert!(scan.leaks.is_empty(), "plaintext in {:?}", scan.leaks);
    assert!(
        scan.bytes > 3 * layer.size,
        "the sealed copies were scanned ({} bytes)",
        scan.bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_redis_slows_the_scheduler_but_stops_no_pull() {
    let redis = Redis::start().await.expect("redis-server");
    let region = Region::start_with_redis(&FOUR[..2], &redis.url()).await;
    let image = region
        .push(
            ImageSpec::new("redis-stop", vec![8 * MIB, MIB]),
            "demo/redisstop:v1",
        )
        .await;
    // Stopped, not dead: its sockets stay open and nothing answers, as when it swaps or is cut
    // off. Every scheduler call must give up on its own.
    redis.pause().unwrap();
    let started = std::time::Instant::now();
    let pulls: Vec<_> = (0..2)
        .map(|i| region.spawn_pull(i, "demo/redisstop:v1"))
        .collect();
    all_pulled(&region, pulls, &image.top_digest, 45, "on a stopped Redis").await;
    redis.resume().unwrap();
    eprintln!("both pulls done {:?} after Redis stopped", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_pull_stops_no_pull() {
    let mut redis = Redis::start().await.expect("redis-server");
    let region = Region::start_with_redis(&FOUR[..3], &redis.url()).await;
    let (image, pulls) = three_pulling(&region, "rediskill").await;
    // Connections reset and the port refuses: scheduler calls fail at once from here on.
    redis.kill().unwrap();
    all_pulled(&region, pulls, &image.top_digest, 60, "after Redis was killed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_on_a_full_disk_still_serves_every_pull() {
    let mut region = Region::start(RegistryOptions::default(), &[]).await;
    let disk = SmallDisk::mount("12m").unwrap();
    let mut options = AgentOptions::host(0, "eu/z1/r1", region.edge.url(), &region.registry);
    options.data_dir = Some(disk.path().join("agent"));
    region.agents.push(
        Agent::start(common::agent_binary(), options)
            .await
            .expect("agent"),
    );
    let image = region
        .push(
            ImageSpec::new("agent-full", vec![6 * MIB, 6 * MIB, 6 * MIB]),
            "demo/agentfull:v1",
        )
        .await;
    let digest = region
        .pull_via(0, "demo/agentfull:v1", None)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", region.logs()));
    assert_eq!(digest, image.top_digest);
    // skopeo would quietly go to the registry itself: the agent must have passed every byte.
    let metrics = region.agent_metrics().await;
    let through = sum(&metrics, "damselfly_agent_download_bytes_total", &[]);
    assert!(
        through >= image.total_blob_bytes as f64,
        "the agent passed {through} of {} bytes\n{}",
        image.total_blob_bytes,
        region.logs()
    );
}
