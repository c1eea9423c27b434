//! What docker does when its mirror fails, and what the agent does so that docker need not find
//! out. Docker Hub is a stand-in here (a local registry behind a TLS-terminating proxy), so the
//! daemon's own fallback to it can be watched; the times printed are what docs/docker.md
//! reports.

use std::time::Instant;

use crate::common::{downloaded_from, MIB};
use crate::failing_mirror::FailingMirror;
use crate::site::{assert_holds, config_digest, Site, APP};
use damselfly_test_support::agent::Agent;
use damselfly_test_support::docker::{DockerHubStandIn, Dockerd, HUB_HOST};
use damselfly_test_support::image::{BuiltImage, ImageSpec};
use damselfly_test_support::net::{free_addr_on, loopback_client};
use damselfly_test_support::registry::RegistryOptions;

/// What dockerd logs when it gives up on an endpoint (its mirror) and tries the next.
const NEXT_ENDPOINT: &str = "Attempting next endpoint for pull after error";

/// A site holding [`APP`], and Docker Hub serving the same registry.
async fn site_and_hub(seed: &str) -> (Site, BuiltImage, DockerHubStandIn) {
    let site = Site::start(RegistryOptions::default()).await;
    let image = site.push(ImageSpec::new(seed, vec![6 * MIB, 2 * MIB]), APP).await;
    let hub = DockerHubStandIn::start(&site.registry.addr()).await.expect("hub");
    (site, image, hub)
}

/// A [`site_and_hub`] site whose docker daemon reaches agent 0 through a [`FailingMirror`], for
/// the tests that choose what the mirror fails. Fields in the order they are dropped: the
/// daemon first, the site last.
struct BehindFailingMirror {
    docker: Dockerd,
    mirror: FailingMirror,
    _agent: Agent,
    hub: DockerHubStandIn,
    image: BuiltImage,
    _site: Site,
}

impl BehindFailingMirror {
    async fn start(seed: &str) -> BehindFailingMirror {
        let (site, image, hub) = site_and_hub(seed).await;
        let agent = site.agent(0, "eu/z1/r1").await;
        let mirror = FailingMirror::start(&agent.url()).await;
        let docker = site.docker(mirror.url(), hub.daemon_env(), &[]).await;
        BehindFailingMirror {
            docker,
            mirror,
            _agent: agent,
            hub,
            image,
            _site: site,
        }
    }
}

