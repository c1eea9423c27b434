//! End-to-end: images pushed to a real registry, pulled by skopeo and containerd through the
//! fault proxy acting as a registry mirror.

use anyhow::{ensure, Result};
use damselfly_test_support::containerd::{Containerd, CtrPullOptions};
use damselfly_test_support::image::{build_image_async, BuiltImage, ImageSpec};
use damselfly_test_support::proxy::FaultProxy;
use damselfly_test_support::registry::{Registry, RegistryOptions};
use damselfly_test_support::skopeo::{self, PullOptions, PushOptions};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

struct Images {
    _dir: tempfile::TempDir,
    single: BuiltImage,
    multi: BuiltImage,
}

async fn build_images() -> Result<Images> {
    let dir = tempfile::tempdir()?;
    let single = build_image_async(
        ImageSpec::new("harness-single", vec![MIB, 2 * MIB, 300 * KIB]),
        dir.path().join("single"),
        "v1".into(),
    )
    .await?;
    let multi = build_image_async(
        ImageSpec::new("harness-multi", vec![512 * KIB, 256 * KIB])
            .with_platforms([("amd64", None), ("arm64", Some("v8"))]),
        dir.path().join("multi"),
        "v1".into(),
    )
    .await?;
    Ok(Images {
        _dir: dir,
        single,
        multi,
    })
}

/// Pushes both images (and Docker-format copies) and checks what the registry stored.
async fn push_all(registry: &Registry, images: &Images) -> Result<()> {
    let reg = registry.addr();
    let all = PushOptions {
        all: true,
        ..PushOptions::default()
    };
    for (image, repo, options, what) in [
        (
            &images.single,
            "single",
            PushOptions::default(),
            "single-arch digest",
        ),
        (&images.multi, "multi", all, "index digest"),
    ] {
        let digest = skopeo::push(image, &format!("{reg}/harness/{repo}:v1"), &options).await?;
        ensure!(digest == image.top_digest, "{what} changed on push: {digest}");
    }

    let v2s2 = PushOptions {
        format_v2s2: true,
        ..PushOptions::default()
    };
    let converted = skopeo::push(&images.single, &format!("{reg}/harness/single-v2s2:v1"), &v2s2).await?;
    ensure!(
        converted != images.single.top_digest,
        "v2s2 conversion must produce a new manifest"
    );
    let list = PushOptions {
        all: true,
        format_v2s2: true,
        creds: None,
    };
    skopeo::push(&images.multi, &format!("{reg}/harness/multi-v2s2:v1"), &list).await?;
    for (repo, media_type) in [
        (
            "single-v2s2",
            "application/vnd.docker.distribution.manifest.v2+json",
        ),
        (
            "multi-v2s2",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        ),
    ] {
        let raw = skopeo::inspect_raw(&format!("docker://{reg}/harness/{repo}:v1")).await?;
        let manifest: serde_json::Value = serde_json::from_slice(&raw)?;
        assert_eq!(manifest["mediaType"], media_type, "{repo}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_and_containerd_pull_through_a_mirror() -> Result<()> {
    let registry = Registry::start(RegistryOptions::default()).await?;
    let images = build_images().await?;
    push_all(&registry, &images).await?;
    let reg = registry.addr();
    let proxy = FaultProxy::start(&reg).await?;
    let out = tempfile::tempdir()?;

    // skopeo, single-arch.
    let pulled = skopeo::pull_via_mirror(
        &reg,
        &proxy.addr(),
        &format!("{reg}/harness/single:v1"),
        &out.path().join("single"),
        &PullOptions::default(),
    )
    .await?;
    assert_eq!(pulled.manifest_digest, images.single.top_digest);
    assert!(pulled.files.contains(&"manifest.json".to_owned()));
    // skopeo silently falls back to the origin, so only the mirror's counters prove it served.
    assert_eq!(
        proxy.blob_bytes(),
        images.single.total_blob_bytes,
        "{:#?}",
        proxy.requests()
    );

    // skopeo, whole index.
    proxy.reset_counters();
    let all = PullOptions {
        all: true,
        creds: None,
    };
    let pulled = skopeo::pull_via_mirror(
        &reg,
        &proxy.addr(),
        &format!("{reg}/harness/multi:v1"),
        &out.path().join("multi"),
        &all,
    )
    .await?;
    assert_eq!(pulled.manifest_digest, images.multi.top_digest);
    assert_eq!(proxy.blob_bytes(), images.multi.total_blob_bytes);

    // containerd, which adds ?ns=<registry> to every mirror request.
    let containerd = Containerd::start().await?;
    containerd.write_hosts_toml(&reg, &proxy.url())?;
    proxy.reset_counters();
    let digest = containerd
        .pull(&format!("{reg}/harness/single:v1"), &CtrPullOptions::default())
        .await?;
    assert_eq!(digest, images.single.top_digest);
    assert_eq!(proxy.blob_bytes(), images.single.total_blob_bytes);
    let requests = proxy.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.query.as_deref().is_some_and(|q| q.contains("ns=127.0.0.1"))),
        "{requests:#?}"
    );

    proxy.reset_counters();
    let all = CtrPullOptions {
        all_platforms: true,
        user: None,
    };
    let digest = containerd.pull(&format!("{reg}/harness/multi:v1"), &all).await?;
    assert_eq!(digest, images.multi.top_digest);
    assert_eq!(proxy.blob_bytes(), images.multi.total_blob_bytes);

    // After removal the content is garbage-collected and a re-pull transfers it again.
    containerd
        .remove_image(&format!("{reg}/harness/single:v1"))
        .await?;
    assert_eq!(
        containerd
            .image_digest(&format!("{reg}/harness/single:v1"))
            .await?,
        None
    );
    proxy.reset_counters();
    containerd
        .pull(&format!("{reg}/harness/single:v1"), &CtrPullOptions::default())
        .await?;
    assert_eq!(proxy.blob_bytes(), images.single.total_blob_bytes);
    Ok(())
}
