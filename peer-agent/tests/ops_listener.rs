//! The agent's ops listener: health, readiness and metrics on an address of its own, reachable
//! from the network, because the mirror listens on loopback where probes and Prometheus do not
//! reach it.

mod common;

use common::{downloaded_from, Region, MIB};
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::metrics::scrape;
use damselfly_test_support::net::loopback_client;
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
    assert!(
        downloaded_from(&[metrics], "edge") >= (2 * MIB) as f64,
        "{}",
        region.logs()
    );
}
