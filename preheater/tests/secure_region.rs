//! A region deployed the secure way end to end: the registry notifies the preheater over TLS,
//! the preheater warms a TLS edge, four agents with certificates of the cluster CA pull through
//! the edge and each other, and the origin sends each byte once.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use damselfly_test_support::agent::{Agent, AgentOptions};
use damselfly_test_support::edge::{Edge, EdgeOptions};
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::pki::Pki;
use damselfly_test_support::proxy::FaultProxy;
use damselfly_test_support::registry::{Registry, RegistryOptions};
use damselfly_test_support::skopeo::{self, PullOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_warms_a_tls_edge_and_four_certified_agents_pull_it() {
    init_logging();
    let pki = Pki::new().unwrap();
    let preheater_addr = Preheater::reserve();
    // Distribution's notifications trust the cluster CA (Go reads SSL_CERT_FILE).
    let registry = Registry::start(RegistryOptions {
        notifications: Some((
            format!("https://{preheater_addr}/webhooks/distribution"),
            Some(format!("Bearer {WEBHOOK_TOKEN}")),
        )),
        trust: Some(pki.ca()),
        ..RegistryOptions::default()
    })
    .await
    .unwrap();
    let origin = FaultProxy::start(&registry.addr()).await.unwrap();
    let mut options = EdgeOptions::for_registry(&registry.addr(), &origin.url());
    options.warm_token = Some(EDGE_TOKEN.into());
    options.tls = Some(pki.clone());
    let edge = Edge::start(&edge_binary(), options).await.unwrap();
    assert!(edge.url().starts_with("https://"));
    let setup = PreheaterSetup {
        tls: Some(pki.clone()),
        ..PreheaterSetup::new(&registry, &[("eu", edge.url())])
    };
    let preheater = Preheater::start_on(preheater_addr, &setup, "preheater").await;
    assert!(preheater.url().starts_with("https://"));

    let image = registry
        .push_image(
            ImageSpec::new("secure-region", vec![3 * MIB, 2 * MIB, MIB]),
            "demo/secure:v1",
        )
        .await
        .unwrap();
    let trusting = pki.client(None).unwrap();
    for blob in &image.blobs {
        wait_cached_with(&trusting, &edge.url(), &blob.digest, Duration::from_secs(45))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{e}\npreheater:\n{}\nedge:\n{}",
                    preheater.log_tail(),
                    edge.log_tail()
                )
            });
    }

    let agent_binary = edge_binary().with_file_name("peer-agent");
    let mut agents = Vec::new();
    for i in 0..4 {
        let mut options = AgentOptions::host(i, "eu/z1/r1", edge.url(), &registry);
        options.tls = Some(Arc::clone(&pki));
        agents.push(Agent::start(&agent_binary, options).await.unwrap());
    }
    let out = tempfile::tempdir().unwrap();
    let reference = format!("{}/demo/secure:v1", registry.addr());
    let pulls = agents.iter().enumerate().map(|(i, agent)| {
        let target = out.path().join(i.to_string());
        let (registry, mirror, reference) = (registry.addr(), agent.addr().to_string(), reference.clone());
        async move {
            skopeo::pull_via_mirror(&registry, &mirror, &reference, &target, &PullOptions::default()).await
        }
    });
    for (i, pulled) in futures::future::join_all(pulls).await.into_iter().enumerate() {
        let pulled = pulled.unwrap_or_else(|e| panic!("agent {i}: {e:#}\n{}", agents[i].log_tail()));
        assert_eq!(pulled.manifest_digest, image.top_digest, "agent {i}");
    }
    let mut from_origin = 0.0;
    for agent in &agents {
        let m = agent.metrics().await.unwrap();
        from_origin += m.sum("damselfly_agent_download_bytes_total", &["source=\"origin\""]);
    }
    assert_eq!(from_origin, 0.0, "an agent fell back to the origin");
    assert_eq!(
        origin.blob_bytes(),
        image.total_blob_bytes,
        "the origin sent each byte once"
    );
}
