//! Manifests and tags are counted and evicted like blobs: a client walking many tags fills
//! neither the disk nor the index, an evicted one is fetched again, and a restart with lower
//! caps trims what is kept.

mod common;

use common::{layers, sha256, Origin};
use damselfly_test_support::edge::Edge;
use damselfly_test_support::net::loopback_client;

const TAGS: usize = 6;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn manifest_files(edge: &Edge) -> usize {
    std::fs::read_dir(edge.data_dir().join("manifests"))
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
        .count()
}

async fn manifest(client: &reqwest::Client, edge: &Edge, tag: &str) -> (String, String) {
    let url = format!("{}/v2/demo/catalog/manifests/{tag}", edge.url());
    let response = client
        .get(url)
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap_or_else(|e| panic!("{tag}: {e}\n{}", edge.log_tail()));
    let header = response.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string();
    (header, sha256(&response.bytes().await.unwrap()))
}

async fn catalog(edge: &Edge, kind: &str) -> (f64, f64) {
    let metrics = edge.metrics().await.unwrap();
    let label = format!("kind=\"{kind}\"");
    (
        metrics.sum("damselfly_edge_catalog_entries", &[&label]),
        metrics.sum("damselfly_edge_evicted_catalog_entries_total", &[&label]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_and_tags_stay_within_their_caps() {
    let origin = Origin::start().await;
    let mut images = Vec::new();
    for i in 0..TAGS {
        let spec = layers(&[1024 + i as u64], &format!("catalog-{i}"));
        images.push(origin.push(spec, &format!("demo/catalog:v{i}")).await);
    }
    let mut options = origin.edge_options();
    options.cache_toml = "max_manifests = 4\nmax_tags = 3\n".into();
    let data = tempfile::tempdir().unwrap();
    options.data_dir = Some(data.path().join("edge"));
    let mut edge = origin.edge_with(options.clone()).await;
    let client = loopback_client().unwrap();

    for (i, image) in images.iter().enumerate() {
        let (header, body) = manifest(&client, &edge, &format!("v{i}")).await;
        assert_eq!(header, image.top_digest);
        assert_eq!(body, image.top_digest);
    }
    let (manifests, evicted_manifests) = catalog(&edge, "manifest").await;
    let (tags, evicted_tags) = catalog(&edge, "tag").await;
    assert!(
        manifests <= 4.0 && tags <= 3.0,
        "{manifests} manifests, {tags} tags kept"
    );
    assert!(evicted_manifests >= 2.0 && evicted_tags >= 3.0);
    assert_eq!(
        manifest_files(&edge) as f64,
        manifests,
        "files on disk match the count"
    );

    // The first tag was evicted: asked of the upstream again, and answered right.
    origin.proxy.reset_counters();
    let (header, _) = manifest(&client, &edge, "v0").await;
    assert_eq!(header, images[0].top_digest);
    let asked = origin.upstream_requests_for("/v2/demo/catalog/manifests/v0");
    assert_eq!(asked, 1, "the evicted tag went to the upstream");
    // The newest is still cached: no upstream request for it (its tag is fresh).
    origin.proxy.reset_counters();
    let newest = format!("v{}", TAGS - 1);
    let (header, _) = manifest(&client, &edge, &newest).await;
    assert_eq!(header, images[TAGS - 1].top_digest);
    assert!(
        origin.proxy.requests().is_empty(),
        "the most recent tag was answered from the cache: {:?}",
        origin.proxy.requests()
    );

    // A restart with lower caps keeps the most recent and drops the rest, files included.
    edge.kill().unwrap();
    options.cache_toml = "max_manifests = 2\nmax_tags = 2\n".into();
    let edge = origin.edge_with(options).await;
    let (manifests, _) = catalog(&edge, "manifest").await;
    let (tags, _) = catalog(&edge, "tag").await;
    assert!(
        manifests <= 2.0 && tags <= 2.0,
        "{manifests} manifests, {tags} tags after the restart"
    );
    assert_eq!(manifest_files(&edge) as f64, manifests);
    let (header, body) = manifest(&client, &edge, &newest).await;
    assert_eq!(
        (header.as_str(), body.as_str()),
        (
            images[TAGS - 1].top_digest.as_str(),
            images[TAGS - 1].top_digest.as_str()
        )
    );
}
