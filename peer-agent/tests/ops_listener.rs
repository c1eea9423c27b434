//! The agent's ops listener: health, readiness and metrics on an address of its own, reachable
//! from the network, because the mirror listens on loopback where probes and Prometheus do not
//! reach it. The agent's status page lives there too, and `peer-agent status` reads it.

mod common;

use common::{downloaded_from, Region, MIB};
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::metrics::scrape;
use damselfly_test_support::net::{json, loopback_client, text};
use damselfly_test_support::process::stdout_of;
use damselfly_test_support::registry::RegistryOptions;

#[tokio::test]
async fn ops_listener_answers_probes_and_counts_what_the_mirror_did() {
    let region = Region::start(RegistryOptions::default(), &["eu/z1/r1"]).await;
    let agent = &region.agents[0];
    let ops = agent.ops_url();
    assert_ne!(ops, agent.url(), "a listener of its own");

    let client = loopback_client().unwrap();
    for path in ["/healthz", "/readyz"] {
        let r = client.get(format!("{ops}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // Only the ops routes: the registry API stays on the mirror.
    let r = client.get(format!("{ops}/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    region
        .push(ImageSpec::new("ops", vec![2 * MIB]), "ops/app:v1")
        .await;
    region.pull_via(0, "ops/app:v1", None).await.expect("pull");
    let metrics = scrape(&format!("{ops}/metrics")).await.unwrap();
    assert_eq!(metrics.get("damselfly_agent_build_info"), 1.0);
    let from_edge = downloaded_from(std::slice::from_ref(&metrics), "edge");
    assert!(from_edge >= (2 * MIB) as f64, "{}", region.logs());

    // The status report agrees with the metrics, and the command line prints it.
    let status = json(client.get(format!("{ops}/api/v1/status"))).await;
    assert_eq!(status["downloaded"]["edge"].as_f64(), Some(from_edge), "{status}");
    assert_eq!(status["location"], "eu/z1/r1");
    assert!(status["store"]["complete"].as_u64().unwrap() >= 1, "{status}");
    assert_eq!(
        status["downloads"].as_array().map(Vec::len),
        Some(0),
        "nothing still fetching"
    );
    let page = text(client.get(format!("{ops}/"))).await;
    assert!(
        page.contains("Damselfly agent") && page.contains("Downloads in progress"),
        "{page}"
    );
    let text = stdout_of(std::process::Command::new(common::agent_binary()).args(["status", "--ops", &ops]));
    assert!(text.contains("downloaded from: edge 2.0 MiB"), "{text}");
}
