//! Real clients pull through the edge: skopeo (registries.conf mirror) and containerd (`ctr`
//! with hosts.toml), single-platform OCI, a multi-platform index and Docker schema2.

mod common;

use common::{layers, two_platforms, Origin, MIB};
use damselfly_test_support::containerd::{Containerd, CtrPullOptions};
use damselfly_test_support::skopeo::{self, PullOptions, PushOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_oci_index_and_schema2_through_the_edge() {
    let origin = Origin::start().await;
    let edge = origin.edge().await;
    let single = origin
        .push(layers(&[MIB, 3 * MIB, 300 * 1024], "single"), "demo/app:v1")
        .await;
    let multi = origin
        .push(
            two_platforms(layers(&[2 * MIB, 512 * 1024], "multi")),
            "demo/multi:v1",
        )
        .await;
    // The same image converted to Docker schema2 by skopeo on push.
    let dest = format!("{}/demo/docker:v1", origin.registry.addr());
    skopeo::push(
        &single,
        &dest,
        &PushOptions {
            format_v2s2: true,
            ..PushOptions::default()
        },
    )
    .await
    .unwrap();

    let registry = origin.registry.addr();
    for (reference, all, expected) in [
        (
            format!("{registry}/demo/app:v1"),
            false,
            Some(single.top_digest.clone()),
        ),
        (
            format!("{registry}/demo/multi:v1"),
            true,
            Some(multi.top_digest.clone()),
        ),
        (format!("{registry}/demo/docker:v1"), false, None),
    ] {
        let before = edge.metrics().await.unwrap();
        let out = tempfile::tempdir().unwrap();
        let options = PullOptions {
            all,
            ..PullOptions::default()
        };
        let pulled = skopeo::pull_via_mirror(
            &registry,
            &edge.addr(),
            &reference,
            &out.path().join("img"),
            &options,
        )
        .await
        .unwrap_or_else(|e| panic!("pull {reference}: {e:#}\nedge log:\n{}", edge.log_tail()));
        if let Some(expected) = expected {
            assert_eq!(pulled.manifest_digest, expected, "{reference}");
        }
        // skopeo silently falls back to the origin: prove the edge served this pull.
        let after = edge.metrics().await.unwrap();
        let served = |m: &damselfly_test_support::metrics::Metrics| {
            m.sum(
                "damselfly_edge_http_requests_total",
                &["route=\"manifest\"", "status=\"200\""],
            )
        };
        assert!(
            served(&after) > served(&before),
            "{reference}: no manifest came from the edge"
        );
        assert!(
            after.sum("damselfly_edge_served_bytes_total", &["kind=\"blob\""])
                > before.sum("damselfly_edge_served_bytes_total", &["kind=\"blob\""]),
            "{reference}: no blob came from the edge"
        );
    }
    // Everything came through the edge, from upstream once: the v2s2 copy shares the layers.
    assert_eq!(
        origin.proxy.blob_bytes(),
        edge.metrics()
            .await
            .unwrap()
            .get("damselfly_edge_upstream_bytes_total") as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_through_the_edge_with_hosts_toml() {
    let origin = Origin::start().await;
    let edge = origin.edge().await;
    let single = origin
        .push(layers(&[2 * MIB, MIB], "ctr-single"), "demo/ctr:v1")
        .await;
    let multi = origin
        .push(two_platforms(layers(&[MIB], "ctr-multi")), "demo/ctr-multi:v1")
        .await;
    let containerd = Containerd::start().await.unwrap();
    let registry = origin.registry.addr();
    containerd.write_hosts_toml(&registry, &edge.url()).unwrap();

    for (reference, all, expected) in [
        (format!("{registry}/demo/ctr:v1"), false, &single.top_digest),
        (format!("{registry}/demo/ctr-multi:v1"), true, &multi.top_digest),
    ] {
        let options = CtrPullOptions {
            all_platforms: all,
            ..CtrPullOptions::default()
        };
        let digest = containerd
            .pull(&reference, &options)
            .await
            .unwrap_or_else(|e| panic!("ctr pull {reference}: {e:#}\nedge log:\n{}", edge.log_tail()));
        assert_eq!(&digest, expected, "{reference}");
    }
    // containerd falls back to the origin per request: prove every blob came via the edge.
    let metrics = edge.metrics().await.unwrap();
    let blobs: u64 = single
        .blobs
        .iter()
        .chain(multi.blobs.iter())
        .map(|b| b.size)
        .sum();
    assert_eq!(metrics.get("damselfly_edge_upstream_bytes_total") as u64, blobs);
    assert_eq!(origin.proxy.blob_bytes(), blobs);
    // containerd resolves tags with HEAD: those must have been answered by the edge.
    assert!(
        metrics.sum(
            "damselfly_edge_http_requests_total",
            &["route=\"manifest\"", "method=\"HEAD\"", "status=\"200\""]
        ) >= 2.0
    );
}
