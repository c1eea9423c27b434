//! Eight hosts in two racks pull one image at once through their agents: the origin sends each
//! byte once, agents trade pieces, the edge serves far less than eight copies. The region runs
//! as deployed: the edge on TLS, every agent with a certificate of the cluster CA. The edge's
//! status page then shows the hosts by rack.

mod common;

use common::{downloaded_from, sum, Region, MIB};
use damselfly_test_support::containerd::{Containerd, CtrPullOptions};
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::metrics::dashboard_metrics;
use damselfly_test_support::registry::RegistryOptions;

const RACKS: [&str; 8] = [
    "eu/z1/r1", "eu/z1/r1", "eu/z1/r1", "eu/z1/r1", "eu/z1/r2", "eu/z1/r2", "eu/z1/r2", "eu/z1/r2",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_agents_in_two_racks_pull_one_image_together() {
    let region = Region::start_secure(RegistryOptions::default(), &RACKS).await;
    let image = region
        .push(
            ImageSpec::new("swarm", vec![24 * MIB, 12 * MIB, 4 * MIB]),
            "demo/swarm:v1",
        )
        .await;
    region.proxy.reset_counters();

    // Seven agents serve skopeo, the eighth serves containerd (hosts.toml), all at once.
    let containerd = Containerd::start().await.unwrap();
    containerd
        .write_hosts_toml(&region.registry.addr(), &region.agents[7].url())
        .unwrap();
    let reference = format!("{}/demo/swarm:v1", region.registry.addr());
    let skopeo_pulls = (0..7).map(|i| region.pull_via(i, "demo/swarm:v1", None));
    let ctr_options = CtrPullOptions::default();
    let ctr_pull = containerd.pull(&reference, &ctr_options);
    let (skopeo_results, ctr_result) = tokio::join!(futures::future::join_all(skopeo_pulls), ctr_pull);
    for (i, result) in skopeo_results.into_iter().enumerate() {
        let digest = result.unwrap_or_else(|e| panic!("agent {i}: {e:#}\n{}", region.logs()));
        assert_eq!(digest, image.top_digest, "agent {i}");
    }
    assert_eq!(
        ctr_result.unwrap_or_else(|e| panic!("ctr: {e:#}\n{}", region.logs())),
        image.top_digest
    );

    let agents = region.agent_metrics().await;
    let edge = region.edge.metrics().await.unwrap();
    let image_bytes = image.total_blob_bytes as f64;
    let peer = downloaded_from(&agents, "peer");
    let from_edge = downloaded_from(&agents, "edge");
    let from_origin = downloaded_from(&agents, "origin");
    let edge_pieces = edge.sum("damselfly_edge_served_bytes_total", &["kind=\"piece\""]);
    let edge_blobs = edge.sum("damselfly_edge_served_bytes_total", &["kind=\"blob\""]);
    eprintln!(
        "image {image_bytes} B; agents got peer {peer}, edge {from_edge}, origin {from_origin}; \
         edge served pieces {edge_pieces}, blobs {edge_blobs}; origin sent {}",
        region.proxy.blob_bytes()
    );
    // The origin sent each byte once; every agent's blobs came through the P2P path.
    assert_eq!(
        region.proxy.blob_bytes(),
        image.total_blob_bytes,
        "origin bytes = 1.00x the image"
    );
    assert_eq!(
        from_origin,
        0.0,
        "no agent fell back to the origin:\n{}",
        region.logs()
    );
    assert_eq!(edge_blobs, 0.0, "agents fetch pieces, not whole blobs");
    assert!(peer > 0.0, "agents traded pieces");
    assert!(
        edge_pieces < 4.0 * image_bytes,
        "edge served {edge_pieces} B, more than half of 8 copies"
    );
    assert_eq!(sum(&agents, "damselfly_agent_bad_pieces_total", &[]), 0.0);

    // The edge's status page counts the agents it heard from, by rack.
    let status = region.edge.status().await.unwrap();
    let racks = status["racks"].as_array().unwrap();
    let hosts_in = |location: &str| {
        racks
            .iter()
            .find(|r| r["location"] == location)
            .map_or(0, |r| r["hosts"].as_u64().unwrap())
    };
    assert_eq!((hosts_in("eu/z1/r1"), hosts_in("eu/z1/r2")), (4, 4), "{status}");
    assert_eq!(status["bytes"]["served"]["piece"].as_f64().unwrap(), edge_pieces);
    // What the agents report having fetched, by source, is what their own metrics say (their
    // last announcements carry the totals; seeding heartbeats repeat them every 5 s).
    let reported = |status: &serde_json::Value| {
        ["peer", "edge", "origin"].map(|s| status["agents_downloaded"][s].as_f64().unwrap_or(-1.0))
    };
    let counted = ["peer", "edge", "origin"].map(|s| downloaded_from(&agents, s));
    let mut status = status;
    for _ in 0..40 {
        if reported(&status) == counted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        status = region.edge.status().await.unwrap();
    }
    assert_eq!(reported(&status), counted, "{status}");

    // Every edge and agent metric the Grafana dashboard queries is exported.
    for (prefix, metrics) in [("damselfly_edge_", &edge), ("damselfly_agent_", &agents[0])] {
        for name in dashboard_metrics(prefix) {
            let exported = metrics.has(&name) || metrics.has(name.trim_end_matches("_bucket"));
            assert!(exported, "the dashboard queries {name}, which is not exported");
        }
    }
}
