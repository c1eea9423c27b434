//! Pulls through agents: the bytes, where they came from, and what docker asks an agent for.

use std::collections::BTreeMap;

use base64::Engine;
use http::header::ACCEPT;
use http::{Method, StatusCode};

use crate::common::{downloaded_from, MIB};
use crate::site::{assert_holds, config_digest, whole_log, Host, Site, APP};
use damselfly_test_support::image::ImageSpec;
use damselfly_test_support::metrics::Metrics;
use damselfly_test_support::net::loopback_client;
use damselfly_test_support::registry::RegistryOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_pulls_through_its_agent_and_the_second_host_from_the_first() {
    let site = Site::start(RegistryOptions::default()).await;
    let image = site
        .push(ImageSpec::new("docker", vec![8 * MIB, 3 * MIB, MIB / 2]), APP)
        .await;
    let first = site.host(0, "eu/z1/r1").await;
    let second = site.host(1, "eu/z1/r2").await;
    let logs = |hosts: &[&Host]| site.logs(hosts);

    let pulled = first.docker.pull(APP).await;
    pulled.unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&[&first])));
    assert_holds(&first.docker, APP, &image).await;
    let from_agent = first.agent.metrics().await.expect("metrics");
    assert!(
        downloaded_from(&[from_agent], "edge") > 0.0,
        "the first pull went through the agent and the edge:\n{}",
        logs(&[&first])
    );

    let edge_before = site.edge.metrics().await.expect("edge metrics");
    let pulled = second.docker.pull(APP).await;
    pulled.unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&[&first, &second])));
    assert_holds(&second.docker, APP, &image).await;

    // The origin sent each blob once, for both hosts.
    let gets = site.origin_blob_gets();
    let expected: BTreeMap<String, usize> = image.blobs.iter().map(|b| (b.digest.clone(), 1)).collect();
    assert_eq!(gets, expected, "origin blob GETs");
    assert_eq!(site.origin.blob_bytes(), image.total_blob_bytes);

    // The second host's bytes came from the first host's agent: none from the edge or origin.
    let second_metrics = [second.agent.metrics().await.expect("metrics")];
    let first_metrics = first.agent.metrics().await.expect("metrics");
    let edge_after = site.edge.metrics().await.expect("edge metrics");
    let piece_bytes = |m: &Metrics| m.sum("damselfly_edge_served_bytes_total", &["kind=\"piece\""]);
    assert!(downloaded_from(&second_metrics, "peer") >= image.total_blob_bytes as f64);
    assert_eq!(downloaded_from(&second_metrics, "edge"), 0.0);
    assert_eq!(downloaded_from(&second_metrics, "origin"), 0.0);
    assert!(first_metrics.get("damselfly_agent_upload_bytes_total") >= image.total_blob_bytes as f64);
    assert_eq!(
        piece_bytes(&edge_after),
        piece_bytes(&edge_before),
        "the edge sent no piece for the second pull"
    );
    eprintln!(
        "docker {}: pulled {} blob bytes twice; origin sent {}",
        first.docker.server_version().await.unwrap_or_default(),
        image.total_blob_bytes,
        site.origin.blob_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_pulls_through_an_edge_as_its_mirror() {
    let site = Site::start(RegistryOptions::default()).await;
    let image = site
        .push(ImageSpec::new("edge-mirror", vec![4 * MIB, MIB]), APP)
        .await;
    let docker = site.docker(&site.edge.url(), Vec::new(), &[]).await;
    let pulled = docker.pull(APP).await;
    pulled.unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", site.edge.log_tail(), docker.log_tail()));
    assert_holds(&docker, APP, &image).await;
    assert_eq!(site.origin.blob_bytes(), image.total_blob_bytes);
    let edge = site.edge.metrics().await.unwrap();
    assert!(
        edge.sum("damselfly_edge_served_bytes_total", &["kind=\"blob\""]) >= image.total_blob_bytes as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_pulls_by_digest_from_an_index_in_schema_2_and_every_tag() {
    let site = Site::start(RegistryOptions::default()).await;
    let single = site
        .push(ImageSpec::new("by-digest", vec![2 * MIB]), "library/app:1.0")
        .await;
    let platforms = [("amd64", None), ("arm64", Some("v8"))];
    let index = site
        .push(
            ImageSpec::new("index", vec![MIB]).with_platforms(platforms),
            "library/app:2.0",
        )
        .await;
    let (schema2, schema2_digest) = site
        .push_docker_schema2(ImageSpec::new("schema2", vec![MIB]), "library/app:3.0")
        .await;
    let host = site.host(0, "eu/z1/r1").await;
    let logs = || site.logs(&[&host]);

    // What docker relies on in the agent's answers: the ping's API version, and the digest of
    // every manifest, asked with HEAD or GET, by tag or by digest.
    let client = loopback_client().unwrap();
    let ping = client
        .get(format!("{}/v2/", host.agent.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), StatusCode::OK);
    assert_eq!(ping.headers()["docker-distribution-api-version"], "registry/2.0");
    let manifests = [
        ("1.0", &single.top_digest),
        (single.top_digest.as_str(), &single.top_digest),
        ("2.0", &index.top_digest),
        ("3.0", &schema2_digest),
    ];
    for (reference, digest) in manifests {
        for method in [Method::HEAD, Method::GET] {
            let url = format!("{}/v2/library/app/manifests/{reference}", host.agent.url());
            let mut request = client.request(method.clone(), url);
            for accept in DOCKER_ACCEPTS {
                request = request.header(ACCEPT, accept);
            }
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), StatusCode::OK, "{method} {reference}");
            assert_eq!(
                answer
                    .headers()
                    .get("docker-content-digest")
                    .map(|v| v.to_str().unwrap()),
                Some(digest.as_str()),
                "{method} {reference}"
            );
        }
    }

    let by_digest = format!("library/app@{}", single.top_digest);
    let pulled = host.docker.pull(&by_digest).await;
    pulled.unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    assert_holds(&host.docker, &by_digest, &single).await;
    // From an index docker takes the manifest of its own platform: the first, amd64.
    let pulled = host.docker.pull("library/app:2.0").await;
    pulled.unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    assert_eq!(
        host.docker.image_id("library/app:2.0").await.unwrap(),
        config_digest(&index)
    );
    // Every tag: docker lists them (tags/list), then pulls each.
    let pulled = host.docker.pull_all_tags("library/app").await;
    pulled.unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    assert_holds(&host.docker, "library/app:1.0", &single).await;
    assert_holds(&host.docker, "library/app:3.0", &schema2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_fetches_a_token_as_from_docker_hub_and_the_agents_pass_it_on() {
    let site = Site::start_with_tokens().await;
    let tokens = site.tokens.as_ref().expect("token service");
    let image = site.push(ImageSpec::new("tokens", vec![4 * MIB, MIB]), APP).await;
    let first = site.host(0, "eu/z1/r1").await;
    let second = site.host(1, "eu/z1/r2").await;

    // The agent hands the registry's challenge on: docker is to ask the token service itself.
    let manifest = format!("{}/v2/library/app/manifests/1.0", first.agent.url());
    let challenged = loopback_client().unwrap().get(manifest).send().await.unwrap();
    assert_eq!(challenged.status(), StatusCode::UNAUTHORIZED);
    let challenge = challenged.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");

    let before = tokens.issued();
    for host in [&first, &second] {
        let pulled = host.docker.pull(APP).await;
        pulled.unwrap_or_else(|e| panic!("{e:#}\n{}", site.logs(&[host])));
        assert_holds(&host.docker, APP, &image).await;
    }
    assert!(tokens.issued() > before, "docker fetched tokens");
    let gets = site.origin_blob_gets();
    assert!(gets.values().all(|n| *n == 1), "origin blob GETs: {gets:?}");
    assert_eq!(site.origin.blob_bytes(), image.total_blob_bytes);
    let second_metrics = [second.agent.metrics().await.unwrap()];
    assert!(downloaded_from(&second_metrics, "peer") >= image.total_blob_bytes as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_private_repository_takes_docker_login_to_the_agent() {
    let (user, password) = ("bob", "builder-of-docker-pulls");
    let options = RegistryOptions {
        htpasswd: Some((user.to_string(), password.to_string())),
        ..RegistryOptions::default()
    };
    let site = Site::start(options).await;
    let image = site
        .push(ImageSpec::new("private", vec![2 * MIB]), "secret/app:1.0")
        .await;
    let agent = site.agent(0, "eu/z1/r1").await;
    let docker = site
        .docker(&agent.url(), Vec::new(), &[site.registry.addr()])
        .await;
    let host = Host { agent, docker };
    let logs = || site.logs(&[&host]);
    // The agent's address is a registry of its own to docker (`insecure-registries`), whose
    // default upstream is the private registry.
    let reference = format!("{}/secret/app:1.0", host.agent.addr());

    let refused = host
        .docker
        .pull(&reference)
        .await
        .expect_err("a pull without credentials");
    let refused = format!("{refused:#}");
    eprintln!("docker pull without credentials: {refused}");
    assert!(
        refused.contains("no basic auth credentials"),
        "{refused}\n{}",
        logs()
    );
    // Word for word what docker says of the registry itself.
    let direct = format!("{}/secret/app:1.0", site.registry.addr());
    let direct_refusal = format!("{:#}", host.docker.pull(&direct).await.expect_err("direct pull"));
    let last_line = |m: &str| m.lines().last().unwrap_or_default().to_string();
    assert_eq!(
        last_line(&refused),
        last_line(&direct_refusal).replace(&site.registry.addr(), host.agent.addr())
    );

    let wrong = host
        .docker
        .login(host.agent.addr(), user, "not-the-password")
        .await;
    let wrong = format!("{:#}", wrong.expect_err("a login with a wrong password"));
    eprintln!("docker login with a wrong password: {wrong}");
    assert!(wrong.contains("401 Unauthorized"), "{wrong}");

    let login = host.docker.login(host.agent.addr(), user, password).await;
    let login = login.unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    assert!(login.stdout.contains("Login Succeeded"), "{}", login.stdout);
    let pulled = host.docker.pull(&reference).await;
    pulled.unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    assert_holds(&host.docker, &reference, &image).await;
    assert!(downloaded_from(&[host.agent.metrics().await.unwrap()], "edge") > 0.0);

    // The credentials reached no log: the agent's, the edge's, docker's.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    for (name, log) in [
        ("agent", whole_log(&host.agent.data_dir(), "peer-agent")),
        ("edge", whole_log(site.edge.data_dir(), "edge-cache")),
        ("dockerd", host.docker.log()),
    ] {
        assert!(
            !log.contains(password) && !log.contains(&basic),
            "the {name}'s log holds the credentials"
        );
    }
}

/// The `Accept` lines docker 20.10 sends for a manifest.
const DOCKER_ACCEPTS: [&str; 5] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_build_takes_its_base_image_through_the_agent() {
    let site = Site::start(RegistryOptions::default()).await;
    let image = site.push(ImageSpec::new("build", vec![2 * MIB]), APP).await;
    let host = site.host(0, "eu/z1/r1").await;
    let context = tempfile::tempdir().unwrap();
    let dockerfile = format!("FROM {APP}\nLABEL built-by=damselfly-tests\n");
    std::fs::write(context.path().join("Dockerfile"), dockerfile).unwrap();
    // BuildKit names Docker Hub in `?ns=docker.io`, which the edge and the agent know by that
    // name; the classic builder pulls as `docker pull` does. No Docker Hub is reachable here,
    // so a build that did not take the agent would fail.
    for buildkit in [true, false] {
        let built = host.docker.build(context.path(), "built:1", buildkit).await;
        built.unwrap_or_else(|e| panic!("buildkit {buildkit}: {e:#}\n{}", site.logs(&[&host])));
    }
    assert_eq!(site.origin.blob_bytes(), image.total_blob_bytes);
    assert!(downloaded_from(&[host.agent.metrics().await.unwrap()], "edge") > 0.0);
}
