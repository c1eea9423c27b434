//! `peer-agent configure containerd` on containerd 1.6 as Debian packages it (a config.toml
//! whose CRI plugin reads no `certs.d`): afterwards a kubelet-style CRI pull goes through the
//! agent. Before, pulls go straight to the registry whatever `hosts.toml` says, which is what an
//! operator who only wrote `hosts.toml` would get. Needs root.

mod common;

use std::process::Command;

use common::{agent_binary, downloaded_from, Region, MIB};
use damselfly_test_support::containerd::{config_without_registry, Containerd};
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::registry::RegistryOptions;

#[tokio::test]
async fn configure_makes_containerd_pull_through_the_agent() {
    let region = Region::start(RegistryOptions::default(), &["eu/z1/r1"]).await;
    for (seed, tag) in [("before", "v1"), ("after", "v2")] {
        region
            .push(
                ImageSpec::new(seed, vec![3 * MIB, MIB]),
                &format!("cri/app:{tag}"),
            )
            .await;
    }
    let image = |tag: &str| format!("{}/cri/app:{tag}", region.registry.addr());
    let through_agent = || async {
        let metrics = region.agent_metrics().await;
        downloaded_from(&metrics, "edge") + downloaded_from(&metrics, "peer")
    };
    let mut containerd = Containerd::start_with(config_without_registry)
        .await
        .expect("containerd");

    containerd.cri_pull(&image("v1")).await.expect("a direct pull");
    assert_eq!(through_agent().await, 0.0, "no certs.d is read yet");

    let certs = containerd.config_path().with_file_name("certs.d");
    let configure = |extra: &[&str]| {
        let out = Command::new(agent_binary())
            .arg("configure")
            .arg("containerd")
            .arg("--config-toml")
            .arg(containerd.config_path())
            .arg("--path")
            .arg(&certs)
            .args(["--registry", &region.registry.addr()])
            .args(["--server", &region.registry.url()])
            .args(["--mirror", &region.agents[0].url()])
            .args(extra)
            .output()
            .expect("peer-agent configure");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = configure(&[]);
    assert!(said.contains("updated") && said.contains("config.toml"), "{said}");
    let again = configure(&[]);
    assert!(
        !again.contains("updated"),
        "a second run changes nothing: {again}"
    );

    containerd.restart().await.expect("containerd restarts");
    let id = containerd
        .cri_pull(&image("v2"))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", region.logs()));
    assert!(id.starts_with("sha256:"), "{id}");
    let served = through_agent().await;
    assert!(
        served >= (4 * MIB) as f64,
        "the layers came through the agent: {served}"
    );
}