/// Pulls [`APP`], says how long it took, and gives what `docker pull` printed.
async fn timed_pull(docker: &Dockerd, what: &str) -> String {
    let started = Instant::now();
    let pulled = docker.pull(APP).await;
    let pulled = pulled.unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", docker.log_tail()));
    let secs = started.elapsed().as_secs_f64();
    eprintln!("measured: {what}: the pull took {secs:.1} s");
    pulled.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_its_agent_down_docker_pulls_from_docker_hub_itself() {
    let (site, image, hub) = site_and_hub("agent-down").await;
    let mut agent = site.agent(0, "eu/z1/r1").await;
    let docker = site.docker(&agent.url(), hub.daemon_env(), &[]).await;
    agent.kill().unwrap();

    timed_pull(&docker, "agent down, Docker Hub reachable").await;
    assert_holds(&docker, APP, &image).await;
    assert!(hub.connects() > 0, "docker went to Docker Hub");
    assert!(docker.log().contains(NEXT_ENDPOINT), "{}", docker.log_tail());
    assert!(
        site.origin.requests().is_empty(),
        "nothing went through Damselfly"
    );

    // A host that cannot reach Docker Hub either: the pull fails, and what docker prints is
    // Docker Hub's error, not the mirror's.
    hub.set_reachable(false);
    docker.remove_image(APP).await.unwrap();
    let failed = docker.pull(APP).await.expect_err("neither mirror nor Docker Hub");
    let failed = format!("{failed:#}");
    let said = failed.lines().last().unwrap_or_default();
    eprintln!("measured: agent down, Docker Hub unreachable: {said}");
    assert!(said.contains(HUB_HOST), "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_its_agent_answers_5xx_docker_pulls_from_docker_hub() {
    let (mut site, image, hub) = site_and_hub("agent-5xx").await;
    // Neither the edge nor the origin answers this agent: it has nothing but a 502 to give.
    let nowhere = format!("http://{}", free_addr_on("127.0.0.1").unwrap());
    let agent = site.agent_with_origin(0, "eu/z1/r1", &nowhere).await;
    site.edge.kill().unwrap();
    let docker = site.docker(&agent.url(), hub.daemon_env(), &[]).await;
    let manifest = format!("{}/v2/library/app/manifests/1.0", agent.url());
    let answer = loopback_client().unwrap().get(manifest).send().await.unwrap();
    assert!(answer.status().is_server_error(), "{}", answer.status());

    timed_pull(&docker, "agent answers 5xx on the manifest").await;
    assert_holds(&docker, APP, &image).await;
    assert!(hub.connects() > 0, "docker went to Docker Hub");
    assert!(docker.log().contains(NEXT_ENDPOINT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_asks_its_mirror_again_at_once_for_a_blob_that_failed_once() {
    let setup = BehindFailingMirror::start("blob-once").await;
    let layer = &setup.image.largest_blob().digest;
    let config = config_digest(&setup.image);
    setup.mirror.fail(layer, 1);
    setup.mirror.fail(config, 1);

    timed_pull(&setup.docker, "a layer and the config answered 503 once each").await;
    assert_holds(&setup.docker, APP, &setup.image).await;
    assert_eq!(
        (setup.mirror.gets(layer), setup.mirror.gets(config)),
        (2, 2),
        "asked again"
    );
    assert_eq!(setup.hub.connects(), 0, "docker stayed with its mirror");
    assert!(
        !setup.docker.log().contains("Download failed, retrying"),
        "no pause before asking again:\n{}",
        setup.docker.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_layer_that_keeps_failing_sends_docker_to_docker_hub_after_six_attempts() {
    let setup = BehindFailingMirror::start("layer-always").await;
    let layer = &setup.image.largest_blob().digest;
    setup.mirror.fail(layer, u32::MAX);

    let printed = timed_pull(&setup.docker, "a layer answered 503 every time").await;
    eprintln!("measured: docker pull printed:\n{printed}");
    assert_holds(&setup.docker, APP, &setup.image).await;
    eprintln!(
        "measured: docker asked the mirror {} times for the layer",
        setup.mirror.gets(layer)
    );
    // Six attempts, 5, 10, 15, 20 and 25 s apart (each a GET asked again at once), then the
    // whole pull again from Docker Hub.
    let log = setup.docker.log();
    assert!(
        log.contains("Download failed after 6 attempts"),
        "{}",
        setup.docker.log_tail()
    );
    assert_eq!(setup.mirror.gets(layer), 12);
    assert!(log.contains(NEXT_ENDPOINT));
    assert!(setup.hub.connects() > 0, "then Docker Hub");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_edge_down_the_agent_keeps_docker_off_docker_hub() {
    let (mut site, image, hub) = site_and_hub("edge-down").await;
    let agent = site.agent(0, "eu/z1/r1").await;
    let docker = site.docker(&agent.url(), hub.daemon_env(), &[]).await;
    site.edge.kill().unwrap();

    timed_pull(&docker, "edge down, origin reachable").await;
    assert_holds(&docker, APP, &image).await;
    assert_eq!(hub.connects(), 0, "docker never turned to Docker Hub");
    assert!(!docker.log().contains(NEXT_ENDPOINT));
    let metrics = [agent.metrics().await.unwrap()];
    assert!(downloaded_from(&metrics, "origin") >= image.total_blob_bytes as f64);
}
